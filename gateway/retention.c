#include "retention.h"
#include "db.h"
#include "herald.h"
#include "log.h"

#include <stdio.h>
#include <stdlib.h>
#include <uv.h>

#define PRUNE_BATCH 1000

/* One batch per statement, under a transaction-scoped advisory lock: instances that meet
 * here skip (-1) instead of deleting the same rows, and the lock cannot outlive the
 * statement on a pooled connection. */
static const char prune_sql[] = "SELECT CASE WHEN pg_try_advisory_xact_lock(x'48657261'::bigint) "
                                "THEN herald_prune($1::bigint, $2::bigint, $3::int) ELSE -1 END";

struct retention {
    struct herald *app;
    uv_timer_t timer;
    struct db_request q;
    bool busy; /* a prune statement is in flight: q is the db's until on_pruned */
    bool closing;
    uint64_t pruned;
};

static void prune_batch(struct retention *r);

static void on_pruned(void *arg, const PGresult *res, const char *err)
{
    struct retention *r = arg;
    r->busy = false;
    if (r->closing) {
        free(r);
        return;
    }
    if (err) {
        log_warn("prune_failed", "history pruning failed: %s", err);
        return;
    }
    long n = strtol(PQgetvalue(res, 0, 0), NULL, 10);
    if (n > 0)
        r->pruned += (uint64_t)n;
    if (n == PRUNE_BATCH)
        prune_batch(r); /* more to do: keep going, one bounded batch at a time */
    else if (r->pruned && n >= 0)
        log_debug("pruned", "history pruned (%llu messages since start)",
                  (unsigned long long)r->pruned);
}

static void prune_batch(struct retention *r)
{
    const struct herald_config *cfg = r->app->cfg;
    char ttl[24], max[24], batch[16];
    snprintf(ttl, sizeof ttl, "%ld", cfg->history_ttl_ms);
    snprintf(max, sizeof max, "%ld", cfg->history_max);
    snprintf(batch, sizeof batch, "%d", PRUNE_BATCH);
    const char *params[] = {ttl, max, batch};
    r->busy = true;
    db_query(r->app->db, &r->q, prune_sql, 3, params, on_pruned, r);
}

static void on_tick(uv_timer_t *t)
{
    struct retention *r = t->data;
    if (!r->busy)
        prune_batch(r);
}

struct retention *retention_new(struct herald *app)
{
    struct retention *r = calloc(1, sizeof *r);
    if (!r)
        return NULL;
    r->app = app;
    uv_timer_init(app->loop, &r->timer);
    r->timer.data = r;
    return r;
}

void retention_start(struct retention *r)
{
    uint64_t every = (uint64_t)r->app->cfg->prune_interval_ms;
    uv_timer_start(&r->timer, on_tick, every, every);
}

static void on_closed(uv_handle_t *h)
{
    struct retention *r = h->data;
    if (r->busy)
        r->closing = true; /* on_pruned frees it */
    else
        free(r);
}

void retention_free(struct retention *r)
{
    if (!r)
        return;
    uv_timer_stop(&r->timer);
    uv_close((uv_handle_t *)&r->timer, on_closed);
}

uint64_t retention_pruned(const struct retention *r)
{
    return r ? r->pruned : 0;
}
