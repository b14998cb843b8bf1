/* The /v1 REST routes: GET /v1/channels/{C}/messages (catch-up with paging),
 * POST /v1/channels/{C}/messages (durable publish, Idempotency-Key) and POST /v1/messages
 * (a batch). Every answer is written from the connection's HTTP_WRITEABLE callback.
 *
 * One request at a time per connection, answered exactly once. lws 4.1 re-fires a
 * request's callbacks when bytes arrive while it is pending (BODY_COMPLETION again after a
 * POST, the whole head again after a GET, with a rebind that frees the protocol's session
 * memory), so the session lives outside lws (the connection's opaque pointer) and every
 * event that does not fit the request's phase only marks it stray: no second run, no second
 * answer; the answer then says `connection: close` and the connection closes after it. A
 * request refused before its body (401, 403, 404, 503) has the body read and thrown away,
 * never kept. */
#ifndef HERALD_REST_H
#define HERALD_REST_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct lws;
struct herald;
struct rest_call;

enum rest_phase {
    REST_IDLE,  /* no request yet */
    REST_BODY,  /* a POST's body is arriving (kept, or thrown away when refused) */
    REST_WAIT,  /* handed to PostgreSQL */
    REST_REPLY, /* the answer is ready and being written */
};

/* The REST state of one connection, created by its first /v1 request. */
struct http_session {
    enum rest_phase phase;
    bool refused;           /* the answer is decided: the body is only thrown away */
    bool stray;             /* input came where none belongs: close after the answer */
    struct rest_call *call; /* the request, until its answer is prepared */
    char *body;             /* the POST body gathered so far */
    size_t body_len;
    size_t reserved; /* bytes of HERALD_BODY_BUFFER_BYTES held for the body */
    uint64_t started_ms;
    unsigned status;
    char *response; /* headroom (LWS_PRE and the head), then the answer's body */
    size_t response_start, response_len, response_sent;
};

/* The connection's session, or NULL before its first /v1 request. */
struct http_session *rest_session(struct lws *wsi);

/* LWS_CALLBACK_HTTP on a /v1 path. Returns what the callback returns. */
int rest_begin(struct herald *app, struct lws *wsi, const char *uri);

/* LWS_CALLBACK_HTTP_BODY and LWS_CALLBACK_HTTP_BODY_COMPLETION. */
int rest_body(struct herald *app, struct lws *wsi, struct http_session *s, const void *in,
              size_t len);
int rest_body_done(struct herald *app, struct lws *wsi, struct http_session *s);

/* LWS_CALLBACK_HTTP_WRITEABLE: writes the prepared answer, a bounded piece at a time. */
int rest_writable(struct herald *app, struct lws *wsi, struct http_session *s);

/* LWS_CALLBACK_WSI_DESTROY: frees the session (a PostgreSQL answer still on its way is
 * dropped when it comes). */
void rest_session_free(struct herald *app, struct lws *wsi);

#endif
