/* Address ranges (CIDRs) and the client address behind trusted proxies, as pure functions:
 * HERALD_TRUSTED_PROXIES and HERALD_IP_LIMIT_EXEMPT are lists of ranges, and a connection's
 * client is found from its peer and its X-Forwarded-For header. */
#ifndef HERALD_CIDR_H
#define HERALD_CIDR_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define CIDR_LIST_MAX 32
#define CIDR_ADDR_MAX 46 /* INET6_ADDRSTRLEN */

struct cidr {
    uint8_t addr[16]; /* IPv4 as ::ffff:a.b.c.d */
    uint8_t bits;     /* prefix length over the 128 bits */
};

struct cidr_list {
    struct cidr items[CIDR_LIST_MAX];
    int n;
};

/* "10.0.0.0/8, ::1, 192.168.1.7" (a bare address is a /32 or /128; empty text, no range).
 * 0, or -1 with err naming the bad entry. */
int cidr_list_parse(const char *text, struct cidr_list *out, char *err, size_t errlen);

/* True when ip (text, IPv4 or IPv6, IPv4-mapped IPv6 taken as IPv4) is in one of the ranges;
 * false for text that is no address. */
bool cidr_list_match(const struct cidr_list *l, const char *ip);

/* The client of a connection from peer: the peer itself unless it is a trusted proxy; then
 * the right-most address of X-Forwarded-For (xff, NULL when absent) that is not a trusted
 * proxy, each proxy having appended the address it saw. An entry that is no address, or a
 * list made only of trusted proxies, leaves the last trusted one seen: a proxy cannot be
 * made to vouch for garbage. Writes the address into out (cap >= CIDR_ADDR_MAX). */
void cidr_client_address(const char *peer, const char *xff, const struct cidr_list *trusted,
                         char *out, size_t cap);

#endif
