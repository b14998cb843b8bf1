#include "iplimit.h"

#include <stdlib.h>
#include <string.h>

#define IPLIMIT_BUCKETS 4096

struct ipcount {
    struct ipcount *next;
    long count;
    char ip[48];
};

struct iplimit {
    struct ipcount *buckets[IPLIMIT_BUCKETS];
};

static unsigned bucket(const char *ip)
{
    unsigned h = 2166136261u;
    for (; *ip; ip++)
        h = (h ^ (unsigned char)*ip) * 16777619u;
    return h % IPLIMIT_BUCKETS;
}

struct iplimit *iplimit_new(void)
{
    return calloc(1, sizeof(struct iplimit));
}

void iplimit_free(struct iplimit *t)
{
    if (!t)
        return;
    for (unsigned b = 0; b < IPLIMIT_BUCKETS; b++) {
        while (t->buckets[b]) {
            struct ipcount *c = t->buckets[b];
            t->buckets[b] = c->next;
            free(c);
        }
    }
    free(t);
}

static struct ipcount *find(struct iplimit *t, const char *ip)
{
    for (struct ipcount *c = t->buckets[bucket(ip)]; c; c = c->next)
        if (strcmp(c->ip, ip) == 0)
            return c;
    return NULL;
}

bool iplimit_full(struct iplimit *t, const char *ip, long max)
{
    struct ipcount *c = find(t, ip);
    return c && c->count >= max;
}

struct ipcount *iplimit_acquire(struct iplimit *t, const char *ip)
{
    struct ipcount *c = find(t, ip);
    if (!c) {
        c = calloc(1, sizeof *c);
        if (!c)
            return NULL;
        strncpy(c->ip, ip, sizeof c->ip - 1);
        unsigned b = bucket(ip);
        c->next = t->buckets[b];
        t->buckets[b] = c;
    }
    c->count++;
    return c;
}

/* An address with no connection left is forgotten, so the table holds only live ones. */
void iplimit_release(struct iplimit *t, struct ipcount *c)
{
    if (!c || --c->count > 0)
        return;
    struct ipcount **p = &t->buckets[bucket(c->ip)];
    while (*p && *p != c)
        p = &(*p)->next;
    if (*p)
        *p = c->next;
    free(c);
}
