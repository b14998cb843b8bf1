/* Client frames (PROTOCOL: 3. WebSocket endpoint): parsing, dispatch by "op", and the
 * replies the hub sends back later. */
#ifndef HERALD_PROTOCOL_H
#define HERALD_PROTOCOL_H

#include <stddef.h>
#include <stdint.h>

struct client;

/* Longest accepted "id" string, in bytes. */
#define PROTOCOL_ID_MAX 64
/* Room for an id as JSON text: a 64-byte string escaped, or an integer. */
#define PROTOCOL_ID_JSON_MAX (PROTOCOL_ID_MAX * 6 + 3)

/* Handles one whole text message from a client; every invalid one gets an error reply. */
void protocol_handle(struct client *c, const char *msg, size_t len);

/* {"op":"subscribed","channel":C,"seq":H,"recovered":false[,"id":..]} */
void reply_subscribed(struct client *c, const char *channel, uint64_t seq, const char *id_json);

/* {"op":"unsubscribed","channel":C[,"id":..]} */
void reply_unsubscribed(struct client *c, const char *channel, const char *id_json);

#endif
