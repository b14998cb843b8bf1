#include "hub.h"
#include "bus.h"
#include "envelope.h"
#include "frame.h"
#include "herald.h"
#include "log.h"
#include "presence.h"
#include "presence_event.h"
#include "registry.h"
#include "sequence.h"

#include <stdlib.h>
#include <string.h>
#include <uv.h>

#define HUB_TICK_MS       50
#define HUB_HEAD_CHECK_MS 2000

struct hub {
    struct herald *app;
    struct registry *reg;
    struct seq *seq; /* ordering, holds, caches, head lookups and delivery (sequence.c) */
    uv_timer_t timer;
    uint64_t last_head_check_ms;
    struct log_limit invalid_log;
};

struct hub *hub_new(struct herald *app)
{
    struct hub *hub = calloc(1, sizeof *hub);
    if (!hub)
        return NULL;
    hub->app = app;
    hub->reg = registry_new();
    hub->seq = hub->reg ? seq_new(app, hub->reg) : NULL;
    if (!hub->seq) {
        registry_free(hub->reg, NULL, NULL);
        free(hub);
        return NULL;
    }
    uv_timer_init(app->loop, &hub->timer);
    hub->timer.data = hub;
    return hub;
}

void hub_tick(struct hub *hub, uint64_t now)
{
    bool heads = now - hub->last_head_check_ms >= HUB_HEAD_CHECK_MS;
    if (heads)
        hub->last_head_check_ms = now;
    seq_tick(hub->seq, now, heads);
}

static void on_tick(uv_timer_t *t)
{
    struct hub *hub = t->data;
    hub_tick(hub, herald_now_ms(hub->app));
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

static void release(struct channel *ch, void *arg)
{
    seq_release(arg, ch);
}

void hub_free(struct hub *hub)
{
    if (!hub)
        return;
    registry_free(hub->reg, release, hub->seq);
    seq_free(hub->seq);
    free(hub);
}

size_t hub_channel_count(const struct hub *hub)
{
    return registry_count(hub->reg);
}

uint64_t hub_known_head(const struct hub *hub, const char *name, size_t len)
{
    const struct channel *ch = registry_find(hub->reg, name, len);
    return ch && ch->baseline ? seq_known_head(ch) : 0;
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
    seq_maybe_forget(hub->seq, ch);
    /* SUBSCRIBING / UNSUBSCRIBING: decided when Redis answers */
}

bool hub_is_member(const struct subscriber *s, const char *name, size_t len)
{
    return registry_has(s, name, len);
}

static void leave(struct hub *hub, struct subscriber *s, int slot)
{
    struct channel *ch = s->refs[slot].ch;
    registry_unwait(ch, s);
    registry_leave(s, slot);
    hub->app->metrics.subscriptions--;
    channel_release(hub, ch);
}

int hub_subscribe(struct hub *hub, struct subscriber *s, const char *name, size_t len,
                  const char *id_json, const struct resume *resume)
{
    struct channel *ch = registry_find(hub->reg, name, len);
    if (!ch && !(ch = registry_create(hub->reg, name, len)))
        return -1;
    struct member *m = registry_member(ch, s);
    if (m && registry_waiting(ch, s))
        return HUB_PENDING;
    if (registry_wait(ch, s, id_json, resume) < 0 || (!m && registry_join(ch, s) < 0)) {
        registry_unwait(ch, s);
        channel_release(hub, ch); /* a channel created for nothing goes again */
        return -1;
    }
    if (m) {
        m->ready = false; /* a second subscribe is answered like the first */
        m->refused = false;
    } else
        hub->app->metrics.subscriptions++;
    if (ch->redis == R_IDLE)
        request_subscribe(hub, ch);
    else if (ch->redis == R_ACTIVE)
        seq_answer_waiters(hub->seq, ch);
    return 0;
}

void hub_unsubscribe(struct hub *hub, struct subscriber *s, const char *name, size_t len)
{
    struct channel *ch = registry_find(hub->reg, name, len);
    int slot = ch ? registry_slot(s, ch) : -1;
    if (slot >= 0)
        leave(hub, s, slot);
}

void hub_drop_refused(struct hub *hub, struct subscriber *s)
{
    for (int i = s->n - 1; i >= 0; i--) {
        struct member *m = registry_member(s->refs[i].ch, s);
        if (m && m->refused)
            leave(hub, s, i);
    }
}

void hub_client_gone(struct hub *hub, struct subscriber *s)
{
    while (s->n > 0)
        leave(hub, s, s->n - 1);
    free(s->refs);
    s->refs = NULL;
    s->n = s->cap = 0;
}

static void resubscribe(struct channel *ch, void *arg)
{
    struct hub *hub = arg;
    if (ch->redis == R_IDLE && ch->nmembers > 0)
        request_subscribe(hub, ch);
}

/* Every channel that has members gets its subscription back after a (re)connect. */
static void hub_on_bus_up(struct hub *hub)
{
    registry_each(hub->reg, resubscribe, hub);
}

struct shard_down {
    struct hub *hub;
    int shard;
};

static void unsubscribed(struct channel *ch, void *arg)
{
    const struct shard_down *d = arg;
    struct hub *hub = d->hub;
    if (bus_shard_of(hub->app->bus, ch->name, ch->len) != d->shard)
        return;
    ch->redis = R_IDLE;
    seq_maybe_forget(hub->seq, ch);
}

/* A Redis server's connection is gone and every subscription it carried; those channels
 * without members go. The others are untouched. */
static void hub_on_bus_down(struct hub *hub, int shard)
{
    registry_each(hub->reg, unsubscribed, &(struct shard_down){hub, shard});
}

static void hub_on_subscribed(struct hub *hub, const char *name, size_t len)
{
    struct channel *ch = registry_find(hub->reg, name, len);
    if (!ch || ch->redis != R_SUBSCRIBING)
        return;
    ch->redis = R_ACTIVE;
    if (ch->nmembers == 0)
        channel_release(hub, ch);
    else
        seq_on_active(hub->seq, ch);
}

static void hub_on_unsubscribed(struct hub *hub, const char *name, size_t len)
{
    struct channel *ch = registry_find(hub->reg, name, len);
    if (!ch || ch->redis != R_UNSUBSCRIBING)
        return;
    ch->redis = R_IDLE;
    if (ch->nmembers > 0)
        request_subscribe(hub, ch);
    else
        seq_maybe_forget(hub->seq, ch);
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
 * payloads are wrapped and delivered at once; on a presence channel, a join or leave
 * (presence.h) goes out as it is. Data over HERALD_MAX_PUBLISH_BYTES (a raw
 * payload is its own data; an envelope may add CONFIG_ENVELOPE_OVERHEAD around it) is no
 * message any publisher could send: dropped, so that every queue can take what is left. */
static void hub_on_message(struct hub *hub, const char *name, size_t len, const char *payload,
                           size_t plen)
{
    struct channel *ch = registry_find(hub->reg, name, len);
    if (!ch || ch->nmembers == 0)
        return;
    hub->app->metrics.redis_messages++;
    size_t max = (size_t)hub->app->cfg->max_publish_bytes;
    if (plen > max + CONFIG_ENVELOPE_OVERHEAD) { /* not even parsed */
        note_invalid(hub, ch, "payload larger than HERALD_MAX_PUBLISH_BYTES");
        return;
    }
    if (presence_event_kind(payload, plen) != PRESENCE_NONE && hub->app->presence &&
        presence_enabled(hub->app->presence, ch->name, ch->len)) {
        const char *why = NULL;
        struct frame *f =
            presence_event_frame(hub->app->presence, ch->name, ch->len, payload, plen, &why);
        if (f)
            seq_deliver(ch, f);
        else
            note_invalid(hub, ch, why);
        frame_unref(f);
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
        seq_on_live(hub->seq, ch, payload, plen, info.seq);
        return;
    }
    struct frame *f = frame_new(envelope_raw_size(ch->len, plen));
    if (f) {
        envelope_write_raw((char *)frame_payload(f), ch->name, ch->len, payload, plen);
        seq_deliver(ch, f);
    }
    frame_unref(f);
}

const char *hub_channel_name(const struct subscriber *s, uint16_t i)
{
    return s->refs[i].ch->name;
}

const char *hub_channel_epoch(const struct subscriber *s, uint16_t i)
{
    const struct channel *ch = s->refs[i].ch;
    return ch->baseline && ch->epoch[0] ? ch->epoch : NULL;
}

void hub_client_drained(struct hub *hub, struct subscriber *s)
{
    for (int i = s->n - 1; i >= 0; i--)
        if (i < s->n) /* a replay answered may have ended a subscription */
            seq_drained(hub->seq, s->refs[i].ch, s);
}

/* The bus_events table: arg is the hub. */
static void ev_up(void *arg)
{
    hub_on_bus_up(arg);
}

static void ev_down(void *arg, int shard)
{
    hub_on_bus_down(arg, shard);
}

static void ev_subscribed(void *arg, const char *name, size_t len)
{
    hub_on_subscribed(arg, name, len);
}

static void ev_unsubscribed(void *arg, const char *name, size_t len)
{
    hub_on_unsubscribed(arg, name, len);
}

static void ev_message(void *arg, const char *name, size_t len, const char *payload, size_t plen)
{
    hub_on_message(arg, name, len, payload, plen);
}

void hub_bus_events(struct hub *hub, struct bus_events *ev)
{
    *ev = (struct bus_events){.arg = hub,
                              .up = ev_up,
                              .down = ev_down,
                              .subscribed = ev_subscribed,
                              .unsubscribed = ev_unsubscribed,
                              .message = ev_message};
}
