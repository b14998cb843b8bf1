/* Sequenced messages of one channel in one process: delivered in seq order with no gap and
 * no duplicate (gaps are filled from PostgreSQL), the newest kept in a bounded cache, and
 * resumes (`subscribe` with `since`) answered from that cache or from one query shared by
 * every client resuming the channel at the time. */
#include "bus.h"
#include "channel_state.h"
#include "client.h"
#include "db.h"
#include "herald.h"
#include "hub.h"
#include "log.h"
#include "protocol.h"

#include <stdlib.h>
#include <string.h>

#define HOLD_MS         100 /* a frame ahead of a gap waits this long for the missing one */
#define MAX_HELD        4096
#define MAX_ATTEMPTS    3
#define HEAD_ONLY       UINT64_C(9223372036854775807)
#define HEADS_PER_QUERY HISTORY_HEADS_MAX

struct fetch {
    struct hub *hub;
    struct channel *ch;
    uint64_t since;
    struct history_request r;
};

/* A head check in flight. */
struct heads_query {
    struct hub *hub;
    struct history_request r;
};

static bool history_on(const struct hub *hub)
{
    return hub_app(hub)->db != NULL;
}

static uint64_t recent_first(const struct channel *ch)
{
    return ch->recent.count ? outq_peek(&ch->recent)->seq : 0;
}

/* Drops the oldest cached frames past the byte budget. */
static void recent_trim(struct hub *hub, struct channel *ch)
{
    size_t budget = (size_t)hub_app(hub)->cfg->recent_bytes;
    while (ch->recent.count && ch->recent.bytes > budget)
        outq_pop(&ch->recent);
}

/* Delivers the next frame in order and remembers it. */
static void advance(struct hub *hub, struct channel *ch, struct frame *f)
{
    if (history_on(hub)) { /* without history nothing can be resumed from the cache */
        if (ch->recent.count && outq_at(&ch->recent, ch->recent.count - 1)->seq + 1 != f->seq)
            outq_clear(&ch->recent); /* the cache only ever holds a contiguous run */
        outq_push(&ch->recent, f);
    }
    ch->last_seq = f->seq;
    hub_deliver(hub, ch, f);
}

static void hold(struct hub *hub, struct channel *ch, struct frame *f, uint64_t now)
{
    uint32_t i = 0;
    while (i < ch->nheld && ch->held[i]->seq < f->seq)
        i++;
    if (i < ch->nheld && ch->held[i]->seq == f->seq)
        return; /* already held */
    struct frame **h = realloc(ch->held, (ch->nheld + 1) * sizeof *h);
    if (!h)
        return;
    ch->held = h;
    memmove(h + i + 1, h + i, (ch->nheld - i) * sizeof *h);
    h[i] = frame_ref(f);
    if (ch->nheld++ == 0) {
        ch->held_since_ms = now;
        hub_holding_add(hub, ch);
    }
}

/* Delivers held frames that are next in line; with skip_gap, also those past a gap that
 * PostgreSQL could not fill (pruned, or PostgreSQL down): live delivery goes on. */
static void drain_held(struct hub *hub, struct channel *ch, bool skip_gap)
{
    uint32_t i = 0;
    for (; i < ch->nheld; i++) {
        struct frame *f = ch->held[i];
        if (f->seq <= ch->last_seq) {
            frame_unref(f);
            continue;
        }
        if (f->seq != ch->last_seq + 1 && !skip_gap)
            break;
        if (f->seq != ch->last_seq + 1) {
            hub_app(hub)->metrics.gaps_skipped++;
            log_warn("gap_skipped", "channel %s: seq %llu..%llu could not be recovered", ch->name,
                     (unsigned long long)ch->last_seq + 1, (unsigned long long)f->seq - 1);
        }
        advance(hub, ch, f);
        frame_unref(f);
    }
    if (i == 0)
        return;
    memmove(ch->held, ch->held + i, (ch->nheld - i) * sizeof *ch->held);
    ch->nheld -= i;
    if (ch->nheld)
        ch->held_since_ms = herald_now_ms(hub_app(hub));
    else
        hub_holding_remove(hub, ch);
}

static void on_fetch(void *arg, const struct history_page *page, const char *err);

/* PostgreSQL could not answer: live delivery goes on past the gap, resumes that need the
 * history are refused (history_unavailable), a channel without a head serves live only. */
static void fetch_failed(struct hub *hub, struct channel *ch)
{
    if (!ch->baseline)
        ch->head_failed = true;
    drain_held(hub, ch, true);
    for (uint32_t i = 0; i < ch->nwaiters; i++)
        if (ch->waiters[i].resume)
            ch->waiters[i].attempts = MAX_ATTEMPTS;
}

/* One history query for the channel at a time: resumers and gap repair share it. */
static void start_fetch(struct hub *hub, struct channel *ch, uint64_t since, long limit)
{
    struct herald *app = hub_app(hub);
    if (ch->fetching)
        return;
    struct fetch *ft = malloc(sizeof *ft);
    if (ft) {
        ft->hub = hub;
        ft->ch = ch;
        ft->since = since;
        ch->fetching = true;
        ch->queries++;
        history_fetch(app, &ft->r, ch->name, since, limit, (size_t)app->cfg->page_bytes,
                      on_fetch, ft);
        return;
    }
    fetch_failed(hub, ch);
    seq_progress(hub, ch); /* answers what waited for this query; starts none again */
}

static void fill_gap(struct hub *hub, struct channel *ch)
{
    start_fetch(hub, ch, ch->last_seq, hub_app(hub)->cfg->replay_max + 1);
}

void seq_on_live(struct hub *hub, struct channel *ch, struct frame *f)
{
    struct herald *app = hub_app(hub);
    if (f->seq <= ch->last_seq) {
        app->metrics.duplicates_dropped++;
        return;
    }
    if (history_on(hub) && !ch->baseline && !ch->head_failed) {
        hold(hub, ch, f, herald_now_ms(app)); /* the head query decides where the stream starts */
        return;
    }
    if (f->seq == ch->last_seq + 1 || !history_on(hub) || ch->head_failed) {
        advance(hub, ch, f);
        drain_held(hub, ch, false);
        recent_trim(hub, ch);
        return;
    }
    hold(hub, ch, f, herald_now_ms(app));
    if (ch->nheld >= MAX_HELD)
        fill_gap(hub, ch);
}

/* {"op":"subscribed",...} for a waiter, and the member starts getting live messages. */
static void answer(struct channel *ch, struct waiter *w, bool resumed, bool recovered,
                   uint64_t replayed, const char *code)
{
    struct member *m = hub_member(ch, w->c);
    if (resumed && recovered)
        w->c->app->metrics.resumes_recovered++;
    else if (resumed)
        w->c->app->metrics.resumes_failed++;
    if (m) {
        m->ready = true;
        if (m->last_seq < ch->last_seq)
            m->last_seq = ch->last_seq;
    }
    struct subscribed_reply r = {.seq = ch->last_seq,
                                 .epoch = ch->baseline ? ch->epoch : NULL,
                                 .resumed = resumed,
                                 .recovered = recovered,
                                 .replayed = replayed,
                                 .code = code};
    reply_subscribed(w->c, ch->name, &r, w->id_json);
}

/* Sends the cached frames after since, then the `subscribed` reply. */
static void replay(struct channel *ch, struct waiter *w)
{
    struct member *m = hub_member(ch, w->c);
    uint64_t n = 0;
    for (uint32_t i = 0; i < ch->recent.count; i++) {
        struct frame *f = outq_at(&ch->recent, i);
        if (f->seq <= w->since)
            continue;
        client_send(w->c, f);
        n++;
    }
    if (m)
        m->last_seq = ch->last_seq;
    answer(ch, w, true, true, n, NULL);
}

enum outcome { ANSWERED, NEEDS_QUERY };

/* A resume is all or nothing: replayed whole from the cache, or refused with a code. */
static enum outcome try_resume(struct hub *hub, struct channel *ch, struct waiter *w)
{
    const struct herald *app = hub_app(hub);
    const char *code = NULL;
    uint64_t first = recent_first(ch);
    if (!history_on(hub) || !ch->baseline)
        code = "history_unavailable";
    else if (w->epoch[0] && strcmp(w->epoch, ch->epoch) != 0)
        code = "history_reset";
    else if (w->since > ch->last_seq)
        code = "history_reset";
    else if (ch->last_seq - w->since > (uint64_t)app->cfg->replay_max)
        code = "history_expired";
    else if (w->since < ch->last_seq && !(first && first <= w->since + 1)) {
        if (ch->first_kept && w->since + 1 < ch->first_kept)
            code = "history_expired";
        else if (w->attempts >= MAX_ATTEMPTS || !db_up(app->db))
            code = "history_unavailable";
        else
            return NEEDS_QUERY;
    }
    if (code)
        answer(ch, w, true, false, 0, code);
    else
        replay(ch, w);
    return ANSWERED;
}

void seq_progress(struct hub *hub, struct channel *ch)
{
    if (ch->redis != R_ACTIVE)
        return;
    if (history_on(hub) && !ch->baseline && !ch->head_failed) {
        start_fetch(hub, ch, HEAD_ONLY, 0);
        return;
    }
    uint64_t need = UINT64_MAX;
    uint32_t j = 0;
    for (uint32_t i = 0; i < ch->nwaiters; i++) {
        struct waiter *w = &ch->waiters[i];
        if (w->resume && !ch->fetching && try_resume(hub, ch, w) == NEEDS_QUERY) {
            need = w->since < need ? w->since : need;
            w->attempts++;
            ch->waiters[j++] = *w;
            continue;
        }
        if (w->resume && ch->fetching) {
            ch->waiters[j++] = *w; /* answered when the query in flight returns */
            continue;
        }
        if (!w->resume)
            answer(ch, w, false, false, 0, NULL);
        free(w->id_json);
    }
    ch->nwaiters = j;
    if (need != UINT64_MAX)
        start_fetch(hub, ch, need, hub_app(hub)->cfg->replay_max + 1);
}

void seq_on_active(struct hub *hub, struct channel *ch)
{
    /* after a Redis reconnect, catch up on what was published while it was down */
    if (ch->baseline)
        fill_gap(hub, ch);
    seq_progress(hub, ch);
}

/* The history was lost and started again: the stream restarts from the new head. */
static void reset_epoch(struct channel *ch, const struct history_page *page)
{
    log_warn("history_reset", "channel %s: epoch %s -> %s, head %llu", ch->name, ch->epoch,
             page->epoch, (unsigned long long)page->head);
    outq_clear(&ch->recent);
    ch->last_seq = page->head;
    for (uint32_t i = 0; i < ch->nmembers; i++)
        ch->members[i].last_seq = page->head;
}

/* Puts fetched rows older than the cache in front of it, newest first, while they join. */
static void prepend_rows(struct channel *ch, struct frame **rows, size_t n)
{
    for (size_t i = n; i-- > 0;) {
        uint64_t first = recent_first(ch);
        if (rows[i]->seq > ch->last_seq || (first && rows[i]->seq + 1 != first))
            continue;
        if (!first && rows[i]->seq != ch->last_seq)
            continue;
        outq_push_front(&ch->recent, rows[i]);
    }
}

static void apply_page(struct hub *hub, struct channel *ch, uint64_t since,
                       const struct history_page *page)
{
    if (ch->baseline && page->exists && ch->epoch[0] && strcmp(ch->epoch, page->epoch) != 0)
        reset_epoch(ch, page);
    snprintf(ch->epoch, sizeof ch->epoch, "%s", page->epoch);
    ch->first_kept = page->first_kept;
    if (!ch->baseline) {
        ch->baseline = true;
        ch->last_seq = page->head;
        for (uint32_t i = 0; i < ch->nmembers; i++)
            if (ch->members[i].last_seq < page->head)
                ch->members[i].last_seq = page->head;
    }
    struct frame **rows = page->n ? calloc(page->n, sizeof *rows) : NULL;
    size_t n = 0;
    for (size_t i = 0; rows && i < page->n; i++) {
        struct frame *f = frame_from(page->rows[i].envelope, page->rows[i].len);
        if (!f)
            break;
        f->seq = page->rows[i].seq;
        rows[n++] = f;
    }
    prepend_rows(ch, rows, n);
    for (size_t i = 0; i < n; i++) {
        if (rows[i]->seq <= ch->last_seq)
            continue;
        if (rows[i]->seq != ch->last_seq + 1)
            hub_app(hub)->metrics.gaps_skipped++; /* pruned before it could be delivered */
        advance(hub, ch, rows[i]); /* gap repair: live members get what they missed */
    }
    for (size_t i = 0; i < n; i++)
        frame_unref(rows[i]);
    free(rows);
    /* a complete answer that still leaves a hole before the held frames: nobody has it */
    bool complete = page->n < (size_t)hub_app(hub)->cfg->replay_max + 1;
    drain_held(hub, ch, complete && since != HEAD_ONLY);
}

static void on_fetch(void *arg, const struct history_page *page, const char *err)
{
    struct fetch *ft = arg;
    struct hub *hub = ft->hub;
    struct channel *ch = ft->ch;
    uint64_t since = ft->since;
    free(ft);
    ch->fetching = false;
    ch->queries--;
    if (page) {
        apply_page(hub, ch, since, page);
    } else {
        log_warn("history_query", "channel %s: %s", ch->name, err);
        fetch_failed(hub, ch);
    }
    seq_progress(hub, ch);
    recent_trim(hub, ch);
    hub_maybe_forget(hub, ch);
}

struct tick {
    const char *names[HEADS_PER_QUERY];
    size_t n;
};

static void on_heads(void *arg, const struct history_head *heads, size_t n, const char *err)
{
    struct heads_query *hq = arg;
    struct hub *hub = hq->hub;
    free(hq);
    for (size_t i = 0; i < n; i++) {
        struct channel *ch = hub_find(hub, heads[i].name, strlen(heads[i].name));
        if (ch && ch->baseline && !ch->fetching && ch->redis == R_ACTIVE &&
            (heads[i].head > ch->last_seq ||
             (ch->epoch[0] && strcmp(heads[i].epoch, ch->epoch) != 0)))
            fill_gap(hub, ch); /* a PUBLISH that never came: deliver from PostgreSQL */
    }
    (void)err; /* PostgreSQL down: the next check tries again */
}

static void check_heads(struct hub *hub, struct tick *t)
{
    struct heads_query *hq = t->n ? malloc(sizeof *hq) : NULL;
    if (hq) {
        hq->hub = hub;
        history_heads(hub_app(hub), &hq->r, t->names, t->n, on_heads, hq);
    }
    t->n = 0;
}

/* Frames held for HOLD_MS: ask PostgreSQL for the missing ones, or let them go past the
 * gap when it cannot tell. */
static void release_if_due(struct hub *hub, struct channel *ch, uint64_t now)
{
    if (ch->fetching || now - ch->held_since_ms < HOLD_MS)
        return;
    if (history_on(hub) && ch->baseline)
        fill_gap(hub, ch);
    else
        drain_held(hub, ch, true);
}

static void check_channel(struct hub *hub, struct channel *ch, void *arg)
{
    struct tick *t = arg;
    if (ch->head_failed && ch->redis == R_ACTIVE && !ch->fetching) {
        ch->head_failed = false; /* PostgreSQL is back: learn the head again */
        start_fetch(hub, ch, HEAD_ONLY, 0);
        return;
    }
    if (ch->baseline && ch->redis == R_ACTIVE && !ch->fetching && ch->nmembers && !ch->nheld) {
        t->names[t->n++] = ch->name;
        if (t->n == HEADS_PER_QUERY)
            check_heads(hub, t);
    }
}

void seq_tick(struct hub *hub, uint64_t now, bool heads)
{
    for (struct channel *ch = hub_holding(hub), *next; ch; ch = next) {
        next = ch->hold_next; /* releasing may take ch off the list */
        release_if_due(hub, ch, now);
    }
    if (!heads || !history_on(hub) || !db_up(hub_app(hub)->db))
        return;
    struct tick *t = malloc(sizeof *t);
    if (!t)
        return;
    t->n = 0;
    hub_each(hub, check_channel, t);
    check_heads(hub, t);
    free(t);
}

void seq_release(struct hub *hub, struct channel *ch)
{
    hub_holding_remove(hub, ch);
    for (uint32_t i = 0; i < ch->nheld; i++)
        frame_unref(ch->held[i]);
    free(ch->held);
    ch->held = NULL;
    ch->nheld = 0;
    outq_clear(&ch->recent);
}
