/* Connections per client address (HERALD_MAX_CONNECTIONS_PER_IP), counted across every worker
 * of a supervisor (HERALD_WORKERS): the table lives in shared memory created before the fork,
 * with one count column per worker, so that a dead worker's connections can be released by
 * clearing its column. An IPv4 address counts as itself (also in its ::ffff: form), an IPv6
 * address by its /64, which one subscriber usually holds whole. The address is the socket's
 * peer: behind a load balancer every client shares the balancer's address, so set the limit
 * there (see docs/SECURITY.md). */
#ifndef HERALD_IPLIMIT_H
#define HERALD_IPLIMIT_H

#include <stdbool.h>

struct iplimit;
struct ipcount;

/* A table for `workers` count columns (1 for a lone process) that can never fill while each
 * worker holds at most max_connections connections. Create it before forking the workers;
 * each process frees its own copy. NULL (logged) when the memory cannot be mapped. */
struct iplimit *iplimit_new(long max_connections, int workers);
void iplimit_free(struct iplimit *t);

/* In worker `slot` (0 to workers - 1), right after the fork: its connections count in that
 * column. A lone process uses column 0. */
void iplimit_set_slot(struct iplimit *t, int slot);

/* In the supervisor, once worker `slot` has died: its connections no longer count. */
void iplimit_clear_slot(struct iplimit *t, int slot);

/* True when one more connection from ip would pass max. */
bool iplimit_full(struct iplimit *t, const char *ip, long max);

/* Counts a connection from ip (lws's text form of the peer address); the handle is given back
 * with iplimit_release. NULL when out of memory, or out of room beyond what iplimit_new was
 * sized for (the connection is then not counted). */
struct ipcount *iplimit_acquire(struct iplimit *t, const char *ip);
void iplimit_release(struct iplimit *t, struct ipcount *c);

#endif
