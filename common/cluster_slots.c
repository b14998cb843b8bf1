#include "cluster_slots.h"

#include <stdbool.h>
#include <stdio.h>
#include <string.h>

static bool int_in(const redisReply *r, long long lo, long long hi)
{
    return r->type == REDIS_REPLY_INTEGER && r->integer >= lo && r->integer <= hi;
}

/* A host name or an IPv4/IPv6 address as a node announces it: nothing a log line or the
 * resolver should see besides these characters. */
static bool host_valid(const char *s, size_t n)
{
    if (n == 0 || n >= sizeof((struct redis_addr *)0)->host)
        return false;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '.' || c == '-' || c == '_' || c == ':'))
            return false;
    }
    return true;
}

const char *cluster_slots_parse(const redisReply *r, const char *asked, struct cluster_slots *m)
{
    if (r->type != REDIS_REPLY_ARRAY)
        return r->type == REDIS_REPLY_ERROR ? "CLUSTER SLOTS refused" : "not an array";
    memset(m->owner, CLUSTER_NO_OWNER, sizeof m->owner);
    m->n = 0;
    for (size_t i = 0; i < r->elements; i++) {
        const redisReply *e = r->element[i];
        if (e->type != REDIS_REPLY_ARRAY || e->elements < 3 ||
            !int_in(e->element[0], 0, REDIS_CLUSTER_SLOTS - 1) ||
            !int_in(e->element[1], e->element[0]->integer, REDIS_CLUSTER_SLOTS - 1))
            return "a slot range out of shape";
        const redisReply *addr = e->element[2];
        if (addr->type != REDIS_REPLY_ARRAY || addr->elements < 2 ||
            addr->element[0]->type != REDIS_REPLY_STRING || !int_in(addr->element[1], 1, 65535))
            return "a master address out of shape";
        const redisReply *h = addr->element[0];
        const char *host = h->len ? h->str : asked;
        size_t hlen = h->len ? h->len : strlen(asked);
        if (hlen == 1 && host[0] == '?')
            return "a master without a known address";
        if (!host_valid(host, hlen))
            return "a master address out of shape";
        int port = (int)addr->element[1]->integer;
        int j = 0;
        while (j < m->n && !(m->masters[j].port == port && strlen(m->masters[j].host) == hlen &&
                             memcmp(m->masters[j].host, host, hlen) == 0))
            j++;
        if (j == m->n) {
            if (m->n == CLUSTER_MASTERS_MAX)
                return "more masters than Herald follows (64)";
            memcpy(m->masters[j].host, host, hlen);
            m->masters[j].host[hlen] = '\0';
            m->masters[j].port = port;
            m->n++;
        }
        for (long long s = e->element[0]->integer; s <= e->element[1]->integer; s++)
            m->owner[s] = (uint8_t)j;
    }
    return m->n ? NULL : "no slot is served";
}
