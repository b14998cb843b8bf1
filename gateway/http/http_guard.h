/* The front door: what every plain HTTP request and every WebSocket handshake passes
 * before a route or the WebSocket protocol sees it (docs/SECURITY.md: HTTP framing, one
 * admission path). A refusal is a whole JSON answer written raw with `connection: close`,
 * after which lws drops the connection.
 *
 * lws delivers these events to whichever protocol the connection is bound to at the time
 * (the WebSocket protocol for a connection's first request, "http" after a keep-alive
 * answer), so both protocol callbacks hand them here. */
#ifndef HERALD_HTTP_GUARD_H
#define HERALD_HTTP_GUARD_H

#include "errcode.h"

#include <stdint.h>

struct lws;
struct herald;

/* LWS_CALLBACK_FILTER_HTTP_CONNECTION: the request's framing (http_framing.h). 0 lets it
 * on to its route; -1 means it was refused. */
int http_guard_request(struct herald *app, struct lws *wsi);

/* The request is whole (a POST's body has come; a GET is whole at http_guard_request):
 * remembers how far lws had read the socket, for the pipelining check. */
void http_guard_request_whole(struct lws *wsi);

/* LWS_CALLBACK_HTTP_FILE_COMPLETION: a static file is out; what lws read meanwhile waits in
 * its buffer, and the pipelining check counts from here. */
void http_guard_file_done(struct lws *wsi);

/* The body length a request that passed http_guard_request declared (0 without one). */
uint64_t http_guard_body_length(struct lws *wsi);

/* LWS_CALLBACK_HTTP_CONFIRM_UPGRADE: a WebSocket handshake is admitted here, whatever
 * subprotocol it names (path /ws, no body, subprotocols, draining, connection limits per
 * process and per address); anything else asking to upgrade (h2c) is refused. 0 lets the
 * handshake go on; -1 means it was refused. */
int http_guard_upgrade(struct herald *app, struct lws *wsi);

/* A connection bound where no request may go: a WebSocket handshake that named the "http"
 * subprotocol (LWS_CALLBACK_FILTER_PROTOCOL_CONNECTION of the http protocol) or a CONNECT
 * request that lws turned into a raw socket (LWS_CALLBACK_RAW_ADOPT). Writes the refusal;
 * the caller returns -1. */
void http_guard_refuse(struct herald *app, struct lws *wsi, unsigned status, enum errcode code,
                       const char *why);

#endif
