/* The channels of one process and who is subscribed to them: a hash table of channels by
 * name, each with its members, and each subscriber's list of channels, kept in step. It
 * owns the memory of a channel; it neither sends nor decides anything.
 *
 * struct channel is shared inside the channel core only (channels/): registry.c writes the
 * table, the member arrays and the subscribers' refs; hub.c writes `redis`; sequence.c
 * writes the ordering state (from `baseline` on), the members' `ready`/`last_seq` and the
 * waiters' progress. Nothing outside channels/ sees the struct. */
#ifndef HERALD_REGISTRY_H
#define HERALD_REGISTRY_H

#include "frame.h"
#include "history.h"
#include "outq.h"
#include "sink.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Where the channel's Redis subscription stands. A new SUBSCRIBE or UNSUBSCRIBE is sent only
 * from IDLE or ACTIVE: hiredis 0.14 keys its callbacks by channel name, so overlapping
 * requests for one channel would lose the callback. */
enum redis_state { R_IDLE, R_SUBSCRIBING, R_ACTIVE, R_UNSUBSCRIBING };

/* A channel's side of a subscription. `slot` is the index in the subscriber's refs;
 * `last_seq` is the highest seq this subscriber was sent, so a message that reaches it twice
 * (replay then live, or live then gap fill) goes out once. Until `ready`, the subscriber
 * waits for its `subscribed` reply and gets no live messages. */
struct member {
    struct subscriber *sub;
    uint32_t slot;
    bool ready;
    bool refused; /* a strict resume was refused: the connection takes it out (hub_drop_refused) */
    uint64_t last_seq;
};

/* A subscriber waiting for its `subscribed` reply: at most one per subscriber and channel. A
 * resume replays from `since` (which moves on as frames go out) as fast as the subscriber's
 * queue drains, then is answered. */
struct waiter {
    struct subscriber *sub;
    char *id_json;
    bool resume;
    uint64_t last;    /* last:N not yet turned into a since (needs the channel's head) */
    bool strict;      /* a resume that cannot be served is refused, not answered unrecovered */
    bool paged;       /* one page, then the subscriber leaves: no HERALD_REPLAY_MAX bound */
    bool oldest;      /* from the oldest message kept (resume.oldest) */
    bool checked;     /* the resume passed its checks: its frames are going out */
    bool paused;      /* the subscriber's queue is full: waiting for it to drain */
    bool asked_ahead; /* its position is past this process's head: PostgreSQL was asked once */
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
    uint8_t redis;       /* enum redis_state (hub.c) */
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
    uint64_t page_since;      /* the page has the rows after this seq that PostgreSQL still has */
    struct outq recent;       /* newest delivered frames, contiguous by seq, bounded in bytes */
    struct frame *last_frame; /* the frame of last_seq, when delivered here: checked against
                               * PostgreSQL's row by the periodic head check */
    bool diverging;           /* a new epoch is being asked for (history_new_epoch) */
    bool epoch_lost;          /* PostgreSQL lost what was delivered under epoch: nothing more
                                 is delivered under it, only after a page's new one */
    bool verifying;           /* a duplicate's check of the history is in flight */
    size_t len;
    char name[];
};

struct registry;

struct registry *registry_new(void);
/* Frees the table; release runs first on every channel still in it (its other owners'
 * state), then the channel goes. */
void registry_free(struct registry *r, void (*release)(struct channel *ch, void *arg), void *arg);

/* Channels in the table. */
size_t registry_count(const struct registry *r);

struct channel *registry_find(const struct registry *r, const char *name, size_t len);
/* A new, empty channel in the table; NULL when out of memory. */
struct channel *registry_create(struct registry *r, const char *name, size_t len);
/* Takes ch out of the table and frees it with its members and waiters: the caller has
 * checked nobody needs it and released the ordering state. */
void registry_remove(struct registry *r, struct channel *ch);
/* Calls fn on every channel; fn may remove the channel it is given. */
void registry_each(struct registry *r, void (*fn)(struct channel *ch, void *arg), void *arg);

/* Membership. registry_join adds the pair to both sides (-1: out of memory, nothing
 * changed); registry_leave removes the pair at s->refs[slot]. */
int registry_join(struct channel *ch, struct subscriber *s);
void registry_leave(struct subscriber *s, int slot);
/* s's index of ch in s->refs, or -1. */
int registry_slot(const struct subscriber *s, const struct channel *ch);
/* The member entry of s in ch, or NULL. */
struct member *registry_member(struct channel *ch, const struct subscriber *s);
/* True when s is a member of the channel name[0..len). */
bool registry_has(const struct subscriber *s, const char *name, size_t len);

/* Waiters. registry_wait copies id_json and the resume (NULL: none) (-1: out of memory,
 * nothing changed). */
int registry_wait(struct channel *ch, struct subscriber *s, const char *id_json,
                  const struct resume *resume);
bool registry_waiting(const struct channel *ch, const struct subscriber *s);
void registry_unwait(struct channel *ch, const struct subscriber *s);

#endif
