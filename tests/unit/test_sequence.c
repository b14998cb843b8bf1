/* The channel core alone (gateway/channels/: hub.c, registry.c, sequence.c, with frame.c and
 * outq.c): linked without a connection, a Redis bus or PostgreSQL. What it calls below
 * (history_*, db_up, db_usable, sigkey_*, bus_*) is faked here at link time and answers only
 * when a test says so, the way the real ones answer later from the loop; what it calls above
 * goes through a recording hub_sink. Each test checks what every subscriber received, in
 * order: replayed frames, then its `subscribed` answer, then live frames, with no gap and no
 * duplicate. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bus.h"
#include "db.h"
#include "envelope_sig.h"
#include "frame.h"
#include "herald.h"
#include "history.h"
#include "hub.h"
#include "presence.h"
#include "presence_event.h"
#include "sigkey.h"
#include "sink.h"

#define HOLD_MS 100 /* sequence.c's wait for a missing frame */
#define EPOCH   "e1"
#define MAXSEQ  64

static struct envelope_key key; /* PostgreSQL's, known from the start */

/* ------------------------------------------------------------------------------------------
 * What the core calls below: recorded, answered by the tests */

struct pending_fetch {
    char channel[64];
    uint64_t since;
    long limit;
    history_page_cb cb;
    void *arg;
};

struct pending_heads {
    size_t n;
    char names[8][64];
    uint64_t seqs[8]; /* the check's: each channel's last seq when asked */
    history_heads_cb cb;
    void *arg;
};

struct pending_epoch {
    char channel[64], epoch[32];
    history_done_cb cb;
    void *arg;
};

static struct world {
    uv_loop_t loop;
    struct herald_config cfg;
    struct herald app;
    struct hub *hub;
    struct bus_events bus; /* how the test plays Redis: the table the hub fills */
    bool db_is_up;
    struct pending_fetch fetches[16];
    size_t nfetches;
    struct pending_heads heads[16];
    size_t nheads;
    struct pending_epoch epochs[4];
    size_t nepochs;
    char epoch[32]; /* the channel's epoch in PostgreSQL */
    int subscribes, unsubscribes;
    /* the channel "c" as PostgreSQL has it: envelopes 1..stored */
    char envelopes[MAXSEQ + 1][128];
    uint64_t stored;
    bool presence_on;   /* presence_enabled's answer */
    char last_out[256]; /* the last frame delivered, as text */
} w;

void history_fetch(struct herald *app, struct history_request *r, const char *channel,
                   uint64_t since, uint64_t min_head, long limit, size_t max_bytes,
                   history_page_cb cb, void *arg)
{
    (void)app, (void)r, (void)max_bytes, (void)min_head;
    assert_true(w.nfetches < 16);
    struct pending_fetch *p = &w.fetches[w.nfetches++];
    *p = (struct pending_fetch){.since = since, .limit = limit, .cb = cb, .arg = arg};
    snprintf(p->channel, sizeof p->channel, "%s", channel);
}

void history_heads(struct herald *app, struct history_request *r, const char *const *names,
                   const uint64_t *seqs, size_t n, history_heads_cb cb, void *arg)
{
    (void)app, (void)r;
    assert_true(w.nheads < 16 && n <= 8);
    struct pending_heads *p = &w.heads[w.nheads++];
    *p = (struct pending_heads){.n = n, .cb = cb, .arg = arg};
    for (size_t i = 0; i < n; i++) {
        snprintf(p->names[i], sizeof p->names[i], "%s", names[i]);
        p->seqs[i] = seqs ? seqs[i] : 0;
    }
}

void history_new_epoch(struct herald *app, struct history_request *r, const char *channel,
                       const char *epoch, history_done_cb cb, void *arg)
{
    (void)app, (void)r;
    assert_true(w.nepochs < 4);
    struct pending_epoch *p = &w.epochs[w.nepochs++];
    *p = (struct pending_epoch){.cb = cb, .arg = arg};
    snprintf(p->channel, sizeof p->channel, "%s", channel);
    snprintf(p->epoch, sizeof p->epoch, "%s", epoch);
}

const struct envelope_key *sigkey_get(const struct sigkey *k)
{
    (void)k;
    return &key;
}

void sigkey_want(struct sigkey *k, uint64_t now)
{
    (void)k, (void)now; /* known from the start */
}

bool db_up(const struct db *db)
{
    (void)db;
    return w.db_is_up;
}

bool db_usable(const struct db *db)
{
    return db_up(db); /* the pool here is never starting */
}

int bus_subscribe(struct bus *bus, const char *name, size_t len)
{
    (void)bus, (void)name, (void)len;
    w.subscribes++;
    return 0;
}

int bus_unsubscribe(struct bus *bus, const char *name, size_t len)
{
    (void)bus, (void)name, (void)len;
    w.unsubscribes++;
    return 0;
}

/* presence.c stands on the bus too: faked with the real event check (presence_event.h). */
bool presence_enabled(const struct presence *p, const char *name, size_t len)
{
    (void)p, (void)name, (void)len;
    return w.presence_on;
}

struct frame *presence_event_frame(struct presence *p, const char *name, size_t len,
                                   const char *payload, size_t plen, const char **why)
{
    (void)p;
    if (!presence_event_valid(name, len, payload, plen)) {
        *why = "a malformed presence event";
        return NULL;
    }
    return frame_from(payload, plen);
}

int bus_shard_of(const struct bus *bus, const char *name, size_t len)
{
    (void)bus, (void)name, (void)len;
    return 0;
}

/* ------------------------------------------------------------------------------------------
 * What the core calls above: a recording sink */

struct fake_sub {
    struct subscriber sub;
    char log[2048]; /* "m6 m7 S5/r3 m8 ..." in the order it happened */
    bool room;      /* has_room's answer */
    bool drain_asked;
};

static struct fake_sub *fake_of(struct subscriber *s)
{
    return (struct fake_sub *)(void *)((char *)s - offsetof(struct fake_sub, sub));
}

static void note(struct fake_sub *f, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void note(struct fake_sub *f, const char *fmt, ...)
{
    size_t n = strlen(f->log);
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(f->log + n, sizeof f->log - n, fmt, ap);
    va_end(ap);
}

static void sink_deliver(struct subscriber *s, struct frame *f)
{
    snprintf(w.last_out, sizeof w.last_out, "%.*s", (int)(f->len - f->hdr),
             (const char *)frame_payload(f));
    note(fake_of(s), "%sm%llu", fake_of(s)->log[0] ? " " : "", (unsigned long long)f->seq);
}

static bool sink_has_room(const struct subscriber *s, size_t len)
{
    (void)len;
    return fake_of((struct subscriber *)s)->room;
}

static void sink_notify_drained(struct subscriber *s)
{
    fake_of(s)->drain_asked = true;
}

static void sink_answered(struct subscriber *s, const char *channel, const struct hub_answer *a,
                          const char *id_json)
{
    (void)channel, (void)id_json;
    struct fake_sub *f = fake_of(s);
    note(f, "%sS%llu", f->log[0] ? " " : "", (unsigned long long)a->seq);
    if (a->resumed && a->recovered)
        note(f, "/r%llu", (unsigned long long)a->replayed);
    else if (a->resumed)
        note(f, "/%s%s", a->code, a->refused ? "/refused" : "");
}

static const struct hub_sink sink = {sink_deliver, sink_has_room, sink_notify_drained,
                                     sink_answered};

/* ------------------------------------------------------------------------------------------
 * Driving the core */

static void store_up_to(uint64_t seq)
{
    for (uint64_t s = w.stored + 1; s <= seq; s++)
        snprintf(w.envelopes[s], sizeof w.envelopes[s],
                 "{\"op\":\"message\",\"channel\":\"c\",\"seq\":%llu,\"ts\":1,\"data\":%llu}",
                 (unsigned long long)s, (unsigned long long)s);
    if (seq > w.stored)
        w.stored = seq;
}

/* Redis delivers the signed envelope of seq (stored in PostgreSQL first, as publish does). */
static void live(uint64_t seq)
{
    store_up_to(seq);
    char signed_buf[256];
    const char *env = w.envelopes[seq];
    size_t n = envelope_sig_sign(&key, EPOCH, env, strlen(env), signed_buf);
    assert_true(n > 0);
    w.bus.message(w.bus.arg, "c", 1, signed_buf, n);
}

/* Redis brings the bare envelope of seq (no signature): only a hint that it exists. */
static void announce_unsigned(uint64_t seq)
{
    store_up_to(seq);
    const char *env = w.envelopes[seq];
    w.bus.message(w.bus.arg, "c", 1, env, strlen(env));
}

static void subscribe(struct fake_sub *f, const struct resume *resume)
{
    assert_int_equal(hub_subscribe(w.hub, &f->sub, "c", 1, NULL, resume), 0);
}

static void redis_confirms(void)
{
    w.bus.subscribed(w.bus.arg, "c", 1);
}

/* Answers the oldest pending head lookup: "c" has head `head` (0: no counter). */
static void answer_heads(uint64_t head)
{
    assert_true(w.nheads > 0);
    struct pending_heads p = w.heads[0];
    memmove(w.heads, w.heads + 1, --w.nheads * sizeof *w.heads);
    struct history_head h = {.name = "c", .head = head, .epoch = w.epoch, .first_kept = 1};
    /* the digest of the row at the seq asked about, as PostgreSQL's md5(envelope) */
    char hex[33];
    if (p.seqs[0] && p.seqs[0] <= w.stored) {
        envelope_md5_hex(w.envelopes[p.seqs[0]], strlen(w.envelopes[p.seqs[0]]), hex);
        h.digest = hex;
    }
    p.cb(p.arg, &h, head ? 1 : 0, NULL);
}

/* Answers the oldest pending fetch with the stored rows after its `since` (err: fails it). */
static void answer_fetch(const char *err)
{
    assert_true(w.nfetches > 0);
    struct pending_fetch p = w.fetches[0];
    memmove(w.fetches, w.fetches + 1, --w.nfetches * sizeof *w.fetches);
    assert_string_equal(p.channel, "c");
    if (err) {
        p.cb(p.arg, NULL, err);
        return;
    }
    struct history_row rows[MAXSEQ];
    struct history_page page = {.exists = true, .head = w.stored, .first_kept = 1, .rows = rows};
    snprintf(page.epoch, sizeof page.epoch, "%s", w.epoch);
    for (uint64_t s = p.since + 1; s <= w.stored && page.n < (size_t)p.limit; s++)
        rows[page.n++] = (struct history_row){s, w.envelopes[s], strlen(w.envelopes[s])};
    p.cb(p.arg, &page, NULL);
}

static void tick_after(uint64_t ms)
{
    hub_tick(w.hub, uv_now(&w.loop) + ms);
}

/* A channel "c" whose head is 5, with f subscribed and answered. */
static void join_at_head_5(struct fake_sub *f)
{
    store_up_to(5);
    subscribe(f, NULL);
    assert_int_equal(w.subscribes, 1);
    redis_confirms();
    assert_int_equal(w.nheads, 1); /* the head is asked for, not answered inside the call */
    assert_string_equal(f->log, "");
    answer_heads(5);
    assert_string_equal(f->log, "S5");
}

static int setup(void **state)
{
    (void)state;
    memset(&w, 0, sizeof w);
    snprintf(w.epoch, sizeof w.epoch, "%s", EPOCH);
    uv_loop_init(&w.loop);
    char err[256];
    char *argv[] = {"test_sequence", NULL};
    assert_int_equal(config_load(&w.cfg, 1, argv, stderr, err, sizeof err), CONFIG_OK);
    w.app = (struct herald){.cfg = &w.cfg, .loop = &w.loop};
    w.app.db = (struct db *)&w; /* history on: the fakes above stand for it */
    w.db_is_up = true;
    static const unsigned char k[ENVELOPE_KEY_LEN] = "0123456789abcdef0123456789abcdef";
    assert_int_equal(envelope_key_init(&key, k, sizeof k), 0);
    w.hub = hub_new(&w.app);
    assert_non_null(w.hub);
    hub_bus_events(w.hub, &w.bus);
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    hub_stop(w.hub);
    uv_run(&w.loop, UV_RUN_NOWAIT); /* closes the timer */
    hub_free(w.hub);
    assert_int_equal(uv_loop_close(&w.loop), 0);
    envelope_key_clear(&key);
    assert_int_equal(w.app.metrics.held_bytes, 0);
    return 0;
}

static void leave(struct fake_sub *f)
{
    hub_client_gone(w.hub, &f->sub);
}

/* ------------------------------------------------------------------------------------------
 * The cases */

static void delivers_in_order(void **state)
{
    (void)state;
    struct fake_sub a = {.sub.sink = &sink, .room = true};
    join_at_head_5(&a);
    live(6);
    live(7);
    live(8);
    assert_string_equal(a.log, "S5 m6 m7 m8");
    assert_int_equal(w.nfetches, 0);
    leave(&a);
}

static void holds_across_a_gap_until_the_missing_one_comes(void **state)
{
    (void)state;
    struct fake_sub a = {.sub.sink = &sink, .room = true};
    join_at_head_5(&a);
    live(6);
    store_up_to(7); /* 7 is in PostgreSQL, its PUBLISH is late */
    live(8);
    live(9);
    assert_string_equal(a.log, "S5 m6");
    assert_true(w.app.metrics.held_bytes > 0);
    live(7);
    assert_string_equal(a.log, "S5 m6 m7 m8 m9");
    assert_int_equal(w.app.metrics.held_bytes, 0);
    assert_int_equal(w.nfetches, 0);
    leave(&a);
}

static void a_gap_held_too_long_is_filled_from_history(void **state)
{
    (void)state;
    struct fake_sub a = {.sub.sink = &sink, .room = true};
    join_at_head_5(&a);
    store_up_to(7); /* 6 and 7 never come from Redis */
    live(8);
    tick_after(HOLD_MS - 1);
    assert_int_equal(w.nfetches, 0); /* not yet */
    tick_after(HOLD_MS);
    assert_int_equal(w.nfetches, 1);
    assert_int_equal(w.fetches[0].since, 5);
    assert_string_equal(a.log, "S5");
    answer_fetch(NULL);
    assert_string_equal(a.log, "S5 m6 m7 m8");
    assert_int_equal(w.app.metrics.gaps_skipped, 0);
    live(9);
    assert_string_equal(a.log, "S5 m6 m7 m8 m9");
    leave(&a);
}

static void a_gap_history_cannot_fill_is_skipped_and_counted(void **state)
{
    (void)state;
    struct fake_sub a = {.sub.sink = &sink, .room = true};
    join_at_head_5(&a);
    store_up_to(6);
    live(7);
    tick_after(HOLD_MS);
    assert_int_equal(w.nfetches, 1);
    answer_fetch("PostgreSQL is down");
    assert_string_equal(a.log, "S5 m7"); /* live delivery goes on past the gap */
    assert_int_equal(w.app.metrics.gaps_skipped, 1);
    leave(&a);
}

static void a_duplicate_is_dropped(void **state)
{
    (void)state;
    struct fake_sub a = {.sub.sink = &sink, .room = true};
    join_at_head_5(&a);
    live(6);
    live(6); /* the cached 6: nothing to check */
    assert_int_equal(w.nheads, 0);
    live(5); /* before this process's time: PostgreSQL's row at 6 is checked */
    assert_int_equal(w.nheads, 1);
    assert_int_equal(w.heads[0].seqs[0], 6);
    live(7);
    answer_heads(7); /* the same 6: the history is intact */
    assert_int_equal(w.nepochs, 0);
    assert_string_equal(a.log, "S5 m6 m7");
    assert_int_equal(w.app.metrics.duplicates_dropped, 2);
    leave(&a);
}

static void a_resume_is_served_from_the_cache(void **state)
{
    (void)state;
    struct fake_sub a = {.sub.sink = &sink, .room = true}, b = {.sub.sink = &sink, .room = true};
    join_at_head_5(&a);
    for (uint64_t s = 6; s <= 10; s++)
        live(s);
    struct resume r = {.since = 7, .epoch = EPOCH};
    subscribe(&b, &r);
    assert_string_equal(b.log, "m8 m9 m10 S10/r3");
    assert_int_equal(w.nfetches, 0); /* nothing asked of PostgreSQL */
    live(11);
    assert_string_equal(b.log, "m8 m9 m10 S10/r3 m11");
    assert_int_equal(w.app.metrics.resumes_recovered, 1);
    leave(&a);
    leave(&b);
}

/* last:N: the N latest messages from the head, then live; never more than
 * HERALD_REPLAY_MAX, never before seq 1, and no epoch to match. */
static void last_n_replays_the_latest_messages(void **state)
{
    (void)state;
    struct fake_sub a = {.sub.sink = &sink, .room = true}, b = {.sub.sink = &sink, .room = true},
                    c = {.sub.sink = &sink, .room = true}, d = {.sub.sink = &sink, .room = true};
    join_at_head_5(&a);
    for (uint64_t s = 6; s <= 10; s++)
        live(s);
    struct resume last3 = {.last = 3};
    subscribe(&b, &last3);
    assert_string_equal(b.log, "m8 m9 m10 S10/r3");
    assert_int_equal(w.nfetches, 0);
    live(11);
    assert_string_equal(b.log, "m8 m9 m10 S10/r3 m11");
    struct resume last99 = {.last = 99}; /* more than the channel holds: from seq 1 */
    subscribe(&c, &last99);
    assert_int_equal(w.nfetches, 1);
    assert_int_equal(w.fetches[0].since, 0);
    answer_fetch(NULL);
    assert_string_equal(c.log, "m1 m2 m3 m4 m5 m6 m7 m8 m9 m10 m11 S11/r11");
    w.cfg.replay_max = 2; /* the cap */
    struct resume last5 = {.last = 5};
    subscribe(&d, &last5);
    assert_string_equal(d.log, "m10 m11 S11/r2");
    leave(&a);
    leave(&b);
    leave(&c);
    leave(&d);
}

static void a_resume_is_served_from_history(void **state)
{
    (void)state;
    struct fake_sub a = {.sub.sink = &sink, .room = true}, b = {.sub.sink = &sink, .room = true};
    join_at_head_5(&a);
    for (uint64_t s = 6; s <= 8; s++)
        live(s);
    struct resume r = {.since = 2, .epoch = EPOCH};
    subscribe(&b, &r); /* 3..5 are older than the cache */
    assert_int_equal(w.nfetches, 1);
    assert_int_equal(w.fetches[0].since, 2);
    assert_string_equal(b.log, "");
    answer_fetch(NULL);
    assert_string_equal(b.log, "m3 m4 m5 m6 m7 m8 S8/r6");
    assert_string_equal(a.log, "S5 m6 m7 m8"); /* the page gave a nothing twice */
    leave(&a);
    leave(&b);
}

static void a_resume_racing_live_messages_gets_each_once_in_order(void **state)
{
    (void)state;
    struct fake_sub a = {.sub.sink = &sink, .room = true}, b = {.sub.sink = &sink, .room = true};
    join_at_head_5(&a);
    live(6);
    struct resume r = {.since = 1, .epoch = EPOCH};
    subscribe(&b, &r);
    assert_int_equal(w.nfetches, 1);
    live(7); /* published while the page is read */
    live(8);
    assert_string_equal(b.log, ""); /* nothing live before its answer */
    answer_fetch(NULL);             /* the page has rows up to 8 */
    live(8);                        /* a late duplicate from Redis */
    live(9);
    assert_string_equal(b.log, "m2 m3 m4 m5 m6 m7 m8 S8/r7 m9");
    assert_string_equal(a.log, "S5 m6 m7 m8 m9");
    leave(&a);
    leave(&b);
}

static void a_resume_waits_for_room_in_the_queue(void **state)
{
    (void)state;
    struct fake_sub a = {.sub.sink = &sink, .room = true}, b = {.sub.sink = &sink, .room = false};
    join_at_head_5(&a);
    for (uint64_t s = 6; s <= 8; s++)
        live(s);
    struct resume r = {.since = 5, .epoch = EPOCH};
    subscribe(&b, &r);
    assert_string_equal(b.log, "");
    assert_true(b.drain_asked);
    live(9);
    assert_string_equal(b.log, ""); /* not answered yet: no live message either */
    b.room = true;
    hub_client_drained(w.hub, &b.sub);
    assert_string_equal(b.log, "m6 m7 m8 m9 S9/r4");
    assert_int_equal(w.app.metrics.replay_pauses, 1);
    leave(&a);
    leave(&b);
}

static void a_resume_past_the_history_is_refused(void **state)
{
    (void)state;
    struct fake_sub a = {.sub.sink = &sink, .room = true}, b = {.sub.sink = &sink, .room = true},
                    c = {.sub.sink = &sink, .room = true};
    join_at_head_5(&a);
    struct resume other_epoch = {.since = 3, .epoch = "e0"}, ahead = {.since = 9, .epoch = EPOCH};
    subscribe(&b, &other_epoch);
    subscribe(&c, &ahead);
    assert_string_equal(b.log, "S5/history_reset");
    /* a position ahead of this process is checked with PostgreSQL first: nothing past 5 */
    assert_string_equal(c.log, "");
    assert_int_equal(w.nfetches, 1);
    answer_fetch(NULL);
    assert_string_equal(c.log, "S5/history_reset");
    assert_int_equal(w.nfetches, 0); /* answered by that page: not asked again */
    assert_int_equal(w.app.metrics.resumes_failed, 2);
    leave(&a);
    leave(&b);
    leave(&c);
}

/* A page (an HTTP read) stops when its subscriber's queue is full, so HERALD_REPLAY_MAX does
 * not bound how far back it starts; a resume that is no page is refused that far back. */
static void a_paged_resume_is_not_bounded_by_replay_max(void **state)
{
    (void)state;
    struct fake_sub a = {.sub.sink = &sink, .room = true}, b = {.sub.sink = &sink, .room = true},
                    c = {.sub.sink = &sink, .room = true};
    join_at_head_5(&a);
    w.cfg.replay_max = 2;
    struct resume whole = {.since = 0}, page = {.since = 0, .paged = true};
    subscribe(&b, &whole);
    assert_string_equal(b.log, "S5/history_expired");
    subscribe(&c, &page);
    assert_int_equal(w.nfetches, 1);
    answer_fetch(NULL);
    assert_string_equal(c.log, "m1 m2 m3 m4 m5 S5/r5");
    leave(&a);
    leave(&b);
    leave(&c);
}

/* strict: a resume that cannot be served is refused; the member gets nothing of the channel
 * until the connection drops it (hub_drop_refused), which leaves the other members alone. */
static void a_strict_resume_is_refused_and_dropped(void **state)
{
    (void)state;
    struct fake_sub a = {.sub.sink = &sink, .room = true}, b = {.sub.sink = &sink, .room = true},
                    c = {.sub.sink = &sink, .room = true};
    join_at_head_5(&a);
    struct resume wrong = {.since = 3, .epoch = "e0", .strict = true};
    struct resume fine = {.since = 4, .epoch = EPOCH, .strict = true};
    subscribe(&b, &wrong);
    subscribe(&c, &fine);
    assert_string_equal(b.log, "S5/history_reset/refused");
    answer_fetch(NULL);                     /* seq 5 is not cached: from history */
    assert_string_equal(c.log, "m5 S5/r1"); /* strict changes nothing when it can be served */
    live(6);
    assert_string_equal(b.log, "S5/history_reset/refused"); /* not a member in effect */
    assert_string_equal(a.log, "S5 m6");
    assert_int_equal(b.sub.n, 1);
    hub_drop_refused(w.hub, &b.sub);
    assert_int_equal(b.sub.n, 0);
    hub_drop_refused(w.hub, &a.sub); /* nothing refused: nothing dropped */
    assert_int_equal(a.sub.n, 1);
    live(7);
    assert_string_equal(a.log, "S5 m6 m7");
    assert_string_equal(c.log, "m5 S5/r1 m6 m7");
    leave(&a);
    leave(&b); /* frees its refs (empty now) */
    leave(&c);
}

static void a_resume_ahead_of_this_process_waits_for_the_gap_fill(void **state)
{
    (void)state;
    struct fake_sub a = {.sub.sink = &sink, .room = true}, b = {.sub.sink = &sink, .room = true};
    join_at_head_5(&a);
    announce_unsigned(9); /* 6..9 are stored; this process has delivered up to 5 */
    struct resume r = {.since = 8, .epoch = EPOCH};
    subscribe(&b, &r);
    assert_string_equal(b.log, ""); /* not refused as a reset: it waits */
    assert_int_equal(w.nfetches, 1);
    assert_int_equal(w.fetches[0].since, 5); /* the gap fill, from where the channel is */
    answer_fetch(NULL);
    assert_string_equal(a.log, "S5 m6 m7 m8 m9");
    assert_string_equal(b.log, "m9 S9/r1");
    assert_int_equal(w.nfetches, 0);
    assert_int_equal(w.app.metrics.resumes_failed, 0);
    leave(&a);
    leave(&b);
}

/* The recipe's race: the client read position 8 from PostgreSQL before the PUBLISHes of 6..8
 * reached this process, which knows nothing past 5. The position is checked, not refused. */
static void a_resume_ahead_without_any_announcement_is_checked(void **state)
{
    (void)state;
    struct fake_sub a = {.sub.sink = &sink, .room = true}, b = {.sub.sink = &sink, .room = true};
    join_at_head_5(&a);
    store_up_to(8); /* committed; nothing on Redis yet */
    struct resume r = {.since = 8, .epoch = EPOCH, .strict = true};
    subscribe(&b, &r);
    assert_string_equal(b.log, "");
    assert_int_equal(w.nfetches, 1);
    assert_int_equal(w.fetches[0].since, 5);
    answer_fetch(NULL);
    assert_string_equal(a.log, "S5 m6 m7 m8");
    assert_string_equal(b.log, "S8/r0");
    live(9);
    assert_string_equal(b.log, "S8/r0 m9");
    assert_int_equal(w.app.metrics.resumes_failed, 0);
    leave(&a);
    leave(&b);
}

static void the_channel_forgotten_while_a_query_is_in_flight(void **state)
{
    (void)state;
    struct fake_sub a = {.sub.sink = &sink, .room = true}, b = {.sub.sink = &sink, .room = true};
    join_at_head_5(&a);
    struct resume r = {.since = 1, .epoch = EPOCH};
    subscribe(&b, &r);
    assert_int_equal(w.nfetches, 1);
    leave(&a);
    leave(&b);
    assert_int_equal(w.unsubscribes, 1);
    w.bus.unsubscribed(w.bus.arg, "c", 1);
    /* the query still points at the channel: it stays until the answer */
    assert_int_equal(hub_channel_count(w.hub), 1);
    answer_fetch(NULL);
    assert_int_equal(hub_channel_count(w.hub), 0);
    assert_string_equal(b.log, ""); /* gone before its answer: nothing sent */
    assert_string_equal(a.log, "S5");
}

static void a_head_lookup_answered_after_the_channel_went(void **state)
{
    (void)state;
    struct fake_sub a = {.sub.sink = &sink, .room = true};
    store_up_to(5);
    subscribe(&a, NULL);
    redis_confirms();
    assert_int_equal(w.nheads, 1);
    leave(&a);
    w.bus.unsubscribed(w.bus.arg, "c", 1);
    assert_int_equal(hub_channel_count(w.hub), 0);
    answer_heads(5); /* looked up by name: finds nothing, touches nothing */
    assert_int_equal(hub_channel_count(w.hub), 0);
    assert_string_equal(a.log, "");
}

static void a_forged_payload_changes_nothing(void **state)
{
    (void)state;
    struct fake_sub a = {.sub.sink = &sink, .room = true};
    join_at_head_5(&a);
    const char *forged = "{\"op\":\"message\",\"channel\":\"c\",\"seq\":1000000,\"ts\":1,"
                         "\"data\":0,\"sig\":\"00000000000000000000000000000000000000000000000"
                         "00000000000000000\"}";
    w.bus.message(w.bus.arg, "c", 1, forged, strlen(forged));
    assert_int_equal(w.app.metrics.unverified_envelopes, 1);
    live(6);
    assert_string_equal(a.log, "S5 m6"); /* the stream goes on where it was */
    tick_after(HOLD_MS);
    assert_int_equal(w.nfetches, 1); /* the hint is checked with PostgreSQL */
    answer_fetch(NULL);              /* which has nothing past 6 */
    live(7);
    assert_string_equal(a.log, "S5 m6 m7");
    leave(&a);
}

/* On a presence channel a join or leave goes to the members as it is, a malformed one is
 * dropped and counted; elsewhere the same bytes are a raw message like any other. */
static void a_presence_event_goes_out_as_it_is(void **state)
{
    (void)state;
    struct fake_sub a = {.sub.sink = &sink, .room = true};
    join_at_head_5(&a);
    const char *join = "{\"op\":\"join\",\"channel\":\"c\",\"member\":{\"sub\":\"al\"}}";
    w.bus.message(w.bus.arg, "c", 1, join, strlen(join));
    assert_string_equal(w.last_out, "{\"op\":\"message\",\"channel\":\"c\",\"data\":{\"op\":"
                                    "\"join\",\"channel\":\"c\",\"member\":{\"sub\":\"al\"}}}");
    w.app.presence = (struct presence *)&w;
    w.presence_on = true;
    w.bus.message(w.bus.arg, "c", 1, join, strlen(join));
    assert_string_equal(w.last_out, join);
    const char *other = "{\"op\":\"leave\",\"channel\":\"d\",\"member\":{\"sub\":\"al\"}}";
    w.bus.message(w.bus.arg, "c", 1, other, strlen(other));
    assert_int_equal(w.app.metrics.invalid_payloads, 1);
    assert_string_equal(a.log, "S5 m0 m0"); /* two frames, not three */
    live(6);
    assert_string_equal(a.log, "S5 m0 m0 m6");
    leave(&a);
}

/* A failover to a standby that missed the last commits: PostgreSQL's history no longer
 * has what the member got (seq 7 is gone, seq 6 is another message). The new seq 6 comes
 * live: a duplicate by number, but not the message in the cache, so the channel gets a new
 * epoch and the member is told to reload (history_reset with the new epoch) instead of
 * dropping the new messages that reuse those seqs. */
static void failover_lost_history(void)
{
    w.stored = 5; /* the promoted standby had 1..5; a new publish got 6 */
    store_up_to(6);
    snprintf(w.envelopes[6], sizeof w.envelopes[6],
             "{\"op\":\"message\",\"channel\":\"c\",\"seq\":6,\"ts\":2,\"data\":\"new\"}");
}

static void new_epoch_then_reset(struct fake_sub *a, const char *log)
{
    assert_int_equal(w.nepochs, 1);
    assert_string_equal(w.epochs[0].epoch, EPOCH);
    assert_int_equal(w.app.metrics.history_divergences, 1);
    snprintf(w.epoch, sizeof w.epoch, "e2"); /* PostgreSQL gives it a new epoch */
    struct pending_epoch e = w.epochs[--w.nepochs];
    e.cb(e.arg, NULL);
    assert_int_equal(w.nfetches, 1); /* then reads the new epoch's head */
    answer_fetch(NULL);
    assert_string_equal(a->log, log);
}

static void a_history_lost_in_a_failover_gets_a_new_epoch(void **state)
{
    (void)state;
    struct fake_sub a = {.sub.sink = &sink, .room = true};
    join_at_head_5(&a);
    live(6);
    live(7);
    assert_string_equal(a.log, "S5 m6 m7");
    failover_lost_history();
    live(6); /* not the 6 in the cache */
    assert_string_equal(a.log, "S5 m6 m7");
    new_epoch_then_reset(&a, "S5 m6 m7 S6/history_reset");
    live(7); /* signed under the old epoch: not authentic any more */
    assert_string_equal(a.log, "S5 m6 m7 S6/history_reset");
    leave(&a);
}

/* The same, with the promoted standby's next messages coming before its new epoch: they are
 * signed under the old one (PostgreSQL has not changed it yet), and seq 8 follows the 7 the
 * member got. It must not be delivered as if it did: the lost 7 is not the new 7. It and a
 * page fetched under the old epoch meanwhile wait for the new epoch's page, which brings
 * them after the reset. */
static void nothing_follows_a_lost_history_before_its_new_epoch(void **state)
{
    (void)state;
    struct fake_sub a = {.sub.sink = &sink, .room = true};
    join_at_head_5(&a);
    live(6);
    live(7);
    failover_lost_history();
    live(6); /* not the 6 in the cache: a new epoch is asked for */
    store_up_to(8);
    live(7);
    live(8);
    assert_string_equal(a.log, "S5 m6 m7");
    tick_after(1000); /* the hint of 8 asks PostgreSQL: still the old epoch */
    assert_int_equal(w.nfetches, 1);
    answer_fetch(NULL);
    assert_string_equal(a.log, "S5 m6 m7");
    new_epoch_then_reset(&a, "S5 m6 m7 S8/history_reset");
    live(9); /* under the old epoch: not authentic any more, a hint */
    assert_string_equal(a.log, "S5 m6 m7 S8/history_reset");
    leave(&a);
}

/* Without a recent cache the duplicate cannot be compared: PostgreSQL's row at the last seq
 * delivered is checked against the frame delivered (one check at a time). */
static void without_a_cache_a_duplicate_makes_the_history_checked(void **state)
{
    (void)state;
    w.cfg.recent_bytes = 0;
    struct fake_sub a = {.sub.sink = &sink, .room = true};
    join_at_head_5(&a);
    live(6);
    live(7);
    failover_lost_history();
    live(6);
    live(6); /* a second copy does not ask twice */
    assert_int_equal(w.nheads, 1);
    assert_int_equal(w.heads[0].seqs[0], 7);
    assert_int_equal(w.nepochs, 0);
    answer_heads(6); /* head 6 < 7: what was delivered is gone */
    new_epoch_then_reset(&a, "S5 m6 m7 S6/history_reset");
    leave(&a);
}

/* A copy of a message delivered already (a gap fill raced Redis) is only a duplicate. */
static void a_true_copy_is_only_a_duplicate(void **state)
{
    (void)state;
    struct fake_sub a = {.sub.sink = &sink, .room = true};
    join_at_head_5(&a);
    live(6);
    live(7);
    live(6);
    assert_int_equal(w.app.metrics.duplicates_dropped, 1);
    assert_int_equal(w.nepochs + w.nheads + w.nfetches, 0);
    assert_int_equal(w.app.metrics.history_divergences, 0);
    leave(&a);
}

/* New messages already went past what the member got (head 8 > 7): only the row at 7 tells,
 * by its digest, that 6 and 7 are not the messages delivered. */
static void a_replaced_history_past_the_delivered_seq_is_caught_by_its_digest(void **state)
{
    (void)state;
    struct fake_sub a = {.sub.sink = &sink, .room = true};
    join_at_head_5(&a);
    live(6);
    live(7);
    w.stored = 5;
    for (uint64_t s = 6; s <= 8; s++) {
        store_up_to(s);
        snprintf(w.envelopes[s], sizeof w.envelopes[s],
                 "{\"op\":\"message\",\"channel\":\"c\",\"seq\":%llu,\"ts\":2,\"data\":\"new\"}",
                 (unsigned long long)s);
    }
    tick_after(2000);
    answer_heads(8);
    assert_int_equal(w.nepochs, 1); /* not a gap fill from 7: that would skip the new 6 and 7 */
    assert_int_equal(w.nfetches, 0);
    snprintf(w.epoch, sizeof w.epoch, "e2");
    struct pending_epoch e = w.epochs[--w.nepochs];
    e.cb(e.arg, NULL);
    answer_fetch(NULL);
    assert_string_equal(a.log, "S5 m6 m7 S8/history_reset");
    leave(&a);
}

/* A live message delivered while the check is out: PostgreSQL answered for the moment the
 * check was sent (head 6), not for now (7); that is no loss. */
static void a_check_overtaken_by_a_live_message_is_no_divergence(void **state)
{
    (void)state;
    struct fake_sub a = {.sub.sink = &sink, .room = true};
    join_at_head_5(&a);
    live(6);
    tick_after(2000);
    assert_int_equal(w.heads[0].seqs[0], 6);
    live(7);
    answer_heads(6);
    assert_int_equal(w.nepochs, 0);
    assert_int_equal(w.app.metrics.history_divergences, 0);
    assert_string_equal(a.log, "S5 m6 m7");
    leave(&a);
}

/* The same check on a history that is intact asks for nothing. */
static void an_intact_history_passes_the_check(void **state)
{
    (void)state;
    struct fake_sub a = {.sub.sink = &sink, .room = true};
    join_at_head_5(&a);
    live(6);
    tick_after(2000);
    assert_int_equal(w.nheads, 1);
    answer_heads(6);
    assert_int_equal(w.nepochs, 0);
    assert_int_equal(w.nfetches, 0);
    assert_int_equal(w.app.metrics.history_divergences, 0);
    live(7);
    assert_string_equal(a.log, "S5 m6 m7");
    leave(&a);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(delivers_in_order, setup, teardown),
        cmocka_unit_test_setup_teardown(holds_across_a_gap_until_the_missing_one_comes, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(a_gap_held_too_long_is_filled_from_history, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(a_gap_history_cannot_fill_is_skipped_and_counted, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(a_duplicate_is_dropped, setup, teardown),
        cmocka_unit_test_setup_teardown(a_resume_is_served_from_the_cache, setup, teardown),
        cmocka_unit_test_setup_teardown(a_resume_is_served_from_history, setup, teardown),
        cmocka_unit_test_setup_teardown(a_resume_racing_live_messages_gets_each_once_in_order,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(a_resume_waits_for_room_in_the_queue, setup, teardown),
        cmocka_unit_test_setup_teardown(a_resume_past_the_history_is_refused, setup, teardown),
        cmocka_unit_test_setup_teardown(a_resume_ahead_of_this_process_waits_for_the_gap_fill,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(a_resume_ahead_without_any_announcement_is_checked, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(the_channel_forgotten_while_a_query_is_in_flight, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(a_head_lookup_answered_after_the_channel_went, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(a_forged_payload_changes_nothing, setup, teardown),
        cmocka_unit_test_setup_teardown(a_presence_event_goes_out_as_it_is, setup, teardown),
        cmocka_unit_test_setup_teardown(a_history_lost_in_a_failover_gets_a_new_epoch, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(nothing_follows_a_lost_history_before_its_new_epoch, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(without_a_cache_a_duplicate_makes_the_history_checked,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(a_true_copy_is_only_a_duplicate, setup, teardown),
        cmocka_unit_test_setup_teardown(
            a_replaced_history_past_the_delivered_seq_is_caught_by_its_digest, setup, teardown),
        cmocka_unit_test_setup_teardown(an_intact_history_passes_the_check, setup, teardown),
        cmocka_unit_test_setup_teardown(a_check_overtaken_by_a_live_message_is_no_divergence, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(last_n_replays_the_latest_messages, setup, teardown),
        cmocka_unit_test_setup_teardown(a_paged_resume_is_not_bounded_by_replay_max, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(a_strict_resume_is_refused_and_dropped, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
