#define _GNU_SOURCE /* memfd_create, SEEK_DATA */
#include "iplimit.h"
#include "log.h"

#include <arpa/inet.h>
#include <errno.h>
#include <pthread.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#define KEY_BYTES 16

/* One address and the connections each worker holds from it. An entry whose counts are all
 * zero is free. */
struct entry {
    unsigned char key[KEY_BYTES];
    uint32_t count[]; /* one column per worker */
};

/* The shared part, in one mapping made before the fork, so that every worker inherits it.
 * Open addressing with linear probing. */
struct table {
    pthread_mutex_t lock; /* process-shared and robust */
    size_t cap;           /* entries */
    size_t used;          /* entries taken; at most cap - 1, so that every probe ends */
    size_t entry_bytes;
    int workers;
    _Alignas(struct entry) unsigned char entries[];
};

/* One process's view of the table: which column is its own. */
struct iplimit {
    struct table *tab;
    size_t bytes; /* of the mapping */
    int fd;       /* the memory file behind it: tells which pages were ever written */
    int slot;
};

/* A counted connection. Entries move when others are removed; keys do not. */
struct ipcount {
    unsigned char key[KEY_BYTES];
};

static uint64_t fnv1a(const void *p, size_t n)
{
    const unsigned char *b = p;
    uint64_t h = 14695981039346656037ull;
    while (n--)
        h = (h ^ *b++) * 1099511628211ull;
    return h;
}

/* The key of an address as lws prints it. IPv4 as ::ffff:a.b.c.d, so that both spellings are
 * one key; IPv6 by its /64, the rest zero; anything else by a hash of the text, with bytes 8
 * to 15 all 0xff, which no address key has (IPv4 keys have zeros in 8 and 9, /64 keys in all
 * of them). */
static void key_of(const char *ip, unsigned char key[KEY_BYTES])
{
    struct in_addr a4;
    struct in6_addr a6;
    memset(key, 0, KEY_BYTES);
    if (inet_pton(AF_INET, ip, &a4) == 1) {
        key[10] = key[11] = 0xff;
        memcpy(key + 12, &a4, sizeof a4);
    } else if (inet_pton(AF_INET6, ip, &a6) == 1) {
        memcpy(key, &a6, IN6_IS_ADDR_V4MAPPED(&a6) ? KEY_BYTES : 8);
    } else {
        uint64_t h = fnv1a(ip, strlen(ip));
        memcpy(key, &h, sizeof h);
        memset(key + 8, 0xff, 8);
    }
}

static struct entry *at(struct table *t, size_t i)
{
    return (struct entry *)(t->entries + i * t->entry_bytes);
}

/* FNV-1a's low bits depend on the low bits of the bytes alone: MurmurHash3's finalizer mixes
 * every bit into them before the modulo. */
static size_t home(const struct table *t, const unsigned char *key)
{
    uint64_t h = fnv1a(key, KEY_BYTES);
    h = (h ^ h >> 33) * 0xff51afd7ed558ccdull;
    h = (h ^ h >> 33) * 0xc4ceb9fe1a85ec53ull;
    return (h ^ h >> 33) % t->cap;
}

/* Connections from the entry's address over every worker; 0 when the entry is free. */
static uint64_t total(const struct table *t, const struct entry *e)
{
    uint64_t n = 0;
    for (int w = 0; w < t->workers; w++)
        n += e->count[w];
    return n;
}

/* The entry of key, or the free entry where it would go. */
static size_t find(struct table *t, const unsigned char *key)
{
    size_t i = home(t, key);
    while (total(t, at(t, i)) && memcmp(at(t, i)->key, key, KEY_BYTES) != 0)
        i = (i + 1) % t->cap;
    return i;
}

/* Frees entry `hole` without leaving a tombstone (backward-shift deletion): each later entry
 * of its run that may move back fills the hole, which moves on to where it was. Every entry
 * stays reachable from its home with no free entry in between. */
static void remove_at(struct table *t, size_t hole)
{
    for (size_t j = (hole + 1) % t->cap; total(t, at(t, j)); j = (j + 1) % t->cap) {
        size_t h = home(t, at(t, j)->key);
        /* an entry whose home lies (cyclically) in (hole, j] would be cut off from it */
        bool stays = hole < j ? hole < h && h <= j : hole < h || h <= j;
        if (!stays) {
            memcpy(at(t, hole), at(t, j), t->entry_bytes);
            hole = j;
        }
    }
    memset(at(t, hole), 0, t->entry_bytes);
    t->used--;
}

/* Takes n of worker w's connections off entry i; frees the entry when none is left. */
static void drop(struct table *t, size_t i, int w, uint32_t n)
{
    at(t, i)->count[w] -= n;
    if (!total(t, at(t, i)))
        remove_at(t, i);
}

/* A worker holds the lock for a few hundred instructions with nothing in between that blocks,
 * so EOWNERDEAD means one was killed right there. The run it was changing may then be off
 * (some counts too low or too high, an entry left taken); the table stays usable, and the
 * supervisor clears that worker's column. */
static struct table *lock(struct iplimit *t)
{
    if (pthread_mutex_lock(&t->tab->lock) == EOWNERDEAD)
        pthread_mutex_consistent(&t->tab->lock);
    return t->tab;
}

static void unlock(struct iplimit *t)
{
    pthread_mutex_unlock(&t->tab->lock);
}

struct iplimit *iplimit_new(long max_connections, int workers)
{
    /* every taken entry is held by at least one connection: room for twice as many entries as
     * there can be connections keeps the table at most half full, so probes stay short */
    size_t cap = 2 * (size_t)max_connections * (size_t)workers;
    size_t entry_bytes = sizeof(struct entry) + (size_t)workers * sizeof(uint32_t);
    size_t bytes = offsetof(struct table, entries) + cap * entry_bytes;
    struct iplimit *t = calloc(1, sizeof *t);
    /* shared, so that the workers forked later count in this same table; a memory file
     * rather than an anonymous mapping so that iplimit_clear_slot can skip its holes: only
     * the pages that addresses land on take memory */
    int fd = t ? memfd_create("herald-iplimit", MFD_CLOEXEC) : -1;
    void *m = fd >= 0 && ftruncate(fd, (off_t)bytes) == 0
                  ? mmap(NULL, bytes, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_NORESERVE, fd, 0)
                  : MAP_FAILED;
    if (m == MAP_FAILED) {
        log_error("iplimit", "cannot map %zu bytes for the per-address connection counts: %s",
                  bytes, strerror(errno));
        if (fd >= 0)
            close(fd);
        free(t);
        return NULL;
    }
    struct table *tab = m; /* zero-filled: every entry free */
    tab->cap = cap;
    tab->entry_bytes = entry_bytes;
    tab->workers = workers;
    pthread_mutexattr_t a;
    pthread_mutexattr_init(&a);
    pthread_mutexattr_setpshared(&a, PTHREAD_PROCESS_SHARED);
    pthread_mutexattr_setrobust(&a, PTHREAD_MUTEX_ROBUST);
    pthread_mutex_init(&tab->lock, &a);
    pthread_mutexattr_destroy(&a);
    t->tab = tab;
    t->bytes = bytes;
    t->fd = fd;
    return t;
}

/* Unmaps this process's view only: the others may still use theirs (so the mutex stays). */
void iplimit_free(struct iplimit *t)
{
    if (!t)
        return;
    munmap(t->tab, t->bytes);
    close(t->fd);
    free(t);
}

void iplimit_set_slot(struct iplimit *t, int slot)
{
    t->slot = slot;
}

/* Only entries whose count sits on a page that was ever written can hold one: the holes of
 * the file are skipped, since reading them would make the kernel allocate the whole table. */
void iplimit_clear_slot(struct iplimit *t, int slot)
{
    struct table *tab = lock(t);
    off_t end = (off_t)t->bytes;
    off_t count0 = (off_t)(offsetof(struct table, entries) + sizeof(struct entry) +
                           (size_t)slot * sizeof(uint32_t)); /* of entry 0 */
    off_t step = (off_t)tab->entry_bytes;
    for (off_t data = 0; data < end;) {
        off_t hole = end;
        data = lseek(t->fd, data, SEEK_DATA);
        if (data < 0 && errno == ENXIO)
            break; /* no data past here */
        if (data < 0)
            data = 0; /* cannot tell: every entry */
        else if ((hole = lseek(t->fd, data, SEEK_HOLE)) < 0)
            hole = end;
        size_t i = data <= count0 ? 0 : (size_t)((data - count0 + step - 1) / step);
        for (; i < tab->cap && count0 + (off_t)i * step < hole; i++)
            while (at(tab, i)->count[slot]) /* drop may move another entry into i */
                drop(tab, i, slot, at(tab, i)->count[slot]);
        data = hole;
    }
    unlock(t);
}

bool iplimit_full(struct iplimit *t, const char *ip, long max)
{
    unsigned char key[KEY_BYTES];
    key_of(ip, key);
    struct table *tab = lock(t);
    uint64_t n = total(tab, at(tab, find(tab, key)));
    unlock(t);
    return (long long)n >= max;
}

struct ipcount *iplimit_acquire(struct iplimit *t, const char *ip)
{
    struct ipcount *c = malloc(sizeof *c);
    if (!c)
        return NULL;
    key_of(ip, c->key);
    struct table *tab = lock(t);
    struct entry *e = at(tab, find(tab, c->key));
    bool taken = total(tab, e) > 0;
    bool fits = taken || tab->used + 1 < tab->cap;
    if (fits && !taken) {
        tab->used++;
        memcpy(e->key, c->key, KEY_BYTES);
    }
    if (fits)
        e->count[t->slot]++;
    unlock(t);
    if (fits)
        return c;
    free(c);
    return NULL;
}

void iplimit_release(struct iplimit *t, struct ipcount *c)
{
    if (!c)
        return;
    struct table *tab = lock(t);
    size_t i = find(tab, c->key);
    if (at(tab, i)->count[t->slot]) /* 0 only if a killed worker left the table off */
        drop(tab, i, t->slot, 1);
    unlock(t);
    free(c);
}
