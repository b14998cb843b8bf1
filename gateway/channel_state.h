/* The state of one channel inside a process, shared by hub.c (registry, membership, Redis
 * subscription, fan-out) and sequence.c (order, gap repair, recent cache, resume). Nothing
 * outside those two files includes it. */
#ifndef HERALD_CHANNEL_STATE_H
#define HERALD_CHANNEL_STATE_H

#include "frame.h"
#include "history.h"
#include "outq.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct client;
struct hub;

/* Where the channel's Redis subscription stands. A new SUBSCRIBE or UNSUBSCRIBE is sent only
 * from IDLE or ACTIVE: hiredis 0.14 keys its callbacks by channel name, so overlapping
 * requests for one channel would lose the callback. */
enum redis_state { R_IDLE, R_SUBSCRIBING, R_ACTIVE, R_UNSUBSCRIBING };

/* A channel's side of a subscription. `slot` is the index in the client's subs array;
 * `last_seq` is the highest seq this client was sent, so a message that reaches it twice
 * (replay then live, or live then gap fill) goes out once. Until `ready`, the client waits
 * for its `subscribed` reply and gets no live messages. */
struct member {
    struct client *c;
    uint32_t slot;
    bool ready;
    uint64_t last_seq;
};

/* A client waiting for its `subscribed` reply. */
struct waiter {
    struct client *c;
    char *id_json;
    bool resume;
    uint8_t attempts; /* history queries made for it */
    uint64_t since;
    char epoch[HISTORY_EPOCH_MAX];
};

struct channel {
    struct channel *next; /* hash bucket chain */
    uint32_t hash;
    uint32_t nmembers, cap;
    struct member *members;
    struct waiter *waiters;
    uint32_t nwaiters;
    uint8_t redis;
    bool baseline;       /* last_seq and epoch come from PostgreSQL */
    bool head_failed;    /* the head query failed: serve without history until next confirm */
    bool fetching;       /* a history query for this channel is in flight */
    uint32_t queries;    /* queries in flight that point at this channel */
    uint64_t last_seq;   /* highest seq delivered live (or the head when subscribed) */
    uint64_t first_kept; /* oldest seq PostgreSQL still had at the last query */
    char epoch[HISTORY_EPOCH_MAX];
    struct frame **held; /* sequenced frames that arrived ahead of a gap, by seq */
    uint32_t nheld;
    uint64_t held_since_ms;
    struct channel *hold_prev, *hold_next; /* in the hub's holding list while nheld > 0 */
    struct outq recent; /* newest delivered frames, contiguous by seq, bounded in bytes */
    size_t len;
    char name[];
};

/* hub.c */
struct herald *hub_app(const struct hub *hub);
struct channel *hub_find(const struct hub *hub, const char *name, size_t len);
/* Sends f to every ready member that has not had its seq yet. */
void hub_deliver(struct hub *hub, struct channel *ch, struct frame *f);
/* The member entry of client c, or NULL. */
struct member *hub_member(struct channel *ch, const struct client *c);
/* Forgets a channel nobody needs any more (no members, Redis idle, no query in flight). */
void hub_maybe_forget(struct hub *hub, struct channel *ch);
/* Calls fn on every channel. */
void hub_each(struct hub *hub, void (*fn)(struct hub *hub, struct channel *ch, void *arg),
              void *arg);
/* The channels holding frames ahead of a gap (linked by hold_next), kept apart so that the
 * frequent tick visits them and not every channel: a scan of all channels every 50 ms costs
 * CPU in proportion to the channels even when nothing happens. sequence.c adds a channel
 * when its first frame is held and removes it when the last one goes. */
struct channel *hub_holding(const struct hub *hub);
void hub_holding_add(struct hub *hub, struct channel *ch);
void hub_holding_remove(struct hub *hub, struct channel *ch);

/* sequence.c */
/* A sequenced frame from Redis: delivered in order, held across a gap, or dropped. */
void seq_on_live(struct hub *hub, struct channel *ch, struct frame *f);
/* Redis confirmed the channel: learn the head, catch up, answer waiters. */
void seq_on_active(struct hub *hub, struct channel *ch);
/* Answers the waiters that can be answered now; queries PostgreSQL for the others. */
void seq_progress(struct hub *hub, struct channel *ch);
/* Periodic work: fill gaps held too long; with heads, compare every channel's head with
 * PostgreSQL (a PUBLISH may have been lost). */
void seq_tick(struct hub *hub, uint64_t now, bool heads);
/* Frees the channel's held frames (leaving the holding list) and recent cache. */
void seq_release(struct hub *hub, struct channel *ch);

#endif
