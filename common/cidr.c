#include "cidr.h"

#include <arpa/inet.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* An address as 16 bytes, IPv4 mapped into IPv6; false when text is none. */
static bool to_bytes(const char *text, uint8_t out[16], bool *v4)
{
    struct in_addr a4;
    if (inet_pton(AF_INET, text, &a4) == 1) {
        memset(out, 0, 10);
        out[10] = out[11] = 0xff;
        memcpy(out + 12, &a4, 4);
        *v4 = true;
        return true;
    }
    if (inet_pton(AF_INET6, text, out) == 1) {
        static const uint8_t mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
        *v4 = memcmp(out, mapped, 12) == 0;
        return true;
    }
    return false;
}

static bool parse_one(const char *s, size_t n, struct cidr *c)
{
    char buf[64];
    if (n == 0 || n >= sizeof buf)
        return false;
    memcpy(buf, s, n);
    buf[n] = '\0';
    char *slash = strchr(buf, '/');
    long bits = -1;
    if (slash) {
        *slash = '\0';
        char *end;
        if (!slash[1] || slash[1] < '0' || slash[1] > '9')
            return false;
        bits = strtol(slash + 1, &end, 10);
        if (*end)
            return false;
    }
    bool v4;
    if (!to_bytes(buf, c->addr, &v4))
        return false;
    long max = v4 ? 32 : 128;
    if (bits < 0)
        bits = max;
    if (bits > max)
        return false;
    c->bits = (uint8_t)(v4 ? bits + 96 : bits);
    return true;
}

int cidr_list_parse(const char *text, struct cidr_list *out, char *err, size_t errlen)
{
    out->n = 0;
    const char *p = text;
    while (*p) {
        while (*p == ' ' || *p == ',')
            p++;
        const char *start = p;
        while (*p && *p != ',' && *p != ' ')
            p++;
        size_t n = (size_t)(p - start);
        if (!n)
            continue;
        if (out->n == CIDR_LIST_MAX) {
            snprintf(err, errlen, "more than %d address ranges", CIDR_LIST_MAX);
            return -1;
        }
        if (!parse_one(start, n, &out->items[out->n])) {
            snprintf(err, errlen, "'%.*s' is not an address or address/prefix",
                     (int)(n > 60 ? 60 : n), start);
            return -1;
        }
        out->n++;
    }
    return 0;
}

static bool in_range(const struct cidr *c, const uint8_t a[16])
{
    unsigned full = c->bits / 8, rest = c->bits % 8;
    if (memcmp(c->addr, a, full) != 0)
        return false;
    if (!rest)
        return true;
    uint8_t mask = (uint8_t)(0xff << (8 - rest));
    return (c->addr[full] & mask) == (a[full] & mask);
}

bool cidr_list_match(const struct cidr_list *l, const char *ip)
{
    uint8_t a[16];
    bool v4;
    if (!l->n || !to_bytes(ip, a, &v4))
        return false;
    for (int i = 0; i < l->n; i++)
        if (in_range(&l->items[i], a))
            return true;
    return false;
}

void cidr_client_address(const char *peer, const char *xff, const struct cidr_list *trusted,
                         char *out, size_t cap)
{
    snprintf(out, cap, "%s", peer);
    if (!xff || !cidr_list_match(trusted, peer))
        return;
    /* from the right: each entry was added by the hop after it */
    const char *end = xff + strlen(xff);
    while (end > xff) {
        const char *start = end;
        while (start > xff && start[-1] != ',')
            start--;
        const char *a = start, *b = end;
        while (a < b && (*a == ' ' || *a == '\t'))
            a++;
        while (b > a && (b[-1] == ' ' || b[-1] == '\t'))
            b--;
        char entry[CIDR_ADDR_MAX + 1];
        size_t n = (size_t)(b - a);
        uint8_t bytes[16];
        bool v4;
        if (n == 0 || n > CIDR_ADDR_MAX)
            return;
        memcpy(entry, a, n);
        entry[n] = '\0';
        if (!to_bytes(entry, bytes, &v4))
            return; /* garbage: keep the last trusted hop */
        snprintf(out, cap, "%s", entry);
        if (!cidr_list_match(trusted, entry))
            return;
        end = start > xff ? start - 1 : xff;
    }
}
