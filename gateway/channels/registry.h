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
struct seq;

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

/* A client waiting for its `subscribed` reply: at most one per client and channel. A
 * resume replays from `since` (which moves on as frames go out) as fast as the client's
 * queue drains, then is answered. */
struct waiter {
    struct client *c;
    char *id_json;
    bool resume;
    bool checked;     /* the resume passed its checks: its frames are going out */
    bool paused;      /* the client's queue is full: waiting for it to drain */
    uint8_t attempts; /* history queries made for it without progress */
    uint64_t since;
    uint64_t replayed;
    char epoch[HISTORY_EPOCH_MAX];
};

/* A link in one of sequence.c's lists of channels. */
struct seq_link {
    struct channel *prev, *next;
    bool linked;
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
    bool head_failed;    /* the head lookup failed: the tick asks again */
    bool headless;       /* members were answered without a position (a lookup failed) */
    bool fetching;       /* a history query for this channel is in flight */
    uint32_t queries;    /* queries in flight that point at this channel */
    uint64_t last_seq;   /* highest seq delivered live (or the head when subscribed) */
    uint64_t first_kept; /* oldest seq PostgreSQL still had at the last query */
    char epoch[HISTORY_EPOCH_MAX];
    /* sequenced frames that arrived ahead of a gap, by seq; at most HERALD_HOLD_BYTES */
    struct frame **held;
    uint32_t nheld, heldcap;
    size_t held_bytes;
    uint64_t held_since_ms;
    /* the highest seq Redis announced that this process could not take (not authentic, or
     * past the hold budget): PostgreSQL is asked whether it exists */
    uint64_t hint_seq;
    /* the lowest seq Redis announced while headless: delivered from there on once the head
     * is known, so members answered meanwhile miss nothing published after they were */
    uint64_t headless_from;
    uint64_t epoch_probe_ms; /* last immediate fetch for a channel with no epoch yet */
    struct seq_link holding; /* has held frames or an open hint */
    struct seq_link heads;   /* waits for its head to be looked up */
    struct seq_link lru;     /* has a recent cache; the least recently grown is trimmed first */
    struct frame **page;     /* a fetched page of history, during its callback only */
    size_t npage;
    uint64_t page_since; /* the page has the rows after this seq that PostgreSQL still has */
    struct outq recent;  /* newest delivered frames, contiguous by seq, bounded in bytes */
    size_t len;
    char name[];
};

/* hub.c */
struct herald *hub_app(const struct hub *hub);
struct seq *hub_seq(const struct hub *hub);
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

/* sequence.c */
struct seq *seq_new(struct hub *hub);
void seq_free(struct seq *s);
/* A sequenced envelope from Redis (payload as received, seq already read from it):
 * delivered in order when authentic, held across a gap, or taken as a hint. */
void seq_on_live(struct hub *hub, struct channel *ch, const char *payload, size_t len,
                 uint64_t seq);
/* Redis confirmed the channel: learn the head, catch up, answer waiters. */
void seq_on_active(struct hub *hub, struct channel *ch);
/* Answers the waiters that can be answered now; queries PostgreSQL for the others. */
void seq_progress(struct hub *hub, struct channel *ch);
/* Client c's queue drained: its paused replays on ch go on. */
void seq_client_drained(struct hub *hub, struct channel *ch, struct client *c);
/* Periodic work: fill gaps held too long; with heads, compare every channel's head with
 * PostgreSQL (a PUBLISH may have been lost). */
void seq_tick(struct hub *hub, uint64_t now, bool heads);
/* Frees the channel's held frames and recent cache and takes it off every list. */
void seq_release(struct hub *hub, struct channel *ch);

#endif
