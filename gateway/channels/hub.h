/* The channel core's front: what the layers around it call. Connections above (ws/, http/)
 * subscribe and unsubscribe through it; the Redis bus below reports its events to it
 * through the bus_events table it fills (hub_bus_events). It keeps each channel's Redis
 * subscription in step with its members, classifies each Redis message (raw or sequenced)
 * once per process and hands it to sequence.c, which delivers it. */
#ifndef HERALD_HUB_H
#define HERALD_HUB_H

#include "sink.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct herald;
struct hub;
struct hub_sink;
struct subscriber;
struct bus_events;

/* Frames and replies reach each subscriber through its own sink (sink.h). */
struct hub *hub_new(struct herald *app);
void hub_free(struct hub *hub);

/* The table bus_new takes: the bus's events come to this hub. */
void hub_bus_events(struct hub *hub, struct bus_events *ev);

/* Number of channels with members or a Redis request in flight. */
size_t hub_channel_count(const struct hub *hub);

/* The furthest seq this process knows the channel name has reached; 0 when it does not
 * follow the channel. */
uint64_t hub_known_head(const struct hub *hub, const char *name, size_t len);

/* The name of s's i-th channel (i < s->n), valid while s is a member of it. */
const char *hub_channel_name(const struct subscriber *s, uint16_t i);

/* The epoch of s's i-th channel, NULL while it has no history (no baseline or no message
 * yet). */
const char *hub_channel_epoch(const struct subscriber *s, uint16_t i);

/* True when s is a member of the channel name[0..len). */
bool hub_is_member(const struct subscriber *s, const char *name, size_t len);

/* Joins s to a channel (resume: registry.h; NULL for a plain subscribe). The `subscribed` answer
 * (carrying id_json) goes out once Redis has confirmed the channel's subscription and, with
 * history, once the channel's head is known (and, for a resume, after the replay). -1: out of
 * memory (nothing changed); HUB_PENDING: s's previous subscribe to the channel is not answered yet
 * (nothing changed). */
#define HUB_PENDING (-2)
int hub_subscribe(struct hub *hub, struct subscriber *s, const char *name, size_t len,
                  const char *id_json, const struct resume *resume);

/* Takes s out of the channels whose strict resume was refused (hub_answer.refused). Called
 * from the loop, never from inside the `answered` call that reported the refusal. */
void hub_drop_refused(struct hub *hub, struct subscriber *s);

/* Removes s from a channel (nothing happens when it is not a member). */
void hub_unsubscribe(struct hub *hub, struct subscriber *s, const char *name, size_t len);

/* s's queue drained (hub_sink.notify_drained asked for it): its paused resumes go on. */
void hub_client_drained(struct hub *hub, struct subscriber *s);

/* Removes s from every channel and frees its refs: the connection is closing. */
void hub_client_gone(struct hub *hub, struct subscriber *s);

/* Starts the periodic work (gap repair, head checks, every 50 ms); stops it before
 * shutdown. hub_tick is one round of it at time now (ms on the loop's clock). */
void hub_start(struct hub *hub);
void hub_stop(struct hub *hub);
void hub_tick(struct hub *hub, uint64_t now);

#endif
