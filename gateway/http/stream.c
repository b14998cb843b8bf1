#include "stream.h"
#include "auth.h"
#include "channel.h"
#include "frame.h"
#include "herald.h"
#include "history.h"
#include "http_session.h"
#include "hub.h"
#include "iplimit.h"
#include "json_text.h"
#include "peer.h"
#include "rest.h"
#include "stream_query.h"

#include <libwebsockets.h>
#include <stdio.h>
#include <stdlib.h>
#include <errno.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>

#define SWEEP_MS 250
#define ANSWER_TIMEOUT_MS                                                                          \
    10000                 /* Redis (and PostgreSQL) must have answered the subscribe by then */
#define SSE_RETRY_MS 1000 /* what an EventSource waits before it reconnects */
#define PEEK_MS      1000 /* how often a held long-poll's socket is checked for its end */
#define HEAD_MAX     (512 + CORS_LINES_MAX)

/* Bytes being made or queued. */
struct text {
    char *p;
    size_t len, cap;
};

enum mode {
    SSE,  /* text/event-stream, until the connection or the drain ends it */
    POLL, /* one JSON answer: at once when there is something, else at the deadline */
};

struct stream {
    struct subscriber sub; /* its one channel: written by the channel core */
    struct herald *app;
    struct lws *wsi;
    struct http_session *session;
    struct stream *prev, *next;             /* the process's list: the sweep and the drain */
    struct stream *dirty_prev, *dirty_next; /* in the dirty list while it has output to write */
    bool dirty;
    bool await_writable; /* the socket was full: lws calls WRITEABLE when it drains */
    struct later kick;   /* an answer or a head to write, from the loop */
    enum mode mode;
    bool ds;        /* the Durable Streams read protocol */
    bool catch_up;  /* ds without live: answered as soon as the subscribe is */
    bool answered;  /* the channel core answered the subscribe */
    bool head_out;  /* SSE: the head is queued; bytes go out as the socket takes them */
    bool finishing; /* SSE: close once what is queued is written */
    bool full;      /* POLL: the page is full (or a live burst overflowed): more follows */
    bool drain_wanted;
    unsigned status; /* an error to answer instead (head not sent yet), with code and why */
    enum errcode code;
    const char *why;
    char channel[CHANNEL_NAME_MAX + 1];
    char epoch[HISTORY_EPOCH_MAX]; /* the channel's, as last answered */
    uint64_t pos;                  /* the last seq queued (or answered): the next position */
    bool recovered;
    const char *reason; /* POLL: why a resume was not recovered */
    /* output: SSE bytes (off of them written), or a POLL page's comma-separated items */
    struct text out;
    size_t off;
    size_t items;
    uint64_t deadline_ms; /* POLL: answered (empty) then */
    uint64_t ends_ms;     /* ds SSE: ended cleanly then */
    uint64_t wrote_ms;    /* SSE: the last bytes queued (heartbeats) */
    uint64_t peeked_ms;   /* POLL: its socket was last checked for a hang-up */
    uint64_t started_ms;  /* not answered ANSWER_TIMEOUT_MS after it: 503 */
    int64_t exp;          /* the token's exp, 0 for none */
    struct ipcount *ip;
};

/* The SSE bytes of the last message rendered, and what they were made for (queue_event). */
struct event_cache {
    struct frame *f; /* held: the key */
    bool ds, up_to_date;
    char epoch[HISTORY_EPOCH_MAX];
    struct text text;
};

struct streams {
    struct herald *app;
    struct event_cache cache;
    uv_timer_t sweep;
    struct stream *list;
    struct stream *dirty; /* streams with output queued during this loop turn */
    size_t count;
};

static struct stream *stream_of(struct subscriber *s)
{
    return (struct stream *)(void *)((char *)s - offsetof(struct stream, sub));
}

/* ------------------------------------------------------------------------------------------
 * Text: SSE events and page items are made in growable byte buffers */

static bool text_reserve(struct text *t, size_t more)
{
    if (t->len + more <= t->cap)
        return true;
    size_t cap = t->cap ? t->cap : 4096;
    while (cap < t->len + more)
        cap *= 2;
    char *p = realloc(t->p, cap);
    if (!p)
        return false;
    t->p = p;
    t->cap = cap;
    return true;
}

static void text_free(struct text *t)
{
    free(t->p);
    *t = (struct text){0};
}

/* The appends below write into room reserved first. */
static void put(struct text *t, const char *s, size_t n)
{
    memcpy(t->p + t->len, s, n);
    t->len += n;
}

static void puts_(struct text *t, const char *s)
{
    put(t, s, strlen(s));
}

static size_t lines_in(const char *p, size_t n)
{
    size_t k = 1;
    for (size_t i = 0; i < n; i++)
        k += p[i] == '\n' || p[i] == '\r';
    return k;
}

/* Room put_data needs for a text of n bytes. */
static size_t data_room(const char *p, size_t n)
{
    return n + 7 * lines_in(p, n) + 8;
}

/* SSE's data field holding pre, p[0..n), post: each line of the text its own `data:` line
 * (CR, LF and CRLF end lines; the reader joins them with LF, which JSON reads as the same
 * whitespace), then the blank line that ends the event. pre and post: at most a byte each. */
static void put_data(struct text *t, const char *pre, const char *p, size_t n, const char *post)
{
    puts_(t, "data: ");
    puts_(t, pre);
    for (size_t i = 0; i < n; i++) {
        if (p[i] == '\r' || p[i] == '\n') {
            if (p[i] == '\r' && i + 1 < n && p[i + 1] == '\n')
                i++;
            puts_(t, "\ndata: ");
        } else
            t->p[t->len++] = p[i];
    }
    puts_(t, post);
    puts_(t, "\n\n");
}

/* The op of a message that is not "message" (join, leave): its SSE event name. */
static size_t event_name(const char *p, size_t n, const char **name)
{
    static const char head[] = "{\"op\":\"";
    size_t h = sizeof head - 1;
    if (n < h || memcmp(p, head, h) != 0)
        return 0;
    const char *end = memchr(p + h, '"', n - h);
    size_t len = end ? (size_t)(end - p - h) : 0;
    if (len == 7 && memcmp(p + h, "message", 7) == 0)
        return 0;
    *name = p + h;
    return len < 32 ? len : 0;
}

/* Herald's SSE event for a message: its position as id (sequenced only), its op as the
 * event's name (join, leave), the envelope as data. */
static bool render_sse(struct text *t, const struct frame *f, const char *epoch, const char *p,
                       size_t n)
{
    char id[STREAM_POSITION_MAX];
    size_t idlen = f->seq ? stream_position_write(id, epoch, f->seq) : 0;
    const char *name = NULL;
    size_t nlen = event_name(p, n, &name);
    if (!text_reserve(t, idlen + nlen + 16 + data_room(p, n)))
        return false;
    if (idlen) {
        puts_(t, "id: ");
        put(t, id, idlen);
        puts_(t, "\n");
    }
    if (nlen) {
        puts_(t, "event: ");
        put(t, name, nlen);
        puts_(t, "\n");
    }
    put_data(t, "", p, n, "");
    return true;
}

/* Durable Streams' control event: the offset after seq. */
static bool render_ds_control(struct text *t, const char *epoch, uint64_t seq, bool up_to_date)
{
    char off[STREAM_POSITION_MAX], ctl[160];
    stream_position_write(off, epoch, seq);
    int n = snprintf(ctl, sizeof ctl,
                     "{\"streamNextOffset\":\"%s\",\"streamCursor\":\"%llu\",\"upToDate\":%s}", off,
                     (unsigned long long)seq, up_to_date ? "true" : "false");
    if (!text_reserve(t, (size_t)n + 24 + data_room(ctl, (size_t)n)))
        return false;
    puts_(t, "event: control\n");
    put_data(t, "", ctl, (size_t)n, "");
    return true;
}

/* Durable Streams' data event (the message's data in an array), then the control event. */
static bool render_ds(struct text *t, const struct frame *f, const char *epoch, const char *data,
                      size_t n, bool up_to_date)
{
    if (!text_reserve(t, 16 + data_room(data, n)))
        return false;
    puts_(t, "event: data\n");
    put_data(t, "[", data, n, "]");
    return render_ds_control(t, epoch, f->seq, up_to_date);
}

/* ------------------------------------------------------------------------------------------
 * A stream's output */

static const char *epoch_of(const struct stream *st)
{
    return st->epoch[0] ? st->epoch : "0"; /* no history yet: seq 0 of any epoch */
}

static size_t queued(const struct stream *st)
{
    return st->out.len - st->off;
}

/* Room for more bytes after what is queued (written bytes are dropped first). */
static bool reserve(struct stream *st, size_t more)
{
    if (st->off && (st->off == st->out.len || st->out.len + more > st->out.cap)) {
        memmove(st->out.p, st->out.p + st->off, queued(st));
        st->out.len -= st->off;
        st->off = 0;
    }
    return text_reserve(&st->out, more);
}

/* The bytes queued are over HERALD_CLIENT_QUEUE_BYTES: an SSE stream is closed (its client
 * resumes from its last id), a page is answered with what it has. */
static bool over_limit(const struct stream *st, size_t more)
{
    return queued(st) + more > (size_t)st->app->cfg->client_queue_bytes;
}

static void kick(struct stream *st);
static void finish(struct stream *st);
static void mark_dirty(struct stream *st);
static void unmark_dirty(struct stream *st);

static void slow(struct stream *st)
{
    if (st->mode == POLL) {
        st->full = true;
        kick(st);
        return;
    }
    if (st->finishing && !queued(st))
        return;
    st->app->metrics.stream_slow_closes++;
    st->out.len = st->off = 0;
    st->finishing = true;
    if (st->wsi) /* from the loop, never inside the delivery */
        lws_set_timeout(st->wsi, PENDING_TIMEOUT_USER_OK, LWS_TO_KILL_ASYNC);
}

/* Appends t[0..n) to what is queued; false (the stream is slow) when it does not fit. */
static bool queue(struct stream *st, const char *t, size_t n)
{
    if (over_limit(st, n) || !reserve(st, n)) {
        slow(st);
        return false;
    }
    put(&st->out, t, n);
    return true;
}

/* The event of frame f for this stream: made once per message for every stream that wants
 * the same bytes (seq_deliver hands one frame to every member in one loop), then copied.
 * The cache holds a reference to its frame, so that the address cannot name another
 * message while it is the key. */
static bool queue_event(struct stream *st, struct frame *f, const char *p, size_t n,
                        const char *data, size_t dlen)
{
    struct event_cache *c = &st->app->streams->cache;
    const char *epoch = epoch_of(st);
    if (c->f != f || c->ds != st->ds || c->up_to_date != st->answered ||
        strcmp(c->epoch, epoch) != 0) {
        if (c->f)
            frame_unref(c->f);
        c->f = frame_ref(f);
        c->ds = st->ds;
        c->up_to_date = st->answered;
        snprintf(c->epoch, sizeof c->epoch, "%s", epoch);
        c->text.len = 0;
        bool ok = st->ds ? render_ds(&c->text, f, epoch, data, dlen, st->answered)
                         : render_sse(&c->text, f, epoch, p, n);
        if (!ok) {
            frame_unref(c->f);
            c->f = NULL;
            slow(st);
            return false;
        }
    }
    return queue(st, c->text.p, c->text.len);
}

/* A page item: the message (Herald's long-poll) or its data (ds). */
static bool queue_item(struct stream *st, const char *p, size_t n)
{
    if (over_limit(st, n + 1) || !reserve(st, n + 1)) {
        slow(st);
        return false;
    }
    if (st->items)
        put(&st->out, ",", 1);
    put(&st->out, p, n);
    st->items++;
    return true;
}

/* Herald's `subscribed` event (or `reset`, the history reset while live), with the position
 * reached as its id. */
static bool render_answer(struct text *t, const struct stream *st, bool reset)
{
    char pos[STREAM_POSITION_MAX], ev[400], epoch[HISTORY_EPOCH_MAX + 2] = "null", code[64] = "";
    stream_position_write(pos, epoch_of(st), st->pos);
    if (st->epoch[0])
        snprintf(epoch, sizeof epoch, "\"%s\"", st->epoch);
    if (st->reason)
        snprintf(code, sizeof code, ",\"code\":\"%s\"", st->reason);
    int n = snprintf(
        ev, sizeof ev, "{\"channel\":\"%s\",\"seq\":%llu,\"epoch\":%s,\"recovered\":%s%s}",
        st->channel, (unsigned long long)st->pos, epoch, st->recovered ? "true" : "false", code);
    if (n <= 0 || (size_t)n >= sizeof ev ||
        !text_reserve(t, STREAM_POSITION_MAX + 32 + data_room(ev, (size_t)n)))
        return false;
    puts_(t, "id: ");
    puts_(t, pos);
    puts_(t, reset ? "\nevent: reset\n" : "\nevent: subscribed\n");
    put_data(t, "", ev, (size_t)n, "");
    return true;
}

/* ------------------------------------------------------------------------------------------
 * The channel core's side (hub_sink) */

static void sink_deliver(struct subscriber *s, struct frame *f)
{
    struct stream *st = stream_of(s);
    if (st->finishing || st->full || st->status)
        return;
    const char *p = (const char *)frame_payload(f);
    size_t n = f->len - f->hdr;
    if (!st->answered || !st->epoch[0]) {
        /* a replay is under the channel's epoch; a channel answered before it had one gets
         * it with its first message */
        const char *e = hub_channel_epoch(s, 0);
        snprintf(st->epoch, sizeof st->epoch, "%s", e ? e : "");
    }
    struct json_span data = {0, n};
    if (st->ds && (!f->seq || json_member_span(p, n, 0, "data", &data) < 0))
        return; /* Durable Streams carries the durable messages only */
    bool queued_it = st->mode == POLL
                         ? queue_item(st, p + (st->ds ? data.off : 0), st->ds ? data.len : n)
                         : queue_event(st, f, p, n, p + data.off, data.len);
    if (!queued_it)
        return; /* the position stays before it */
    if (f->seq)
        st->pos = f->seq;
    st->app->metrics.stream_messages++;
    st->wrote_ms = herald_now_ms(st->app);
    if (st->mode == POLL && st->answered)
        kick(st); /* answered on the next turn, with whatever else this turn brings */
    else if (st->head_out)
        mark_dirty(st);
}

static bool sink_has_room(const struct subscriber *s, size_t len)
{
    const struct stream *st =
        (const struct stream *)(const void *)((const char *)s - offsetof(struct stream, sub));
    size_t q = queued(st);
    return q == 0 || q + len * 2 < (size_t)st->app->cfg->client_queue_bytes / 2;
}

static void sink_notify_drained(struct subscriber *s)
{
    struct stream *st = stream_of(s);
    if (st->mode == POLL) { /* the page is full: answered with what it has */
        st->full = true;
        st->recovered = true;
        kick(st);
    } else
        st->drain_wanted = true;
}

/* A resume that cannot be served: Durable Streams has no way to say so but an error (410
 * Gone: start again from -1); Herald's strict read is refused (409); otherwise the answer
 * says recovered:false with the reason, as over WebSocket. */
static void sink_answered(struct subscriber *s, const char *channel, const struct hub_answer *a,
                          const char *id_json)
{
    struct stream *st = stream_of(s);
    (void)channel;
    (void)id_json;
    bool reset = st->answered; /* a second answer: the history was reset while live */
    st->answered = true;
    snprintf(st->epoch, sizeof st->epoch, "%s", a->epoch ? a->epoch : "");
    if (!reset && a->resumed && !a->recovered && (st->ds || a->refused)) {
        bool unavailable = a->code && strcmp(a->code, "history_unavailable") == 0;
        st->status = unavailable ? 503 : st->ds ? 410 : 409;
        st->code = errcode_from_name(a->code);
        st->why = unavailable ? "the history is unavailable"
                  : st->ds    ? "the offset is not in the channel's history (reset, pruned, or "
                                "never given): read again from -1"
                              : "strict: the missed messages cannot be replayed; load the state "
                                "again and read from its position";
        kick(st);
        return;
    }
    if (reset && st->ds) { /* the offsets the client holds mean nothing now: start again */
        st->status = 410;
        st->code = ERR_HISTORY_RESET;
        st->why = "the channel's history was reset: read again from -1";
        if (st->mode == POLL || !st->head_out)
            kick(st);
        else
            finish(st);
        return;
    }
    if (reset && st->mode == POLL) { /* what was gathered is of the old epoch */
        st->out.len = st->off = 0;
        st->items = 0;
    }
    if ((a->seq > st->pos && !st->full) || reset) /* a cut page ends at its last item */
        st->pos = a->seq;
    st->recovered = !a->resumed || a->recovered;
    st->reason = a->resumed && !a->recovered ? a->code : NULL;
    if (st->mode == POLL) {
        if (st->items || st->catch_up || !st->recovered || reset || st->full)
            kick(st);
        return;
    }
    struct text ev = {0};
    bool ok = st->ds ? render_ds_control(&ev, epoch_of(st), st->pos, true)
                     : render_answer(&ev, st, reset);
    if (!ok || !queue(st, ev.p, ev.len)) {
        text_free(&ev);
        slow(st);
        return;
    }
    text_free(&ev);
    if (!st->head_out)
        kick(st); /* the head goes first, from the loop */
    else
        mark_dirty(st);
}

static const struct hub_sink stream_sink = {
    .deliver = sink_deliver,
    .has_room = sink_has_room,
    .notify_drained = sink_notify_drained,
    .answered = sink_answered,
};

/* ------------------------------------------------------------------------------------------
 * The process's streams */

static void list_add(struct streams *ss, struct stream *st)
{
    st->prev = NULL;
    st->next = ss->list;
    if (ss->list)
        ss->list->prev = st;
    ss->list = st;
    ss->count++;
}

static void list_remove(struct streams *ss, struct stream *st)
{
    if (st->prev)
        st->prev->next = st->next;
    else
        ss->list = st->next;
    if (st->next)
        st->next->prev = st->prev;
    ss->count--;
}

/* The stream leaves its channel and the process; its session forgets it. Never called from
 * inside the channel core: from the loop (a kick) and lws's callbacks only. */
static void stream_free(struct stream *st)
{
    struct herald *app = st->app;
    later_cancel(&app->later, &st->kick);
    unmark_dirty(st);
    hub_client_gone(app->hub, &st->sub);
    list_remove(app->streams, st);
    if (st->mode == SSE)
        app->metrics.streams_sse--;
    else
        app->metrics.streams_poll--;
    if (st->ip)
        iplimit_release(app->ips, st->ip);
    if (st->session)
        st->session->stream = NULL;
    text_free(&st->out);
    free(st);
}

size_t stream_count(const struct herald *app)
{
    return app->streams ? app->streams->count : 0;
}

/* ------------------------------------------------------------------------------------------
 * Answers, from the loop */

/* An error instead of a stream (the head was not sent): the session answers it. */
static void answer_error(struct stream *st, unsigned status, enum errcode code, const char *why)
{
    struct herald *app = st->app;
    struct http_session *s = st->session;
    struct lws *wsi = st->wsi;
    stream_free(st);
    rest_answer_error(app, wsi, s, status, code, why);
}

/* A long-poll's or a catch-up read's one answer: Herald's page, or Durable Streams' array
 * with its headers (204 for a long-poll that timed out with nothing). */
static void answer_poll(struct stream *st)
{
    char pos[STREAM_POSITION_MAX], extra[256], start[400];
    stream_position_write(pos, epoch_of(st), st->pos);
    int h = 0, n;
    unsigned status = 200;
    if (st->ds) {
        h = snprintf(extra, sizeof extra, "stream-next-offset: %s\r\nstream-cursor: %llu\r\n%s",
                     pos, (unsigned long long)st->pos,
                     st->full ? "" : "stream-up-to-date: true\r\n");
        n = snprintf(start, sizeof start, "[");
        if (!st->items && !st->catch_up)
            status = 204;
    } else {
        char epoch[HISTORY_EPOCH_MAX + 2] = "null", code[64] = "";
        if (st->epoch[0])
            snprintf(epoch, sizeof epoch, "\"%s\"", st->epoch);
        if (st->reason)
            snprintf(code, sizeof code, ",\"code\":\"%s\"", st->reason);
        n = snprintf(start, sizeof start,
                     "{\"channel\":\"%s\",\"seq\":%llu,\"epoch\":%s,\"recovered\":%s%s,"
                     "\"more\":%s,\"messages\":[",
                     st->channel, (unsigned long long)st->pos, epoch,
                     st->recovered ? "true" : "false", code, st->full ? "true" : "false");
    }
    const char *end = st->ds ? "]\n" : "]}\n";
    size_t items = queued(st), len = status == 204 ? 0 : (size_t)n + items + strlen(end);
    char *body = malloc(len + 1);
    if (!body) {
        answer_error(st, 503, ERR_INTERNAL, "out of memory");
        return;
    }
    if (len) {
        memcpy(body, start, (size_t)n);
        if (items) /* buf is NULL until something was queued */
            memcpy(body + n, st->out.p + st->off, items);
        memcpy(body + n + items, end, strlen(end));
    }
    struct herald *app = st->app;
    struct http_session *s = st->session;
    struct lws *wsi = st->wsi;
    stream_free(st);
    rest_answer(app, wsi, s, status, h ? extra : NULL, body, len);
    free(body);
}

/* SSE: the head in front of what the replay queued, then the bytes go out as the socket
 * takes them. The connection reads again, so that a peer that hangs up is noticed; any
 * request after this one ends it (server.c). */
static void start_sse(struct stream *st)
{
    char head[HEAD_MAX];
    int n = snprintf(head, sizeof head,
                     "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n"
                     "cache-control: no-store\r\nx-content-type-options: nosniff\r\n"
                     "x-accel-buffering: no\r\nconnection: close\r\n%s\r\nretry: %d\n\n",
                     st->session->cors, SSE_RETRY_MS);
    if (n <= 0 || (size_t)n >= sizeof head || !reserve(st, (size_t)n)) {
        answer_error(st, 503, ERR_INTERNAL, "out of memory");
        return;
    }
    memmove(st->out.p + st->off + n, st->out.p + st->off, queued(st));
    memcpy(st->out.p + st->off, head, (size_t)n);
    st->out.len += (size_t)n;
    st->head_out = true;
    st->wrote_ms = herald_now_ms(st->app);
    lws_http_mark_sse(st->wsi); /* no timeout, and the header table goes back to lws */
    lws_rx_flow_control(st->wsi, 1);
    mark_dirty(st);
}

static void on_kick(struct later *item)
{
    struct stream *st = LATER_OWNER(item, struct stream, kick);
    if (!st->status && !st->answered && !st->full) { /* the drain came first */
        st->status = 503;
        st->code = ERR_UNAVAILABLE;
        st->why = "this instance is draining: connect to another one";
    }
    if (st->status)
        answer_error(st, st->status, st->code, st->why);
    else if (st->mode == POLL)
        answer_poll(st);
    else if (!st->head_out)
        start_sse(st);
}

static void kick(struct stream *st)
{
    later_post(&st->app->later, &st->kick, on_kick);
}

/* Writes what is queued, at most a batch: what the socket does not take, lws keeps and sends
 * itself, then calls WRITEABLE. -1: the connection failed. */
static int write_some(struct stream *st)
{
    size_t n = queued(st);
    if (n > HERALD_WRITE_BATCH)
        n = HERALD_WRITE_BATCH;
    if (n) { /* raw bytes on HTTP/1.1: lws needs no headroom in front of them */
        if (lws_write(st->wsi, (unsigned char *)st->out.p + st->off, n, LWS_WRITE_RAW) < 0)
            return -1;
        st->off += n;
    }
    if (!queued(st)) { /* drained: an idle stream holds no buffer */
        text_free(&st->out);
        st->off = 0;
    }
    if (st->drain_wanted && queued(st) <= (size_t)st->app->cfg->client_queue_bytes / 4) {
        st->drain_wanted = false;
        hub_client_drained(st->app->hub, &st->sub); /* may queue more: the next turn writes it */
    }
    return 0;
}

/* Waits for WRITEABLE when lws still holds bytes or more is queued, or to close a finished
 * stream from inside lws's callback. */
static void wait_writable(struct stream *st)
{
    if (lws_partial_buffered(st->wsi) || queued(st) || st->finishing) {
        st->await_writable = true;
        lws_callback_on_writable(st->wsi);
    }
}

int stream_writable(struct herald *app, struct http_session *s)
{
    (void)app;
    struct stream *st = s->stream;
    if (!st || !st->head_out)
        return 0;
    st->await_writable = false;
    if (st->finishing && !queued(st))
        return -1; /* lws has written everything: WRITEABLE comes only then */
    if (write_some(st) < 0)
        return -1;
    wait_writable(st);
    return 0;
}

static void mark_dirty(struct stream *st)
{
    struct streams *ss = st->app->streams;
    if (st->dirty || !st->wsi)
        return;
    st->dirty = true;
    st->dirty_prev = NULL;
    st->dirty_next = ss->dirty;
    if (ss->dirty)
        ss->dirty->dirty_prev = st;
    ss->dirty = st;
}

static void unmark_dirty(struct stream *st)
{
    struct streams *ss = st->app->streams;
    if (!st->dirty)
        return;
    if (st->dirty_prev)
        st->dirty_prev->dirty_next = st->dirty_next;
    else
        ss->dirty = st->dirty_next;
    if (st->dirty_next)
        st->dirty_next->dirty_prev = st->dirty_prev;
    st->dirty = false;
}

void stream_flush_dirty(struct herald *app)
{
    struct stream *st;
    while (app->streams && (st = app->streams->dirty)) {
        unmark_dirty(st);
        if (st->await_writable || !st->head_out)
            continue;
        if (lws_partial_buffered(st->wsi)) {
            wait_writable(st);
            continue;
        }
        if (write_some(st) < 0) {
            st->finishing = true;
            lws_set_timeout(st->wsi, PENDING_TIMEOUT_USER_OK, LWS_TO_KILL_ASYNC);
            continue;
        }
        wait_writable(st);
    }
}

void stream_gone(struct lws *wsi)
{
    struct http_session *s = http_session_get(wsi);
    if (s && s->stream) {
        s->stream->session = NULL;
        s->stream->wsi = NULL;
        stream_free(s->stream);
        s->stream = NULL;
    }
}

/* Ends an SSE stream once what is queued is written. */
static void finish(struct stream *st)
{
    if (st->finishing)
        return;
    st->finishing = true;
    if (st->head_out)
        mark_dirty(st);
}

size_t stream_drain(struct herald *app, size_t n)
{
    size_t done = 0;
    for (struct stream *st = app->streams ? app->streams->list : NULL; st && done < n;
         st = st->next) {
        if (st->finishing || st->kick.queued)
            continue;
        done++;
        if (st->mode == POLL || !st->head_out)
            kick(st); /* answered with what it has (a head not sent: sent now, then ends) */
        if (st->mode == SSE)
            finish(st);
    }
    return done;
}

/* ------------------------------------------------------------------------------------------
 * The sweep: deadlines, heartbeats, expiry */

/* A held long-poll reads nothing (its connection is paused until the answer, so that what
 * is pipelined behind it waits): a client that hung up would hold its place until the
 * timeout. A peek at the socket, once a second, finds the end of its input and lets go. */
static void peek_peer(struct stream *st, uint64_t now)
{
    st->peeked_ms = now;
    char c;
    int fd = (int)lws_get_socket_fd(st->wsi);
    ssize_t n = fd >= 0 ? recv(fd, &c, 1, MSG_PEEK | MSG_DONTWAIT) : -1;
    if (n == 0 || (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)) {
        st->finishing = true; /* nothing more is queued or answered */
        lws_set_timeout(st->wsi, PENDING_TIMEOUT_USER_OK, LWS_TO_KILL_ASYNC);
    }
}

static void sweep_one(struct stream *st, uint64_t now, int64_t wall)
{
    const struct herald_config *cfg = st->app->cfg;
    if (st->kick.queued || st->finishing)
        return;
    if (!st->answered) {
        if (now - st->started_ms >= ANSWER_TIMEOUT_MS) {
            st->status = 503;
            st->code = ERR_UNAVAILABLE;
            st->why = "the channel could not be subscribed in time (Redis)";
            kick(st);
        }
        return;
    }
    bool expired = st->exp && wall > st->exp;
    if (st->mode == POLL) {
        if (now >= st->deadline_ms || expired)
            kick(st);
        else if (now - st->peeked_ms >= PEEK_MS)
            peek_peer(st, now);
        return;
    }
    if (!st->head_out)
        return;
    if (expired || (st->ds && now >= st->ends_ms)) {
        finish(st);
        return;
    }
    if (now - st->wrote_ms >= (uint64_t)cfg->stream_heartbeat_ms && reserve(st, 3)) {
        puts_(&st->out, ":\n\n"); /* a comment: keeps proxies from timing the response out */
        st->wrote_ms = now;
        mark_dirty(st);
    }
}

static void on_sweep(uv_timer_t *t)
{
    struct streams *ss = t->data;
    uint64_t now = herald_now_ms(ss->app);
    int64_t wall = (int64_t)time(NULL);
    for (struct stream *st = ss->list; st; st = st->next)
        sweep_one(st, now, wall);
}

struct streams *streams_new(struct herald *app)
{
    struct streams *ss = calloc(1, sizeof *ss);
    if (!ss)
        return NULL;
    ss->app = app;
    uv_timer_init(app->loop, &ss->sweep);
    ss->sweep.data = ss;
    uv_timer_start(&ss->sweep, on_sweep, SWEEP_MS, SWEEP_MS);
    return ss;
}

static void sweep_closed(uv_handle_t *h)
{
    struct streams *ss = h->data;
    if (ss->cache.f)
        frame_unref(ss->cache.f);
    text_free(&ss->cache.text);
    free(ss);
}

void streams_free(struct streams *ss)
{
    if (!ss)
        return;
    uv_timer_stop(&ss->sweep);
    uv_close((uv_handle_t *)&ss->sweep, sweep_closed);
}

/* ------------------------------------------------------------------------------------------
 * A request */

static int query_pair(void *arg, const char *k, size_t kl, const char *v, size_t vl, char *err,
                      size_t errlen)
{
    return stream_query_pair(arg, k, kl, v, vl, err, errlen);
}

/* Why this request may not open a stream now (the admission of a WebSocket), or NULL. */
static const char *admission(struct herald *app, const char *ip, unsigned *status,
                             enum errcode *code)
{
    *status = 503;
    *code = ERR_UNAVAILABLE;
    if (app->draining)
        return "this instance is draining: connect to another one";
    if ((size_t)app->metrics.connections + stream_count(app) >= (size_t)app->cfg->max_connections)
        return "connection limit reached";
    if (peer_limited(app, ip) && iplimit_full(app->ips, ip, app->cfg->max_connections_per_ip)) {
        *status = 429;
        *code = ERR_RATE_LIMITED;
        return "too many connections from this address";
    }
    return NULL;
}

static bool wants_sse(struct lws *wsi)
{
    char accept[256];
    return lws_hdr_copy(wsi, accept, sizeof accept, WSI_TOKEN_HTTP_ACCEPT) > 0 &&
           strstr(accept, "text/event-stream") != NULL;
}

/* Last-Event-ID (an EventSource reconnecting): the position it names replaces since. */
static int last_event_id(struct lws *wsi, struct stream_query *q)
{
    char id[STREAM_POSITION_MAX + 1];
    int n = lws_hdr_custom_length(wsi, "last-event-id:", 14);
    if (n <= 0)
        return 0;
    if (n > STREAM_POSITION_MAX ||
        lws_hdr_custom_copy(wsi, id, sizeof id, "last-event-id:", 14) != n ||
        stream_position_parse(id, (size_t)n, &q->since, q->epoch) < 0)
        return -1;
    q->resume = true;
    q->last = 0;
    return 0;
}

int stream_begin(struct herald *app, struct lws *wsi, const char *channel)
{
    struct http_session *s = rest_open(app, wsi);
    if (!s)
        return -1;
    struct principal who;
    bool has_who;
    if (!rest_may_read(app, wsi, s, channel, &who, &has_who))
        return 0;
    int64_t exp = has_who && who.has_claims ? who.claims.exp : 0;
    if (has_who)
        auth_release(&who);
    char err[200], ip[CIDR_ADDR_MAX + 1];
    struct stream_query q;
    struct stream_query_parser parser;
    stream_query_begin(&parser, &q);
    if (rest_query_pairs(wsi, query_pair, &parser, err, sizeof err) < 0 ||
        stream_query_end(&parser, err, sizeof err) < 0) {
        rest_answer_error(app, wsi, s, 400, ERR_BAD_REQUEST, err);
        return 0;
    }
    bool sse = q.ds ? q.live == STREAM_LIVE_SSE : wants_sse(wsi);
    if (!q.ds && sse && last_event_id(wsi, &q) < 0) {
        rest_answer_error(app, wsi, s, 400, ERR_BAD_REQUEST,
                          "Last-Event-ID must be an id this server sent (<epoch>_<seq>)");
        return 0;
    }
    peer_address(app, wsi, ip, sizeof ip);
    unsigned status;
    enum errcode code;
    const char *why = admission(app, ip, &status, &code);
    if (why) {
        app->metrics.rejected_connections++;
        rest_answer_error(app, wsi, s, status, code, why);
        return 0;
    }
    struct stream *st = calloc(1, sizeof *st);
    if (!st)
        return -1;
    uint64_t now = herald_now_ms(app);
    *st = (struct stream){.sub.sink = &stream_sink,
                          .app = app,
                          .wsi = wsi,
                          .session = s,
                          .mode = sse ? SSE : POLL,
                          .ds = q.ds,
                          .catch_up = q.ds && q.live == STREAM_LIVE_NONE,
                          .wrote_ms = now,
                          .started_ms = now,
                          .ends_ms = now + (uint64_t)app->cfg->ds_sse_lifetime_ms,
                          .exp = exp};
    uint64_t hold =
        q.has_timeout ? (uint64_t)q.timeout_s * 1000 : (uint64_t)app->cfg->longpoll_timeout_ms;
    st->deadline_ms = now + (st->catch_up ? 0 : hold);
    snprintf(st->channel, sizeof st->channel, "%s", channel);
    st->ip = peer_limited(app, ip) ? iplimit_acquire(app->ips, ip) : NULL;
    list_add(app->streams, st);
    app->metrics.streams_total++;
    if (sse)
        app->metrics.streams_sse++;
    else
        app->metrics.streams_poll++;
    s->stream = st;
    struct resume r = {.since = q.since,
                       .epoch = q.since && q.epoch[0] ? q.epoch : NULL,
                       .last = q.last,
                       .strict = q.strict,
                       .paged = !sse,
                       .oldest = q.oldest};
    if (hub_subscribe(app->hub, &st->sub, channel, strlen(channel), NULL,
                      q.resume || q.last ? &r : NULL) < 0) {
        answer_error(st, 503, ERR_INTERNAL, "out of memory");
        return 0;
    }
    lws_set_timeout(wsi, NO_PENDING_TIMEOUT, 0); /* the stream's own deadlines rule */
    return 0;
}
