/* The state of one HTTP connection's current request, kept outside lws (the connection's
 * opaque pointer): lws frees a protocol's session memory when it binds the connection
 * again. http_guard.c records how the request arrived; rest.c runs it. */
#ifndef HERALD_HTTP_SESSION_H
#define HERALD_HTTP_SESSION_H

#include "cors.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct lws;
struct rest_call;
struct stream;

enum rest_phase {
    REST_IDLE,  /* no request yet */
    REST_BODY,  /* a POST's body is arriving (kept, or thrown away when refused) */
    REST_WAIT,  /* handed to PostgreSQL */
    REST_REPLY, /* the answer is being written */
};

/* The HTTP state of one connection, created by its first request. */
struct http_session {
    enum rest_phase phase;
    bool refused;    /* the answer is decided: the body is only thrown away */
    bool too_large;  /* the body is over the limit (http_guard.c): 413 at once, then the body
                      * is read to its end and the connection closed */
    bool stray;      /* input came where none belongs: close after the answer */
    bool hang_up;    /* the last answer is out: close at the next WRITEABLE */
    bool seen_whole; /* a request of this connection was whole once (http_guard.c) */
    bool consumed_known;
    uint64_t consumed;      /* socket bytes lws had read when that request was whole */
    struct rest_call *call; /* the request, until its answer is prepared */
    char *body;             /* the POST body gathered so far */
    size_t body_len;
    size_t reserved; /* bytes of HERALD_BODY_BUFFER_BYTES held for the body */
    uint64_t started_ms;
    struct lws *wsi;
    struct http_session *body_prev, *body_next; /* while reading a body (REST_BODY) */
    unsigned status;
    char cors[CORS_LINES_MAX]; /* CORS header lines of the answer (cors.h), or "" */
    char extra[256];           /* more header lines of the answer (Durable Streams'), or "" */
    struct stream *stream;     /* GET .../stream: its subscriber, until it ends (stream.h) */
    char *response;            /* headroom (LWS_PRE and the head), then the answer's body */
    size_t response_len;
};

/* The REST side of a process: the sweep that closes bodies past HERALD_BODY_TIMEOUT.
 * rest_free closes its timer (the loop must run afterwards). */
/* The connection's session, or NULL before one is made. */
struct http_session *http_session_get(struct lws *wsi);
/* The connection's session, made (zeroed) when it has none; NULL when out of memory. */
struct http_session *http_session_make(struct lws *wsi);

#endif
