/* What a client's messages ask for (PROTOCOL: 3. WebSocket endpoint): each message, parsed
 * by common/request.c, dispatched by "op" to the hub or the durable publish, and the replies,
 * including those the channel core gives later through hub_sink.answered. */
#ifndef HERALD_PROTOCOL_H
#define HERALD_PROTOCOL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct client;
struct subscriber;
struct hub_answer;

/* Handles one whole text message from a client; every invalid one gets an error reply. */
void protocol_handle(struct client *c, const char *msg, size_t len);

/* hub_sink.answered: {"op":"subscribed","channel":C,"seq":H[,"epoch":E],"recovered":B
 * [,"replayed":N][,"code":K][,"id":..]} to the client that embeds s. */
void protocol_answered(struct subscriber *s, const char *channel, const struct hub_answer *a,
                       const char *id_json);

/* presence_sink.full: {"op":"error","code":"presence_full","channel":C,...} to conn (a
 * client). */
void protocol_presence_full(void *conn, const char *channel, size_t len);

/* The client is closing: publish and presence replies still owed to it are dropped. */
void protocol_client_gone(struct client *c);

#endif
