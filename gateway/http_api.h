/* The HTTP side: /healthz, /readyz, /metrics, the checks made before a WebSocket upgrade,
 * and JSON error answers. Static files are served by an lws mount (server.c). */
#ifndef HERALD_HTTP_API_H
#define HERALD_HTTP_API_H

#include "errcode.h"

#include <stdbool.h>
#include <stddef.h>

struct lws;
struct herald;

/* LWS_CALLBACK_HTTP: answers the request; returns what the callback returns. */
int http_api_serve(struct herald *app, struct lws *wsi);

/* LWS_CALLBACK_FILTER_PROTOCOL_CONNECTION: 0 lets the WebSocket handshake go on; -1 means a
 * refusal (404 off /ws, 503 while draining or at HERALD_MAX_CONNECTIONS) was written and the
 * connection is to be dropped. */
int http_api_admit(struct herald *app, struct lws *wsi);

/* Writes a whole response. Returns 0, or -1 when the connection failed. */
int http_respond(struct lws *wsi, unsigned status, const char *content_type, const char *body,
                 size_t len);

/* {"error":{"code":K,"message":M}} and a newline into out (cap bytes), the message escaped;
 * returns its length. Every JSON error of the HTTP side has this shape. */
size_t http_error_body(char *out, size_t cap, enum errcode code, const char *message);

/* The head of a JSON response written raw (the refused handshake, /v1 answers): status
 * line, content type and length, no-store, Retry-After on 503 and 429, and Connection: close
 * when close is set. Returns its length. */
size_t http_json_head(char *out, size_t cap, unsigned status, size_t body_len, bool close);

/* {"error":{"code":..,"message":..}} with the status that goes with the code. */
int http_respond_error(struct lws *wsi, unsigned status, enum errcode code, const char *message);

#endif
