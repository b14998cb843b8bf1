/* Every memory this keeps is bounded: frames held across a gap (HERALD_HOLD_BYTES per
 * channel: past it, frames are left to a history query), the recent caches (per channel and
 * HERALD_RECENT_TOTAL_BYTES in all), a history page (HERALD_PAGE_BYTES). Head lookups of new
 * channels go out in batches, one batch at a time, whatever the subscribe churn. */
#include "sequence.h"
#include "envelope_sig.h"
#include "db.h"
#include "herald.h"
#include "history.h"
#include "log.h"
#include "registry.h"
#include "sigkey.h"

#include <assert.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#define HOLD_MS      100  /* a frame ahead of a gap waits this long for the missing one */
#define MAX_ATTEMPTS 3    /* history queries for a resume that make no progress */
#define PAGE_ROWS    1000 /* rows of one history query (bytes: HERALD_PAGE_BYTES) */

/* A list of channels through one of their seq_link fields (off: its offset). */
struct chan_list {
    struct channel *first, *last;
    size_t n;
};

struct seq {
    struct herald *app;
    struct registry *reg;
    struct chan_list holding; /* channels with held frames or an open hint */
    struct chan_list heads;   /* channels waiting for a head lookup */
    bool heads_in_flight;
    size_t checks_in_flight; /* periodic head checks: a round starts when none is left */
    struct chan_list lru;    /* channels with a recent cache, most recently grown first */
    size_t recent_bytes;     /* of every recent cache */
    struct log_limit gap_log, query_log;
};

/* A history query for one channel. */
struct fetch {
    struct seq *s;
    struct channel *ch;
    uint64_t since;
    struct history_request r;
};

/* A head lookup for a batch of channels (new ones, or the periodic check), by name: a
 * channel may go and come back while it is in flight. */
struct heads_query {
    struct seq *s;
    bool check; /* the periodic check, not a first lookup */
    size_t n;
    char **names;
    uint64_t *seqs;        /* the check: each channel's last_seq when asked (its digest) */
    struct frame **frames; /* the check: the frame delivered under that seq, or NULL */
    struct history_request r;
};

/* The request for a channel's new epoch, by name. */
struct epoch_query {
    struct seq *s;
    char *name;
    struct history_request r;
};

/* ------------------------------------------------------------------------------------------
 * Lists */

#define HOLDING offsetof(struct channel, holding)
#define HEADS   offsetof(struct channel, heads)
#define LRU     offsetof(struct channel, lru)

static struct seq_link *link_of(struct channel *ch, size_t off)
{
    return (struct seq_link *)(void *)((char *)ch + off);
}

static void list_remove(struct chan_list *l, struct channel *ch, size_t off)
{
    struct seq_link *k = link_of(ch, off);
    if (!k->linked)
        return;
    if (k->prev)
        link_of(k->prev, off)->next = k->next;
    else
        l->first = k->next;
    if (k->next)
        link_of(k->next, off)->prev = k->prev;
    else
        l->last = k->prev;
    *k = (struct seq_link){NULL, NULL, false};
    l->n--;
}

static void list_push_front(struct chan_list *l, struct channel *ch, size_t off)
{
    struct seq_link *k = link_of(ch, off);
    if (k->linked)
        list_remove(l, ch, off);
    *k = (struct seq_link){NULL, l->first, true};
    if (l->first)
        link_of(l->first, off)->prev = ch;
    else
        l->last = ch;
    l->first = ch;
    l->n++;
}

struct seq *seq_new(struct herald *app, struct registry *reg)
{
    struct seq *s = calloc(1, sizeof *s);
    if (s)
        *s = (struct seq){.app = app, .reg = reg};
    return s;
}

void seq_free(struct seq *s)
{
    free(s);
}

static bool history_on(const struct seq *s)
{
    return s->app->db != NULL;
}

/* ------------------------------------------------------------------------------------------
 * The recent cache: a contiguous run of the newest delivered frames */

static uint64_t cache_first(const struct channel *ch)
{
    return ch->recent.count ? outq_peek(&ch->recent)->seq : 0;
}

static uint64_t cache_last(const struct channel *ch)
{
    return ch->recent.count ? outq_at(&ch->recent, ch->recent.count - 1)->seq : 0;
}

static void cache_account(struct seq *s, struct channel *ch, size_t before)
{
    s->recent_bytes = s->recent_bytes + ch->recent.bytes - before;
    s->app->metrics.recent_bytes = (int64_t)s->recent_bytes;
    if (!ch->recent.count)
        list_remove(&s->lru, ch, LRU);
}

static void cache_clear(struct seq *s, struct channel *ch)
{
    size_t before = ch->recent.bytes;
    outq_clear(&ch->recent);
    cache_account(s, ch, before);
}

static void cache_push(struct seq *s, struct channel *ch, struct frame *f)
{
    if (ch->recent.count && cache_last(ch) + 1 != f->seq)
        cache_clear(s, ch); /* the cache only ever holds a contiguous run */
    size_t before = ch->recent.bytes;
    if (outq_push(&ch->recent, f) == 0)
        list_push_front(&s->lru, ch, LRU);
    cache_account(s, ch, before);
}

/* Puts fetched rows older than the cache in front of it, newest first, while they join. */
static void cache_prepend(struct seq *s, struct channel *ch, struct frame **rows, size_t n)
{
    size_t before = ch->recent.bytes;
    for (size_t i = n; i-- > 0;) {
        uint64_t first = cache_first(ch);
        if (rows[i]->seq > ch->last_seq || (first && rows[i]->seq + 1 != first))
            continue;
        if (!first && rows[i]->seq != ch->last_seq)
            continue;
        if (outq_push_front(&ch->recent, rows[i]) == 0 && !ch->lru.linked)
            list_push_front(&s->lru, ch, LRU);
    }
    cache_account(s, ch, before);
}

/* The channel's own budget first, then the total: the least recently grown caches give
 * way, oldest frames first. */
static void cache_trim(struct seq *s, struct channel *ch)
{
    size_t budget = (size_t)s->app->cfg->recent_bytes;
    size_t before = ch->recent.bytes;
    while (ch->recent.count && ch->recent.bytes > budget)
        outq_pop(&ch->recent);
    cache_account(s, ch, before);
    size_t total = (size_t)s->app->cfg->recent_total_bytes;
    while (s->recent_bytes > total && s->lru.last) {
        struct channel *old = s->lru.last;
        before = old->recent.bytes;
        outq_pop(&old->recent);
        cache_account(s, old, before);
    }
}

/* The cached frame with this seq, or NULL. */
static struct frame *cache_find(const struct channel *ch, uint64_t seq)
{
    uint64_t first = cache_first(ch);
    if (!first || seq < first || seq > cache_last(ch))
        return NULL;
    return outq_at(&ch->recent, (uint32_t)(seq - first));
}

/* ------------------------------------------------------------------------------------------
 * Live delivery, holds and hints */

void seq_deliver(struct channel *ch, struct frame *f)
{
    for (uint32_t i = 0; i < ch->nmembers; i++) {
        struct member *m = &ch->members[i];
        if (!m->ready || (f->seq && f->seq <= m->last_seq))
            continue;
        m->sub->sink->deliver(m->sub, f);
        if (f->seq)
            m->last_seq = f->seq;
    }
}

/* ch->last_frame becomes f (NULL: none), holding its own reference. */
static void set_last_frame(struct channel *ch, struct frame *f)
{
    if (f)
        frame_ref(f);
    frame_unref(ch->last_frame);
    ch->last_frame = f;
}

static void hint(struct seq *s, struct channel *ch, uint64_t seq);

/* Delivers the next frame in order and remembers it. After a lost history nothing is: a
 * promoted standby issues the lost seqs again, under the old epoch until the new one is
 * set, and its next message would pass for the one after those the members got. It waits,
 * as a hint, for the new epoch's page (history_diverged), which brings it after the reset. */
static void advance(struct seq *s, struct channel *ch, struct frame *f)
{
    if (ch->epoch_lost) {
        hint(s, ch, f->seq);
        return;
    }
    cache_push(s, ch, f);
    ch->last_seq = f->seq;
    set_last_frame(ch, f);
    seq_deliver(ch, f);
}

/* The channel has something to wait for (held frames, a hint): the tick looks at it. */
static void start_holding(struct seq *s, struct channel *ch, uint64_t now)
{
    if (ch->holding.linked)
        return;
    ch->held_since_ms = now;
    list_push_front(&s->holding, ch, HOLDING);
}

static void stop_holding_if_done(struct seq *s, struct channel *ch)
{
    if (ch->nheld == 0 && ch->hint_seq <= ch->last_seq)
        list_remove(&s->holding, ch, HOLDING);
}

/* Redis announced seq but this process could not take it: PostgreSQL is asked (after
 * HOLD_MS, or sooner when the head is learnt) whether it exists. */
static void hint(struct seq *s, struct channel *ch, uint64_t seq)
{
    if (seq > ch->hint_seq)
        ch->hint_seq = seq;
    if (ch->hint_seq > ch->last_seq)
        start_holding(s, ch, herald_now_ms(s->app));
}

static void held_account(struct seq *s, ptrdiff_t delta, struct channel *ch)
{
    ch->held_bytes = (size_t)((ptrdiff_t)ch->held_bytes + delta);
    s->app->metrics.held_bytes += delta;
}

/* Keeps f until the frames before it come. Frames mostly arrive in order, so the usual
 * insert is an append; past the channel's budget the frame is left to PostgreSQL, which has
 * it (a sequenced message is stored before it is published). */
static void hold(struct seq *s, struct channel *ch, struct frame *f)
{
    if (ch->held_bytes + f->len > (size_t)s->app->cfg->hold_bytes) {
        s->app->metrics.hold_overflows++;
        hint(s, ch, f->seq);
        return;
    }
    uint32_t i = ch->nheld;
    if (i && ch->held[i - 1]->seq >= f->seq) { /* out of order: find its place */
        uint32_t lo = 0, hi = ch->nheld;
        while (lo < hi) {
            uint32_t mid = lo + (hi - lo) / 2;
            if (ch->held[mid]->seq < f->seq)
                lo = mid + 1;
            else
                hi = mid;
        }
        if (lo < ch->nheld && ch->held[lo]->seq == f->seq)
            return; /* already held */
        i = lo;
    }
    if (ch->nheld == ch->heldcap) {
        uint32_t cap = ch->heldcap ? ch->heldcap * 2 : 8;
        struct frame **h = realloc(ch->held, cap * sizeof *h);
        if (!h) {
            hint(s, ch, f->seq);
            return;
        }
        ch->held = h;
        ch->heldcap = cap;
    }
    memmove(ch->held + i + 1, ch->held + i, (ch->nheld - i) * sizeof *ch->held);
    ch->held[i] = frame_ref(f);
    ch->nheld++;
    held_account(s, (ptrdiff_t)f->len, ch);
    start_holding(s, ch, herald_now_ms(s->app));
}

/* Delivers held frames that are next in line; with skip_gap, also those past a gap that
 * PostgreSQL could not fill (pruned, or PostgreSQL down): live delivery goes on. */
static void drain_held(struct seq *s, struct channel *ch, bool skip_gap)
{
    uint32_t i = 0;
    for (; i < ch->nheld; i++) {
        struct frame *f = ch->held[i];
        if (f->seq > ch->last_seq + 1 && !skip_gap)
            break;
        uint64_t skipped;
        if (f->seq > ch->last_seq + 1) {
            s->app->metrics.gaps_skipped++;
            if (log_limit_pass(&s->gap_log, herald_now_ms(s->app), &skipped))
                log_warn("gap_skipped",
                         "channel %s: seq %llu..%llu could not be recovered (%llu more gaps "
                         "since last log)",
                         ch->name, (unsigned long long)ch->last_seq + 1,
                         (unsigned long long)f->seq - 1, (unsigned long long)skipped);
        }
        if (f->seq > ch->last_seq)
            advance(s, ch, f);
        held_account(s, -(ptrdiff_t)f->len, ch);
        frame_unref(f);
    }
    if (i) {
        memmove(ch->held, ch->held + i, (ch->nheld - i) * sizeof *ch->held);
        ch->nheld -= i;
        ch->held_since_ms = herald_now_ms(s->app);
    }
    if (skip_gap)
        ch->hint_seq = 0; /* PostgreSQL had nothing more to say */
    stop_holding_if_done(s, ch);
}

static void fill_gap(struct seq *s, struct channel *ch);

/* Whether a sequenced payload carries the signature of the envelope PostgreSQL stored
 * (envelope_sig.h): only then does it count. */
static bool authentic(const struct seq *s, const struct channel *ch, const char *payload,
                      size_t len)
{
    const struct envelope_key *key = sigkey_get(s->app->sigkey);
    return key && envelope_sig_verify(key, ch->epoch, payload, len);
}

/* The envelope inside a signed payload, as the frame clients get (the bytes stored). */
static struct frame *envelope_frame(const char *payload, size_t len)
{
    struct frame *f = frame_new(len - (ENVELOPE_SIG_SUFFIX_LEN - 1));
    if (f && !envelope_sig_strip(payload, len, (char *)frame_payload(f))) {
        frame_unref(f); /* cannot happen: the signature was checked */
        f = NULL;
    }
    return f;
}

/* The channel had no message when subscribed, so there is no epoch to check a payload with:
 * the first one is fetched at once, epoch and all. Forged payloads cannot make that more than
 * one query per HOLD_MS; the hint covers the ones in between. */
static void probe_epoch(struct seq *s, struct channel *ch)
{
    uint64_t now = herald_now_ms(s->app);
    if (ch->epoch_probe_ms && now - ch->epoch_probe_ms < HOLD_MS)
        return;
    ch->epoch_probe_ms = now;
    fill_gap(s, ch);
}

static void query_heads(struct seq *s, struct channel **chs, size_t n, bool check);
static void history_diverged(struct seq *s, struct channel *ch, const char *why);

/* A signed message with a seq this process delivered already: a copy of it (a gap fill
 * raced Redis), or another message PostgreSQL gave that seq after losing ours in a
 * failover. The cache tells at once; otherwise PostgreSQL's row at our last seq is
 * compared with what we delivered (one such check per channel at a time). */
static void check_duplicate(struct seq *s, struct channel *ch, const char *payload, size_t len,
                            uint64_t seq)
{
    struct frame *mine = cache_find(ch, seq);
    if (mine) {
        struct frame *got = envelope_frame(payload, len);
        bool same = got && got->len - got->hdr == mine->len - mine->hdr &&
                    memcmp(got->data + got->hdr, mine->data + mine->hdr, got->len - got->hdr) == 0;
        frame_unref(got);
        if (!same && got)
            history_diverged(s, ch, "Redis brought another message under a seq delivered here");
        return;
    }
    if (!ch->verifying && ch->last_frame) {
        ch->verifying = true;
        query_heads(s, &ch, 1, true);
    }
}

void seq_on_live(struct seq *s, struct channel *ch, const char *payload, size_t len, uint64_t seq)
{
    struct herald *app = s->app;
    if (!history_on(s)) { /* no positions to keep: forwarded as it came */
        struct frame *f = frame_from(payload, len);
        if (f)
            seq_deliver(ch, f);
        frame_unref(f);
        return;
    }
    if (seq <= ch->last_seq && ch->baseline) {
        app->metrics.duplicates_dropped++;
        if (ch->epoch[0] && authentic(s, ch, payload, len))
            check_duplicate(s, ch, payload, len, seq);
        return;
    }
    if (!ch->baseline || !authentic(s, ch, payload, len)) {
        hint(s, ch, seq);
        if (!ch->baseline && ch->headless && (!ch->headless_from || seq < ch->headless_from))
            ch->headless_from = seq;
        else if (ch->baseline && !ch->epoch[0])
            probe_epoch(s, ch);
        else if (ch->baseline && sigkey_get(app->sigkey))
            app->metrics.unverified_envelopes++;
        return;
    }
    struct frame *f = envelope_frame(payload, len);
    if (!f)
        return;
    f->seq = seq;
    if (seq == ch->last_seq + 1) {
        advance(s, ch, f);
        drain_held(s, ch, false);
        cache_trim(s, ch);
    } else {
        hold(s, ch, f);
    }
    frame_unref(f);
}

/* ------------------------------------------------------------------------------------------
 * History queries */

static void on_fetch(void *arg, const struct history_page *page, const char *err);

/* PostgreSQL could not answer: live delivery goes on past the gap, resumes that need the
 * history are refused (history_unavailable). */
static void fetch_failed(struct seq *s, struct channel *ch)
{
    drain_held(s, ch, true);
    for (uint32_t i = 0; i < ch->nwaiters; i++)
        if (ch->waiters[i].resume)
            ch->waiters[i].attempts = MAX_ATTEMPTS;
}

/* The furthest this process knows the channel has gone: delivered, held behind a gap, or
 * announced by Redis. A standby that has not reached it cannot answer for it. */
uint64_t seq_known_head(const struct channel *ch)
{
    uint64_t head = ch->last_seq;
    if (ch->hint_seq > head)
        head = ch->hint_seq;
    if (ch->nheld && ch->held[ch->nheld - 1]->seq > head)
        head = ch->held[ch->nheld - 1]->seq;
    return head;
}

/* One history query for the channel at a time: resumers and gap repair share it. */
static void start_fetch(struct seq *s, struct channel *ch, uint64_t since)
{
    if (ch->fetching)
        return;
    struct fetch *ft = malloc(sizeof *ft);
    if (!ft) {
        fetch_failed(s, ch);
        return;
    }
    *ft = (struct fetch){.s = s, .ch = ch, .since = since};
    ch->fetching = true;
    ch->queries++;
    history_fetch(s->app, &ft->r, ch->name, since, seq_known_head(ch), PAGE_ROWS,
                  (size_t)s->app->cfg->page_bytes, on_fetch, ft);
}

static void fill_gap(struct seq *s, struct channel *ch)
{
    start_fetch(s, ch, ch->last_seq);
}

/* ------------------------------------------------------------------------------------------
 * Head lookups of new channels, in batches */

static void send_heads(struct seq *s);

/* The channel's head is known (or known to be missing): where its stream starts. */
static void set_baseline(struct seq *s, struct channel *ch, uint64_t head, const char *epoch,
                         uint64_t first_kept)
{
    list_remove(&s->heads, ch, HEADS);
    ch->baseline = true;
    ch->epoch_lost = false;
    ch->last_seq = head;
    set_last_frame(ch, NULL); /* not delivered here: nothing to compare it with */
    snprintf(ch->epoch, sizeof ch->epoch, "%s", epoch);
    ch->first_kept = first_kept;
    /* members answered while the lookup failed get what Redis announced meanwhile (within
     * REPLAY_MAX: a forged low seq must not replay the whole channel to them) */
    uint64_t from = head;
    if (ch->headless_from && ch->headless_from <= head) {
        from = ch->headless_from - 1;
        if (head - from > (uint64_t)s->app->cfg->replay_max)
            from = head - (uint64_t)s->app->cfg->replay_max;
        ch->last_seq = from;
        hint(s, ch, head);
    }
    ch->headless_from = 0;
    ch->headless = false;
    for (uint32_t i = 0; i < ch->nmembers; i++)
        if (ch->members[i].last_seq < from)
            ch->members[i].last_seq = from;
    if (ch->hint_seq > ch->last_seq) /* announced while the head was unknown */
        fill_gap(s, ch);
}

static void free_heads_query(struct heads_query *q)
{
    for (size_t i = 0; i < q->n; i++) {
        free(q->names[i]);
        if (q->frames && q->frames[i])
            frame_unref(q->frames[i]);
    }
    free(q->names);
    free(q->seqs);
    free(q->frames);
    free(q);
}

static void on_new_heads(struct seq *s, struct heads_query *q, const struct history_head *heads,
                         size_t n, const char *err)
{
    for (size_t i = 0; !err && i < n; i++) {
        struct channel *ch = registry_find(s->reg, heads[i].name, strlen(heads[i].name));
        if (ch && !ch->baseline)
            set_baseline(s, ch, heads[i].head, heads[i].epoch, heads[i].first_kept);
    }
    for (size_t i = 0; i < q->n; i++) {
        struct channel *ch = registry_find(s->reg, q->names[i], strlen(q->names[i]));
        if (!ch)
            continue;
        if (!ch->baseline && err) {
            ch->head_failed = ch->headless = true; /* waiters are answered; the tick asks again */
            list_remove(&s->heads, ch, HEADS);
        } else if (!ch->baseline) {
            set_baseline(s, ch, 0, "", 0); /* nothing was ever published */
        }
        seq_answer_waiters(s, ch);
        seq_maybe_forget(s, ch);
    }
}

/* Why PostgreSQL no longer has what this process delivered under the channel's epoch, or
 * NULL: its head is below the seq we had delivered when the check was sent (every seq
 * delivered was committed before, so the head cannot be lower), or its row at that seq is
 * another message (a standby that missed the last commits was promoted, and issued those
 * seqs again). f is the frame we delivered under that seq, NULL when not delivered here. */
static const char *diverged(const struct channel *ch, const struct history_head *h, uint64_t asked,
                            const struct frame *f)
{
    if (strcmp(h->epoch, ch->epoch) != 0)
        return NULL; /* a new epoch: fill_gap restarts the stream from it */
    if (h->head < asked)
        return "PostgreSQL's head is below a seq delivered here";
    if (!h->digest || !f)
        return NULL; /* nothing to compare (pruned, or not delivered here) */
    char hex[33];
    envelope_md5_hex(f->data + f->hdr, f->len - f->hdr, hex); /* the envelope: no header */
    return strcmp(hex, h->digest) != 0 ? "PostgreSQL holds another message under a seq "
                                         "delivered here"
                                       : NULL;
}

static void on_new_epoch(void *arg, const char *err)
{
    struct epoch_query *q = arg;
    struct channel *ch = registry_find(q->s->reg, q->name, strlen(q->name));
    if (ch) {
        ch->diverging = false;
        ch->queries--;
        if (!err)
            fill_gap(q->s, ch); /* the page has the new epoch: reset_epoch tells the members */
        seq_maybe_forget(q->s, ch);
    }
    free(q->name);
    free(q);
}

/* The history this process delivered is gone from PostgreSQL: the channel gets a new epoch,
 * so that every instance restarts its stream and tells its clients to reload (a live
 * client would otherwise drop the new messages that reuse those seqs as duplicates). */
static void history_diverged(struct seq *s, struct channel *ch, const char *why)
{
    if (ch->diverging)
        return;
    s->app->metrics.history_divergences++;
    log_warn("history_diverged",
             "channel %s: %s (delivered up to %llu under epoch %s): history lost, a new epoch",
             ch->name, why, (unsigned long long)ch->last_seq, ch->epoch);
    struct epoch_query *q = calloc(1, sizeof *q);
    if (!q || !(q->name = strdup(ch->name))) {
        free(q);
        return; /* the next check finds it again */
    }
    q->s = s;
    ch->diverging = true;
    ch->epoch_lost = true;
    ch->queries++;
    history_new_epoch(s->app, &q->r, ch->name, ch->epoch, on_new_epoch, q);
}

static void on_check_heads(struct seq *s, const struct heads_query *q,
                           const struct history_head *heads, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        struct channel *ch = registry_find(s->reg, heads[i].name, strlen(heads[i].name));
        if (!ch || !ch->baseline || ch->fetching || ch->redis != R_ACTIVE)
            continue;
        const struct frame *f = NULL;
        uint64_t asked = 0;
        for (size_t j = 0; j < q->n; j++)
            if (q->seqs && strcmp(q->names[j], heads[i].name) == 0) {
                f = q->frames[j];
                asked = q->seqs[j];
            }
        const char *why = diverged(ch, &heads[i], asked, f);
        if (why)
            history_diverged(s, ch, why);
        else if (heads[i].head > ch->last_seq || strcmp(heads[i].epoch, ch->epoch) != 0)
            fill_gap(s, ch); /* a PUBLISH that never came: deliver from PostgreSQL */
    }
}

static void on_heads(void *arg, const struct history_head *heads, size_t n, const char *err)
{
    struct heads_query *q = arg;
    struct seq *s = q->s;
    if (q->check) {
        s->checks_in_flight--;
        for (size_t i = 0; i < q->n; i++) {
            struct channel *ch = registry_find(s->reg, q->names[i], strlen(q->names[i]));
            if (ch)
                ch->verifying = false;
        }
        if (!err) /* PostgreSQL down: the next check tries again */
            on_check_heads(s, q, heads, n);
    } else {
        s->heads_in_flight = false;
        on_new_heads(s, q, heads, n, err);
        send_heads(s);
    }
    free_heads_query(q);
}

/* New channels whose lookup could not even be sent: as if PostgreSQL had failed. */
static void heads_failed(struct seq *s, struct channel **chs, size_t n)
{
    s->heads_in_flight = false;
    for (size_t i = 0; i < n; i++) {
        chs[i]->head_failed = chs[i]->headless = true;
        seq_answer_waiters(s, chs[i]);
    }
}

/* Looks up the heads of the given channels: new ones (one batch in flight at a time) or,
 * with check, the periodic comparison. */
static void query_heads(struct seq *s, struct channel **chs, size_t n, bool check)
{
    struct heads_query *q = calloc(1, sizeof *q);
    char **names = q ? calloc(n, sizeof *names) : NULL;
    if (!names) {
        free(q);
        if (!check)
            heads_failed(s, chs, n);
        for (size_t i = 0; i < n; i++)
            chs[i]->verifying = false; /* a later duplicate may ask again */
        return;
    }
    uint64_t *seqs = check ? calloc(n, sizeof *seqs) : NULL;
    struct frame **frames = seqs ? calloc(n, sizeof *frames) : NULL;
    if (check && !frames) {
        free(seqs);
        seqs = NULL; /* a check without digests: heads only */
    }
    *q = (struct heads_query){
        .s = s, .check = check, .names = names, .seqs = seqs, .frames = frames};
    for (size_t i = 0; i < n; i++)
        if ((names[q->n] = strdup(chs[i]->name))) {
            if (seqs) {
                seqs[q->n] = chs[i]->last_seq;
                frames[q->n] = chs[i]->last_frame ? frame_ref(chs[i]->last_frame) : NULL;
            }
            q->n++;
        }
    if (check)
        s->checks_in_flight++;
    else
        s->heads_in_flight = true;
    history_heads(s->app, &q->r, (const char *const *)q->names, q->seqs, q->n, on_heads, q);
}

/* Sends the next batch of waiting head lookups unless one is in flight. */
static void send_heads(struct seq *s)
{
    if (s->heads_in_flight || !s->heads.first)
        return;
    struct channel *batch[HISTORY_HEADS_MAX];
    size_t n = 0;
    while (s->heads.first && n < HISTORY_HEADS_MAX) {
        struct channel *ch = s->heads.first;
        list_remove(&s->heads, ch, HEADS);
        batch[n++] = ch;
    }
    query_heads(s, batch, n, false);
}

static void want_head(struct seq *s, struct channel *ch)
{
    if (ch->heads.linked)
        return;
    list_push_front(&s->heads, ch, HEADS);
    send_heads(s);
}

/* ------------------------------------------------------------------------------------------
 * Subscribe replies and resumes */

/* {"op":"subscribed",...} for a waiter, and the member starts getting live messages. */
static void answer(struct seq *s, struct channel *ch, struct waiter *w, bool resumed,
                   bool recovered, const char *code)
{
    struct member *m = registry_member(ch, w->sub);
    if (resumed && recovered)
        s->app->metrics.resumes_recovered++;
    else if (resumed)
        s->app->metrics.resumes_failed++;
    bool refused = w->strict && resumed && !recovered;
    if (m && refused) {
        m->refused = true; /* not ready: nothing of the channel reaches it */
    } else if (m) {
        m->ready = true;
        if (m->last_seq < ch->last_seq)
            m->last_seq = ch->last_seq;
    }
    struct hub_answer a = {.seq = ch->last_seq,
                           .epoch = ch->baseline && ch->epoch[0] ? ch->epoch : NULL,
                           .resumed = resumed,
                           .recovered = recovered,
                           .replayed = w->replayed,
                           .code = code,
                           .refused = refused};
    w->sub->sink->answered(w->sub, ch->name, &a, w->id_json);
}

/* More than one resume may replay (HERALD_REPLAY_MAX), unless it is a page. */
static bool too_far(const struct seq *s, const struct channel *ch, const struct waiter *w)
{
    return !w->paged && ch->last_seq - w->since > (uint64_t)s->app->cfg->replay_max;
}

/* Why a resume cannot be served at all, or NULL. */
static const char *resume_refusal(const struct seq *s, const struct channel *ch,
                                  const struct waiter *w)
{
    if (!history_on(s) || !ch->baseline)
        return "history_unavailable";
    if ((w->epoch[0] && strcmp(w->epoch, ch->epoch) != 0) || w->since > ch->last_seq)
        return "history_reset";
    if (too_far(s, ch, w))
        return "history_expired";
    return NULL;
}

/* The frame after w->since, from the page being answered or the cache. */
static struct frame *next_frame(const struct channel *ch, const struct waiter *w)
{
    uint64_t want = w->since + 1;
    if (ch->npage && want >= ch->page[0]->seq && want <= ch->page[ch->npage - 1]->seq) {
        struct frame *f = ch->page[want - ch->page[0]->seq];
        if (f->seq == want)
            return f;
    }
    return cache_find(ch, want);
}

/* DONE: answered; PAUSED: waits for its client's queue; FETCH: needs the history after its
 * position; BEHIND: asks for a position this process has not caught up with yet (a gap
 * being filled): waits for the fill. */
enum step { STEP_DONE, STEP_PAUSED, STEP_FETCH, STEP_BEHIND };

/* Whether the channel is known to go on past seq while this process has not delivered that
 * far: Redis announced it (a hint, or frames held behind a gap). Then a resume from seq waits
 * for the gap fill rather than being told its position does not exist. */
static bool catching_up_to(const struct channel *ch, uint64_t seq)
{
    return ch->baseline && seq > ch->last_seq &&
           (ch->hint_seq >= seq || (ch->nheld && ch->held[ch->nheld - 1]->seq >= seq));
}

/* Sends a resume's next frames while the client's queue has room; answers it once it has
 * caught up with the channel. */
static enum step resume_step(struct seq *s, struct channel *ch, struct waiter *w)
{
    const char *code = NULL;
    if (w->last) { /* last:N from the head, now known; never before what is kept */
        uint64_t n = w->last < (uint64_t)s->app->cfg->replay_max
                         ? w->last
                         : (uint64_t)s->app->cfg->replay_max;
        w->since = ch->last_seq > n ? ch->last_seq - n : 0;
        if (ch->first_kept && w->since + 1 < ch->first_kept)
            w->since = ch->first_kept - 1;
        w->epoch[0] = '\0';
        w->last = 0;
    }
    if (w->oldest && ch->first_kept && w->since + 1 < ch->first_kept)
        w->since = ch->first_kept - 1; /* learnt from the last page PostgreSQL gave */
    /* A position past what this process has delivered, with no announcement of it yet: the
     * client may have read it from PostgreSQL before the PUBLISH reached us (the recipe "load
     * state, then stream" does exactly that). It counts as an announcement, checked with
     * PostgreSQL once, like any hint (one query per channel per HOLD_MS however many come). */
    if (!w->checked && !w->asked_ahead && ch->baseline && w->since > ch->last_seq &&
        (!w->epoch[0] || strcmp(w->epoch, ch->epoch) == 0)) {
        w->asked_ahead = true;
        hint(s, ch, w->since);
    }
    if (!w->checked && catching_up_to(ch, w->since)) {
        fill_gap(s, ch);
        return STEP_BEHIND;
    }
    if (!w->checked && (code = resume_refusal(s, ch, w))) {
        answer(s, ch, w, true, false, code);
        return STEP_DONE;
    }
    w->checked = true;
    struct member *m = registry_member(ch, w->sub);
    struct frame *f;
    while (w->since < ch->last_seq && (f = next_frame(ch, w))) {
        if (!w->sub->sink->has_room(w->sub, f->len)) {
            w->paused = true;
            s->app->metrics.replay_pauses++;
            w->sub->sink->notify_drained(w->sub);
            return STEP_PAUSED;
        }
        w->sub->sink->deliver(w->sub, f);
        w->since = f->seq;
        w->replayed++;
        w->attempts = 0;
        if (m)
            m->last_seq = f->seq;
    }
    if (w->since >= ch->last_seq) {
        answer(s, ch, w, true, true, NULL);
        return STEP_DONE;
    }
    /* the frames after since are neither in the cache nor in the page: pruned, when a page
     * asked for them starts past them (retention by age can cut a hole in a channel's
     * history); a page for a later position (gap repair) says nothing about them */
    if (too_far(s, ch, w) || (ch->first_kept && w->since + 1 < ch->first_kept) ||
        (ch->npage && ch->page_since <= w->since && ch->page[0]->seq > w->since + 1))
        code = "history_expired";
    else if (w->attempts >= MAX_ATTEMPTS || !db_usable(s->app->db))
        code = "history_unavailable";
    if (code) {
        answer(s, ch, w, true, false, code);
        return STEP_DONE;
    }
    return STEP_FETCH;
}

void seq_answer_waiters(struct seq *s, struct channel *ch)
{
    if (ch->redis != R_ACTIVE)
        return;
    if (history_on(s) && !ch->baseline && !ch->head_failed) {
        want_head(s, ch);
        return;
    }
    uint64_t need = UINT64_MAX;
    uint32_t j = 0;
    for (uint32_t i = 0; i < ch->nwaiters; i++) {
        struct waiter *w = &ch->waiters[i];
        enum step step = STEP_DONE;
        if (!w->resume)
            answer(s, ch, w, false, false, NULL);
        else if (w->paused)
            step = STEP_PAUSED;
        else
            step = resume_step(s, ch, w);
        if (step == STEP_DONE) {
            free(w->id_json);
            continue;
        }
        if (step == STEP_FETCH && w->since < need)
            need = w->since;
        ch->waiters[j++] = *w;
    }
    ch->nwaiters = j;
    if (need != UINT64_MAX && !ch->fetching) {
        for (uint32_t i = 0; i < ch->nwaiters; i++)
            if (ch->waiters[i].resume && !ch->waiters[i].paused)
                ch->waiters[i].attempts++;
        start_fetch(s, ch, need);
    }
}

void seq_drained(struct seq *s, struct channel *ch, struct subscriber *sub)
{
    bool any = false;
    for (uint32_t i = 0; i < ch->nwaiters; i++)
        if (ch->waiters[i].sub == sub && ch->waiters[i].paused) {
            ch->waiters[i].paused = false;
            any = true;
        }
    if (any) {
        seq_answer_waiters(s, ch);
        cache_trim(s, ch);
    }
}

void seq_on_active(struct seq *s, struct channel *ch)
{
    /* after a Redis reconnect, catch up on what was published while it was down */
    if (ch->baseline)
        fill_gap(s, ch);
    seq_answer_waiters(s, ch);
}

/* ------------------------------------------------------------------------------------------
 * A page of history comes back */

/* The history was lost and started again: the stream restarts from the new head, and each
 * member is told so ({"op":"subscribed",...,"recovered":false,"code":"history_reset"} with the
 * new epoch): what it holds of the channel may be gone or differ, it must reload. */
static void reset_epoch(struct seq *s, struct channel *ch, const struct history_page *page)
{
    log_warn("history_reset", "channel %s: epoch %s -> %s, head %llu", ch->name, ch->epoch,
             page->epoch, (unsigned long long)page->head);
    cache_clear(s, ch);
    set_last_frame(ch, NULL);
    ch->last_seq = page->head;
    struct hub_answer a = {.seq = page->head,
                           .epoch = page->epoch,
                           .resumed = true,
                           .recovered = false,
                           .code = "history_reset"};
    for (uint32_t i = 0; i < ch->nmembers; i++) {
        struct member *m = &ch->members[i];
        m->last_seq = page->head;
        if (m->ready)
            m->sub->sink->answered(m->sub, ch->name, &a, NULL);
    }
}

/* The rows as shared frames; n is how many could be made. */
static struct frame **page_frames(const struct history_page *page, size_t *n)
{
    *n = 0;
    struct frame **rows = page->n ? calloc(page->n, sizeof *rows) : NULL;
    for (size_t i = 0; rows && i < page->n; i++) {
        struct frame *f = frame_from(page->rows[i].envelope, page->rows[i].len);
        if (!f)
            break;
        f->seq = page->rows[i].seq;
        rows[(*n)++] = f;
    }
    return rows;
}

/* The page of the query for rows after since. */
static void apply_page(struct seq *s, struct channel *ch, const struct history_page *page,
                       uint64_t since)
{
    if (ch->baseline && page->exists && ch->epoch[0] && strcmp(ch->epoch, page->epoch) != 0)
        reset_epoch(s, ch, page);
    if (page->exists) {
        if (strcmp(ch->epoch, page->epoch) != 0)
            ch->epoch_lost = false; /* a new history: delivered from its head on */
        snprintf(ch->epoch, sizeof ch->epoch, "%s", page->epoch);
    }
    ch->first_kept = page->first_kept;
    size_t n;
    struct frame **rows = page_frames(page, &n);
    for (size_t i = 0; i < n; i++) {
        if (rows[i]->seq <= ch->last_seq)
            continue;
        if (rows[i]->seq != ch->last_seq + 1)
            s->app->metrics.gaps_skipped++; /* pruned before it could be delivered */
        advance(s, ch, rows[i]);            /* gap repair: live members get what they missed */
    }
    /* nothing held and the page is the last: what was announced past it (a hint, a client's
     * position) does not exist, and the resumes waiting for it are answered now, not made to
     * ask again */
    bool more = page->cut && (ch->nheld || ch->hint_seq > ch->last_seq);
    if (!more && !ch->nheld)
        ch->hint_seq = 0;
    /* resumes take what they need from the page itself: it may not join the cache */
    ch->page = rows;
    ch->npage = n;
    ch->page_since = since;
    seq_answer_waiters(s, ch);
    ch->page = NULL;
    ch->npage = 0;
    cache_prepend(s, ch, rows, n);
    for (size_t i = 0; i < n; i++)
        frame_unref(rows[i]);
    free(rows);
    if (more)
        fill_gap(s, ch); /* more to come before the held frames: the next page */
    else
        drain_held(s, ch, true); /* what PostgreSQL does not have, nobody has */
}

static void on_fetch(void *arg, const struct history_page *page, const char *err)
{
    struct fetch *ft = arg;
    struct seq *s = ft->s;
    struct channel *ch = ft->ch;
    uint64_t since = ft->since;
    free(ft);
    assert(ch->queries > 0);
    ch->fetching = false;
    ch->queries--;
    if (page) {
        apply_page(s, ch, page, since);
    } else {
        uint64_t skipped;
        if (log_limit_pass(&s->query_log, herald_now_ms(s->app), &skipped))
            log_warn("history_query", "channel %s: %s (%llu more failures since last log)",
                     ch->name, err, (unsigned long long)skipped);
        fetch_failed(s, ch);
    }
    seq_answer_waiters(s, ch);
    cache_trim(s, ch);
    seq_maybe_forget(s, ch);
}

/* ------------------------------------------------------------------------------------------
 * Periodic work */

/* Frames held (or a hint open) for HOLD_MS: ask PostgreSQL, or let them go past the gap
 * when it cannot tell. */
static void release_if_due(struct seq *s, struct channel *ch, uint64_t now)
{
    if (ch->fetching || now - ch->held_since_ms < HOLD_MS)
        return;
    if (history_on(s) && ch->baseline)
        fill_gap(s, ch);
    else
        drain_held(s, ch, true);
}

struct tick {
    struct seq *s;
    bool check; /* no check round is still in flight: start one */
    struct channel *batch[HISTORY_HEADS_MAX];
    size_t n;
};

static void check_channel(struct channel *ch, void *arg)
{
    struct tick *t = arg;
    struct seq *s = t->s;
    if (ch->head_failed && ch->redis == R_ACTIVE) {
        ch->head_failed = false; /* PostgreSQL is back: learn the head again */
        want_head(s, ch);
        return;
    }
    if (t->check && ch->baseline && ch->redis == R_ACTIVE && !ch->fetching && ch->nmembers &&
        !ch->nheld) {
        t->batch[t->n++] = ch;
        if (t->n == HISTORY_HEADS_MAX) {
            query_heads(s, t->batch, t->n, true);
            t->n = 0;
        }
    }
}

void seq_tick(struct seq *s, uint64_t now, bool heads)
{
    for (struct channel *ch = s->holding.first, *next; ch; ch = next) {
        next = ch->holding.next; /* releasing may take ch off the list */
        release_if_due(s, ch, now);
    }
    if (!history_on(s) || !db_up(s->app->db))
        return;
    sigkey_want(s->app->sigkey, now);
    if (!heads)
        return;
    struct tick *t = malloc(sizeof *t);
    if (!t)
        return;
    t->s = s;
    t->n = 0;
    t->check = s->checks_in_flight == 0; /* a slow PostgreSQL is not sent a second round */
    registry_each(s->reg, check_channel, t);
    if (t->n)
        query_heads(s, t->batch, t->n, true);
    free(t);
}

bool seq_maybe_forget(struct seq *s, struct channel *ch)
{
    if (ch->nmembers > 0 || ch->redis != R_IDLE || ch->queries > 0)
        return false;
    seq_release(s, ch);
    registry_remove(s->reg, ch);
    return true;
}

void seq_release(struct seq *s, struct channel *ch)
{
    list_remove(&s->holding, ch, HOLDING);
    list_remove(&s->heads, ch, HEADS);
    for (uint32_t i = 0; i < ch->nheld; i++) {
        held_account(s, -(ptrdiff_t)ch->held[i]->len, ch);
        frame_unref(ch->held[i]);
    }
    free(ch->held);
    ch->held = NULL;
    ch->nheld = ch->heldcap = 0;
    cache_clear(s, ch);
    set_last_frame(ch, NULL);
}
