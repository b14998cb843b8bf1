/* Where the master of a redis-sentinel:// URL is. The sentinels are asked one after the other
 * (SENTINEL get-master-addr-by-name, at most 1 s each) until one names it; the one that
 * answered is then watched
 * for +switch-master, so that a failover is followed as soon as the sentinels decide it rather
 * than when the old master stops answering. What a sentinel says is checked for shape only:
 * the bus confirms with ROLE that the node really is a master before using it. */
#ifndef HERALD_SENTINEL_H
#define HERALD_SENTINEL_H

#include "redis_url.h"

struct herald;
struct sentinel;

/* The master's address (host, valid during the call), or err when no sentinel named it. */
typedef void (*sentinel_found_cb)(void *arg, const char *host, int port, const char *err);
/* The sentinels moved the master elsewhere. */
typedef void (*sentinel_switched_cb)(void *arg);

/* url must outlive the sentinel; arg is the first argument of both callbacks. */
struct sentinel *sentinel_new(struct herald *app, const struct redis_url *url,
                              sentinel_found_cb found, sentinel_switched_cb switched, void *arg);

/* Asks where the master is: `found` runs once, from the loop, never inside this call, unless
 * sentinel_cancel comes first. An ask in flight is cancelled. Each ask starts with the
 * sentinel after the one the previous ask started with. */
void sentinel_ask(struct sentinel *s);

/* The answer is no longer wanted (the watch stays). */
void sentinel_cancel(struct sentinel *s);

/* Cancels, closes the connections; the memory goes once the loop runs. */
void sentinel_free(struct sentinel *s);

#endif
