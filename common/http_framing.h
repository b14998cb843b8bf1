/* Strict HTTP/1.1 framing, decided from a request's head before any route runs
 * (docs/SECURITY.md: HTTP framing). libwebsockets reads a body on any method that has a
 * Content-Length, ignores Transfer-Encoding (a chunked body would be read as headers of the
 * next request) and joins repeated headers with commas; Herald refuses all of that up
 * front, so that a route only ever sees a GET without a body or a POST whose body length is
 * known and within the limit. Pure: the gateway reads the headers and writes the answer. */
#ifndef HERALD_HTTP_FRAMING_H
#define HERALD_HTTP_FRAMING_H

#include "errcode.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Bytes of a request head the gateway has lws keep (request line and headers); longer heads
 * are refused by lws. */
#define HTTP_HEAD_MAX 8192

enum http_method { HTTP_GET, HTTP_POST, HTTP_OTHER };

/* What the framing depends on, read from the request's head. */
struct http_head {
    enum http_method method;
    bool takes_body;            /* the path is one of the routes that take a POST */
    const char *content_length; /* NULL: no header; repeated headers joined with ',' */
    bool transfer_encoding;     /* a Transfer-Encoding header, whatever its value */
    uint64_t max_body;          /* HERALD_MAX_PUBLISH_BYTES */
};

/* A refusal: the status, the error code of the JSON body and the reason. Every refusal of
 * the framing closes the connection: what follows on it cannot be trusted to be a request.
 * A 413's body has a known length, so it is read to its end first (rest.c). */
struct http_refusal {
    unsigned status;
    enum errcode code;
    const char *why;
};

/* 0: the request may go on, with *body its declared body length (0 without one). -1:
 * refused, with *out filled. */
int http_framing_check(const struct http_head *in, uint64_t *body, struct http_refusal *out);

/* Parses a Content-Length value: 1 to 19 decimal digits and nothing else (no sign, no
 * space, no comma from a repeated header). Returns 0 or -1. */
int http_content_length(const char *s, uint64_t *out);

/* The Sec-WebSocket-Protocol list of a handshake (NULL or "" when absent) is acceptable:
 * it names "herald" (lws binds the first name it knows) and never "http", the name of the
 * plain HTTP protocol, which lws would bind a WebSocket to. */
bool http_subprotocols_ok(const char *list);

/* An idempotency key (header or batch member): 1 to 200 bytes, each a visible ASCII
 * character (0x21-0x7e). Anything else could fail the whole group-commit statement. */
#define IDEMPOTENCY_KEY_MAX 200
bool idempotency_key_valid(const char *s, size_t len);

/* True when origin (an Origin header's value) is in list (comma-separated Origins, compared
 * without regard to case; "*" is any). An empty list holds nothing: callers decide what that
 * means. */
bool http_origin_listed(const char *list, const char *origin);

#endif
