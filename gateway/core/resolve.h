/* Host names resolved on libuv's thread pool. hiredis (redisAsyncConnect) and libpq
 * (PQconnectStart) call getaddrinfo on the caller's thread, which would stall the whole
 * loop, every client included, for as long as DNS takes: seconds when it is slow, at every
 * reconnect attempt. Herald resolves first, off the loop, and connects to the address. */
#ifndef HERALD_RESOLVE_H
#define HERALD_RESOLVE_H

#include <stdbool.h>
#include <uv.h>

struct resolve;

/* addr: the first address of host, numeric (valid during the call); or err (addr NULL). */
typedef void (*resolve_cb)(void *arg, const char *addr, const char *err);

/* True when host is already an IPv4 or IPv6 address: no lookup needed. */
bool resolve_is_numeric(const char *host);

/* Starts resolving host; cb is called once, later, unless resolve_cancel comes first.
 * NULL (cb not called) when it could not start. */
struct resolve *resolve_start(uv_loop_t *loop, const char *host, resolve_cb cb, void *arg);

/* The answer is no longer wanted: cb will not be called. */
void resolve_cancel(struct resolve *r);

#endif
