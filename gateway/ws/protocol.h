/* Client frames (PROTOCOL: 3. WebSocket endpoint): parsing, dispatch by "op", and the
 * replies the hub sends back later. */
#ifndef HERALD_PROTOCOL_H
#define HERALD_PROTOCOL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct client;

/* Handles one whole text message from a client; every invalid one gets an error reply. */
void protocol_handle(struct client *c, const char *msg, size_t len);

struct subscribed_reply {
    uint64_t seq;      /* the last seq the client has now seen on the channel */
    const char *epoch; /* NULL when the channel has no history */
    bool resumed;      /* the client asked with `since` */
    bool recovered;
    uint64_t replayed;
    const char *code; /* why a resume was not recovered */
};

/* {"op":"subscribed","channel":C,"seq":H[,"epoch":E],"recovered":B[,"replayed":N]
 *  [,"code":K][,"id":..]} */
void reply_subscribed(struct client *c, const char *channel, const struct subscribed_reply *r,
                      const char *id_json);

/* The client is closing: publish replies still owed to it are dropped. */
void protocol_client_gone(struct client *c);

/* {"op":"unsubscribed","channel":C[,"id":..]} */
void reply_unsubscribed(struct client *c, const char *channel, const char *id_json);

#endif
