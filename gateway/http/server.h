/* The lws context on the process's libuv loop: the listening socket, the HTTP routes and
 * static mount, and the "herald" WebSocket protocol. */
#ifndef HERALD_SERVER_H
#define HERALD_SERVER_H

struct herald;
struct server;

/* Creates the context and starts listening. NULL on failure (logged). */
struct server *server_start(struct herald *app);

/* Stops accepting connections (a worker that drains lets the others take them). */
void server_stop_listening(struct server *srv);

/* Destroys the context; the loop must run afterwards so libuv can close lws's handles. */
void server_stop(struct server *srv);

#endif
