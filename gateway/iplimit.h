/* Connections per client address (HERALD_MAX_CONNECTIONS_PER_IP). The address is the
 * socket's peer: behind a load balancer every client shares the balancer's address, so set
 * the limit there (see docs/SECURITY.md). */
#ifndef HERALD_IPLIMIT_H
#define HERALD_IPLIMIT_H

#include <stdbool.h>

struct iplimit;
struct ipcount;

struct iplimit *iplimit_new(void);
void iplimit_free(struct iplimit *t);

/* True when one more connection from ip would pass max. */
bool iplimit_full(struct iplimit *t, const char *ip, long max);

/* Counts a connection from ip; the handle is given back with iplimit_release. NULL when out
 * of memory (the connection is then not counted). */
struct ipcount *iplimit_acquire(struct iplimit *t, const char *ip);
void iplimit_release(struct iplimit *t, struct ipcount *c);

#endif
