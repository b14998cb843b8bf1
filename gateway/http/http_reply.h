/* How the HTTP side answers: whole responses through lws, the head of a JSON response
 * written raw, and the one shape of every JSON error. */
#ifndef HERALD_HTTP_REPLY_H
#define HERALD_HTTP_REPLY_H

#include "errcode.h"

#include <stdbool.h>
#include <stddef.h>

struct lws;

/* Writes a whole response. Returns 0, or -1 when the connection failed. */
int http_respond(struct lws *wsi, unsigned status, const char *content_type, const char *body,
                 size_t len);

/* {"error":{"code":K,"message":M}} and a newline into out (cap bytes), the message escaped;
 * returns its length. Every JSON error of the HTTP side has this shape. */
size_t http_error_body(char *out, size_t cap, enum errcode code, const char *message);

/* The head of a JSON response written raw (refusals, /v1 answers): status line, content
 * type and length, no-store, nosniff, Retry-After on 503 and 429, Connection: close when
 * close is set, and extra (NULL, or whole header lines). Returns its length, 0 when it does
 * not fit. */
size_t http_json_head(char *out, size_t cap, unsigned status, size_t body_len, bool close,
                      const char *extra);

/* {"error":{"code":..,"message":..}} with the status that goes with the code. */
int http_respond_error(struct lws *wsi, unsigned status, enum errcode code, const char *message);

#endif
