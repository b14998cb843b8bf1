/* The /v1 REST routes: GET /v1/channels/{C}/messages (catch-up with paging),
 * POST /v1/channels/{C}/messages (durable publish, Idempotency-Key) and POST /v1/messages
 * (a batch).
 *
 * One request at a time per connection, answered exactly once. From the moment a request is
 * whole (a GET's head, a POST's body) the connection reads nothing (lws rx flow control)
 * until the answer has been written, so the bytes that follow (a pipelined request, a
 * stray CRLF) wait in the socket and are parsed afterwards as the next request. The answer
 * is written at once, whole, when it is ready: lws 4.1 never calls WRITEABLE on an h1
 * connection that does not read, and keeps and sends itself what the socket does not take.
 * The session lives outside lws (the connection's opaque pointer), since lws frees a
 * protocol's session memory when it binds the connection again; an event that does not
 * fit the request's phase only marks it stray: no second run, no second answer, and the
 * connection closes after the one answer. A request refused before its body (401, 403,
 * 404, 503) has the body read and thrown away, never kept; so has one over the size limit,
 * whose 413 is written at once, before its body is read (the connection closes after it). */
#ifndef HERALD_REST_H
#define HERALD_REST_H

#include "errcode.h"
#include "http_session.h"
#include "v1_route.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct lws;
struct herald;
struct rest;

struct rest *rest_new(struct herald *app);
void rest_free(struct rest *r);

/* The connection's session, or NULL before its first request; rest_session_make creates
 * it (NULL when out of memory). */

/* LWS_CALLBACK_HTTP on any path: true when the connection's /v1 request is still open, so
 * that this one is not served (it is stray: the connection closes after the open one's
 * answer). */
int rest_stray_request(struct lws *wsi);

/* LWS_CALLBACK_HTTP on a /v1 path, read by v1_route_parse (channel: its C). Returns what
 * the callback returns. */
int rest_begin(struct herald *app, struct lws *wsi, enum v1_route route, const char *channel);

/* LWS_CALLBACK_HTTP_BODY and LWS_CALLBACK_HTTP_BODY_COMPLETION. */
int rest_body(struct herald *app, struct lws *wsi, struct http_session *s, const void *in,
              size_t len);
int rest_body_done(struct herald *app, struct lws *wsi, struct http_session *s);

/* A GET under /v1 that another module serves (stream.c): its session, made ready as for any
 * /v1 request (the connection reads nothing more until the answer; the answer's CORS lines)
 * and waiting for that answer. NULL when out of memory. */
struct http_session *rest_open(struct herald *app, struct lws *wsi);

/* Whether the caller may read channel, as for a /v1 GET: with auth off, yes (*has_who
 * false); else its credentials fill *who (*has_who true: the caller releases it), or false
 * with 401 or 403 answered. */
struct principal;
bool rest_may_read(struct herald *app, struct lws *wsi, struct http_session *s, const char *channel,
                   struct principal *who, bool *has_who);

/* The answer of a request another module ran (stream.c): status, extra header lines (NULL
 * or whole lines), the body. Written now, or after the body of a refused POST. */
void rest_answer(struct herald *app, struct lws *wsi, struct http_session *s, unsigned status,
                 const char *extra, const char *body, size_t len);
/* The same with {"error":{...}}, counted by code. */
void rest_answer_error(struct herald *app, struct lws *wsi, struct http_session *s, unsigned status,
                       enum errcode code, const char *message);

/* Calls pair on each key=value of the request's query (split and %-decoded by lws; a pair
 * without '=' has an empty value), in order, until one returns -1 (its reason in err). */
typedef int (*rest_pair_cb)(void *arg, const char *key, size_t klen, const char *val, size_t vlen,
                            char *err, size_t errlen);
int rest_query_pairs(struct lws *wsi, rest_pair_cb pair, void *arg, char *err, size_t errlen);

/* LWS_CALLBACK_HTTP_WRITEABLE: -1 (close) once an answer that ends the connection is out. */
int rest_writable(struct lws *wsi);

/* LWS_CALLBACK_WSI_DESTROY: frees the session (a PostgreSQL answer still on its way is
 * dropped when it comes). */
void rest_session_free(struct herald *app, struct lws *wsi);

#endif
