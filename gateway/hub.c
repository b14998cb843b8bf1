#include "hub.h"
#include "bus.h"
#include "client.h"
#include "envelope.h"
#include "frame.h"
#include "herald.h"
#include "log.h"
#include "protocol.h"

#include <stdlib.h>
#include <string.h>

/* Where the channel's Redis subscription stands. A new SUBSCRIBE or UNSUBSCRIBE is sent only
 * from IDLE or ACTIVE: hiredis 0.14 keys its callbacks by channel name, so overlapping
 * requests for one channel would lose the callback. */
enum redis_state { R_IDLE, R_SUBSCRIBING, R_ACTIVE, R_UNSUBSCRIBING };

/* A channel's side of a subscription; `slot` is the index in the client's subs array. */
struct member {
    struct client *c;
    uint32_t slot;
};

/* A client waiting for its `subscribed` reply until Redis confirms. */
struct waiter {
    struct client *c;
    char *id_json;
};

struct channel {
    struct channel *next; /* hash bucket chain */
    uint32_t hash;
    uint32_t nmembers, cap;
    struct member *members;
    struct waiter *waiters;
    uint32_t nwaiters;
    uint8_t redis;
    uint64_t last_seq; /* highest seq delivered live */
    size_t len;
    char name[];
};

struct hub {
    struct herald *app;
    struct channel **buckets;
    uint32_t nbuckets; /* a power of two */
    size_t count;
    uint64_t last_invalid_log_ms;
    uint64_t invalid_unlogged;
};

static uint32_t hash_name(const char *s, size_t n)
{
    uint32_t h = 2166136261u; /* FNV-1a */
    for (size_t i = 0; i < n; i++)
        h = (h ^ (uint8_t)s[i]) * 16777619u;
    return h;
}

struct hub *hub_new(struct herald *app)
{
    struct hub *hub = calloc(1, sizeof *hub);
    if (!hub)
        return NULL;
    hub->app = app;
    hub->nbuckets = 1024;
    hub->buckets = calloc(hub->nbuckets, sizeof *hub->buckets);
    if (!hub->buckets) {
        free(hub);
        return NULL;
    }
    return hub;
}

static void channel_free(struct channel *ch)
{
    for (uint32_t i = 0; i < ch->nwaiters; i++)
        free(ch->waiters[i].id_json);
    free(ch->waiters);
    free(ch->members);
    free(ch);
}

void hub_free(struct hub *hub)
{
    if (!hub)
        return;
    for (uint32_t b = 0; b < hub->nbuckets; b++) {
        struct channel *ch = hub->buckets[b];
        while (ch) {
            struct channel *next = ch->next;
            channel_free(ch);
            ch = next;
        }
    }
    free(hub->buckets);
    free(hub);
}

size_t hub_channel_count(const struct hub *hub)
{
    return hub->count;
}

static struct channel *lookup(const struct hub *hub, const char *name, size_t len)
{
    uint32_t h = hash_name(name, len);
    for (struct channel *ch = hub->buckets[h & (hub->nbuckets - 1)]; ch; ch = ch->next)
        if (ch->hash == h && ch->len == len && memcmp(ch->name, name, len) == 0)
            return ch;
    return NULL;
}

/* Doubles the bucket array when the table is more than 75% full. */
static void maybe_grow(struct hub *hub)
{
    if (hub->count * 4 < (size_t)hub->nbuckets * 3)
        return;
    uint32_t n = hub->nbuckets * 2;
    struct channel **b = calloc(n, sizeof *b);
    if (!b)
        return; /* longer chains, still correct */
    for (uint32_t i = 0; i < hub->nbuckets; i++) {
        struct channel *ch = hub->buckets[i];
        while (ch) {
            struct channel *next = ch->next;
            ch->next = b[ch->hash & (n - 1)];
            b[ch->hash & (n - 1)] = ch;
            ch = next;
        }
    }
    free(hub->buckets);
    hub->buckets = b;
    hub->nbuckets = n;
}

static struct channel *channel_create(struct hub *hub, const char *name, size_t len)
{
    struct channel *ch = calloc(1, sizeof *ch + len + 1);
    if (!ch)
        return NULL;
    ch->hash = hash_name(name, len);
    ch->len = len;
    memcpy(ch->name, name, len);
    maybe_grow(hub);
    struct channel **head = &hub->buckets[ch->hash & (hub->nbuckets - 1)];
    ch->next = *head;
    *head = ch;
    hub->count++;
    return ch;
}

static void channel_remove(struct hub *hub, struct channel *ch)
{
    struct channel **p = &hub->buckets[ch->hash & (hub->nbuckets - 1)];
    while (*p != ch)
        p = &(*p)->next;
    *p = ch->next;
    hub->count--;
    channel_free(ch);
}

/* Asks Redis for the subscription when the bus can take commands; otherwise the channel
 * stays IDLE and hub_on_bus_up subscribes it. */
static void request_subscribe(struct hub *hub, struct channel *ch)
{
    if (bus_subscribe(hub->app->bus, ch->name, ch->len) == 0)
        ch->redis = R_SUBSCRIBING;
}

/* Called when a channel may have lost its last member: unsubscribe or forget it. */
static void channel_release(struct hub *hub, struct channel *ch)
{
    if (ch->nmembers > 0)
        return;
    if (ch->redis == R_ACTIVE) {
        if (bus_unsubscribe(hub->app->bus, ch->name, ch->len) == 0)
            ch->redis = R_UNSUBSCRIBING;
        else
            channel_remove(hub, ch); /* bus is down: nothing to undo */
    } else if (ch->redis == R_IDLE) {
        channel_remove(hub, ch);
    }
    /* SUBSCRIBING / UNSUBSCRIBING: decided when Redis answers */
}

static int add_waiter(struct channel *ch, struct client *c, const char *id_json)
{
    struct waiter *w = realloc(ch->waiters, (ch->nwaiters + 1) * sizeof *w);
    if (!w)
        return -1;
    ch->waiters = w;
    char *id = id_json ? strdup(id_json) : NULL;
    if (id_json && !id)
        return -1;
    w[ch->nwaiters++] = (struct waiter){c, id};
    return 0;
}

static void drop_waiters(struct channel *ch, struct client *c)
{
    uint32_t j = 0;
    for (uint32_t i = 0; i < ch->nwaiters; i++) {
        if (ch->waiters[i].c == c)
            free(ch->waiters[i].id_json);
        else
            ch->waiters[j++] = ch->waiters[i];
    }
    ch->nwaiters = j;
}

static int find_slot(const struct client *c, const struct channel *ch)
{
    for (int i = 0; i < c->nsubs; i++)
        if (c->subs[i].ch == ch)
            return i;
    return -1;
}

bool hub_is_member(const struct client *c, const char *name, size_t len)
{
    for (int i = 0; i < c->nsubs; i++)
        if (c->subs[i].ch->len == len && memcmp(c->subs[i].ch->name, name, len) == 0)
            return true;
    return false;
}

/* Adds the pair to both indexes. */
static int link_member(struct channel *ch, struct client *c)
{
    if (ch->nmembers == ch->cap) {
        uint32_t cap = ch->cap ? ch->cap * 2 : 4;
        struct member *m = realloc(ch->members, cap * sizeof *m);
        if (!m)
            return -1;
        ch->members = m;
        ch->cap = cap;
    }
    if (c->nsubs == c->subcap) {
        uint16_t cap = c->subcap ? (uint16_t)(c->subcap * 2) : 2;
        struct sub_ref *s = realloc(c->subs, cap * sizeof *s);
        if (!s)
            return -1;
        c->subs = s;
        c->subcap = cap;
    }
    ch->members[ch->nmembers] = (struct member){c, c->nsubs};
    c->subs[c->nsubs++] = (struct sub_ref){ch, ch->nmembers++};
    c->app->metrics.subscriptions++;
    return 0;
}

/* Removes the pair at client slot `slot` from both indexes (swap with the last entry on
 * each side, fixing the moved entry's back-reference). */
static void unlink_member(struct client *c, int slot)
{
    struct channel *ch = c->subs[slot].ch;
    uint32_t pos = c->subs[slot].pos;

    struct member last_m = ch->members[--ch->nmembers];
    if (pos != ch->nmembers) {
        ch->members[pos] = last_m;
        last_m.c->subs[last_m.slot].pos = pos;
    }
    struct sub_ref last_s = c->subs[--c->nsubs];
    if ((uint32_t)slot != c->nsubs) {
        c->subs[slot] = last_s;
        last_s.ch->members[last_s.pos].slot = (uint32_t)slot;
    }
    c->app->metrics.subscriptions--;
}

int hub_subscribe(struct hub *hub, struct client *c, const char *name, size_t len,
                  const char *id_json)
{
    struct channel *ch = lookup(hub, name, len);
    if (!ch && !(ch = channel_create(hub, name, len)))
        return -1;
    if (find_slot(c, ch) < 0 && link_member(ch, c) < 0) {
        channel_release(hub, ch);
        return -1;
    }
    if (ch->redis == R_ACTIVE) {
        reply_subscribed(c, ch->name, ch->last_seq, id_json);
        return 0;
    }
    if (add_waiter(ch, c, id_json) < 0)
        return -1;
    if (ch->redis == R_IDLE)
        request_subscribe(hub, ch);
    return 0;
}

void hub_unsubscribe(struct hub *hub, struct client *c, const char *name, size_t len)
{
    struct channel *ch = lookup(hub, name, len);
    int slot = ch ? find_slot(c, ch) : -1;
    if (slot < 0)
        return;
    drop_waiters(ch, c);
    unlink_member(c, slot);
    channel_release(hub, ch);
}

void hub_client_gone(struct hub *hub, struct client *c)
{
    while (c->nsubs > 0) {
        struct channel *ch = c->subs[c->nsubs - 1].ch;
        drop_waiters(ch, c);
        unlink_member(c, c->nsubs - 1);
        channel_release(hub, ch);
    }
}

/* Every channel that has members gets its subscription back after a (re)connect. */
void hub_on_bus_up(struct hub *hub)
{
    for (uint32_t b = 0; b < hub->nbuckets; b++)
        for (struct channel *ch = hub->buckets[b]; ch; ch = ch->next)
            if (ch->redis == R_IDLE && ch->nmembers > 0)
                request_subscribe(hub, ch);
}

/* The connection is gone and every subscription with it; channels without members go. */
void hub_on_bus_down(struct hub *hub)
{
    for (uint32_t b = 0; b < hub->nbuckets; b++) {
        struct channel *ch = hub->buckets[b];
        while (ch) {
            struct channel *next = ch->next;
            ch->redis = R_IDLE;
            if (ch->nmembers == 0)
                channel_remove(hub, ch);
            ch = next;
        }
    }
}

void hub_on_subscribed(struct hub *hub, const char *name, size_t len)
{
    struct channel *ch = lookup(hub, name, len);
    if (!ch || ch->redis != R_SUBSCRIBING)
        return;
    ch->redis = R_ACTIVE;
    for (uint32_t i = 0; i < ch->nwaiters; i++) {
        reply_subscribed(ch->waiters[i].c, ch->name, ch->last_seq, ch->waiters[i].id_json);
        free(ch->waiters[i].id_json);
    }
    ch->nwaiters = 0;
    channel_release(hub, ch);
}

void hub_on_unsubscribed(struct hub *hub, const char *name, size_t len)
{
    struct channel *ch = lookup(hub, name, len);
    if (!ch || ch->redis != R_UNSUBSCRIBING)
        return;
    ch->redis = R_IDLE;
    if (ch->nmembers > 0)
        request_subscribe(hub, ch);
    else
        channel_remove(hub, ch);
}

/* Logs a dropped payload at most once a second, with how many went unlogged. */
static void note_invalid(struct hub *hub, const struct channel *ch, const char *why)
{
    hub->app->metrics.invalid_payloads++;
    uint64_t now = herald_now_ms(hub->app);
    if (now - hub->last_invalid_log_ms < 1000 && hub->last_invalid_log_ms) {
        hub->invalid_unlogged++;
        return;
    }
    log_warn("invalid_payload", "dropped a payload on channel %s: %s (%llu more since last log)",
             ch->name, why, (unsigned long long)hub->invalid_unlogged);
    hub->last_invalid_log_ms = now;
    hub->invalid_unlogged = 0;
}

/* Builds the frame a payload becomes: sequenced envelopes byte for byte, raw payloads
 * wrapped. NULL when the payload is dropped. */
static struct frame *build_frame(struct hub *hub, struct channel *ch, const char *payload,
                                 size_t plen)
{
    struct payload_info info;
    envelope_classify(ch->name, ch->len, payload, plen, &info);
    switch (info.kind) {
    case PAYLOAD_INVALID:
        note_invalid(hub, ch, info.error);
        return NULL;
    case PAYLOAD_SEQUENCED:
        if (info.seq <= ch->last_seq) {
            hub->app->metrics.duplicates_dropped++;
            return NULL;
        }
        ch->last_seq = info.seq;
        return frame_from(payload, plen);
    case PAYLOAD_RAW:
    default: {
        struct frame *f = frame_new(envelope_raw_size(ch->len, plen));
        if (f)
            envelope_write_raw((char *)frame_payload(f), ch->name, ch->len, payload, plen);
        return f;
    }
    }
}

void hub_on_message(struct hub *hub, const char *name, size_t len, const char *payload, size_t plen)
{
    struct channel *ch = lookup(hub, name, len);
    if (!ch || ch->nmembers == 0)
        return;
    hub->app->metrics.redis_messages++;
    struct frame *f = build_frame(hub, ch, payload, plen);
    if (!f)
        return;
    for (uint32_t i = 0; i < ch->nmembers; i++)
        client_send(ch->members[i].c, f);
    frame_unref(f);
}
