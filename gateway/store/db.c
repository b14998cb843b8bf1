#include "db.h"
#include "herald.h"
#include "backoff.h"
#include "log.h"
#include "pg_hosts.h"
#include "resolve.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <uv.h>

#define DB_MAX_POOL     64
#define DB_BACKOFF_MIN  200
#define DB_BACKOFF_MAX  5000
#define DB_MAX_PREPARED 8 /* distinct statements prepared per connection */

enum conn_state { C_DOWN, C_CONNECTING, C_IDLE, C_BUSY };

/* A poll handle belongs to one socket; libpq may switch sockets while connecting, so each
 * socket gets its own handle, closed (and freed) when the socket is done with. */
struct watch {
    uv_poll_t poll;
    struct conn *conn;
    int events; /* what the poll handle watches now */
};

struct conn {
    struct db *db;
    PGconn *pg;
    struct watch *watch;
    int fd;
    enum conn_state state;
    struct db_request *req; /* in flight */
    PGresult *result;       /* last result of the request in flight */
    bool preparing;         /* the request's statement is being prepared first */
    unsigned prepared;      /* bit i: statement i of db->statements is prepared here */
    uint64_t since_ms;      /* when the current state began */
    uint64_t retry_at_ms;
    struct backoff backoff;
    struct resolve *resolving; /* the host name's lookup, before connecting */
    int host;                  /* index in db->hosts of the host tried or connected to */
    int failed_hosts;          /* hosts that failed in a row since the last success */
};

struct db {
    struct herald *app;
    const char *url;
    const char *name;      /* "PostgreSQL", or "the PostgreSQL standby" */
    struct pg_hosts hosts; /* HERALD_DATABASE_URL, one host per connect attempt */
    int good_host;         /* where a connection last succeeded: a new round starts there */
    struct conn conns[DB_MAX_POOL];
    int nconns;
    struct db_request *head, *tail;
    size_t queued;
    struct later kick; /* dispatches what db_query queued, on the loop */
    /* Callers pass their SQL as static text; each distinct text is prepared once per
     * connection (as herald_<i>) and executed by name from then on: no parse and plan per
     * query. */
    const char *statements[DB_MAX_PREPARED];
    int nstatements;
    uv_timer_t timer;
    uint64_t sent;
    bool was_up;
    /* From db_start until a connection first comes up, or one has failed on every host:
     * queries wait for the pool's first connections instead of failing at once. */
    bool starting;
};

static uint64_t now_ms(const struct db *db)
{
    return herald_now_ms(db->app);
}

static void watch_closed(uv_handle_t *h)
{
    free(h->data);
}

static void unwatch(struct conn *c)
{
    if (c->watch) {
        c->watch->poll.data = c->watch;
        c->watch->conn = NULL;
        uv_poll_stop(&c->watch->poll);
        uv_close((uv_handle_t *)&c->watch->poll, watch_closed);
        c->watch = NULL;
    }
    c->fd = -1;
}

static void on_poll(uv_poll_t *h, int status, int events);

/* Watches the connection's current socket for the given events. */
static void watch(struct conn *c, int events)
{
    int fd = PQsocket(c->pg);
    if (c->watch && fd != c->fd)
        unwatch(c);
    if (!c->watch) {
        struct watch *w = calloc(1, sizeof *w);
        if (!w || uv_poll_init_socket(c->db->app->loop, &w->poll, fd) != 0) {
            free(w);
            return;
        }
        w->conn = c;
        w->poll.data = w;
        c->watch = w;
        c->fd = fd;
    }
    /* libuv 1.44 re-registers the socket with epoll on every uv_poll_start */
    if (c->watch->events != events) {
        c->watch->events = events;
        uv_poll_start(&c->watch->poll, events, on_poll);
    }
}

/* Every completion goes through here: the request is the caller's again once done runs. */
static void complete(struct db *db, struct db_request *r, const PGresult *res, const char *err)
{
    free(r->params);
    r->params = NULL;
    later_assert_outside(&db->app->later);
    r->done(r->arg, res, err);
}

static void finish_request(struct conn *c, const PGresult *res, const char *err)
{
    struct db_request *r = c->req;
    c->req = NULL;
    if (r)
        complete(c->db, r, res, err);
    PQclear(c->result);
    c->result = NULL;
}

static void fail_queue(struct db *db, const char *err)
{
    struct db_request *r;
    while ((r = db->head)) {
        db->head = r->next;
        db->queued--;
        complete(db, r, NULL, err);
    }
    db->tail = NULL;
}

static void dispatch(struct db *db);

/* After a failure the connection tries the next host of the URL at once; only when every host
 * has failed in a row does it wait (backoff) before the next round. */
static void next_host(struct conn *c)
{
    struct db *db = c->db;
    uint64_t now = now_ms(db);
    if (db->hosts.n > 1 && ++c->failed_hosts < db->hosts.n) {
        c->host = (c->host + 1) % db->hosts.n;
        c->retry_at_ms = now;
        return;
    }
    c->failed_hosts = 0;
    c->retry_at_ms = now + backoff_next(&c->backoff);
}

/* The connection failed: its request fails, it retries on the next host or later. */
static void conn_down(struct conn *c, const char *reason)
{
    struct db *db = c->db;
    char why[256]; /* reason often lives inside the PGconn that PQfinish frees below */
    snprintf(why, sizeof why, "%s", reason);
    int failed_host = c->host;
    bool was_ready = c->state == C_IDLE || c->state == C_BUSY;
    if (c->resolving)
        resolve_cancel(c->resolving);
    c->resolving = NULL;
    finish_request(c, NULL, why);
    unwatch(c);
    PQfinish(c->pg);
    c->pg = NULL;
    c->state = C_DOWN;
    c->preparing = false;
    c->prepared = 0; /* a new session prepares again */
    next_host(c);
    if (c->failed_hosts == 0) /* a whole round of hosts failed */
        db->starting = false;
    /* every connection's first two rounds of hosts; after that only the summary below */
    if (was_ready || c->backoff.attempts <= 1)
        log_warn("db_down", "%s connection%s%s lost: %s", db->name, db->hosts.n > 1 ? " to " : "",
                 db->hosts.n > 1 ? db->hosts.hosts[failed_host].host : "", why);
    if (!db_usable(db)) {
        if (db->was_up)
            log_error("db_unavailable", "no connection to %s is up", db->name);
        db->was_up = false;
        fail_queue(db, "history unavailable");
    }
}

static void conn_ready(struct conn *c)
{
    PQsetnonblocking(c->pg, 1);
    c->state = C_IDLE;
    backoff_reset(&c->backoff);
    c->failed_hosts = 0;
    c->db->good_host = c->host;
    c->since_ms = now_ms(c->db);
    watch(c, UV_READABLE);
    if (!c->db->was_up)
        log_info("db_up", "connected to %s%s%s", c->db->name, c->db->hosts.n > 1 ? " at " : "",
                 c->db->hosts.n > 1 ? c->db->hosts.hosts[c->host].host : "");
    c->db->was_up = true;
    c->db->starting = false; /* step_connect dispatches what waited for this */
}

/* Drives PQconnectPoll until the connection is made or fails. */
static void step_connect(struct conn *c)
{
    switch (PQconnectPoll(c->pg)) {
    case PGRES_POLLING_READING:
        watch(c, UV_READABLE);
        break;
    case PGRES_POLLING_WRITING:
        watch(c, UV_WRITABLE);
        break;
    case PGRES_POLLING_OK:
        conn_ready(c);
        dispatch(c->db);
        break;
    default:
        conn_down(c, PQerrorMessage(c->pg));
        break;
    }
}

/* Connects to the connection's host (at addr, its looked-up address, when not NULL), or from
 * the URL as it is when the URL could not be split into hosts. */
static void connect_to(struct conn *c, const char *addr)
{
    struct db *db = c->db;
    if (db->hosts.n > 0) {
        pg_hosts_params(&db->hosts, c->host, addr);
        c->pg = PQconnectStartParams(db->hosts.keywords, db->hosts.values, 0);
    } else {
        c->pg = PQconnectStart(db->url);
    }
    if (!c->pg || PQstatus(c->pg) == CONNECTION_BAD) {
        conn_down(c, c->pg ? PQerrorMessage(c->pg) : "out of memory");
        return;
    }
    step_connect(c);
}

static void on_resolved(void *arg, const char *addr, const char *err)
{
    struct conn *c = arg;
    c->resolving = NULL;
    if (addr)
        connect_to(c, addr);
    else
        conn_down(c, err);
}

/* C_CONNECTING covers the lookup too: HERALD_DB_CONNECT_TIMEOUT bounds both. A new round of
 * hosts starts where a connection last succeeded. */
static void start_connect(struct conn *c)
{
    struct db *db = c->db;
    c->state = C_CONNECTING;
    c->since_ms = now_ms(db);
    if (c->failed_hosts == 0)
        c->host = db->good_host;
    if (db->hosts.n == 0 || !db->hosts.hosts[c->host].lookup) {
        connect_to(c, NULL);
        return;
    }
    c->resolving = resolve_start(db->app->loop, db->hosts.hosts[c->host].host, on_resolved, c);
    if (!c->resolving)
        conn_down(c, "cannot start the host name lookup");
}

static void send_request(struct conn *c, struct db_request *r);

/* The Prepare of the request's statement is answered: run the request, or fail it. */
static void prepared(struct conn *c, const PGresult *res)
{
    c->preparing = false;
    if (PQresultStatus(res) == PGRES_COMMAND_OK) {
        struct db_request *r = c->req;
        c->req = NULL;
        for (int i = 0; i < c->db->nstatements; i++)
            if (c->db->statements[i] == r->sql)
                c->prepared |= 1u << i;
        PQclear(c->result);
        c->result = NULL;
        send_request(c, r);
        return;
    }
    finish_request(c, res, PQresultErrorMessage(res));
    c->state = C_IDLE;
    c->since_ms = now_ms(c->db);
    watch(c, UV_READABLE);
    dispatch(c->db);
}

/* Reads what arrived; when the whole result is in, hands it to the requester. */
static void step_query(struct conn *c)
{
    if (!PQconsumeInput(c->pg)) {
        conn_down(c, PQerrorMessage(c->pg));
        return;
    }
    while (!PQisBusy(c->pg)) {
        PGresult *r = PQgetResult(c->pg);
        if (!r && c->preparing) {
            prepared(c, c->result);
            return;
        }
        if (!r) {
            ExecStatusType st = PQresultStatus(c->result);
            bool ok = st == PGRES_TUPLES_OK || st == PGRES_COMMAND_OK;
            const char *err = ok ? NULL : c->result ? PQresultErrorMessage(c->result) : "no result";
            finish_request(c, c->result, err);
            c->state = C_IDLE;
            c->since_ms = now_ms(c->db);
            watch(c, UV_READABLE);
            dispatch(c->db);
            return;
        }
        PQclear(c->result);
        c->result = r;
    }
}

/* Sends what libpq still holds; waits for writability when the socket is full. */
static void flush_out(struct conn *c)
{
    int f = PQflush(c->pg);
    if (f < 0)
        conn_down(c, PQerrorMessage(c->pg));
    else
        watch(c, f ? UV_READABLE | UV_WRITABLE : UV_READABLE);
}

static void on_poll(uv_poll_t *h, int status, int events)
{
    struct watch *w = h->data;
    struct conn *c = w->conn;
    if (status < 0)
        w->events = 0; /* libuv stopped the handle: the next watch() must start it again */
    if (!c)
        return;
    if (c->state == C_CONNECTING) {
        step_connect(c);
    } else if (c->state == C_BUSY) {
        if (events & UV_WRITABLE)
            flush_out(c);
        if (c->state == C_BUSY && (events & UV_READABLE || status < 0))
            step_query(c);
    } else if (c->state == C_IDLE) {
        /* an idle connection only becomes readable when the server closes it */
        if (!PQconsumeInput(c->pg) || PQstatus(c->pg) == CONNECTION_BAD)
            conn_down(c, "server closed the connection");
    }
}

/* The statement's index, registering it the first time; -1 when the table is full (the
 * query then goes unprepared). */
static int statement_index(struct db *db, const char *sql)
{
    for (int i = 0; i < db->nstatements; i++)
        if (db->statements[i] == sql)
            return i;
    if (db->nstatements == DB_MAX_PREPARED)
        return -1;
    db->statements[db->nstatements] = sql;
    return db->nstatements++;
}

static void send_request(struct conn *c, struct db_request *r)
{
    c->req = r;
    c->state = C_BUSY;
    c->since_ms = now_ms(c->db);
    int i = statement_index(c->db, r->sql);
    char name[24];
    snprintf(name, sizeof name, "herald_%d", i);
    const char *const *params = (const char *const *)r->params;
    int ok;
    if (i >= 0 && !(c->prepared & (1u << i))) {
        c->preparing = true; /* the query itself follows when PostgreSQL accepted it */
        ok = PQsendPrepare(c->pg, name, r->sql, r->nparams, NULL);
    } else {
        c->db->sent++;
        ok = i >= 0 ? PQsendQueryPrepared(c->pg, name, r->nparams, params, NULL, NULL, 0)
                    : PQsendQueryParams(c->pg, r->sql, r->nparams, NULL, params, NULL, NULL, 0);
    }
    if (!ok) {
        conn_down(c, PQerrorMessage(c->pg));
        return;
    }
    flush_out(c);
}

/* Hands queued requests to idle connections, oldest first. */
static void dispatch(struct db *db)
{
    for (int i = 0; i < db->nconns && db->head; i++) {
        struct conn *c = &db->conns[i];
        if (c->state != C_IDLE)
            continue;
        struct db_request *r = db->head;
        db->head = r->next;
        if (!db->head)
            db->tail = NULL;
        db->queued--;
        send_request(c, r);
    }
}

/* Reconnects connections whose backoff is over; drops those stuck past their deadline (the
 * host then counts as failed, and the next one is tried). */
static void on_tick(uv_timer_t *t)
{
    struct db *db = t->data;
    const struct herald_config *cfg = db->app->cfg;
    uint64_t now = now_ms(db);
    for (int i = 0; i < db->nconns; i++) {
        struct conn *c = &db->conns[i];
        if (c->state == C_DOWN && now >= c->retry_at_ms)
            start_connect(c);
        else if (c->state == C_BUSY && now - c->since_ms > (uint64_t)cfg->db_query_timeout_ms)
            conn_down(c, "query timed out");
        else if (c->state == C_CONNECTING &&
                 now - c->since_ms > (uint64_t)cfg->db_connect_timeout_ms)
            conn_down(c, "connect timed out");
    }
}

struct db *db_new(struct herald *app, const char *url, const char *name)
{
    struct db *db = calloc(1, sizeof *db);
    if (!db)
        return NULL;
    db->app = app;
    db->url = url;
    db->name = name;
    db->nconns = (int)(app->cfg->db_pool < DB_MAX_POOL ? app->cfg->db_pool : DB_MAX_POOL);
    for (int i = 0; i < db->nconns; i++) {
        db->conns[i].db = db;
        db->conns[i].fd = -1;
        backoff_init(&db->conns[i].backoff, DB_BACKOFF_MIN, DB_BACKOFF_MAX,
                     backoff_seed((uintptr_t)&db->conns[i]));
    }
    pg_hosts_parse(&db->hosts, url);
    uv_timer_init(app->loop, &db->timer);
    db->timer.data = db;
    return db;
}

void db_start(struct db *db)
{
    db->starting = true;
    for (int i = 0; i < db->nconns; i++)
        start_connect(&db->conns[i]);
    uv_timer_start(&db->timer, on_tick, 100, 100);
}

static void free_db(uv_handle_t *h)
{
    free(h->data);
}

void db_free(struct db *db)
{
    if (!db)
        return;
    for (int i = 0; i < db->nconns; i++) {
        struct conn *c = &db->conns[i];
        if (c->resolving)
            resolve_cancel(c->resolving);
        finish_request(c, NULL, "shutting down");
        unwatch(c);
        PQfinish(c->pg);
        c->pg = NULL;
        c->state = C_DOWN;
    }
    fail_queue(db, "shutting down");
    later_cancel(&db->app->later, &db->kick);
    pg_hosts_free(&db->hosts);
    uv_timer_stop(&db->timer);
    uv_close((uv_handle_t *)&db->timer, free_db);
}

bool db_up(const struct db *db)
{
    for (int i = 0; i < db->nconns; i++)
        if (db->conns[i].state == C_IDLE || db->conns[i].state == C_BUSY)
            return true;
    return false;
}

bool db_usable(const struct db *db)
{
    return db->starting || db_up(db);
}

uint64_t db_queries_sent(const struct db *db)
{
    return db->sent;
}

size_t db_queued(const struct db *db)
{
    return db->queued;
}

static void run_kick(struct later *item)
{
    dispatch(LATER_OWNER(item, struct db, kick));
}

static void run_failure(struct later *item)
{
    struct db_request *r = LATER_OWNER(item, struct db_request, later);
    complete(r->db, r, NULL, r->fail);
}

void db_fail(struct db *db, struct db_request *r, const char *err, db_done done, void *arg)
{
    *r = (struct db_request){.db = db, .done = done, .arg = arg, .fail = err};
    later_post(&db->app->later, &r->later, run_failure);
}

/* One allocation holding the pointer array and the copies of params. */
static char **copy_params(int nparams, const char *const *params)
{
    size_t size = (size_t)nparams * sizeof(char *);
    for (int i = 0; i < nparams; i++)
        size += params[i] ? strlen(params[i]) + 1 : 0;
    char **out = malloc(size ? size : 1);
    if (!out)
        return NULL;
    char *p = (char *)(out + nparams);
    for (int i = 0; i < nparams; i++) {
        out[i] = NULL;
        if (!params[i])
            continue;
        size_t n = strlen(params[i]) + 1;
        memcpy(p, params[i], n);
        out[i] = p;
        p += n;
    }
    return out;
}

void db_query(struct db *db, struct db_request *r, const char *sql, int nparams,
              const char *const *params, db_done done, void *arg)
{
    struct later_queue *later = &db->app->later;
    later_enter(later);
    const char *why = !db_usable(db) ? "history unavailable"
                      : db->queued >= (size_t)db->app->cfg->db_queue_max
                          ? "too many queries waiting for PostgreSQL (HERALD_DB_QUEUE_MAX)"
                          : NULL;
    char **copies = why ? NULL : copy_params(nparams, params);
    if (!why && !copies)
        why = "out of memory";
    if (why) {
        db_fail(db, r, why, done, arg);
    } else {
        *r = (struct db_request){
            .db = db, .sql = sql, .nparams = nparams, .params = copies, .done = done, .arg = arg};
        if (db->tail)
            db->tail->next = r;
        else
            db->head = r;
        db->tail = r;
        db->queued++;
        later_post(later, &db->kick, run_kick);
    }
    later_leave(later);
}
