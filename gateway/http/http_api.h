/* The HTTP routes of the gateway itself: /healthz, /readyz, /metrics, then static files
 * (static_files.c); server.c sends /v1 to rest.c. The checks made before any route or WebSocket
 * upgrade are http_guard.c; the shape of every answer is http_reply.c. */
#ifndef HERALD_HTTP_API_H
#define HERALD_HTTP_API_H

struct lws;
struct herald;

/* LWS_CALLBACK_HTTP: answers the request; returns what the callback returns. */
int http_api_serve(struct herald *app, struct lws *wsi);

#endif
