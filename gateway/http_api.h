/* The HTTP side: /healthz, /readyz, /metrics, the checks made before a WebSocket upgrade,
 * and JSON error answers. Static files are served by an lws mount (server.c). */
#ifndef HERALD_HTTP_API_H
#define HERALD_HTTP_API_H

#include "errcode.h"

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

/* {"error":{"code":..,"message":..}} with the status that goes with the code. */
int http_respond_error(struct lws *wsi, unsigned status, enum errcode code, const char *message);

#endif
