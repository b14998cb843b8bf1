/* Presence (PROTOCOL: Presence): who is subscribed to a channel, across every instance, on
 * the channels HERALD_PRESENCE names.
 *
 * Each instance keeps its own part in Redis, in three keys per channel on the server (or
 * cluster master) that carries the channel, hash-tagged by channel name:
 *     <prefix>presence:{C}:e  sorted set: entry -> when it expires (ms, Redis' clock)
 *     <prefix>presence:{C}:i  hash: entry -> the member's info, or an instance's anonymous count
 *     <prefix>presence:{C}:n  hash: sub -> how many entries (instances) hold that user
 * An entry is "<instance>\0<sub>" (one per user per instance, however many connections) or
 * "<instance>\0" (that instance's anonymous connections). Every change goes through one Lua
 * script, so the three keys agree: it sweeps expired entries (an instance that crashed stops
 * refreshing its own), applies this instance's joins and leaves, and says which users became
 * present anywhere (join) or absent everywhere (leave). The instance that ran it publishes
 * those events on the channel's Redis channel (presence_event.h), once, for every instance to
 * relay to its subscribers. Each instance asserts all of its entries again every third of
 * HERALD_PRESENCE_TTL, which also restores them after Redis lost them.
 *
 * A user whose last connection here went lingers HERALD_PRESENCE_LINGER before its entry is
 * removed: a reconnect within that time (on any instance) makes no leave and no join. At most
 * one script per channel is in flight, so an instance's changes to a channel apply in order. */
#ifndef HERALD_PRESENCE_H
#define HERALD_PRESENCE_H

#include <stdbool.h>
#include <stddef.h>

struct herald;
struct frame;
struct presence;
struct pconn;

/* Upward calls to the connections (filled by app/main.c, like hub_sink). */
struct presence_sink {
    /* conn's user could not be listed on the channel: HERALD_PRESENCE_MAX_MEMBERS is reached */
    void (*full)(void *conn, const char *channel, size_t len);
};

struct presence *presence_new(struct herald *app, const struct presence_sink *sink);
void presence_start(struct presence *p);
/* Before the bus is freed: no more writes, and the replies of scripts in flight (which come
 * as the bus closes) change nothing. The loop must run afterwards (the timer closes). */
void presence_stop(struct presence *p);
/* After the loop has run and every connection is gone (presence_gone). */
void presence_free(struct presence *p);

/* True when HERALD_PRESENCE names the channel. */
bool presence_enabled(const struct presence *p, const char *name, size_t len);

/* Records that conn asked to subscribe to a presence channel as user sub (NULL or "":
 * anonymous) showing info (JSON text, may be empty). It counts from presence_confirm on.
 * *list is the connection's own list of its places (NULL at first). 0, or -1 (out of memory:
 * nothing changed). */
int presence_join(struct presence *p, struct pconn **list, void *conn, const char *name, size_t len,
                  const char *sub, size_t slen, const char *info, size_t ilen);
/* The subscription was answered: conn is present from now on. */
void presence_confirm(struct presence *p, struct pconn **list, const char *name, size_t len);
/* conn left the channel (unsubscribed, refused or its subscribe failed). */
void presence_leave(struct presence *p, struct pconn **list, const char *name, size_t len);
/* conn is closing: it leaves every channel. */
void presence_gone(struct presence *p, struct pconn **list);

/* A member list: "count":N,"members":[...] (presence_event.h), or NULL when Redis could not
 * be asked or did not answer. Valid during the call. */
typedef void presence_list_fn(void *arg, const char *text, size_t len);

/* Asks Redis for the channel's members; fn runs exactly once, from the loop, never inside
 * this call. -1 (and fn will not run) only when memory ran out. */
int presence_query(struct presence *p, const char *name, size_t len, presence_list_fn *fn,
                   void *arg);

/* A presence event that came on the channel's Redis channel: the frame for its subscribers,
 * or NULL when it is not one this process accepts (*why says why: unsigned while the
 * process has the key, a bad signature, malformed). */
struct frame *presence_event_frame(struct presence *p, const char *name, size_t len,
                                   const char *payload, size_t plen, const char **why);

#endif
