/* The listening socket of a worker (HERALD_WORKERS > 1). lws 4.1 sets SO_REUSEPORT only
 * when it runs several service threads itself, so a worker binds its own socket with
 * SO_REUSEPORT (the kernel then spreads new connections over the workers' sockets), accepts
 * on the loop and hands each connection to lws as if lws had accepted it. */
#ifndef HERALD_LISTENER_H
#define HERALD_LISTENER_H

struct herald;
struct listener;
struct lws_vhost;

/* Binds host:port of the settings with SO_REUSEPORT and starts accepting into vh. NULL
 * on failure (logged). */
struct listener *listener_start(struct herald *app, struct lws_vhost *vh);

/* Closes the socket: new connections go to the other workers. Safe on NULL. */
void listener_stop(struct listener *l);

#endif
