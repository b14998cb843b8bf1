#include "cluster.h"
#include "backoff.h"
#include "herald.h"
#include "cluster_slots.h"
#include "key_slot.h"
#include "log.h"
#include "resolve.h"
#include "resp_conn.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define NODES_MAX          CLUSTER_MASTERS_MAX
#define NO_NODE            CLUSTER_NO_OWNER
#define BACKOFF_MIN_MS     100
#define BACKOFF_MAX_MS     5000
#define CONNECT_TIMEOUT_MS 3000
#define BEATS_BEFORE_DEAD  3
#define ASK_TIMEOUT_MS     1000
#define REFRESH_EVERY_MS   5000
#define REFRESH_MIN_GAP_MS 200
#define REFRESH_DOWN_MS    500 /* while a master is down: its replica may be promoted */

enum node_state { NODE_DOWN, NODE_CONNECTING, NODE_UP };

struct node {
    struct cluster *cl;
    int index;
    bool used; /* a master in the current map */
    char host[256];
    int port;
    char label[300];
    struct resp_conn *sub; /* SSUBSCRIBE only */
    struct resp_conn *cmd; /* SPUBLISH and the heartbeat */
    struct resolve *resolving;
    enum node_state state;
    bool sub_ready, cmd_ready;
    uint64_t state_since_ms, last_beat_ms, beat_seen_ms, retry_at_ms;
    uint64_t beat_sent_ms; /* when the last heartbeat went out */
    struct backoff backoff;
    bool ever_up;
    char beat[320]; /* this instance's heartbeat channel, tagged into one of the node's slots */
    size_t beat_len;
};

/* Asking one node after another for CLUSTER SLOTS. */
struct asker {
    struct resp_conn *conn;
    struct resolve *resolving;
    bool busy;
    int next;  /* the candidate to ask next (known masters, then the URL's seeds) */
    int tried; /* candidates asked in this round */
    int port;  /* of the candidate being asked */
    char host[256];
    uint64_t started_ms;
};

struct cluster {
    struct herald *app;
    const struct redis_url *url;
    const struct bus_events *ev;
    struct node nodes[NODES_MAX];
    int nnodes;                         /* entries in use or used before: the table's length */
    uint8_t owner[REDIS_CLUSTER_SLOTS]; /* node index, or NO_NODE */
    bool covered;                       /* every slot has an owner */
    struct asker ask;
    uint64_t refresh_at_ms; /* when to ask for the map next */
    uint64_t last_ask_ms;
    struct backoff ask_backoff;
    uv_timer_t timer;
    char beat[256];
    size_t max_reply;
    struct log_limit publish_log;
};

/* One command in flight, its arguments kept to follow one MOVED or ASK. fn has the last
 * reply, once; without one (a SPUBLISH) a failure is logged, naming argv[0] and argv[1]. */
struct command {
    struct cluster *cl;
    resp_reply_fn *fn;
    void *arg;
    bool redirected;
    int argc;
    const char **argv; /* into lens' allocation, after it */
    size_t lens[];     /* then argv, then the arguments' bytes */
};

/* One SSUBSCRIBE or SUNSUBSCRIBE in flight: its reply must name its channel. */
struct sub_op {
    struct node *node;
    bool subscribe;
    size_t len;
    char name[];
};

static uint64_t now_ms(const struct cluster *cl)
{
    return herald_now_ms(cl->app);
}

static void set_state(struct node *n, enum node_state s)
{
    n->state = s;
    n->state_since_ms = now_ms(n->cl);
}

static void want_refresh(struct cluster *cl)
{
    uint64_t at = cl->last_ask_ms + REFRESH_MIN_GAP_MS;
    uint64_t now = now_ms(cl);
    if (at < now)
        at = now;
    if (at < cl->refresh_at_ms)
        cl->refresh_at_ms = at;
}

/* The node's connections go, and with them every subscription it carried: `down` with the
 * map as it is now. Retried after the node's backoff; the map is asked for again, since a
 * failed master is usually a failover under way. */
static void node_down(struct node *n, const char *why)
{
    struct cluster *cl = n->cl;
    bool was_up = n->state == NODE_UP;
    if (n->resolving)
        resolve_cancel(n->resolving);
    n->resolving = NULL;
    resp_conn_close(n->sub);
    resp_conn_close(n->cmd);
    n->sub = n->cmd = NULL;
    n->sub_ready = n->cmd_ready = false;
    n->last_beat_ms = 0;
    set_state(n, NODE_DOWN);
    uint64_t delay = backoff_next(&n->backoff);
    n->retry_at_ms = now_ms(cl) + delay;
    if (was_up)
        log_warn("redis_down", "Redis cluster node %s lost (%s); reconnecting in %llu ms", n->label,
                 why, (unsigned long long)delay);
    else
        log_warn("redis_retry", "Redis cluster node %s unavailable (%s); retrying in %llu ms",
                 n->label, why, (unsigned long long)delay);
    want_refresh(cl);
    cl->ev->down(cl->ev->arg, n->index);
}

static bool reply_is(const redisReply *r, const char *kind)
{
    return r->type == REDIS_REPLY_ARRAY && r->elements >= 2 &&
           r->element[0]->type == REDIS_REPLY_STRING && strcmp(r->element[0]->str, kind) == 0 &&
           r->element[1]->type == REDIS_REPLY_STRING;
}

static void maybe_up(struct node *n)
{
    struct cluster *cl = n->cl;
    if (n->state != NODE_CONNECTING || !n->sub_ready || !n->cmd_ready)
        return;
    set_state(n, NODE_UP);
    backoff_reset(&n->backoff);
    if (n->ever_up)
        cl->app->metrics.redis_reconnects++;
    n->ever_up = true;
    log_info("redis_up", "connected to Redis cluster node %s", n->label);
    cl->ev->up(cl->ev->arg);
}

static size_t prefix_len(const struct cluster *cl)
{
    return strlen(cl->app->cfg->redis_prefix);
}

/* Messages on the subscriber connection; anything else unasked (a sharded unsubscribe after
 * the slot moved, above all) means the map changed under us. */
static void on_sub_push(void *arg, redisReply *r)
{
    struct node *n = arg;
    struct cluster *cl = n->cl;
    if (reply_is(r, "smessage") && r->elements == 3 && r->element[2]->type == REDIS_REPLY_STRING) {
        const redisReply *ch = r->element[1];
        if (ch->len == n->beat_len && memcmp(ch->str, n->beat, ch->len) == 0) {
            n->last_beat_ms = n->beat_seen_ms = now_ms(cl);
            return;
        }
        size_t plen = prefix_len(cl);
        if (ch->len >= plen)
            cl->ev->message(cl->ev->arg, ch->str + plen, ch->len - plen, r->element[2]->str,
                            r->element[2]->len);
        return;
    }
    node_down(n, reply_is(r, "sunsubscribe") ? "the node gave up a channel (slot moved)"
                                             : "unexpected reply on the subscriber connection");
}

static void on_sub_reply(void *arg, redisReply *r)
{
    struct sub_op *op = arg;
    struct node *n = op->node;
    if (r) {
        struct cluster *cl = n->cl;
        const char *kind = op->subscribe ? "ssubscribe" : "sunsubscribe";
        if (!reply_is(r, kind) || r->element[1]->len != op->len ||
            memcmp(r->element[1]->str, op->name, op->len) != 0) {
            char why[200];
            snprintf(why, sizeof why, "%s %s", kind,
                     r->type == REDIS_REPLY_ERROR ? r->str : "answered out of order");
            node_down(n, why);
        } else if (op->len == n->beat_len && memcmp(op->name, n->beat, op->len) == 0) {
            n->sub_ready = true;
            maybe_up(n);
        } else {
            size_t plen = prefix_len(cl);
            if (op->subscribe)
                cl->ev->subscribed(cl->ev->arg, op->name + plen, op->len - plen);
            else
                cl->ev->unsubscribed(cl->ev->arg, op->name + plen, op->len - plen);
        }
    }
    free(op);
}

static int send_sub_op(struct node *n, bool subscribe, const char *full, size_t flen)
{
    struct sub_op *op = malloc(sizeof *op + flen);
    if (!op)
        return -1;
    *op = (struct sub_op){.node = n, .subscribe = subscribe, .len = flen};
    memcpy(op->name, full, flen);
    const char *argv[] = {subscribe ? "SSUBSCRIBE" : "SUNSUBSCRIBE", op->name};
    size_t lens[] = {strlen(argv[0]), flen};
    if (resp_conn_send(n->sub, on_sub_reply, op, 2, argv, lens) != 0) {
        free(op);
        return -1;
    }
    return 0;
}

/* AUTH's reply on either connection. */
static void on_auth_reply(void *arg, redisReply *r)
{
    struct node *n = arg;
    if (r && r->type == REDIS_REPLY_ERROR) {
        char why[200];
        snprintf(why, sizeof why, "AUTH refused: %s", r->str);
        log_error("redis_setup", "%s: %s", n->label, why);
        node_down(n, why);
    }
}

static void on_sub_connected(void *arg)
{
    struct node *n = arg;
    resp_conn_send_auth(n->sub, n->cl->url->user, n->cl->url->password, on_auth_reply, n);
    if (send_sub_op(n, true, n->beat, n->beat_len) != 0)
        node_down(n, "out of memory");
}

static void on_cmd_connected(void *arg)
{
    struct node *n = arg;
    resp_conn_send_auth(n->cmd, n->cl->url->user, n->cl->url->password, on_auth_reply, n);
    n->cmd_ready = true;
    maybe_up(n);
}

/* One connection ended: the node goes down with both. */
static void on_sub_closed(void *arg, const char *why)
{
    struct node *n = arg;
    n->sub = NULL;
    node_down(n, why);
}

static void on_cmd_closed(void *arg, const char *why)
{
    struct node *n = arg;
    n->cmd = NULL;
    node_down(n, why);
}

static void on_cmd_push(void *arg, redisReply *r)
{
    (void)r;
    node_down(arg, "unexpected reply on the command connection");
}

static struct resp_conn *open_conn(struct node *n, const char *addr, bool sub)
{
    struct resp_conn_events ev = {.arg = n,
                                  .connected = sub ? on_sub_connected : on_cmd_connected,
                                  .push = sub ? on_sub_push : on_cmd_push,
                                  .closed = sub ? on_sub_closed : on_cmd_closed};
    return resp_conn_open(n->cl->app->loop, addr, n->port, n->cl->max_reply, &ev);
}

static void connect_addr(struct node *n, const char *addr)
{
    n->sub = open_conn(n, addr, true);
    n->cmd = open_conn(n, addr, false);
    if (!n->sub || !n->cmd)
        node_down(n, "cannot open a connection");
}

static void on_node_resolved(void *arg, const char *addr, const char *err)
{
    struct node *n = arg;
    n->resolving = NULL;
    if (addr)
        connect_addr(n, addr);
    else
        node_down(n, err);
}

/* This instance's heartbeat channel for the node: the common name with a hash tag that falls
 * in one of the node's slots (the first decimal number that does). */
static bool pick_beat(struct node *n)
{
    struct cluster *cl = n->cl;
    for (unsigned tag = 0; tag < 1000000; tag++) {
        char t[16];
        int tl = snprintf(t, sizeof t, "%u", tag);
        if (cl->owner[redis_key_slot(t, (size_t)tl)] == n->index) {
            int len = snprintf(n->beat, sizeof n->beat, "%s{%s}", cl->beat, t);
            n->beat_len = (size_t)len;
            return len > 0 && (size_t)len < sizeof n->beat;
        }
    }
    return false;
}

static void connect_node(struct node *n)
{
    set_state(n, NODE_CONNECTING);
    if (!pick_beat(n)) {
        node_down(n, "the node owns no slot");
        return;
    }
    if (resolve_is_numeric(n->host)) {
        connect_addr(n, n->host);
        return;
    }
    n->resolving = resolve_start(n->cl->app->loop, n->host, on_node_resolved, n);
    if (!n->resolving)
        node_down(n, "cannot start the host name lookup");
}

/* ---- the slot map ------------------------------------------------------------------- */

static int find_node(const struct cluster *cl, const char *host, int port)
{
    for (int i = 0; i < cl->nnodes; i++)
        if (cl->nodes[i].used && cl->nodes[i].port == port && strcmp(cl->nodes[i].host, host) == 0)
            return i;
    return -1;
}

static int free_entry(struct cluster *cl, const bool *taken)
{
    for (int i = 0; i < NODES_MAX; i++)
        if (!cl->nodes[i].used && !taken[i])
            return i;
    return -1;
}

static void init_node(struct cluster *cl, int i, const struct redis_addr *a)
{
    struct node *n = &cl->nodes[i];
    *n = (struct node){.cl = cl, .index = i, .used = true, .port = a->port, .retry_at_ms = 0};
    snprintf(n->host, sizeof n->host, "%s", a->host);
    snprintf(n->label, sizeof n->label, "%s:%d", a->host, a->port);
    backoff_init(&n->backoff, BACKOFF_MIN_MS, BACKOFF_MAX_MS, backoff_seed((uintptr_t)n));
    if (i >= cl->nnodes)
        cl->nnodes = i + 1;
}

/* A new map: masters that lose a slot are taken down with the old one first (the layer above
 * forgets what they carried), then the map changes and the channels it moved are subscribed
 * where they live now. */
static void install(struct cluster *cl, const struct cluster_slots *m)
{
    int where[NODES_MAX]; /* masters[j] -> table index */
    bool taken[NODES_MAX] = {false};
    for (int j = 0; j < m->n; j++) {
        where[j] = find_node(cl, m->masters[j].host, m->masters[j].port);
        if (where[j] >= 0)
            taken[where[j]] = true;
    }
    bool changed = false;
    for (int s = 0; s < REDIS_CLUSTER_SLOTS; s++) {
        int now = cl->owner[s];
        int next = m->owner[s] == NO_NODE ? NO_NODE : where[m->owner[s]];
        if (now == next)
            continue;
        changed = true;
        if (now != NO_NODE && cl->nodes[now].state != NODE_DOWN)
            node_down(&cl->nodes[now], "the slot map moved its slots");
    }
    for (int i = 0; i < cl->nnodes; i++)
        if (cl->nodes[i].used && !taken[i]) {
            log_info("redis_cluster", "node %s is no longer a master", cl->nodes[i].label);
            cl->nodes[i].used = false;
        }
    for (int j = 0; j < m->n; j++)
        if (where[j] < 0) {
            where[j] = free_entry(cl, taken);
            taken[where[j]] = true;
            init_node(cl, where[j], &m->masters[j]);
            log_info("redis_cluster", "master %s joins the slot map", cl->nodes[where[j]].label);
        }
    cl->covered = true;
    for (int s = 0; s < REDIS_CLUSTER_SLOTS; s++) {
        cl->owner[s] = m->owner[s] == NO_NODE ? NO_NODE : (uint8_t)where[m->owner[s]];
        if (cl->owner[s] == NO_NODE)
            cl->covered = false;
    }
    if (changed)
        cl->ev->up(cl->ev->arg); /* moved channels subscribe where they are now */
}

static void ask_next(struct cluster *cl);

static void ask_done(struct cluster *cl)
{
    struct asker *a = &cl->ask;
    if (a->resolving)
        resolve_cancel(a->resolving);
    a->resolving = NULL;
    resp_conn_close(a->conn);
    a->conn = NULL;
    a->busy = false;
}

static void ask_failed(struct cluster *cl, const char *why)
{
    log_warn("redis_cluster", "cannot take the slot map from %s:%d: %s", cl->ask.host, cl->ask.port,
             why);
    ask_done(cl);
    ask_next(cl);
}

static void on_slots(void *arg, redisReply *r)
{
    struct cluster *cl = arg;
    if (!r)
        return;
    struct cluster_slots *m = malloc(sizeof *m);
    const char *err = m ? cluster_slots_parse(r, cl->ask.host, m) : "out of memory";
    if (err) {
        free(m);
        ask_failed(cl, err);
        return;
    }
    ask_done(cl);
    backoff_reset(&cl->ask_backoff);
    cl->refresh_at_ms = now_ms(cl) + REFRESH_EVERY_MS;
    install(cl, m);
    free(m);
}

static void on_ask_connected(void *arg)
{
    struct cluster *cl = arg;
    /* a refusal shows in the next reply */
    resp_conn_send_auth(cl->ask.conn, cl->url->user, cl->url->password, NULL, NULL);
    const char *argv[] = {"CLUSTER", "SLOTS"};
    size_t lens[] = {7, 5};
    resp_conn_send(cl->ask.conn, on_slots, cl, 2, argv, lens);
}

static void on_ask_closed(void *arg, const char *why)
{
    struct cluster *cl = arg;
    cl->ask.conn = NULL;
    ask_failed(cl, why);
}

static void on_ask_push(void *arg, redisReply *r)
{
    (void)r;
    struct cluster *cl = arg;
    ask_failed(cl, "an unexpected reply");
}

static void ask_addr(struct cluster *cl, const char *addr)
{
    struct resp_conn_events ev = {
        .arg = cl, .connected = on_ask_connected, .push = on_ask_push, .closed = on_ask_closed};
    cl->ask.conn = resp_conn_open(cl->app->loop, addr, cl->ask.port, cl->max_reply, &ev);
    if (!cl->ask.conn)
        ask_failed(cl, "cannot open a connection");
}

static void on_ask_resolved(void *arg, const char *addr, const char *err)
{
    struct cluster *cl = arg;
    cl->ask.resolving = NULL;
    if (addr)
        ask_addr(cl, addr);
    else
        ask_failed(cl, err);
}

/* The next candidate of the round: the masters of the table, then the URL's seeds. After a
 * whole round without an answer, the next one waits for the backoff. */
static void ask_next(struct cluster *cl)
{
    struct asker *a = &cl->ask;
    int total = cl->nnodes + cl->url->nhosts;
    while (a->tried < total) {
        int c = a->next++ % total;
        a->tried++;
        if (c < cl->nnodes) {
            if (!cl->nodes[c].used)
                continue;
            snprintf(a->host, sizeof a->host, "%s", cl->nodes[c].host);
            a->port = cl->nodes[c].port;
        } else {
            snprintf(a->host, sizeof a->host, "%s", cl->url->hosts[c - cl->nnodes].host);
            a->port = cl->url->hosts[c - cl->nnodes].port;
        }
        a->busy = true;
        a->started_ms = now_ms(cl);
        if (resolve_is_numeric(a->host)) {
            ask_addr(cl, a->host);
        } else {
            a->resolving = resolve_start(cl->app->loop, a->host, on_ask_resolved, cl);
            if (!a->resolving)
                ask_failed(cl, "cannot start the host name lookup");
        }
        return;
    }
    uint64_t delay = backoff_next(&cl->ask_backoff);
    log_warn("redis_cluster", "no node gave a slot map; asking again in %llu ms",
             (unsigned long long)delay);
    cl->refresh_at_ms = now_ms(cl) + delay;
}

static void ask_start(struct cluster *cl)
{
    cl->last_ask_ms = now_ms(cl);
    cl->refresh_at_ms = UINT64_MAX; /* until this round ends */
    cl->ask.tried = 0;
    ask_next(cl);
}

/* ---- heartbeats, reconnects, timeouts ----------------------------------------------- */

static void on_beat_reply(void *arg, redisReply *r)
{
    struct node *n = arg;
    if (r && r->type == REDIS_REPLY_ERROR) {
        char why[200];
        snprintf(why, sizeof why, "heartbeat SPUBLISH refused: %s", r->str);
        node_down(n, why);
    }
}

static void publish_beat(struct node *n)
{
    char stamp[24];
    n->beat_sent_ms = now_ms(n->cl);
    int sl = snprintf(stamp, sizeof stamp, "%llu", (unsigned long long)n->beat_sent_ms);
    const char *argv[] = {"SPUBLISH", n->beat, stamp};
    size_t lens[] = {8, n->beat_len, (size_t)sl};
    resp_conn_send(n->cmd, on_beat_reply, n, 3, argv, lens);
}

static void tick_node(struct node *n, uint64_t now)
{
    uint64_t dead_after = (uint64_t)n->cl->app->cfg->heartbeat_ms * BEATS_BEFORE_DEAD;
    switch (n->state) {
    case NODE_DOWN:
        /* a node down waits for the map asked for when it went down: it may have lost its
         * slots, or be gone */
        if (now >= n->retry_at_ms && !n->cl->ask.busy && now < n->cl->refresh_at_ms)
            connect_node(n);
        break;
    case NODE_CONNECTING:
        if (now - n->state_since_ms > CONNECT_TIMEOUT_MS)
            node_down(n, "connect timed out");
        break;
    case NODE_UP: {
        uint64_t since = n->last_beat_ms ? n->last_beat_ms : n->state_since_ms;
        if (now - since > dead_after)
            node_down(n, "heartbeat did not come back");
        else if (now - n->beat_sent_ms >= (uint64_t)n->cl->app->cfg->heartbeat_ms)
            publish_beat(n); /* the tick is finer than the heartbeat */
        break;
    }
    }
}

static void on_tick(uv_timer_t *t)
{
    struct cluster *cl = t->data;
    uint64_t now = now_ms(cl);
    if (cl->ask.busy && now - cl->ask.started_ms > ASK_TIMEOUT_MS)
        ask_failed(cl, "no answer in time");
    for (int i = 0; i < cl->nnodes; i++)
        if (cl->nodes[i].used && cl->nodes[i].state == NODE_DOWN &&
            cl->refresh_at_ms > cl->last_ask_ms + REFRESH_DOWN_MS)
            cl->refresh_at_ms = cl->last_ask_ms + REFRESH_DOWN_MS;
    if (!cl->ask.busy && now >= cl->refresh_at_ms)
        ask_start(cl);
    for (int i = 0; i < cl->nnodes; i++)
        if (cl->nodes[i].used)
            tick_node(&cl->nodes[i], now);
}

struct cluster *cluster_new(struct herald *app, const struct redis_url *url,
                            const struct bus_events *ev, const char *beat)
{
    struct cluster *cl = calloc(1, sizeof *cl);
    if (!cl)
        return NULL;
    cl->app = app;
    cl->url = url;
    cl->ev = ev;
    snprintf(cl->beat, sizeof cl->beat, "%s", beat);
    memset(cl->owner, NO_NODE, sizeof cl->owner);
    cl->max_reply = (size_t)app->cfg->max_publish_bytes + RESP_REPLY_SLACK;
    backoff_init(&cl->ask_backoff, BACKOFF_MIN_MS, BACKOFF_MAX_MS, backoff_seed((uintptr_t)cl));
    uv_timer_init(app->loop, &cl->timer);
    cl->timer.data = cl;
    return cl;
}

void cluster_start(struct cluster *cl)
{
    uint64_t tick = (uint64_t)cl->app->cfg->heartbeat_ms;
    if (tick > BACKOFF_MIN_MS)
        tick = BACKOFF_MIN_MS;
    cl->refresh_at_ms = 0; /* ask for the map on the first tick */
    uv_timer_start(&cl->timer, on_tick, 0, tick);
}

static void free_cluster(uv_handle_t *h)
{
    free(h->data);
}

void cluster_free(struct cluster *cl)
{
    if (!cl)
        return;
    ask_done(cl);
    for (int i = 0; i < cl->nnodes; i++) {
        struct node *n = &cl->nodes[i];
        if (n->resolving)
            resolve_cancel(n->resolving);
        resp_conn_close(n->sub);
        resp_conn_close(n->cmd);
    }
    uv_timer_stop(&cl->timer);
    uv_close((uv_handle_t *)&cl->timer, free_cluster);
}

/* ---- what the bus asks ---------------------------------------------------------------- */

int cluster_shard_of(const struct cluster *cl, const char *full, size_t flen)
{
    int o = cl->owner[redis_key_slot(full, flen)];
    return o == NO_NODE ? -1 : o;
}

static struct node *up_node(struct cluster *cl, const char *full, size_t flen)
{
    int i = cluster_shard_of(cl, full, flen);
    return i >= 0 && cl->nodes[i].state == NODE_UP ? &cl->nodes[i] : NULL;
}

int cluster_subscribe(struct cluster *cl, const char *full, size_t flen)
{
    struct node *n = up_node(cl, full, flen);
    return n ? send_sub_op(n, true, full, flen) : -1;
}

int cluster_unsubscribe(struct cluster *cl, const char *full, size_t flen)
{
    struct node *n = up_node(cl, full, flen);
    return n ? send_sub_op(n, false, full, flen) : -1;
}

static int send_command(struct node *n, struct command *c, bool asking);

/* "MOVED <slot> <host>:<port>" or "ASK ...": the node to try instead, if it is up. */
static struct node *redirect_target(struct cluster *cl, const char *err)
{
    const char *addr = strrchr(err, ' ');
    const char *colon = addr ? strrchr(addr, ':') : NULL;
    if (!colon || colon - addr - 1 <= 0 || colon - addr - 1 >= 256)
        return NULL;
    char host[256];
    memcpy(host, addr + 1, (size_t)(colon - addr - 1));
    host[colon - addr - 1] = '\0';
    int i = find_node(cl, host, atoi(colon + 1));
    return i >= 0 && cl->nodes[i].state == NODE_UP ? &cl->nodes[i] : NULL;
}

/* A redirected command is sent once more where the error says, and the map is asked for
 * again. A SPUBLISH that fails is not lost: the message is in PostgreSQL, and every
 * instance's head check delivers it. */
static void on_command_reply(void *arg, redisReply *r)
{
    struct command *c = arg;
    if (r && r->type == REDIS_REPLY_ERROR) {
        struct cluster *cl = c->cl;
        bool moved = strncmp(r->str, "MOVED ", 6) == 0, ask = strncmp(r->str, "ASK ", 4) == 0;
        if (moved || ask) {
            cl->app->metrics.redis_redirects++;
            want_refresh(cl);
        }
        struct node *to = (moved || ask) && !c->redirected ? redirect_target(cl, r->str) : NULL;
        if (to) {
            c->redirected = true;
            if (send_command(to, c, ask) == 0)
                return; /* c goes on */
        }
        uint64_t skipped;
        if (!c->fn && log_limit_pass(&cl->publish_log, now_ms(cl), &skipped)) {
            /* the copied arguments have no NULs after them */
            int shown = c->argc > 1 ? (int)(c->lens[1] < 200 ? c->lens[1] : 200) : 0;
            log_warn("redis_publish", "%.*s %.*s failed: %s (%llu more since last log)",
                     (int)c->lens[0], c->argv[0], shown, shown ? c->argv[1] : "", r->str,
                     (unsigned long long)skipped);
        }
    }
    if (c->fn)
        c->fn(c->arg, r);
    free(c);
}

static int send_command(struct node *n, struct command *c, bool asking)
{
    if (asking) {
        const char *argv[] = {"ASKING"};
        size_t lens[] = {6};
        if (resp_conn_send(n->cmd, NULL, NULL, 1, argv, lens) != 0)
            return -1;
    }
    return resp_conn_send(n->cmd, on_command_reply, c, c->argc, c->argv, c->lens);
}

/* Sends argv to the master of key's slot, copied so that a redirect can send it again. */
static int command_start(struct cluster *cl, const char *key, size_t klen, resp_reply_fn *fn,
                         void *arg, int argc, const char **argv, const size_t *lens)
{
    struct node *n = up_node(cl, key, klen);
    if (!n)
        return -1;
    size_t bytes = 0;
    for (int i = 0; i < argc; i++)
        bytes += lens[i];
    size_t arrays = (size_t)argc * (sizeof(size_t) + sizeof(char *));
    struct command *c = malloc(sizeof *c + arrays + bytes);
    if (!c)
        return -1;
    *c = (struct command){.cl = cl, .fn = fn, .arg = arg, .argc = argc};
    c->argv = (const char **)(c->lens + argc);
    char *at = (char *)(c->argv + argc);
    for (int i = 0; i < argc; i++) {
        if (lens[i]) /* an empty argument may come as NULL */
            memcpy(at, argv[i], lens[i]);
        c->argv[i] = at;
        c->lens[i] = lens[i];
        at += lens[i];
    }
    if (send_command(n, c, false) != 0) {
        free(c);
        return -1;
    }
    return 0;
}

int cluster_publish(struct cluster *cl, const char *full, size_t flen, const char *payload,
                    size_t len)
{
    const char *argv[] = {"SPUBLISH", full, payload};
    size_t lens[] = {8, flen, len};
    return command_start(cl, full, flen, NULL, NULL, 3, argv, lens);
}

int cluster_command(struct cluster *cl, const char *key, size_t klen, resp_reply_fn *fn, void *arg,
                    int argc, const char **argv, const size_t *lens)
{
    return command_start(cl, key, klen, fn, arg, argc, argv, lens);
}

static bool node_ready(const struct node *n)
{
    uint64_t dead_after = (uint64_t)n->cl->app->cfg->heartbeat_ms * BEATS_BEFORE_DEAD;
    return n->used && n->state == NODE_UP && n->last_beat_ms &&
           now_ms(n->cl) - n->last_beat_ms <= dead_after;
}

bool cluster_ready(const struct cluster *cl)
{
    if (!cl->covered)
        return false;
    for (int i = 0; i < cl->nnodes; i++)
        if (cl->nodes[i].used && !node_ready(&cl->nodes[i]))
            return false;
    return true;
}

bool cluster_any_ready(const struct cluster *cl)
{
    for (int i = 0; i < cl->nnodes; i++)
        if (node_ready(&cl->nodes[i]))
            return true;
    return false;
}

int cluster_nodes(const struct cluster *cl)
{
    return cl->nnodes;
}

bool cluster_node_ready(const struct cluster *cl, int i)
{
    return node_ready(&cl->nodes[i]);
}

const char *cluster_node_label(const struct cluster *cl, int i)
{
    return cl->nodes[i].used ? cl->nodes[i].label : NULL;
}

uint64_t cluster_heartbeat_age_ms(const struct cluster *cl)
{
    uint64_t oldest = now_ms(cl);
    bool any = false;
    for (int i = 0; i < cl->nnodes; i++) {
        const struct node *n = &cl->nodes[i];
        if (!n->used)
            continue;
        uint64_t since = n->beat_seen_ms ? n->beat_seen_ms : cl->app->started_ms;
        if (since < oldest)
            oldest = since;
        any = true;
    }
    return now_ms(cl) - (any ? oldest : cl->app->started_ms);
}
