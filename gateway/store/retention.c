#include "retention.h"
#include "db.h"
#include "herald.h"
#include "log.h"

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <uv.h>

#define PRUNE_BATCH 1000

/* One bounded step per statement (common/sql/005_idle_channels.sql): it deletes old messages,
 * messages past the limit and idle channel rows, and says whether more is waiting. Instances
 * that meet here do not both work: a step returns (0, 0, false) at once while another one
 * holds retention's state row, a lock that cannot outlive the statement on a pooled
 * connection. */
static const char prune_sql[] =
    "SELECT messages, channels, more FROM herald_prune_step($1::bigint, $2::bigint, $3::int)";

struct retention {
    struct herald *app;
    uv_timer_t timer;
    struct db_request q;
    bool busy; /* a prune statement is in flight: q is the db's until on_pruned */
    bool closing;
    uint64_t pruned;          /* messages */
    uint64_t channels_pruned; /* idle channel rows */
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
    long channels = strtol(PQgetvalue(res, 0, 1), NULL, 10);
    bool more = PQgetvalue(res, 0, 2)[0] == 't';
    if (n > 0)
        r->pruned += (uint64_t)n;
    if (channels > 0)
        r->channels_pruned += (uint64_t)channels;
    if (more)
        prune_batch(r); /* more to do: keep going, one bounded step at a time */
    else if (r->pruned || r->channels_pruned)
        log_debug("pruned", "history pruned (%llu messages, %llu idle channels since start)",
                  (unsigned long long)r->pruned, (unsigned long long)r->channels_pruned);
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
