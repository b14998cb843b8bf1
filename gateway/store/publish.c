#include "publish.h"
#include "envelope_sig.h"
#include "sigkey.h"
#include "bus.h"
#include "db.h"
#include "herald.h"
#include "pg_array.h"

#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define BATCH_MAX   500       /* messages in one statement */
#define BATCH_BYTES (1 << 20) /* data bytes in one statement (one item may exceed it) */
/* After a batch of at least GATHER_AFTER messages (many publishers are waiting on commits),
 * the next batch waits GATHER_MS: the answers just sent bring their senders' next
 * publishes, which then share one commit instead of trailing one commit behind. */
#define GATHER_AFTER 16
#define GATHER_MS    1
/* One batch at a time. Batches that share a channel commit one after the other anyway (the
 * channel row stays locked until COMMIT), so a second batch in flight only takes messages
 * away from the next one and measured slower (docs/PERFORMANCE.md, durable publish). The
 * other connections of the pool serve catch-up and head queries. */
#define MAX_INFLIGHT 1

static const char batch_sql[] = "SELECT ord, seq, envelope, epoch, duplicate "
                                "FROM herald_publish_batch($1::text[], $2::json[], $3::text[])";

struct publish_batch {
    struct publisher *p;
    struct publish_request *items; /* in array order */
    size_t n;
    struct db_request q;
};

struct publisher {
    struct herald *app;
    struct publish_request *head, *tail;
    size_t queued;
    unsigned inflight;
    bool closing; /* freed when the last batch in flight ends and the timer closed */
    bool timer_closed;
    bool gathering; /* the gather timer runs: the next batch waits for it */
    uv_timer_t gather;
    struct later kick; /* sends what publish_durable queued, on the loop */
    char *signed_buf;  /* the signed payload being published, reused */
    size_t signed_cap;
    uint64_t batches, messages;
};

struct publisher *publisher_new(struct herald *app)
{
    struct publisher *p = calloc(1, sizeof *p);
    if (!p)
        return NULL;
    p->app = app;
    uv_timer_init(app->loop, &p->gather);
    p->gather.data = p;
    return p;
}

static void maybe_free(struct publisher *p)
{
    if (p->closing && p->timer_closed && p->inflight == 0) {
        free(p->signed_buf);
        free(p);
    }
}

static void timer_closed(uv_handle_t *h)
{
    struct publisher *p = h->data;
    p->timer_closed = true;
    maybe_free(p);
}

/* Every outcome goes through here: the request is the caller's again once cb runs. */
static void finish(struct herald *app, struct publish_request *r, const struct publish_result *res)
{
    free(r->copy);
    r->copy = NULL;
    later_assert_outside(&app->later);
    r->cb(r->arg, res);
}

static void fail_items(struct herald *app, struct publish_request *r, const char *err, bool refused)
{
    struct publish_result res = {.err = err, .refused = refused};
    while (r) {
        struct publish_request *next = r->next;
        finish(app, r, &res);
        r = next;
    }
}

void publisher_free(struct publisher *p)
{
    if (!p)
        return;
    struct publish_request *queued = p->head;
    p->head = p->tail = NULL;
    p->queued = 0;
    fail_items(p->app, queued, "shutting down", false);
    later_cancel(&p->app->later, &p->kick);
    p->closing = true;
    uv_timer_stop(&p->gather);
    uv_close((uv_handle_t *)&p->gather, timer_closed);
}

uint64_t publisher_batches(const struct publisher *p)
{
    return p ? p->batches : 0;
}

uint64_t publisher_messages(const struct publisher *p)
{
    return p ? p->messages : 0;
}

size_t publisher_queued(const struct publisher *p)
{
    return p ? p->queued : 0;
}

/* The three array literals ($1 channels, $2 data, $3 keys) of a batch, in one allocation
 * that lit[0] owns. */
static int build_literals(const struct publish_batch *b, char *lit[3])
{
    size_t size[3] = {3, 3, 3};
    for (const struct publish_request *r = b->items; r; r = r->next) {
        size[0] += pg_array_room(r->channel);
        size[1] += 2 * r->size + 3; /* pg_array_room(r->data) without the strlen */
        size[2] += pg_array_room(r->key);
    }
    char *buf = malloc(size[0] + size[1] + size[2]);
    if (!buf)
        return -1;
    char *out = buf;
    for (int k = 0; k < 3; k++) {
        lit[k] = out;
        *out++ = '{';
        bool first = true;
        for (const struct publish_request *r = b->items; r; r = r->next, first = false)
            out = pg_array_put(out, k == 0 ? r->channel : k == 1 ? r->data : r->key, first);
        *out++ = '}';
        *out++ = '\0';
    }
    return 0;
}

static void pump(struct publisher *p);

static void on_gathered(uv_timer_t *t)
{
    struct publisher *p = t->data;
    p->gathering = false;
    pump(p);
}

static void push_front(struct publisher *p, struct publish_request *list, size_t n)
{
    struct publish_request *last = list;
    while (last->next)
        last = last->next;
    last->next = p->head;
    if (!p->head)
        p->tail = last;
    p->head = list;
    p->queued += n;
}

/* PostgreSQL refused the message itself: a data exception (class 22: bad JSON, a bad
 * channel name) or an integrity violation (class 23). Anything else may pass on a retry. */
static bool refused_by_server(const PGresult *r)
{
    const char *state = r ? PQresultErrorField(r, PG_DIAG_SQLSTATE) : NULL;
    return state && (strncmp(state, "22", 2) == 0 || strncmp(state, "23", 2) == 0);
}

/* PUBLISHes a stored envelope, signed with the envelope key so that every process takes it
 * for what PostgreSQL stored. Before the key is known the bare envelope goes out: the
 * other processes then fetch the message from PostgreSQL (a little later, nothing lost). */
static void publish_envelope(struct publisher *p, const char *channel, const char *epoch,
                             const char *env, size_t len)
{
    struct herald *app = p->app;
    size_t need = ENVELOPE_SIG_SIGNED_LEN(len);
    const struct envelope_key *key = sigkey_get(app->sigkey);
    if (key && need > p->signed_cap) {
        char *buf = realloc(p->signed_buf, need);
        if (buf) {
            p->signed_buf = buf;
            p->signed_cap = need;
        }
    }
    size_t n =
        key && need <= p->signed_cap ? envelope_sig_sign(key, epoch, env, len, p->signed_buf) : 0;
    if (n)
        bus_publish(app->bus, channel, p->signed_buf, n);
    else
        bus_publish(app->bus, channel, env, len);
}

static void deliver(struct publisher *p, struct publish_batch *b, const PGresult *r)
{
    size_t i = 0;
    for (struct publish_request *it = b->items, *next; it; it = next, i++) {
        next = it->next;
        struct publish_result res = {.seq = strtoull(PQgetvalue(r, (int)i, 1), NULL, 10),
                                     .epoch = PQgetvalue(r, (int)i, 3),
                                     .duplicate = PQgetvalue(r, (int)i, 4)[0] == 't'};
        /* step 2, now that step 1 is committed; a retry publishes nothing new */
        if (!res.duplicate)
            publish_envelope(p, it->channel, res.epoch, PQgetvalue(r, (int)i, 2),
                             (size_t)PQgetlength(r, (int)i, 2));
        finish(p->app, it, &res);
    }
    p->messages += b->n;
}

static void batch_done(void *arg, const PGresult *r, const char *err)
{
    struct publish_batch *b = arg;
    struct publisher *p = b->p;
    p->inflight--;
    if (p->closing) {
        fail_items(p->app, b->items, err ? err : "shutting down", false);
        free(b);
        maybe_free(p);
        return;
    }
    size_t n = b->n;
    if (!err && (size_t)PQntuples(r) != b->n)
        err = "publish returned an unexpected number of rows";
    if (err && r && b->n > 1 && PQresultStatus(r) == PGRES_FATAL_ERROR) {
        /* PostgreSQL refused the statement, so nothing of it was stored: one bad message
         * must not fail the others, so each goes again by itself */
        for (struct publish_request *it = b->items; it; it = it->next)
            it->alone = true;
        push_front(p, b->items, b->n);
    } else if (err) {
        fail_items(p->app, b->items, err, refused_by_server(r));
    } else {
        deliver(p, b, r);
    }
    free(b);
    if (n >= GATHER_AFTER && !p->gathering) {
        p->gathering = true;
        uv_timer_start(&p->gather, on_gathered, GATHER_MS, 0);
    }
    pump(p);
}

/* Takes the next batch off the queue: as many items as fit, or one item that must go
 * alone. */
static struct publish_batch *take_batch(struct publisher *p)
{
    struct publish_batch *b = calloc(1, sizeof *b);
    if (!b)
        return NULL;
    b->p = p;
    struct publish_request **tail = &b->items;
    size_t bytes = 0;
    while (p->head && b->n < BATCH_MAX) {
        struct publish_request *it = p->head;
        if (b->n && (it->alone || b->items->alone || bytes + it->size > BATCH_BYTES))
            break;
        p->head = it->next;
        p->queued--;
        it->next = NULL;
        *tail = it;
        tail = &it->next;
        b->n++;
        bytes += it->size;
    }
    if (!p->head)
        p->tail = NULL;
    return b;
}

/* Sends batches while fewer than MAX_INFLIGHT are committing: under load the queue grows
 * behind them and the next batch carries all of it. Runs from the loop only (a kick,
 * the gather timer, a batch's answer), never inside publish_durable. */
static void pump(struct publisher *p)
{
    if (p->gathering && p->queued < BATCH_MAX)
        return; /* on_gathered sends it */
    if (p->gathering) {
        uv_timer_stop(&p->gather);
        p->gathering = false;
    }
    while (p->head && p->inflight < MAX_INFLIGHT) {
        struct publish_batch *b = take_batch(p);
        if (!b) {
            struct publish_request *all = p->head;
            p->head = p->tail = NULL;
            p->queued = 0;
            fail_items(p->app, all, "out of memory", false);
            return;
        }
        char *lit[3] = {NULL};
        if (build_literals(b, lit) < 0) {
            fail_items(p->app, b->items, "out of memory", false);
            free(b);
            continue;
        }
        const char *params[] = {lit[0], lit[1], lit[2]};
        p->inflight++;
        p->batches++;
        db_query(p->app->db, &b->q, batch_sql, 3, params, batch_done, b);
        free(lit[0]);
    }
}

static void run_kick(struct later *item)
{
    pump(LATER_OWNER(item, struct publisher, kick));
}

static void run_failure(struct later *item)
{
    struct publish_request *r = LATER_OWNER(item, struct publish_request, later);
    struct publish_result res = {.err = r->fail};
    r->cb(r->arg, &res);
}

void publish_durable(struct herald *app, struct publish_request *r, const char *channel,
                     const char *data, size_t len, const char *key, publish_cb cb, void *arg)
{
    struct publisher *p = app->publisher;
    later_enter(&app->later);
    *r = (struct publish_request){.cb = cb, .arg = arg, .size = len};
    size_t nc = strlen(channel) + 1, nk = key ? strlen(key) + 1 : 0;
    if (!p || !db_usable(app->db))
        r->fail = "history unavailable";
    else if (p->queued >= (size_t)app->cfg->publish_queue_max)
        r->fail = "too many publishes waiting (HERALD_PUBLISH_QUEUE_MAX)";
    else if (!(r->copy = malloc(nc + len + 1 + nk)))
        r->fail = "out of memory";
    if (r->fail) {
        later_post(&app->later, &r->later, run_failure);
        later_leave(&app->later);
        return;
    }
    char *out = r->copy;
    r->channel = memcpy(out, channel, nc);
    r->data = memcpy(out + nc, data, len);
    out[nc + len] = '\0';
    if (key)
        r->key = memcpy(out + nc + len + 1, key, nk);
    if (p->tail)
        p->tail->next = r;
    else
        p->head = r;
    p->tail = r;
    p->queued++;
    later_post(&app->later, &p->kick, run_kick);
    later_leave(&app->later);
}
