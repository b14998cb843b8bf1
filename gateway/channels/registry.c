#include "registry.h"
#include "shard.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct registry {
    struct channel **buckets;
    uint32_t nbuckets; /* a power of two */
    size_t count;
};

/* The low 32 bits of the FNV-1a that shard_of() uses too (shard.h). */
static uint32_t hash_name(const char *s, size_t n)
{
    return (uint32_t)shard_hash(s, n);
}

struct registry *registry_new(void)
{
    struct registry *r = calloc(1, sizeof *r);
    if (!r)
        return NULL;
    r->nbuckets = 1024;
    if (!(r->buckets = calloc(r->nbuckets, sizeof *r->buckets))) {
        free(r);
        return NULL;
    }
    return r;
}

static void channel_free(struct channel *ch)
{
    for (uint32_t i = 0; i < ch->nwaiters; i++)
        free(ch->waiters[i].id_json);
    free(ch->waiters);
    free(ch->members);
    free(ch);
}

void registry_free(struct registry *r, void (*release)(struct channel *ch, void *arg), void *arg)
{
    if (!r)
        return;
    for (uint32_t b = 0; b < r->nbuckets; b++) {
        struct channel *ch = r->buckets[b];
        while (ch) {
            struct channel *next = ch->next;
            if (release)
                release(ch, arg);
            channel_free(ch);
            ch = next;
        }
    }
    free(r->buckets);
    free(r);
}

size_t registry_count(const struct registry *r)
{
    return r->count;
}

struct channel *registry_find(const struct registry *r, const char *name, size_t len)
{
    uint32_t h = hash_name(name, len);
    for (struct channel *ch = r->buckets[h & (r->nbuckets - 1)]; ch; ch = ch->next)
        if (ch->hash == h && ch->len == len && memcmp(ch->name, name, len) == 0)
            return ch;
    return NULL;
}

void registry_each(struct registry *r, void (*fn)(struct channel *ch, void *arg), void *arg)
{
    for (uint32_t b = 0; b < r->nbuckets; b++) {
        struct channel *ch = r->buckets[b];
        while (ch) {
            struct channel *next = ch->next; /* fn may remove ch */
            fn(ch, arg);
            ch = next;
        }
    }
}

/* Doubles the bucket array when the table is more than 75% full. */
static void maybe_grow(struct registry *r)
{
    if (r->count * 4 < (size_t)r->nbuckets * 3)
        return;
    uint32_t n = r->nbuckets * 2;
    struct channel **b = calloc(n, sizeof *b);
    if (!b)
        return; /* longer chains, still correct */
    for (uint32_t i = 0; i < r->nbuckets; i++) {
        struct channel *ch = r->buckets[i];
        while (ch) {
            struct channel *next = ch->next;
            ch->next = b[ch->hash & (n - 1)];
            b[ch->hash & (n - 1)] = ch;
            ch = next;
        }
    }
    free(r->buckets);
    r->buckets = b;
    r->nbuckets = n;
}

struct channel *registry_create(struct registry *r, const char *name, size_t len)
{
    struct channel *ch = calloc(1, sizeof *ch + len + 1);
    if (!ch)
        return NULL;
    ch->hash = hash_name(name, len);
    ch->len = len;
    memcpy(ch->name, name, len);
    maybe_grow(r);
    struct channel **head = &r->buckets[ch->hash & (r->nbuckets - 1)];
    ch->next = *head;
    *head = ch;
    r->count++;
    return ch;
}

void registry_remove(struct registry *r, struct channel *ch)
{
    struct channel **p = &r->buckets[ch->hash & (r->nbuckets - 1)];
    while (*p != ch)
        p = &(*p)->next;
    *p = ch->next;
    r->count--;
    channel_free(ch);
}

/* ------------------------------------------------------------------------------------------
 * Membership: ch->members[pos] and s->refs[slot] point at each other */

int registry_slot(const struct subscriber *s, const struct channel *ch)
{
    for (int i = 0; i < s->n; i++)
        if (s->refs[i].ch == ch)
            return i;
    return -1;
}

struct member *registry_member(struct channel *ch, const struct subscriber *s)
{
    int slot = registry_slot(s, ch);
    return slot < 0 ? NULL : &ch->members[s->refs[slot].pos];
}

bool registry_has(const struct subscriber *s, const char *name, size_t len)
{
    for (int i = 0; i < s->n; i++)
        if (s->refs[i].ch->len == len && memcmp(s->refs[i].ch->name, name, len) == 0)
            return true;
    return false;
}

int registry_join(struct channel *ch, struct subscriber *s)
{
    if (ch->nmembers == ch->cap) {
        uint32_t cap = ch->cap ? ch->cap * 2 : 4;
        struct member *m = realloc(ch->members, cap * sizeof *m);
        if (!m)
            return -1;
        ch->members = m;
        ch->cap = cap;
    }
    if (s->n == s->cap) {
        uint16_t cap = s->cap ? (uint16_t)(s->cap * 2) : 2;
        struct sub_ref *refs = realloc(s->refs, cap * sizeof *refs);
        if (!refs)
            return -1;
        s->refs = refs;
        s->cap = cap;
    }
    ch->members[ch->nmembers] = (struct member){.sub = s, .slot = s->n};
    s->refs[s->n++] = (struct sub_ref){ch, ch->nmembers++};
    return 0;
}

/* Swaps the last entry of each side into the hole, fixing the moved entry's back-reference. */
void registry_leave(struct subscriber *s, int slot)
{
    struct channel *ch = s->refs[slot].ch;
    uint32_t pos = s->refs[slot].pos;

    struct member last_m = ch->members[--ch->nmembers];
    if (pos != ch->nmembers) {
        ch->members[pos] = last_m;
        last_m.sub->refs[last_m.slot].pos = pos;
    }
    struct sub_ref last_s = s->refs[--s->n];
    if ((uint32_t)slot != s->n) {
        s->refs[slot] = last_s;
        last_s.ch->members[last_s.pos].slot = (uint32_t)slot;
    }
}

/* ------------------------------------------------------------------------------------------
 * Waiters */

bool registry_waiting(const struct channel *ch, const struct subscriber *s)
{
    for (uint32_t i = 0; i < ch->nwaiters; i++)
        if (ch->waiters[i].sub == s)
            return true;
    return false;
}

int registry_wait(struct channel *ch, struct subscriber *s, const char *id_json,
                  const struct resume *resume)
{
    char *id = id_json ? strdup(id_json) : NULL;
    if (id_json && !id)
        return -1;
    struct waiter *w = realloc(ch->waiters, (ch->nwaiters + 1) * sizeof *w);
    if (!w) {
        free(id);
        return -1;
    }
    ch->waiters = w;
    struct waiter *nw = &w[ch->nwaiters++];
    *nw = (struct waiter){.sub = s, .id_json = id, .resume = resume != NULL};
    if (resume) {
        nw->since = resume->since;
        nw->last = resume->last;
        nw->strict = resume->strict;
        nw->paged = resume->paged;
        nw->oldest = resume->oldest;
        snprintf(nw->epoch, sizeof nw->epoch, "%s", resume->epoch ? resume->epoch : "");
    }
    return 0;
}

void registry_unwait(struct channel *ch, const struct subscriber *s)
{
    uint32_t j = 0;
    for (uint32_t i = 0; i < ch->nwaiters; i++) {
        if (ch->waiters[i].sub == s)
            free(ch->waiters[i].id_json);
        else
            ch->waiters[j++] = ch->waiters[i];
    }
    ch->nwaiters = j;
}
