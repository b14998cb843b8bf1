#include "sentinel.h"
#include "herald.h"
#include "later.h"
#include "log.h"
#include "redis_uv.h"
#include "resolve.h"

#include <ctype.h>
#include <hiredis/async.h>
#include <hiredis/hiredis.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* A sentinel that accepted the connection and says nothing is skipped after this long, well
 * inside the bus's connect timeout, so that one hung sentinel cannot hide the others. */
#define ASK_TIMEOUT_MS 1000

struct sentinel {
    struct herald *app;
    const struct redis_url *url;
    sentinel_found_cb found;
    sentinel_switched_cb switched;
    void *arg;
    bool asking;               /* an ask is in flight: found is owed */
    int next;                  /* the sentinel the next ask starts with */
    int start;                 /* the one this ask started with */
    int current;               /* the sentinel being asked */
    int tried;                 /* sentinels asked so far in this ask */
    struct resolve *resolving; /* the current sentinel's host name */
    redisAsyncContext *ask;    /* the connection asking it */
    char ask_addr[64];         /* its address, for the watch */
    redisAsyncContext *watch;  /* SUBSCRIBE +switch-master on the sentinel that answered */
    int watching;              /* which one; -1: none */
    uv_timer_t timer;          /* ASK_TIMEOUT_MS for the sentinel being asked */
    struct later done;         /* delivers the answer */
    char host[256];
    int port;
    char err[200];
};

static void drop(redisAsyncContext **ac)
{
    if (*ac) {
        (*ac)->data = NULL; /* its callbacks find nothing from now on */
        redisAsyncFree(*ac);
        *ac = NULL;
    }
}

static void deliver(struct later *item)
{
    struct sentinel *s = LATER_OWNER(item, struct sentinel, done);
    if (!s->asking)
        return;
    s->asking = false;
    later_assert_outside(&s->app->later);
    s->found(s->arg, s->err[0] ? NULL : s->host, s->port, s->err[0] ? s->err : NULL);
}

static void finish(struct sentinel *s, const char *host, int port, const char *err)
{
    uv_timer_stop(&s->timer);
    drop(&s->ask);
    snprintf(s->host, sizeof s->host, "%s", host ? host : "");
    s->port = port;
    snprintf(s->err, sizeof s->err, "%s", err ? err : "");
    later_post(&s->app->later, &s->done, deliver);
}

static void ask_next(struct sentinel *s);

static redisAsyncContext *open_to(struct sentinel *s, const char *addr, int port)
{
    redisAsyncContext *ac = redisAsyncConnect(addr, port);
    if (ac && !ac->err && redis_uv_attach(ac, s->app->loop) == 0) {
        ac->data = s;
        return ac;
    }
    if (ac)
        redisAsyncFree(ac);
    return NULL;
}

/* ---- the watch: +switch-master from the sentinel that last answered */

static void on_switch_message(redisAsyncContext *ac, void *r, void *privdata)
{
    (void)privdata;
    struct sentinel *s = ac->data;
    redisReply *reply = r;
    if (!s || !reply || reply->type != REDIS_REPLY_ARRAY || reply->elements != 3 ||
        reply->element[0]->type != REDIS_REPLY_STRING ||
        strcmp(reply->element[0]->str, "message") != 0 ||
        reply->element[2]->type != REDIS_REPLY_STRING)
        return;
    /* "<master-name> <old-ip> <old-port> <new-ip> <new-port>" */
    const char *text = reply->element[2]->str;
    size_t n = strlen(s->url->master_name);
    if (strncmp(text, s->url->master_name, n) == 0 && text[n] == ' ') {
        log_warn("redis_sentinel", "sentinels switched master %s: %s", s->url->master_name,
                 text + n + 1);
        s->switched(s->arg);
    }
}

static void on_watch_gone(const redisAsyncContext *ac, int status)
{
    (void)status;
    struct sentinel *s = ac->data;
    if (s && ac == s->watch) {
        s->watch = NULL; /* the next ask watches again */
        s->watching = -1;
    }
}

static void on_watch_connect(const redisAsyncContext *ac, int status)
{
    if (status != REDIS_OK)
        on_watch_gone(ac, status);
}

static void watch_from(struct sentinel *s, int i, const char *addr)
{
    if (s->watch && s->watching == i)
        return;
    drop(&s->watch);
    s->watching = -1;
    s->watch = open_to(s, addr, s->url->hosts[i].port);
    if (!s->watch)
        return; /* the bus still notices a dead master by its heartbeat */
    s->watching = i;
    redisAsyncSetConnectCallback(s->watch, on_watch_connect);
    redisAsyncSetDisconnectCallback(s->watch, on_watch_gone);
    redisAsyncCommand(s->watch, on_switch_message, NULL, "SUBSCRIBE +switch-master");
}

/* ---- one ask */

/* An address a sentinel gave: a host name or address, nothing else. */
static bool host_ok(const redisReply *r)
{
    if (r->type != REDIS_REPLY_STRING || r->len == 0 || r->len >= 256)
        return false;
    for (size_t i = 0; i < r->len; i++)
        if (!isalnum((unsigned char)r->str[i]) && !strchr(".-_:", r->str[i]))
            return false;
    return true;
}

static int port_of(const redisReply *r)
{
    if (r->type != REDIS_REPLY_STRING || r->len == 0 || r->len > 5)
        return -1;
    int port = 0;
    for (size_t i = 0; i < r->len; i++) {
        if (!isdigit((unsigned char)r->str[i]))
            return -1;
        port = port * 10 + (r->str[i] - '0');
    }
    return port >= 1 && port <= 65535 ? port : -1;
}

static void on_master_reply(redisAsyncContext *ac, void *r, void *privdata)
{
    (void)privdata;
    struct sentinel *s = ac->data;
    redisReply *reply = r;
    if (!s || ac != s->ask)
        return;
    int port = -1;
    if (reply && reply->type == REDIS_REPLY_ARRAY && reply->elements == 2 &&
        host_ok(reply->element[0]))
        port = port_of(reply->element[1]);
    if (port < 0) {
        /* a nil (it does not know the master), an error, or a malformed answer */
        log_warn("redis_sentinel", "sentinel %s:%d gave no usable address for master %s",
                 s->url->hosts[s->current].host, s->url->hosts[s->current].port,
                 s->url->master_name);
        uv_timer_stop(&s->timer);
        drop(&s->ask);
        ask_next(s);
        return;
    }
    watch_from(s, s->current, s->ask_addr);
    finish(s, reply->element[0]->str, port, NULL);
}

static void on_ask_gone(const redisAsyncContext *ac, int status)
{
    (void)status;
    struct sentinel *s = ac->data;
    if (!s || ac != s->ask)
        return;
    s->ask = NULL; /* hiredis frees it after this callback */
    uv_timer_stop(&s->timer);
    ask_next(s);
}

static void on_ask_connect(const redisAsyncContext *ac, int status)
{
    if (status != REDIS_OK)
        on_ask_gone(ac, status);
}

static void on_ask_timeout(uv_timer_t *t)
{
    struct sentinel *s = t->data;
    log_warn("redis_sentinel", "sentinel %s:%d did not answer in %d ms",
             s->url->hosts[s->current].host, s->url->hosts[s->current].port, ASK_TIMEOUT_MS);
    drop(&s->ask);
    ask_next(s);
}

static void ask_at(struct sentinel *s, const char *addr)
{
    snprintf(s->ask_addr, sizeof s->ask_addr, "%s", addr);
    uv_timer_start(&s->timer, on_ask_timeout, ASK_TIMEOUT_MS, 0);
    s->ask = open_to(s, addr, s->url->hosts[s->current].port);
    if (!s->ask) {
        ask_next(s);
        return;
    }
    redisAsyncSetConnectCallback(s->ask, on_ask_connect);
    redisAsyncSetDisconnectCallback(s->ask, on_ask_gone);
    redisAsyncCommand(s->ask, on_master_reply, NULL, "SENTINEL get-master-addr-by-name %s",
                      s->url->master_name);
}

static void on_resolved(void *arg, const char *addr, const char *err)
{
    struct sentinel *s = arg;
    s->resolving = NULL;
    if (addr)
        ask_at(s, addr);
    else
        ask_next(s);
    (void)err;
}

/* Asks the next sentinel, or gives up once each has been asked. */
static void ask_next(struct sentinel *s)
{
    const struct redis_url *u = s->url;
    if (s->tried == u->nhosts) {
        char why[200];
        snprintf(why, sizeof why, "none of %d sentinel(s) named master %s", u->nhosts,
                 u->master_name);
        finish(s, NULL, 0, why);
        return;
    }
    s->current = (s->start + s->tried) % u->nhosts;
    s->tried++;
    const char *host = u->hosts[s->current].host;
    if (resolve_is_numeric(host)) {
        ask_at(s, host);
        return;
    }
    s->resolving = resolve_start(s->app->loop, host, on_resolved, s);
    if (!s->resolving)
        ask_next(s);
}

struct sentinel *sentinel_new(struct herald *app, const struct redis_url *url,
                              sentinel_found_cb found, sentinel_switched_cb switched, void *arg)
{
    struct sentinel *s = calloc(1, sizeof *s);
    if (!s)
        return NULL;
    *s = (struct sentinel){
        .app = app, .url = url, .found = found, .switched = switched, .arg = arg, .watching = -1};
    uv_timer_init(app->loop, &s->timer);
    s->timer.data = s;
    return s;
}

void sentinel_ask(struct sentinel *s)
{
    later_enter(&s->app->later);
    sentinel_cancel(s);
    s->asking = true;
    s->tried = 0;
    s->start = s->next;
    s->next = (s->next + 1) % s->url->nhosts;
    ask_next(s);
    later_leave(&s->app->later);
}

void sentinel_cancel(struct sentinel *s)
{
    uv_timer_stop(&s->timer);
    if (s->resolving)
        resolve_cancel(s->resolving);
    s->resolving = NULL;
    drop(&s->ask);
    later_cancel(&s->app->later, &s->done);
    s->asking = false;
}

static void free_sentinel(uv_handle_t *h)
{
    free(h->data);
}

void sentinel_free(struct sentinel *s)
{
    if (!s)
        return;
    sentinel_cancel(s);
    drop(&s->watch);
    uv_close((uv_handle_t *)&s->timer, free_sentinel); /* freed once the loop runs */
}
