/* Who is at the other end of a connection: the peer's address, or, when the peer is one of
 * HERALD_TRUSTED_PROXIES, the client its X-Forwarded-For names (common/cidr.h). The per-IP
 * limit, its count and the logs use this address. */
#ifndef HERALD_PEER_H
#define HERALD_PEER_H

#include "cidr.h"

#include <stdbool.h>
#include <stddef.h>

struct herald;
struct lws;

/* The client's address as text into out (cap >= CIDR_ADDR_MAX + 1; "" when unknown). */
void peer_address(const struct herald *app, struct lws *wsi, char *out, size_t cap);

/* Whether HERALD_MAX_CONNECTIONS_PER_IP applies to ip (not in HERALD_IP_LIMIT_EXEMPT). */
bool peer_limited(const struct herald *app, const char *ip);

#endif
