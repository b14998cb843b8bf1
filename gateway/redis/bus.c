#include "bus.h"
#include "herald.h"
#include "backoff.h"
#include "cluster.h"
#include "log.h"
#include "resp_conn.h"
#include "resolve.h"
#include "sentinel.h"
#include "shard.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define BACKOFF_MIN_MS     100
#define BACKOFF_MAX_MS     5000
#define CONNECT_TIMEOUT_MS 3000
#define BEATS_BEFORE_DEAD  3

enum bus_state { BUS_DOWN, BUS_CONNECTING, BUS_UP };

/* One Redis server of HERALD_REDIS_URL and the channels shard_of() gives it. Each one
 * connects, proves itself with its own heartbeat and fails on its own. */
struct shard {
    struct bus *bus;
    int index;
    const struct redis_url *url;
    struct sentinel *sentinel; /* redis-sentinel://: where the master is; NULL: redis:// */
    int next_node;             /* redis-cluster:// in classic mode: the seed to try next */
    char host[256];            /* the server connected to: the URL's, or the master */
    int port;
    char label[300];           /* for logs and metrics: "host:port" or "sentinel/<master>" */
    struct resp_conn *sub;     /* SUBSCRIBE only */
    struct resp_conn *cmd;     /* PUBLISH and everything else */
    struct resolve *resolving; /* the host name's lookup, before connecting */
    enum bus_state state;
    bool sub_ready, cmd_ready;
    uint64_t state_since_ms;
    uint64_t last_beat_ms; /* 0: none since the last connect */
    uint64_t beat_seen_ms; /* the last heartbeat ever (kept across reconnects); 0: none */
    uint64_t beat_sent_ms; /* when the last one went out */
    uint64_t retry_at_ms;
    struct backoff backoff;
    bool ever_up;
};

struct bus {
    struct herald *app;
    struct bus_events ev; /* what the bus reports, to the layer above that handed it */
    struct shard shards[REDIS_URL_MAX];
    int nshards;
    /* redis-cluster:// with HERALD_REDIS_PUBSUB=sharded: the cluster does all the work;
     * in classic mode the cluster is one shard on any of its nodes (PUBLISH reaches every
     * node) */
    struct cluster *cluster;
    uv_timer_t timer; /* heartbeats, liveness checks, reconnects */
    /* Full Redis name of this instance's heartbeat channel. '#' cannot occur in a Herald
     * channel name, so no client can subscribe to it or unsubscribe it. */
    char beat_channel[256];
    size_t beat_len;
    size_t prefix_len;
};

static uint64_t now_ms(const struct bus *bus)
{
    return herald_now_ms(bus->app);
}

static void set_state(struct shard *sh, enum bus_state s)
{
    sh->state = s;
    sh->state_since_ms = now_ms(sh->bus);
}

/* Closes a connection: no event of it reaches us again (waiting replies get NULL). */
static void drop_conn(struct resp_conn **c)
{
    resp_conn_close(*c);
    *c = NULL;
}

/* Both connections go; the layer above forgets (`down`) the subscriptions this server
 * carried; a retry is scheduled after the shard's backoff (backoff.h). */
static void go_down(struct shard *sh, const char *why)
{
    struct bus *bus = sh->bus;
    bool was_up = sh->state == BUS_UP;
    if (sh->resolving)
        resolve_cancel(sh->resolving);
    sh->resolving = NULL;
    if (sh->sentinel)
        sentinel_cancel(sh->sentinel);
    drop_conn(&sh->sub);
    drop_conn(&sh->cmd);
    sh->sub_ready = sh->cmd_ready = false;
    sh->last_beat_ms = 0;
    set_state(sh, BUS_DOWN);
    uint64_t delay = backoff_next(&sh->backoff);
    sh->retry_at_ms = now_ms(bus) + delay;
    if (was_up)
        log_warn("redis_down", "Redis %s (%s:%d) connection lost (%s); reconnecting in %llu ms",
                 sh->label, sh->host, sh->port, why, (unsigned long long)delay);
    else
        log_warn("redis_retry", "Redis %s unavailable (%s); retrying in %llu ms", sh->label, why,
                 (unsigned long long)delay);
    bus->ev.down(bus->ev.arg, sh->index);
}

static void publish_beat(struct shard *sh)
{
    if (!sh->cmd_ready)
        return;
    sh->beat_sent_ms = now_ms(sh->bus);
    char stamp[24];
    int n = snprintf(stamp, sizeof stamp, "%llu", (unsigned long long)now_ms(sh->bus));
    const char *argv[] = {"PUBLISH", sh->bus->beat_channel, stamp};
    size_t lens[] = {7, strlen(sh->bus->beat_channel), (size_t)n};
    resp_conn_send(sh->cmd, NULL, NULL, 3, argv, lens);
}

/* Both connections are usable and the heartbeat channel is subscribed. */
static void maybe_up(struct shard *sh)
{
    struct bus *bus = sh->bus;
    if (sh->state != BUS_CONNECTING || !sh->sub_ready || !sh->cmd_ready)
        return;
    set_state(sh, BUS_UP);
    backoff_reset(&sh->backoff);
    if (sh->ever_up)
        bus->app->metrics.redis_reconnects++;
    sh->ever_up = true;
    log_info("redis_up", "connected to Redis %s at %s:%d", sh->label, sh->host, sh->port);
    publish_beat(sh);
    bus->ev.up(bus->ev.arg);
}

/* A message on the subscriber connection (its pushes); anything else unasked is a server
 * this bus does not understand. */
static void on_sub_push(void *arg, redisReply *reply)
{
    struct shard *sh = arg;
    struct bus *bus = sh->bus;
    if (reply->type != REDIS_REPLY_ARRAY || reply->elements != 3 ||
        reply->element[0]->type != REDIS_REPLY_STRING ||
        strcmp(reply->element[0]->str, "message") != 0 ||
        reply->element[1]->type != REDIS_REPLY_STRING ||
        reply->element[2]->type != REDIS_REPLY_STRING) {
        go_down(sh, "unexpected reply on the subscriber connection");
        return;
    }
    const redisReply *ch = reply->element[1];
    if (ch->len == bus->beat_len && memcmp(ch->str, bus->beat_channel, ch->len) == 0) {
        sh->last_beat_ms = sh->beat_seen_ms = now_ms(bus);
        return;
    }
    if (ch->len >= bus->prefix_len)
        bus->ev.message(bus->ev.arg, ch->str + bus->prefix_len, ch->len - bus->prefix_len,
                        reply->element[2]->str, reply->element[2]->len);
}

/* The answer to one SUBSCRIBE or UNSUBSCRIBE (one channel each), in order. */
static void on_sub_reply(void *arg, redisReply *reply)
{
    struct shard *sh = arg;
    if (!reply)
        return;
    struct bus *bus = sh->bus;
    if (reply->type != REDIS_REPLY_ARRAY || reply->elements < 2 ||
        reply->element[0]->type != REDIS_REPLY_STRING ||
        reply->element[1]->type != REDIS_REPLY_STRING) {
        char why[400];
        snprintf(why, sizeof why, "%s:%d refused SUBSCRIBE: %.100s", sh->host, sh->port,
                 reply->type == REDIS_REPLY_ERROR ? reply->str : "an answer out of shape");
        go_down(sh, why);
        return;
    }
    const char *kind = reply->element[0]->str;
    const redisReply *ch = reply->element[1];
    if (ch->len == bus->beat_len && memcmp(ch->str, bus->beat_channel, ch->len) == 0) {
        if (strcmp(kind, "subscribe") == 0) {
            sh->sub_ready = true;
            maybe_up(sh);
        }
        return;
    }
    if (ch->len < bus->prefix_len)
        return;
    const char *name = ch->str + bus->prefix_len;
    size_t len = ch->len - bus->prefix_len;
    if (strcmp(kind, "subscribe") == 0)
        bus->ev.subscribed(bus->ev.arg, name, len);
    else if (strcmp(kind, "unsubscribe") == 0)
        bus->ev.unsubscribed(bus->ev.arg, name, len);
}

/* The reply to AUTH or SELECT while a connection is being set up. */
static void on_setup_reply(void *arg, redisReply *reply)
{
    struct shard *sh = arg;
    if (reply && reply->type == REDIS_REPLY_ERROR) {
        char why[160];
        snprintf(why, sizeof why, "setup refused: %s", reply->str);
        log_error("redis_setup", "%s:%d: %s", sh->host, sh->port, why);
        go_down(sh, why);
    }
}

/* AUTH (with the ACL user when there is one) and SELECT, pipelined before anything else. */
static void send_setup(struct shard *sh, struct resp_conn *c, bool select_db)
{
    const struct redis_url *u = sh->url;
    resp_conn_send_auth(c, u->user, u->password, on_setup_reply, sh);
    if (select_db && u->db) {
        char db[16];
        int n = snprintf(db, sizeof db, "%d", u->db);
        const char *argv[] = {"SELECT", db};
        size_t lens[] = {6, (size_t)n};
        resp_conn_send(c, on_setup_reply, sh, 2, argv, lens);
    }
}

/* A sentinel's answer can be stale (it names a master that has just been demoted): the node
 * must say it is a master before the shard uses it. */
static void on_role_reply(void *arg, redisReply *reply)
{
    struct shard *sh = arg;
    if (!reply)
        return;
    const char *role = reply->type == REDIS_REPLY_ARRAY && reply->elements > 0 &&
                               reply->element[0]->type == REDIS_REPLY_STRING
                           ? reply->element[0]->str
                           : "unknown";
    if (strcmp(role, "master") != 0) {
        char why[320];
        snprintf(why, sizeof why, "%s:%d is not a master (role %.32s)", sh->host, sh->port, role);
        go_down(sh, why);
        return;
    }
    sh->cmd_ready = true;
    maybe_up(sh);
}

static int send_sub(struct shard *sh, const char *verb, const char *full, size_t len)
{
    const char *argv[] = {verb, full};
    size_t lens[] = {strlen(verb), len};
    return resp_conn_send(sh->sub, on_sub_reply, sh, 2, argv, lens);
}

static void on_sub_connected(void *arg)
{
    struct shard *sh = arg;
    send_setup(sh, sh->sub, false);
    send_sub(sh, "SUBSCRIBE", sh->bus->beat_channel, sh->bus->beat_len);
}

static void on_cmd_connected(void *arg)
{
    struct shard *sh = arg;
    send_setup(sh, sh->cmd, true);
    if (sh->sentinel) {
        const char *argv[] = {"ROLE"};
        size_t lens[] = {4};
        resp_conn_send(sh->cmd, on_role_reply, sh, 1, argv, lens);
        return;
    }
    sh->cmd_ready = true;
    maybe_up(sh);
}

/* One connection failed or ended: the shard goes down with both. */
static void on_sub_closed(void *arg, const char *why)
{
    struct shard *sh = arg;
    sh->sub = NULL;
    go_down(sh, why);
}

static void on_cmd_closed(void *arg, const char *why)
{
    struct shard *sh = arg;
    sh->cmd = NULL;
    go_down(sh, why);
}

static void on_cmd_push(void *arg, redisReply *reply)
{
    (void)reply;
    go_down(arg, "unexpected reply on the command connection");
}

/* addr: the URL's host, or the address it resolved to (numeric). */
static struct resp_conn *open_conn(struct shard *sh, const char *addr, bool sub)
{
    struct resp_conn_events ev = {.arg = sh,
                                  .connected = sub ? on_sub_connected : on_cmd_connected,
                                  .push = sub ? on_sub_push : on_cmd_push,
                                  .closed = sub ? on_sub_closed : on_cmd_closed};
    return resp_conn_open(sh->bus->app->loop, addr, sh->port,
                          (size_t)sh->bus->app->cfg->max_publish_bytes + RESP_REPLY_SLACK, &ev);
}

static void connect_to(struct shard *sh, const char *addr)
{
    sh->sub = open_conn(sh, addr, true);
    sh->cmd = open_conn(sh, addr, false);
    if (!sh->sub || !sh->cmd)
        go_down(sh, "connect failed");
}

static void on_resolved(void *arg, const char *addr, const char *err)
{
    struct shard *sh = arg;
    sh->resolving = NULL;
    if (addr)
        connect_to(sh, addr);
    else
        go_down(sh, err);
}

static void connect_host(struct shard *sh)
{
    if (resolve_is_numeric(sh->host)) {
        connect_to(sh, sh->host);
        return;
    }
    sh->resolving = resolve_start(sh->bus->app->loop, sh->host, on_resolved, sh);
    if (!sh->resolving)
        go_down(sh, "cannot start the host name lookup");
}

static void on_master_found(void *arg, const char *host, int port, const char *err)
{
    struct shard *sh = arg;
    if (!host) {
        go_down(sh, err);
        return;
    }
    if (strcmp(host, sh->host) != 0 || port != sh->port)
        log_info("redis_sentinel", "sentinels name %s:%d as master %s", host, port,
                 sh->url->master_name);
    snprintf(sh->host, sizeof sh->host, "%s", host);
    sh->port = port;
    connect_host(sh);
}

/* The sentinels name a new master: leave the old one, or stop waiting out the backoff, and
 * connect on the next tick. */
static void on_master_switched(void *arg)
{
    struct shard *sh = arg;
    if (sh->state != BUS_DOWN)
        go_down(sh, "the sentinels switched the master");
    backoff_reset(&sh->backoff);
    sh->retry_at_ms = now_ms(sh->bus);
}

/* CONNECTING covers the sentinels' answer and the lookup too: CONNECT_TIMEOUT_MS bounds all.
 * A cluster in classic mode is reached through any node: the next seed at each attempt. */
static void connect_now(struct shard *sh)
{
    set_state(sh, BUS_CONNECTING);
    if (sh->sentinel) {
        sentinel_ask(sh->sentinel); /* on_master_found, later */
        return;
    }
    if (sh->url->cluster) {
        const struct redis_addr *a = &sh->url->hosts[sh->next_node++ % sh->url->nhosts];
        snprintf(sh->host, sizeof sh->host, "%s", a->host);
        sh->port = a->port;
    }
    connect_host(sh);
}

/* Reconnects when it is time, publishes the heartbeat and declares the link dead when
 * beats stop coming back (a dead socket can look alive). */
static void tick_shard(struct shard *sh, uint64_t now)
{
    uint64_t dead_after = (uint64_t)sh->bus->app->cfg->heartbeat_ms * BEATS_BEFORE_DEAD;
    switch (sh->state) {
    case BUS_DOWN:
        if (now >= sh->retry_at_ms)
            connect_now(sh);
        break;
    case BUS_CONNECTING:
        if (now - sh->state_since_ms > CONNECT_TIMEOUT_MS)
            go_down(sh, "connect timed out");
        break;
    case BUS_UP: {
        uint64_t since = sh->last_beat_ms ? sh->last_beat_ms : sh->state_since_ms;
        if (now - since > dead_after) {
            go_down(sh, "heartbeat did not come back");
            break;
        }
        /* the tick is finer than the heartbeat (it paces reconnects too) */
        if (now - sh->beat_sent_ms >= (uint64_t)sh->bus->app->cfg->heartbeat_ms)
            publish_beat(sh);
        break;
    }
    }
}

static void on_tick(uv_timer_t *t)
{
    struct bus *bus = t->data;
    uint64_t now = now_ms(bus);
    for (int i = 0; i < bus->nshards; i++)
        tick_shard(&bus->shards[i], now);
}

struct bus *bus_new(struct herald *app, const struct bus_events *ev)
{
    struct bus *bus = calloc(1, sizeof *bus);
    if (!bus)
        return NULL;
    bus->app = app;
    bus->ev = *ev;
    bus->prefix_len = strlen(app->cfg->redis_prefix);
    snprintf(bus->beat_channel, sizeof bus->beat_channel, "%sherald#heartbeat#%s",
             app->cfg->redis_prefix, app->cfg->instance_id);
    bus->beat_len = strlen(bus->beat_channel);
    if (app->cfg->redis_pubsub_sharded) { /* config.c: then the one URL is a cluster */
        bus->cluster = cluster_new(app, &app->cfg->redis[0], &bus->ev, bus->beat_channel);
        if (!bus->cluster) {
            free(bus);
            return NULL;
        }
        return bus;
    }
    bus->nshards = app->cfg->nredis;
    for (int i = 0; i < bus->nshards; i++) {
        struct shard *sh = &bus->shards[i];
        const struct redis_url *u = &app->cfg->redis[i];
        *sh = (struct shard){.bus = bus, .index = i, .url = u, .port = u->port};
        if (u->master_name[0]) {
            sh->sentinel = sentinel_new(app, u, on_master_found, on_master_switched, sh);
            if (!sh->sentinel) {
                while (i--)
                    sentinel_free(bus->shards[i].sentinel);
                free(bus);
                return NULL;
            }
            snprintf(sh->label, sizeof sh->label, "sentinel/%s", u->master_name);
        } else if (u->cluster) {
            snprintf(sh->label, sizeof sh->label, "cluster/%s:%d", u->host, u->port);
        } else {
            snprintf(sh->host, sizeof sh->host, "%s", u->host);
            snprintf(sh->label, sizeof sh->label, "%s:%d", u->host, u->port);
        }
        backoff_init(&sh->backoff, BACKOFF_MIN_MS, BACKOFF_MAX_MS, backoff_seed((uintptr_t)sh));
    }
    uv_timer_init(app->loop, &bus->timer);
    bus->timer.data = bus;
    return bus;
}

void bus_start(struct bus *bus)
{
    if (bus->cluster) {
        cluster_start(bus->cluster);
        return;
    }
    uint64_t tick = (uint64_t)bus->app->cfg->heartbeat_ms;
    /* the tick also paces reconnects: keep it fine enough for the shortest backoff */
    if (tick > BACKOFF_MIN_MS)
        tick = BACKOFF_MIN_MS;
    for (int i = 0; i < bus->nshards; i++)
        connect_now(&bus->shards[i]);
    uv_timer_start(&bus->timer, on_tick, tick, tick);
}

static void free_bus(uv_handle_t *h)
{
    free(h->data);
}

void bus_free(struct bus *bus)
{
    if (!bus)
        return;
    if (bus->cluster) {
        cluster_free(bus->cluster);
        free(bus);
        return;
    }
    for (int i = 0; i < bus->nshards; i++) {
        if (bus->shards[i].resolving)
            resolve_cancel(bus->shards[i].resolving);
        drop_conn(&bus->shards[i].sub);
        drop_conn(&bus->shards[i].cmd);
        sentinel_free(bus->shards[i].sentinel);
    }
    uv_timer_stop(&bus->timer);
    uv_close((uv_handle_t *)&bus->timer, free_bus);
}

/* The Redis name of a Herald channel: HERALD_REDIS_PREFIX before it. -1 if it does not fit. */
static int full_name(const struct bus *bus, const char *name, size_t len, char *out, size_t cap)
{
    int n = snprintf(out, cap, "%s%.*s", bus->app->cfg->redis_prefix, (int)len, name);
    return n < 0 || (size_t)n >= cap ? -1 : n;
}

int bus_shard_of(const struct bus *bus, const char *name, size_t len)
{
    if (bus->cluster) {
        char full[512];
        int n = full_name(bus, name, len, full, sizeof full);
        return n < 0 ? -1 : cluster_shard_of(bus->cluster, full, (size_t)n);
    }
    return shard_of(name, len, bus->nshards);
}

static struct shard *shard_for(struct bus *bus, const char *name, size_t len)
{
    return &bus->shards[bus_shard_of(bus, name, len)];
}

static int send_sub_command(struct bus *bus, const char *verb, const char *name, size_t len)
{
    char full[512];
    int n = full_name(bus, name, len, full, sizeof full);
    if (n < 0)
        return -1;
    if (bus->cluster)
        return verb[0] == 'S' ? cluster_subscribe(bus->cluster, full, (size_t)n)
                              : cluster_unsubscribe(bus->cluster, full, (size_t)n);
    struct shard *sh = shard_for(bus, name, len);
    if (sh->state != BUS_UP)
        return -1;
    return send_sub(sh, verb, full, (size_t)n);
}

int bus_publish(struct bus *bus, const char *name, const char *payload, size_t len)
{
    char full[512];
    int n = full_name(bus, name, strlen(name), full, sizeof full);
    if (n < 0)
        return -1;
    if (bus->cluster)
        return cluster_publish(bus->cluster, full, (size_t)n, payload, len);
    struct shard *sh = shard_for(bus, name, strlen(name));
    if (!sh->cmd_ready)
        return -1;
    const char *argv[] = {"PUBLISH", full, payload};
    size_t lens[] = {7, (size_t)n, len};
    return resp_conn_send(sh->cmd, NULL, NULL, 3, argv, lens);
}

int bus_command(struct bus *bus, const char *name, size_t len, const char *key, size_t klen,
                resp_reply_fn *fn, void *arg, int argc, const char **argv, const size_t *lens)
{
    if (bus->cluster)
        return cluster_command(bus->cluster, key, klen, fn, arg, argc, argv, lens);
    struct shard *sh = shard_for(bus, name, len);
    if (!sh->cmd_ready)
        return -1;
    return resp_conn_send(sh->cmd, fn, arg, argc, argv, lens);
}

int bus_subscribe(struct bus *bus, const char *name, size_t len)
{
    return send_sub_command(bus, "SUBSCRIBE", name, len);
}

int bus_unsubscribe(struct bus *bus, const char *name, size_t len)
{
    return send_sub_command(bus, "UNSUBSCRIBE", name, len);
}

static bool shard_ready(const struct shard *sh)
{
    uint64_t dead_after = (uint64_t)sh->bus->app->cfg->heartbeat_ms * BEATS_BEFORE_DEAD;
    return sh->state == BUS_UP && sh->last_beat_ms &&
           herald_now_ms(sh->bus->app) - sh->last_beat_ms <= dead_after;
}

bool bus_ready(const struct bus *bus)
{
    if (bus->cluster)
        return cluster_ready(bus->cluster);
    for (int i = 0; i < bus->nshards; i++)
        if (!shard_ready(&bus->shards[i]))
            return false;
    return true;
}

bool bus_any_ready(const struct bus *bus)
{
    if (bus->cluster)
        return cluster_any_ready(bus->cluster);
    for (int i = 0; i < bus->nshards; i++)
        if (shard_ready(&bus->shards[i]))
            return true;
    return false;
}

int bus_shards(const struct bus *bus)
{
    return bus->cluster ? cluster_nodes(bus->cluster) : bus->nshards;
}

bool bus_shard_ready(const struct bus *bus, int i)
{
    return bus->cluster ? cluster_node_ready(bus->cluster, i) : shard_ready(&bus->shards[i]);
}

const char *bus_shard_label(const struct bus *bus, int i)
{
    return bus->cluster ? cluster_node_label(bus->cluster, i) : bus->shards[i].label;
}

uint64_t bus_heartbeat_age_ms(const struct bus *bus)
{
    if (bus->cluster)
        return cluster_heartbeat_age_ms(bus->cluster);
    uint64_t oldest = herald_now_ms(bus->app);
    for (int i = 0; i < bus->nshards; i++) {
        const struct shard *sh = &bus->shards[i];
        uint64_t since = sh->beat_seen_ms ? sh->beat_seen_ms : bus->app->started_ms;
        if (since < oldest)
            oldest = since;
    }
    return herald_now_ms(bus->app) - oldest;
}
