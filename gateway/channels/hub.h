/* The channel registry of one process: channel -> member clients and client -> channels,
 * kept in step; the Redis subscription state of each channel; fan-out of Redis messages as
 * one shared frame per message. */
#ifndef HERALD_HUB_H
#define HERALD_HUB_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct herald;
struct client;
struct hub;

struct hub *hub_new(struct herald *app);
void hub_free(struct hub *hub);

/* Number of channels with members or a Redis request in flight. */
size_t hub_channel_count(const struct hub *hub);

/* True when c is a member of the channel name[0..len). */
bool hub_is_member(const struct client *c, const char *name, size_t len);

/* A resume request: replay every message with seq > since (of this epoch, when given). */
struct resume {
    uint64_t since;
    const char *epoch; /* NULL or "" when the client did not say */
};

/* Joins c to a channel. The `subscribed` reply (carrying id_json) goes out once Redis has
 * confirmed the channel's subscription and, with history, once the channel's head is known
 * (and, for a resume, after the replay). -1: out of memory; HUB_PENDING: c's previous
 * subscribe to the channel is not answered yet (nothing changed). */
#define HUB_PENDING (-2)
int hub_subscribe(struct hub *hub, struct client *c, const char *name, size_t len,
                  const char *id_json, const struct resume *resume);

/* Starts the periodic work (gap repair, head checks); stops it before shutdown. */
void hub_start(struct hub *hub);
void hub_stop(struct hub *hub);

/* Removes c from a channel (nothing happens when it is not a member). */
void hub_unsubscribe(struct hub *hub, struct client *c, const char *name, size_t len);

/* c's send queue drained: its paused resumes go on. */
void hub_client_drained(struct hub *hub, struct client *c);

/* Removes c from every channel: the connection is closing. */
void hub_client_gone(struct hub *hub, struct client *c);

/* Events from the bus (the Redis subscriber). Names are Herald channel names (no prefix). */
void hub_on_bus_up(struct hub *hub);
void hub_on_bus_down(struct hub *hub, int shard);
void hub_on_subscribed(struct hub *hub, const char *name, size_t len);
void hub_on_unsubscribed(struct hub *hub, const char *name, size_t len);
void hub_on_message(struct hub *hub, const char *name, size_t len, const char *payload,
                    size_t plen);

#endif
