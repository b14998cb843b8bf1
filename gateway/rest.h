/* The /v1 REST routes: GET /v1/channels/{C}/messages (catch-up with paging) and
 * POST /v1/channels/{C}/messages (durable publish, Idempotency-Key). Both answer after
 * PostgreSQL did, from the connection's HTTP_WRITEABLE callback. */
#ifndef HERALD_REST_H
#define HERALD_REST_H

#include <stdbool.h>
#include <stddef.h>

struct lws;
struct herald;
struct rest_call;

/* Per-connection state of the "http" protocol (lws allocates it zeroed). */
struct http_session {
    struct rest_call *call; /* the request waiting for PostgreSQL, if any */
    char *body;             /* POST body gathered so far */
    size_t body_len;
    bool body_too_large;
    bool wait_body; /* a POST: answer only once its body has been read */
    char *response; /* whole response: status line, headers, body */
    size_t response_len;
};

/* LWS_CALLBACK_HTTP on a /v1 path. Returns what the callback returns. */
int rest_begin(struct herald *app, struct lws *wsi, struct http_session *s, const char *uri);

/* LWS_CALLBACK_HTTP_BODY and LWS_CALLBACK_HTTP_BODY_COMPLETION. */
int rest_body(struct herald *app, struct lws *wsi, struct http_session *s, const void *in,
              size_t len);
int rest_body_done(struct herald *app, struct lws *wsi, struct http_session *s);

/* LWS_CALLBACK_HTTP_WRITEABLE: sends the prepared response. */
int rest_writable(struct lws *wsi, struct http_session *s);

/* LWS_CALLBACK_CLOSED_HTTP / HTTP_DROP_PROTOCOL: forgets the session (a PostgreSQL answer
 * still on its way is dropped). */
void rest_session_end(struct http_session *s);

#endif
