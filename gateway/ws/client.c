#include "client.h"
#include "herald.h"
#include "auth.h"
#include "hub.h"
#include "iplimit.h"
#include "json_text.h"
#include "log.h"
#include "peer.h"
#include "presence.h"
#include "request.h"

#include <libwebsockets.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* Seconds a closing client gets to take its close frame before the socket is dropped. */
#define CLOSE_GRACE_SECONDS 5

static void client_init(struct client *c, struct lws *wsi, struct herald *app)
{
    bool deflate = c->deflate; /* agreed during the handshake, before ESTABLISHED */
    memset(c, 0, sizeof *c);
    c->deflate = deflate;
    c->wsi = wsi;
    c->app = app;
    c->sub.sink = app->client_sink;
}

/* The process's lists of clients (herald.dirty, herald.clients), each through its own
 * client_link field (off: its offset). Doubly linked: a closing client leaves in O(1). */
#define DIRTY offsetof(struct client, dirty_link)
#define ALL   offsetof(struct client, all_link)

static inline struct client_link *link_of(struct client *c, size_t off)
{
    return (struct client_link *)(void *)((char *)c + off);
}

static inline void list_push(struct client **head, struct client *c, size_t off)
{
    *link_of(c, off) = (struct client_link){NULL, *head};
    if (*head)
        link_of(*head, off)->prev = c;
    *head = c;
}

static inline void list_remove(struct client **head, struct client *c, size_t off)
{
    struct client_link *k = link_of(c, off);
    if (k->prev)
        link_of(k->prev, off)->next = k->next;
    else if (*head == c)
        *head = k->next;
    if (k->next)
        link_of(k->next, off)->prev = k->prev;
    *k = (struct client_link){NULL, NULL};
}

static void mark_dirty(struct client *c)
{
    if (c->dirty || c->await_writable)
        return;
    c->dirty = true;
    list_push(&c->app->dirty, c, DIRTY);
}

static void unmark_dirty(struct client *c)
{
    if (!c->dirty)
        return;
    list_remove(&c->app->dirty, c, DIRTY);
    c->dirty = false;
}

/* From here on lws calls WRITEABLE when the socket can take more. */
static void wait_writable(struct client *c)
{
    c->await_writable = true;
    lws_callback_on_writable(c->wsi);
}

void client_destroy(struct client *c)
{
    if (!c->app)
        return;
    unmark_dirty(c);
    list_remove(&c->app->clients, c, ALL);
    presence_gone(c->app->presence, &c->presence);
    hub_client_gone(c->app->hub, &c->sub);
    iplimit_release(c->app->ips, c->ip);
    if (c->auth) {
        auth_release(c->auth);
        free(c->auth);
    }
    c->auth = NULL;
    c->ip = NULL;
    outq_clear(&c->q);
    free(c->rx);
    c->rx = NULL;
    c->app = NULL;
}

void client_close(struct client *c, uint16_t code, bool drop_queue)
{
    if (c->close_code)
        return;
    c->close_code = code;
    if (drop_queue)
        outq_clear(&c->q);
    unmark_dirty(c);
    lws_set_timeout(c->wsi, PENDING_TIMEOUT_USER_OK, CLOSE_GRACE_SECONDS);
    /* only a WRITEABLE callback can close the connection cleanly */
    wait_writable(c);
}

void client_deliver(struct subscriber *s, struct frame *f)
{
    struct client *c = client_of(s);
    if (c->close_code)
        return;
    if (c->deflate && frame_deflated(f))
        f = f->deflated;
    if (c->q.bytes + f->len > (size_t)c->app->cfg->client_queue_bytes) {
        c->app->metrics.slow_consumer_closes++;
        log_info("slow_consumer", "client queue over %ld bytes: closing with 4008",
                 c->app->cfg->client_queue_bytes);
        client_close(c, 4008, true);
        return;
    }
    if (outq_push(&c->q, f)) {
        log_error("out_of_memory", "cannot queue a frame: closing the client");
        client_close(c, LWS_CLOSE_STATUS_UNEXPECTED_CONDITION, true);
        return;
    }
    mark_dirty(c);
}

bool client_has_room(const struct subscriber *s, size_t len)
{
    const struct client *c = client_of((struct subscriber *)s);
    return c->q.bytes == 0 || c->q.bytes + len <= (size_t)c->app->cfg->client_queue_bytes / 2;
}

void client_notify_drained(struct subscriber *s)
{
    client_of(s)->drain_wanted = true;
}

/* After a write: a paused resume goes on once the queue is low enough. */
static void check_drained(struct client *c)
{
    if (c->drain_wanted && !c->close_code &&
        c->q.bytes <= (size_t)c->app->cfg->client_queue_bytes / 4) {
        c->drain_wanted = false;
        hub_client_drained(c->app->hub, &c->sub);
    }
}

void client_send_text(struct client *c, const char *text, size_t len)
{
    struct frame *f = frame_from(text, len);
    if (!f)
        return;
    client_deliver(&c->sub, f);
    frame_unref(f);
}

void client_reply(struct client *c, const char *id_json, const char *fmt, ...)
{
    char buf[1024];
    size_t room = sizeof buf - REQUEST_ID_JSON_MAX - 8; /* the id and the closing brace */
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(buf, room, fmt, ap);
    va_end(ap);
    if (n <= 0 || (size_t)n >= room)
        return;
    if (id_json)
        n += snprintf(buf + n, sizeof buf - (size_t)n, ",\"id\":%s", id_json);
    buf[n++] = '}';
    client_send_text(c, buf, (size_t)n);
}

void client_send_error(struct client *c, enum errcode code, const char *id_json,
                       const char *message)
{
    char esc[512];
    json_escape(message, strlen(message), esc, sizeof esc);
    c->app->metrics.client_errors[code]++;
    client_reply(c, id_json, "{\"op\":\"error\",\"code\":\"%s\",\"message\":\"%s\"",
                 errcode_name(code), esc);
}

/* Hands one frame larger than the batch buffer straight to lws, which keeps what the socket
 * does not take and sends it before the next WRITEABLE callback. */
static int write_large(struct client *c, struct frame *f)
{
    int r = lws_write(c->wsi, f->data, f->len, LWS_WRITE_RAW);
    c->app->metrics.frames_out++;
    c->app->metrics.bytes_out += f->len;
    c->app->metrics.writes++;
    outq_pop(&c->q);
    return r < 0 ? -1 : 0;
}

/* Gathers as many whole queued frames as fit into the shared batch buffer and writes them
 * with one lws_write: one syscall for many messages is what makes fan-out fast. */
static int write_batch(struct client *c)
{
    struct frame *f = outq_peek(&c->q);
    if (f->len > HERALD_WRITE_BATCH)
        return write_large(c, f);

    uint8_t *buf = c->app->write_buf;
    size_t n = 0;
    uint64_t frames = 0;
    while ((f = outq_peek(&c->q)) && n + f->len <= HERALD_WRITE_BATCH) {
        memcpy(buf + n, f->data, f->len);
        n += f->len;
        frames++;
        outq_pop(&c->q);
    }
    c->app->metrics.frames_out += frames;
    c->app->metrics.bytes_out += n;
    c->app->metrics.writes++;
    return lws_write(c->wsi, buf, n, LWS_WRITE_RAW) < 0 ? -1 : 0;
}

static const char *close_reason(uint16_t code)
{
    switch (code) {
    case 1001:
        return "server draining";
    case 1008:
        return "origin not allowed";
    case 1009:
        return "message too big";
    case 4001:
        return "unauthorized";
    case 4008:
        return "slow consumer";
    case 4029:
        return "rate limit";
    default:
        return "closing";
    }
}

/* The connection ends when the token does (exp + leeway); the client reconnects with a
 * fresh one. A far-future exp is waited for a day at a time, so that no sum overflows.
 * Returns false when the token has expired. */
#define EXPIRY_STEP_S (24 * 3600)

static bool arm_expiry(struct client *c)
{
    int64_t now = (int64_t)time(NULL), exp = c->auth->claims.exp;
    int64_t left = exp > now ? exp - now : 0; /* exp <= INT64_MAX, now >= 0: no overflow */
    if (left < EXPIRY_STEP_S)
        left += c->app->cfg->jwt_leeway;
    else
        left = EXPIRY_STEP_S;
    if (left <= 0)
        return false;
    lws_set_timer_usecs(c->wsi, left * LWS_US_PER_SEC);
    return true;
}

void client_on_established(struct client *c, struct lws *wsi, struct herald *app)
{
    client_init(c, wsi, app);
    c->heard_ms = herald_now_ms(app);
    list_push(&app->clients, c, ALL);
    char ip[CIDR_ADDR_MAX + 1];
    peer_address(app, wsi, ip, sizeof ip);
    c->ip = peer_limited(app, ip) ? iplimit_acquire(app->ips, ip) : NULL;
    c->rl_tokens = (double)app->cfg->rate_burst;
    c->rl_at_ms = herald_now_ms(app);
    if (!auth_origin_allowed(app, wsi)) {
        app->metrics.auth_failures++;
        client_close(c, LWS_CLOSE_STATUS_POLICY_VIOLATION, true);
        return;
    }
    if (!auth_ws_required(app))
        return;
    char why[160];
    struct principal p;
    if (auth_identify(app, wsi, false, &p, why, sizeof why) != AUTH_OK) {
        app->metrics.auth_failures++;
        log_debug("auth_refused", "WebSocket from %s: %s", ip, why);
        client_close(c, 4001, true);
        return;
    }
    c->auth = malloc(sizeof *c->auth);
    if (!c->auth) {
        auth_release(&p);
        client_close(c, LWS_CLOSE_STATUS_UNEXPECTED_CONDITION, true);
        return;
    }
    *c->auth = p;
    arm_expiry(c);
}

void client_replace_principal(struct client *c, struct principal *p)
{
    auth_release(c->auth);
    *c->auth = *p;
    arm_expiry(c);
}

/* Any frame from the client answers a ping. */
static void heard(struct client *c)
{
    c->heard_ms = herald_now_ms(c->app);
    c->ping_ms = 0;
}

void client_on_pong(struct client *c)
{
    heard(c);
}

static void check_liveness(struct client *c, uint64_t now, struct frame *ping)
{
    const struct herald_config *cfg = c->app->cfg;
    if (c->close_code)
        return; /* closing already, with its own grace timeout */
    if (c->ping_ms && now - c->ping_ms >= (uint64_t)cfg->pong_timeout_ms) {
        c->app->metrics.ping_timeouts++;
        log_debug("ping_timeout", "no answer to a ping within %ld ms: hanging up",
                  cfg->pong_timeout_ms);
        /* nothing more can reach a peer that does not answer: no close handshake */
        c->close_code = LWS_CLOSE_STATUS_ABNORMAL_CLOSE;
        c->close_sent = true; /* 1006 never goes on the wire */
        outq_clear(&c->q);
        unmark_dirty(c);
        lws_set_timeout(c->wsi, PENDING_TIMEOUT_USER_OK, LWS_TO_KILL_ASYNC);
    } else if (!c->ping_ms && now - c->heard_ms >= (uint64_t)cfg->ping_interval_ms) {
        c->ping_ms = now;
        c->app->metrics.pings_sent++;
        client_deliver(&c->sub, ping);
    }
}

static void on_liveness(uv_timer_t *t)
{
    struct herald *app = t->data;
    uint64_t now = herald_now_ms(app);
    struct frame *ping = frame_ping();
    if (!ping)
        return; /* out of memory: the next sweep tries again */
    for (struct client *c = app->clients, *next; c; c = next) {
        next = c->all_link.next;
        check_liveness(c, now, ping);
    }
    frame_unref(ping);
}

size_t client_drain(struct herald *app, size_t n)
{
    size_t closed = 0;
    for (struct client *c = app->clients; c && closed < n; c = c->all_link.next)
        if (!c->close_code) {
            client_close(c, LWS_CLOSE_STATUS_GOINGAWAY, false);
            closed++;
        }
    return closed;
}

void client_liveness_start(struct herald *app)
{
    uv_timer_init(app->loop, &app->liveness);
    app->liveness.data = app;
    if (app->cfg->ping_interval_ms > 0)
        uv_timer_start(&app->liveness, on_liveness, 1000, 1000);
}

void client_liveness_stop(struct herald *app)
{
    uv_timer_stop(&app->liveness);
    uv_close((uv_handle_t *)&app->liveness, NULL);
}

void client_on_timer(struct client *c)
{
    if (!c->auth)
        return;
    if (arm_expiry(c))
        return;
    log_debug("token_expired", "closing a connection whose token expired");
    client_close(c, 4001, true);
}

/* Token bucket over inbound messages: a message without a token is refused with
 * rate_limited; a client that keeps sending past a whole burst of refusals is closed. */
static bool rate_allows(struct client *c)
{
    const struct herald_config *cfg = c->app->cfg;
    uint64_t now = herald_now_ms(c->app);
    c->rl_tokens += (double)(now - c->rl_at_ms) * (double)cfg->rate_limit / 1000.0;
    if (c->rl_tokens > (double)cfg->rate_burst)
        c->rl_tokens = (double)cfg->rate_burst;
    c->rl_at_ms = now;
    if (c->rl_tokens >= 1.0) {
        c->rl_tokens -= 1.0;
        c->rl_strikes = 0;
        return true;
    }
    if (++c->rl_strikes > (uint32_t)cfg->rate_burst) {
        c->app->metrics.rate_limit_closes++;
        client_close(c, 4029, false); /* the rate_limited replies already queued go first */
    } else {
        client_send_error(c, ERR_RATE_LIMITED, NULL, "too many messages: slow down");
    }
    return false;
}

int client_on_writable(struct client *c)
{
    c->await_writable = false;
    if (!outq_empty(&c->q) && write_batch(c) < 0)
        return -1;
    check_drained(c);
    if (!outq_empty(&c->q)) {
        wait_writable(c);
        return 0;
    }
    if (c->close_code && !c->close_sent) {
        /* lws 4.1 hangs up without a close frame when WRITEABLE returns -1 (even after
         * lws_close_reason), so the close frame is written like every other frame. Then the
         * connection stays open until the peer answers it (lws completes the handshake) or
         * the grace timeout of client_close: hanging up at once would turn input still in
         * flight into a TCP reset, and the client would never read the code. */
        uint8_t frame[FRAME_CLOSE_MAX];
        size_t n = frame_write_close(frame, c->close_code, close_reason(c->close_code));
        c->close_sent = true;
        if (lws_write(c->wsi, frame, n, LWS_WRITE_RAW) < 0)
            return -1;
    }
    return 0;
}

/* One batch straight away; lws keeps any unsent tail (lws_partial_buffered), and then the
 * rest waits for WRITEABLE so that nothing piles up outside the bounded queue. */
static void flush_one(struct client *c)
{
    if (lws_partial_buffered(c->wsi)) {
        wait_writable(c);
        return;
    }
    if (write_batch(c) < 0) {
        lws_set_timeout(c->wsi, PENDING_TIMEOUT_USER_OK, LWS_TO_KILL_ASYNC);
        outq_clear(&c->q);
        return;
    }
    bool partial = lws_partial_buffered(c->wsi); /* check_drained only queues: it stays */
    if (!partial)
        check_drained(c);
    if (partial || !outq_empty(&c->q))
        wait_writable(c);
}

void client_flush_dirty(struct herald *app)
{
    struct client *c;
    while ((c = app->dirty)) {
        unmark_dirty(c);
        if (c->drop_refused) { /* here, not inside the hub's `answered` call */
            c->drop_refused = false;
            hub_drop_refused(app->hub, &c->sub);
        }
        if (!c->close_code && !c->await_writable && !outq_empty(&c->q))
            flush_one(c);
    }
}

/* Appends a fragment; past the frame limit the message is marked too large and dropped. */
static void gather(struct client *c, const void *in, size_t len)
{
    if (c->rx_too_large || len == 0) /* realloc(p, 0) would free p */
        return;
    if (c->rx_len + len > (size_t)c->app->cfg->max_frame_bytes) {
        c->rx_too_large = true;
        free(c->rx);
        c->rx = NULL;
        c->rx_len = 0;
        /* lws inflates a compressed message to its end whatever its size, 1 KiB a pass:
         * one that passes the limit closes the connection (1009), so that a small bomb
         * cannot keep the loop inflating */
        if (c->deflate)
            client_close(c, LWS_CLOSE_STATUS_MESSAGE_TOO_LARGE, true);
        return;
    }
    char *p = realloc(c->rx, c->rx_len + len);
    if (!p) {
        c->rx_too_large = true;
        return;
    }
    memcpy(p + c->rx_len, in, len);
    c->rx = p;
    c->rx_len += len;
}

void client_on_receive(struct client *c, const void *in, size_t len, bool first, bool final,
                       bool binary, client_message_cb handle)
{
    if (c->close_code)
        return;
    heard(c);
    if (first) {
        c->rx_too_large = false;
        c->rx_binary = binary;
    }
    const char *msg = in;
    size_t msglen = len;
    if (!(first && final && c->rx_len == 0)) {
        gather(c, in, len);
        if (!final)
            return;
        msg = c->rx ? c->rx : ""; /* a message of empty fragments is empty */
        msglen = c->rx_len;
    }
    c->app->metrics.client_frames_in++;
    if (!rate_allows(c))
        ; /* refused: answered (or closed) by rate_allows */
    else if (c->rx_too_large || msglen > (size_t)c->app->cfg->max_frame_bytes)
        client_send_error(c, ERR_TOO_LARGE, NULL, "message is larger than the frame limit");
    else if (c->rx_binary)
        client_send_error(c, ERR_BAD_REQUEST, NULL, "binary frames are not supported");
    else
        handle(c, msg, msglen);
    free(c->rx);
    c->rx = NULL;
    c->rx_len = 0;
    c->rx_too_large = false;
}
