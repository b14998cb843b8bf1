#include "hub.h"
#include "bus.h"
#include "registry.h"
#include "client.h"
#include "envelope.h"
#include "frame.h"
#include "herald.h"
#include "log.h"
#include "protocol.h"

#include <stdlib.h>
#include <string.h>
#include <uv.h>

#define HUB_TICK_MS       50
#define HUB_HEAD_CHECK_MS 2000

struct hub {
    struct herald *app;
    struct channel **buckets;
    uint32_t nbuckets; /* a power of two */
    struct seq *seq;   /* ordering, holds, caches and head lookups (sequence.c) */
    size_t count;
    uv_timer_t timer;
    uint64_t last_head_check_ms;
    struct log_limit invalid_log;
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
    hub->seq = seq_new(hub);
    if (!hub->buckets || !hub->seq) {
        free(hub->buckets);
        seq_free(hub->seq);
        free(hub);
        return NULL;
    }
    uv_timer_init(app->loop, &hub->timer);
    hub->timer.data = hub;
    return hub;
}

static void on_tick(uv_timer_t *t)
{
    struct hub *hub = t->data;
    uint64_t now = herald_now_ms(hub->app);
    bool heads = now - hub->last_head_check_ms >= HUB_HEAD_CHECK_MS;
    if (heads)
        hub->last_head_check_ms = now;
    seq_tick(hub, now, heads);
}

void hub_start(struct hub *hub)
{
    uv_timer_start(&hub->timer, on_tick, HUB_TICK_MS, HUB_TICK_MS);
}

void hub_stop(struct hub *hub)
{
    uv_timer_stop(&hub->timer);
    uv_close((uv_handle_t *)&hub->timer, NULL);
}

static void channel_free(struct hub *hub, struct channel *ch)
{
    for (uint32_t i = 0; i < ch->nwaiters; i++)
        free(ch->waiters[i].id_json);
    seq_release(hub, ch);
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
            channel_free(hub, ch);
            ch = next;
        }
    }
    free(hub->buckets);
    seq_free(hub->seq);
    free(hub);
}

struct herald *hub_app(const struct hub *hub)
{
    return hub->app;
}

size_t hub_channel_count(const struct hub *hub)
{
    return hub->count;
}

struct channel *hub_find(const struct hub *hub, const char *name, size_t len)
{
    uint32_t h = hash_name(name, len);
    for (struct channel *ch = hub->buckets[h & (hub->nbuckets - 1)]; ch; ch = ch->next)
        if (ch->hash == h && ch->len == len && memcmp(ch->name, name, len) == 0)
            return ch;
    return NULL;
}

struct seq *hub_seq(const struct hub *hub)
{
    return hub->seq;
}

void hub_each(struct hub *hub, void (*fn)(struct hub *hub, struct channel *ch, void *arg),
              void *arg)
{
    for (uint32_t b = 0; b < hub->nbuckets; b++) {
        struct channel *ch = hub->buckets[b];
        while (ch) {
            struct channel *next = ch->next; /* fn may forget ch */
            fn(hub, ch, arg);
            ch = next;
        }
    }
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

void hub_maybe_forget(struct hub *hub, struct channel *ch)
{
    if (ch->nmembers > 0 || ch->redis != R_IDLE || ch->queries > 0)
        return;
    struct channel **p = &hub->buckets[ch->hash & (hub->nbuckets - 1)];
    while (*p != ch)
        p = &(*p)->next;
    *p = ch->next;
    hub->count--;
    channel_free(hub, ch);
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
            ch->redis = R_IDLE; /* the bus is down: nothing to undo */
    }
    hub_maybe_forget(hub, ch);
    /* SUBSCRIBING / UNSUBSCRIBING: decided when Redis answers */
}

static bool has_waiter(const struct channel *ch, const struct client *c)
{
    for (uint32_t i = 0; i < ch->nwaiters; i++)
        if (ch->waiters[i].c == c)
            return true;
    return false;
}

static int add_waiter(struct channel *ch, struct client *c, const char *id_json,
                      const struct resume *resume)
{
    struct waiter *w = realloc(ch->waiters, (ch->nwaiters + 1) * sizeof *w);
    if (!w)
        return -1;
    ch->waiters = w;
    char *id = id_json ? strdup(id_json) : NULL;
    if (id_json && !id)
        return -1;
    struct waiter *nw = &w[ch->nwaiters++];
    *nw = (struct waiter){.c = c, .id_json = id, .resume = resume != NULL};
    if (resume) {
        nw->since = resume->since;
        snprintf(nw->epoch, sizeof nw->epoch, "%s", resume->epoch ? resume->epoch : "");
    }
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

struct member *hub_member(struct channel *ch, const struct client *c)
{
    int slot = find_slot(c, ch);
    return slot < 0 ? NULL : &ch->members[c->subs[slot].pos];
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
    ch->members[ch->nmembers] = (struct member){.c = c, .slot = c->nsubs};
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
                  const char *id_json, const struct resume *resume)
{
    struct channel *ch = hub_find(hub, name, len);
    if (!ch && !(ch = channel_create(hub, name, len)))
        return -1;
    struct member *m = hub_member(ch, c);
    if (m && has_waiter(ch, c))
        return HUB_PENDING;
    if (!m && link_member(ch, c) < 0) {
        channel_release(hub, ch);
        return -1;
    }
    if (m)
        m->ready = false; /* a second subscribe is answered like the first */
    if (add_waiter(ch, c, id_json, resume) < 0)
        return -1;
    if (ch->redis == R_IDLE)
        request_subscribe(hub, ch);
    else if (ch->redis == R_ACTIVE)
        seq_progress(hub, ch);
    return 0;
}

void hub_unsubscribe(struct hub *hub, struct client *c, const char *name, size_t len)
{
    struct channel *ch = hub_find(hub, name, len);
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

static void resubscribe(struct hub *hub, struct channel *ch, void *arg)
{
    if (ch->redis == R_IDLE && ch->nmembers > 0)
        request_subscribe(hub, ch);
}

/* Every channel that has members gets its subscription back after a (re)connect. */
void hub_on_bus_up(struct hub *hub)
{
    hub_each(hub, resubscribe, NULL);
}

static void unsubscribed(struct hub *hub, struct channel *ch, void *arg)
{
    if (bus_shard_of(hub->app->bus, ch->name, ch->len) != *(const int *)arg)
        return;
    ch->redis = R_IDLE;
    hub_maybe_forget(hub, ch);
}

/* A Redis server's connection is gone and every subscription it carried; those channels
 * without members go. The others are untouched. */
void hub_on_bus_down(struct hub *hub, int shard)
{
    hub_each(hub, unsubscribed, &shard);
}

void hub_on_subscribed(struct hub *hub, const char *name, size_t len)
{
    struct channel *ch = hub_find(hub, name, len);
    if (!ch || ch->redis != R_SUBSCRIBING)
        return;
    ch->redis = R_ACTIVE;
    if (ch->nmembers == 0)
        channel_release(hub, ch);
    else
        seq_on_active(hub, ch);
}

void hub_on_unsubscribed(struct hub *hub, const char *name, size_t len)
{
    struct channel *ch = hub_find(hub, name, len);
    if (!ch || ch->redis != R_UNSUBSCRIBING)
        return;
    ch->redis = R_IDLE;
    if (ch->nmembers > 0)
        request_subscribe(hub, ch);
    else
        hub_maybe_forget(hub, ch);
}

void hub_deliver(struct hub *hub, struct channel *ch, struct frame *f)
{
    for (uint32_t i = 0; i < ch->nmembers; i++) {
        struct member *m = &ch->members[i];
        if (!m->ready || (f->seq && f->seq <= m->last_seq))
            continue;
        client_send(m->c, f);
        if (f->seq)
            m->last_seq = f->seq;
    }
}

/* Counts a dropped payload and logs it at most once a second. */
static void note_invalid(struct hub *hub, const struct channel *ch, const char *why)
{
    hub->app->metrics.invalid_payloads++;
    uint64_t skipped;
    if (log_limit_pass(&hub->invalid_log, herald_now_ms(hub->app), &skipped))
        log_warn("invalid_payload",
                 "dropped a payload on channel %s: %s (%llu more since last log)", ch->name, why,
                 (unsigned long long)skipped);
}

/* One parse per message per process: sequenced envelopes go through the sequencer; raw
 * payloads are wrapped and delivered at once. Data over HERALD_MAX_PUBLISH_BYTES (a raw
 * payload is its own data; an envelope may add CONFIG_ENVELOPE_OVERHEAD around it) is no
 * message any publisher could send: dropped, so that every queue can take what is left. */
void hub_on_message(struct hub *hub, const char *name, size_t len, const char *payload, size_t plen)
{
    struct channel *ch = hub_find(hub, name, len);
    if (!ch || ch->nmembers == 0)
        return;
    hub->app->metrics.redis_messages++;
    size_t max = (size_t)hub->app->cfg->max_publish_bytes;
    if (plen > max + CONFIG_ENVELOPE_OVERHEAD) { /* not even parsed */
        note_invalid(hub, ch, "payload larger than HERALD_MAX_PUBLISH_BYTES");
        return;
    }
    struct payload_info info;
    envelope_classify(ch->name, ch->len, payload, plen, &info);
    if (info.kind == PAYLOAD_RAW && plen > max) {
        info.kind = PAYLOAD_INVALID;
        info.error = "payload larger than HERALD_MAX_PUBLISH_BYTES";
    }
    if (info.kind == PAYLOAD_INVALID) {
        note_invalid(hub, ch, info.error);
        return;
    }
    if (info.kind == PAYLOAD_SEQUENCED) {
        seq_on_live(hub, ch, payload, plen, info.seq);
        return;
    }
    struct frame *f = frame_new(envelope_raw_size(ch->len, plen));
    if (f) {
        envelope_write_raw((char *)frame_payload(f), ch->name, ch->len, payload, plen);
        hub_deliver(hub, ch, f);
    }
    frame_unref(f);
}

void hub_client_drained(struct hub *hub, struct client *c)
{
    for (int i = c->nsubs - 1; i >= 0; i--)
        if (i < c->nsubs)
            seq_client_drained(hub, c->subs[i].ch, c);
}
