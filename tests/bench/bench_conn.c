/*
 * bench_conn.c: the client side of herald-bench.
 * One epoll loop drives every WebSocket connection through connect -> upgrade -> subscribe ->
 * ready, then checks each delivered message: right channel, next index, latency.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netdb.h>
#include <netinet/tcp.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>
#include <zlib.h>

#include "herald_bench.h"

#define SCRATCH_MIN   (256 * 1024) /* free room for one read() */
#define MAX_HANDSHAKE 16384        /* an upgrade response larger than this is refused */
#define MAX_EVENTS    512
#define MAX_CTRL      125 /* RFC 6455 control frame payload limit */

static void on_message(struct bench *b, struct conn *c, const uint8_t *msg, size_t len,
                       uint64_t now);

/* Keep the first error seen, for the report. */
__attribute__((format(printf, 2, 3))) static void note_error(struct bench *b, const char *fmt, ...)
{
    if (b->first_error[0])
        return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(b->first_error, sizeof(b->first_error), fmt, ap);
    va_end(ap);
}

/* Count one close of a subscribed connection under its close code. */
static void count_close(struct bench *b, int code)
{
    b->closes_total++;
    for (int i = 0; i < MAX_CLOSE_KINDS; i++) {
        if (b->closes[i].count == 0)
            b->closes[i].code = code;
        if (b->closes[i].code == code) {
            b->closes[i].count++;
            return;
        }
    }
}

/*
 * Close c and free its buffers. A connection that never got subscribed counts as failed;
 * a subscribed one counts as a close under `code` unless code is 0 (we closed it at the end).
 */
static void conn_end(struct bench *b, struct conn *c, int code)
{
    if (c->state == CS_CLOSED || c->state == CS_NEW)
        return;
    if (c->state != CS_READY) {
        b->in_progress--;
        b->failed++;
    } else if (code != 0) {
        count_close(b, code);
    }
    close(c->fd);
    c->fd = -1;
    free(c->in);
    free(c->out);
    free(c->frag);
    if (c->z) {
        inflateEnd(c->z);
        free(c->z);
        c->z = NULL;
    }
    c->in = c->out = c->frag = NULL;
    c->in_len = c->out_len = c->frag_len = 0;
    c->state = CS_CLOSED;
}

/* Ask epoll for EPOLLOUT only while output is pending (or the connect is in flight). */
static void watch_out(struct bench *b, struct conn *c, int on)
{
    if (c->watching_out == on)
        return;
    struct epoll_event ev = {.events = EPOLLIN | (on ? EPOLLOUT : 0),
                             .data.u32 = (uint32_t)(c - b->conns)};
    epoll_ctl(b->epfd, EPOLL_CTL_MOD, c->fd, &ev);
    c->watching_out = (uint8_t)on;
}

/* Send bytes, keeping whatever the socket does not take for the next EPOLLOUT. */
static int send_bytes(struct bench *b, struct conn *c, const void *data, size_t len)
{
    const uint8_t *p = data;
    if (c->out_len == 0) {
        ssize_t n = send(c->fd, p, len, MSG_NOSIGNAL);
        if (n < 0 && errno != EAGAIN) {
            note_error(b, "send: %s", strerror(errno));
            conn_end(b, c, CLOSE_ERROR);
            return -1;
        }
        n = n < 0 ? 0 : n;
        p += n;
        len -= (size_t)n;
        if (len == 0)
            return 0;
    }
    uint8_t *grown = realloc(c->out, c->out_len + len);
    if (!grown) {
        conn_end(b, c, CLOSE_ERROR);
        return -1;
    }
    memcpy(grown + c->out_len, p, len);
    c->out = grown;
    c->out_len += (uint32_t)len;
    watch_out(b, c, 1);
    return 0;
}

/* Write pending output on EPOLLOUT. */
static void flush_out(struct bench *b, struct conn *c)
{
    ssize_t n = send(c->fd, c->out, c->out_len, MSG_NOSIGNAL);
    if (n < 0) {
        if (errno != EAGAIN)
            conn_end(b, c, CLOSE_ERROR);
        return;
    }
    memmove(c->out, c->out + n, c->out_len - (size_t)n);
    c->out_len -= (uint32_t)n;
    if (c->out_len == 0) {
        free(c->out);
        c->out = NULL;
        watch_out(b, c, 0);
    }
}

/* Send one masked client frame with a small payload (control frames, subscribe). */
static int send_frame(struct bench *b, struct conn *c, int opcode, const void *payload, size_t len)
{
    uint8_t frame[256 + 14];
    if (len > 256)
        return -1;
    b->mask_seed ^= b->mask_seed << 13; /* xorshift32: masks need not be secret here */
    b->mask_seed ^= b->mask_seed >> 17;
    b->mask_seed ^= b->mask_seed << 5;
    size_t n = ws_frame_encode(opcode, payload, len, b->mask_seed, frame);
    return send_bytes(b, c, frame, n);
}

/* Start a non-blocking connect for connection i, from 127.0.0.(1 + i % source_addrs) if set. */
static void open_conn(struct bench *b, uint32_t i)
{
    struct conn *c = &b->conns[i];
    c->fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (c->fd < 0) {
        note_error(b, "socket: %s", strerror(errno));
        b->failed++;
        c->state = CS_CLOSED;
        return;
    }
    c->state = CS_CONNECTING;
    c->watching_out = 1;
    b->in_progress++;
    int one = 1;
    setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    struct epoll_event ev = {.events = EPOLLIN | EPOLLOUT, .data.u32 = i};
    if (epoll_ctl(b->epfd, EPOLL_CTL_ADD, c->fd, &ev) != 0) {
        note_error(b, "epoll_ctl: %s", strerror(errno));
        conn_end(b, c, CLOSE_ERROR);
        return;
    }
    if (b->opt.source_addrs > 0) {
        /* let connect() pick the port per 4-tuple, not bind() per source address */
        setsockopt(c->fd, IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, &one, sizeof(one));
        struct sockaddr_in src = {.sin_family = AF_INET};
        src.sin_addr.s_addr = htonl(0x7f000001u + i % b->opt.source_addrs);
        if (bind(c->fd, (struct sockaddr *)&src, sizeof(src)) != 0) {
            note_error(b, "bind 127.0.0.%u: %s", 1 + i % b->opt.source_addrs, strerror(errno));
            conn_end(b, c, CLOSE_ERROR);
            return;
        }
    }
    if (connect(c->fd, (struct sockaddr *)&b->dst, sizeof(b->dst)) != 0 && errno != EINPROGRESS) {
        note_error(b, "connect: %s", strerror(errno));
        conn_end(b, c, CLOSE_ERROR);
    }
}

/* Open connections until `connect_concurrency` are between connect and subscribed. */
void bench_open_more(struct bench *b)
{
    while (b->next_to_open < b->opt.connections && b->in_progress < b->opt.connect_concurrency)
        open_conn(b, b->next_to_open++);
}

/* The TCP connect finished: check it, then send the upgrade request. */
static void on_connected(struct bench *b, struct conn *c)
{
    int err = 0;
    socklen_t len = sizeof(err);
    getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &len);
    if (err) {
        note_error(b, "connect: %s", strerror(err));
        conn_end(b, c, CLOSE_ERROR);
        return;
    }
    c->state = CS_HANDSHAKE;
    watch_out(b, c, 0);
    if (b->opt.nchan_pub) { /* Nchan: the channel is the end of the subscriber URL */
        struct ws_url u = b->opt.url;
        char req[sizeof(b->handshake)];
        int n =
            snprintf(u.path, sizeof(u.path), "%s%s%u", b->opt.url.path, b->opt.prefix, c->channel);
        n = n > 0 && (size_t)n < sizeof(u.path)
                ? ws_handshake_request(&u, b->opt.protocol, b->opt.deflate, req, sizeof(req))
                : -1;
        if (n <= 0) {
            note_error(b, "subscriber URL too long");
            conn_end(b, c, CLOSE_ERROR);
            return;
        }
        send_bytes(b, c, req, (size_t)n);
        return;
    }
    send_bytes(b, c, b->handshake, b->handshake_len);
}

/* The connection is subscribed: count it. */
static void mark_ready(struct bench *b, struct conn *c)
{
    c->state = CS_READY;
    c->was_ready = 1;
    b->in_progress--;
    b->subscribed++;
}

/* Send {"op":"subscribe","channel":"<prefix><k>"}. */
static void send_subscribe(struct bench *b, struct conn *c)
{
    char msg[256];
    int n = snprintf(msg, sizeof(msg), "{\"op\":\"subscribe\",\"channel\":\"%s%u\"}", b->opt.prefix,
                     c->channel);
    send_frame(b, c, WS_OP_TEXT, msg, (size_t)n);
}

/* Keep unparsed bytes (a partial frame or handshake) until the next read. */
static void keep_rest(struct bench *b, struct conn *c, const uint8_t *p, size_t len)
{
    c->in = malloc(len);
    if (!c->in) {
        conn_end(b, c, CLOSE_ERROR);
        return;
    }
    memcpy(c->in, p, len);
    c->in_len = (uint32_t)len;
}

/* Append a fragment to the message being assembled; first marks the start of a message. */
static int add_fragment(struct conn *c, const struct ws_frame *f, int first)
{
    if (first != (c->frag == NULL))
        return -1; /* a continuation without a start, or a new message inside one */
    uint8_t *grown = realloc(c->frag, c->frag_len + f->len + 1);
    if (!grown)
        return -1;
    memcpy(grown + c->frag_len, f->payload, f->len);
    c->frag = grown;
    c->frag_len += (uint32_t)f->len;
    return 0;
}

/* The status code of a close frame; 1005 when it carries none. */
static int close_code(const struct ws_frame *f)
{
    return f->len >= 2 ? (f->payload[0] << 8) | f->payload[1] : 1005;
}

/* --deflate: the server must have agreed (its answer names the extension); the connection
 * gets its inflate stream, kept across messages as context takeover requires. */
static int start_inflate(struct bench *b, struct conn *c, const uint8_t *head, size_t len)
{
    if (!memmem(head, len, "permessage-deflate", 18)) {
        note_error(b, "the server did not agree to permessage-deflate");
        return -1;
    }
    c->z = calloc(1, sizeof *c->z);
    if (!c->z || inflateInit2(c->z, -MAX_WBITS) != Z_OK) {
        free(c->z);
        c->z = NULL;
        note_error(b, "inflateInit2 failed");
        return -1;
    }
    return 0;
}

/* Inflates one compressed message (RFC 7692: the payload plus 00 00 ff ff) into the shared
 * inflate buffer; returns its length, or -1. */
static long inflate_message(struct bench *b, struct conn *c, const uint8_t *in, size_t len)
{
    static const uint8_t tail[4] = {0, 0, 0xff, 0xff};
    size_t out = 0;
    for (int part = 0; part < 2; part++) {
        c->z->next_in = (uint8_t *)(part ? tail : in);
        c->z->avail_in = (uInt)(part ? sizeof tail : len);
        while (c->z->avail_in) {
            if (b->inflated_cap - out < 4096) {
                size_t cap = b->inflated_cap ? b->inflated_cap * 2 : 1 << 16;
                uint8_t *grown = realloc(b->inflated, cap);
                if (!grown)
                    return -1;
                b->inflated = grown;
                b->inflated_cap = cap;
            }
            c->z->next_out = b->inflated + out;
            c->z->avail_out = (uInt)(b->inflated_cap - out);
            int rc = inflate(c->z, Z_SYNC_FLUSH);
            if (rc != Z_OK && rc != Z_BUF_ERROR)
                return -1;
            out = b->inflated_cap - c->z->avail_out;
        }
    }
    return (long)out;
}

/* Handle one server frame: data, close (record its code), ping (answer pong). */
static void on_frame(struct bench *b, struct conn *c, const struct ws_frame *f, uint64_t now)
{
    if (f->compressed && (!c->z || !f->fin || f->opcode == WS_OP_CONT)) {
        note_error(b, c->z ? "a fragmented compressed message" : "RSV1 without permessage-deflate");
        conn_end(b, c, CLOSE_ERROR);
        return;
    }
    switch (f->opcode) {
    case WS_OP_TEXT:
    case WS_OP_BIN:
    case WS_OP_CONT:
        if (f->compressed) {
            long n = inflate_message(b, c, f->payload, f->len);
            if (n < 0) {
                note_error(b, "a compressed message does not inflate");
                conn_end(b, c, CLOSE_ERROR);
                return;
            }
            b->compressed++;
            on_message(b, c, b->inflated, (size_t)n, now);
        } else if (f->fin && f->opcode != WS_OP_CONT) {
            on_message(b, c, f->payload, f->len, now);
        } else if (add_fragment(c, f, f->opcode != WS_OP_CONT) != 0) {
            note_error(b, "bad fragmentation");
            conn_end(b, c, CLOSE_ERROR);
        } else if (f->fin) {
            on_message(b, c, c->frag, c->frag_len, now);
            free(c->frag);
            c->frag = NULL;
            c->frag_len = 0;
        }
        break;
    case WS_OP_CLOSE:
        if (c->state != CS_READY)
            note_error(b, "closed by server before subscribed, code %d", close_code(f));
        if (f->len <= MAX_CTRL)
            send_frame(b, c, WS_OP_CLOSE, f->payload, f->len < 2 ? f->len : 2); /* echo the code */
        conn_end(b, c, close_code(f));
        break;
    case WS_OP_PING:
        if (f->len <= MAX_CTRL)
            send_frame(b, c, 0xA, f->payload, f->len);
        break;
    default:
        break;
    }
}

/* Parse the handshake (if still pending) and every complete frame in buf. */
static void consume(struct bench *b, struct conn *c, const uint8_t *buf, size_t len, uint64_t now)
{
    size_t off = 0;
    if (c->state == CS_HANDSHAKE) {
        long h = ws_handshake_response((const char *)buf, len);
        if (h < 0 || (h == 0 && len > MAX_HANDSHAKE)) {
            size_t shown = len < 80 ? len : 80;
            const uint8_t *eol = memchr(buf, '\r', shown);
            shown = eol ? (size_t)(eol - buf) : shown;
            note_error(b, "upgrade refused: %.*s", (int)shown, (const char *)buf);
            conn_end(b, c, CLOSE_ERROR);
            return;
        }
        if (h == 0) {
            keep_rest(b, c, buf, len);
            return;
        }
        off = (size_t)h;
        if (b->opt.deflate && start_inflate(b, c, buf, (size_t)h) != 0) {
            conn_end(b, c, CLOSE_ERROR);
            return;
        }
        c->state = CS_SUBSCRIBING;
        if (b->opt.nchan_pub)
            mark_ready(b, c); /* Nchan subscribes by the upgrade itself */
        else
            send_subscribe(b, c);
    }
    while (off < len && c->state != CS_CLOSED) {
        struct ws_frame f;
        size_t used;
        int r = ws_frame_parse(buf + off, len - off, &f, &used);
        if (r == WS_PARSE_MORE)
            break;
        if (r == WS_PARSE_ERROR) {
            note_error(b, "bad frame header 0x%02x 0x%02x", buf[off], buf[off + 1]);
            conn_end(b, c, CLOSE_ERROR);
            return;
        }
        on_frame(b, c, &f, now);
        off += used;
    }
    if (c->state != CS_CLOSED && off < len)
        keep_rest(b, c, buf + off, len - off);
}

/* One read(): the kept partial bytes, then new data, parsed in the shared scratch buffer. */
static void on_readable(struct bench *b, struct conn *c)
{
    size_t need = (size_t)c->in_len + SCRATCH_MIN;
    if (b->scratch_cap < need) {
        uint8_t *grown = realloc(b->scratch, need * 2);
        if (!grown)
            return;
        b->scratch = grown;
        b->scratch_cap = need * 2;
    }
    ssize_t n = read(c->fd, b->scratch + c->in_len, b->scratch_cap - c->in_len);
    if (n <= 0) {
        if (n < 0 && errno == EAGAIN)
            return;
        if (c->state != CS_READY)
            note_error(b, "connection ended before subscribed: %s", n ? strerror(errno) : "EOF");
        conn_end(b, c, n == 0 ? CLOSE_EOF : CLOSE_ERROR);
        return;
    }
    b->reads++;
    size_t len = c->in_len + (size_t)n;
    if (c->in_len)
        memcpy(b->scratch, c->in, c->in_len);
    free(c->in);
    c->in = NULL;
    c->in_len = 0;
    consume(b, c, b->scratch, len, now_ns());
}

/* Wait up to timeout_ms for socket events and handle them; returns events handled or -1. */
int bench_poll(struct bench *b, int timeout_ms)
{
    struct epoll_event ev[MAX_EVENTS];
    int n = epoll_wait(b->epfd, ev, MAX_EVENTS, timeout_ms);
    if (n < 0)
        return errno == EINTR ? 0 : -1;
    for (int i = 0; i < n; i++) {
        struct conn *c = &b->conns[ev[i].data.u32];
        if (c->state == CS_CLOSED)
            continue;
        if (c->state == CS_CONNECTING) {
            on_connected(b, c);
            continue;
        }
        if ((ev[i].events & EPOLLOUT) && c->out_len)
            flush_out(b, c);
        if (c->state != CS_CLOSED && (ev[i].events & (EPOLLIN | EPOLLHUP | EPOLLERR)))
            on_readable(b, c);
    }
    return n;
}

/* ---- message verification ---- */

/*
 * Find "key" followed by optional blanks and a colon in [p, end); returns the value's first
 * non-blank byte or NULL. Tolerates both compact and spaced JSON.
 */
static const char *find_value(const char *p, const char *end, const char *key)
{
    size_t klen = strlen(key);
    while (p < end) {
        const char *k = memmem(p, (size_t)(end - p), key, klen);
        if (!k)
            return NULL;
        const char *v = k + klen;
        while (v < end && (*v == ' ' || *v == '\t'))
            v++;
        if (v < end && *v == ':') {
            for (v++; v < end && (*v == ' ' || *v == '\t'); v++) {
            }
            return v < end ? v : NULL;
        }
        p = k + 1;
    }
    return NULL;
}

/* Parse a decimal u64 at p; returns 0 on success. */
static int parse_u64(const char *p, const char *end, uint64_t *out)
{
    if (!p || p >= end || *p < '0' || *p > '9')
        return -1;
    uint64_t v = 0;
    for (; p < end && *p >= '0' && *p <= '9'; p++)
        v = v * 10 + (uint64_t)(*p - '0');
    *out = v;
    return 0;
}

/* Does the value at v (a JSON string) start with the given quoted word? */
static int value_is(const char *v, const char *end, const char *quoted)
{
    size_t n = strlen(quoted);
    return v && (size_t)(end - v) >= n && memcmp(v, quoted, n) == 0;
}

/*
 * Check message n (stamped t) against what connection c has seen. Channel k carries
 * n = k, k+K, k+2K, ...: a jump is a gap, a step back a duplicate or reordering.
 */
static void verify(struct bench *b, struct conn *c, uint64_t n, uint64_t t, uint64_t now)
{
    uint64_t k = b->opt.channels;
    if (n % k != c->channel) {
        b->misrouted++;
        return;
    }
    uint64_t expect = c->last_n < 0 ? c->channel : (uint64_t)c->last_n + k;
    if (n < expect) {
        b->dups++;
        return;
    }
    b->gaps += (n - expect) / k;
    c->last_n = (int64_t)n;
    c->received++;
    b->received++;
    if (now >= b->warm_end_ns && now < b->measure_end_ns)
        b->in_window++;
    if (t >= b->warm_end_ns)
        hist_add(&b->hist, now > t ? now - t : 0);
}

/* Dispatch one complete text message by its "op". */
static void on_message(struct bench *b, struct conn *c, const uint8_t *msg, size_t len,
                       uint64_t now)
{
    const char *s = (const char *)msg, *end = s + len;
    if (b->opt.nchan_pub) { /* Nchan delivers the published body as it is */
        uint64_t t, n;
        if (parse_u64(find_value(s, end, "\"t\""), end, &t) != 0 ||
            parse_u64(find_value(s, end, "\"n\""), end, &n) != 0) {
            b->unparsable++;
            note_error(b, "unexpected frame: %.*s", (int)(len < 100 ? len : 100), s);
            return;
        }
        verify(b, c, n, t, now);
        return;
    }
    const char *op = find_value(s, end, "\"op\"");
    if (value_is(op, end, "\"message\"")) {
        const char *data = find_value(s, end, "\"data\"");
        uint64_t t, n;
        if (!data || parse_u64(find_value(data, end, "\"t\""), end, &t) != 0 ||
            parse_u64(find_value(data, end, "\"n\""), end, &n) != 0) {
            b->unparsable++;
            return;
        }
        verify(b, c, n, t, now);
    } else if (value_is(op, end, "\"subscribed\"") && c->state == CS_SUBSCRIBING) {
        mark_ready(b, c);
    } else if (value_is(op, end, "\"error\"")) {
        b->error_replies++;
        note_error(b, "server error reply: %.*s", (int)(len < 200 ? len : 200), s);
        if (c->state == CS_SUBSCRIBING)
            conn_end(b, c, CLOSE_ERROR);
    } else {
        b->other_frames++;
    }
}

/* ---- setup and teardown ---- */

/* Resolve the URL, create epoll and the connection table, prepare the upgrade request. */
int bench_init(struct bench *b)
{
    struct addrinfo hints = {.ai_family = AF_INET, .ai_socktype = SOCK_STREAM}, *ai = NULL;
    int rc = getaddrinfo(b->opt.url.host, b->opt.url.port, &hints, &ai);
    if (rc != 0) {
        fprintf(stderr, "herald-bench: %s: %s\n", b->opt.url.host, gai_strerror(rc));
        return -1;
    }
    memcpy(&b->dst, ai->ai_addr, sizeof(b->dst));
    freeaddrinfo(ai);
    int n = ws_handshake_request(&b->opt.url, b->opt.protocol, b->opt.deflate, b->handshake,
                                 sizeof(b->handshake));
    b->handshake_len = n > 0 ? (size_t)n : 0;
    b->epfd = epoll_create1(EPOLL_CLOEXEC);
    b->conns = calloc(b->opt.connections, sizeof(*b->conns));
    b->scratch_cap = 2 * SCRATCH_MIN;
    b->scratch = malloc(b->scratch_cap);
    b->mask_seed = 0x9e3779b9u;
    if (n <= 0 || b->epfd < 0 || !b->conns || !b->scratch) {
        fprintf(stderr, "herald-bench: setup failed: %s\n", strerror(errno));
        return -1;
    }
    for (uint32_t i = 0; i < b->opt.connections; i++) {
        b->conns[i].fd = -1;
        b->conns[i].channel = i % b->opt.channels;
        b->conns[i].last_n = -1;
    }
    return 0;
}

/* Give up on connections not yet subscribed (connect phase timed out). */
void bench_fail_pending(struct bench *b)
{
    for (uint32_t i = 0; i < b->next_to_open; i++)
        if (b->conns[i].state != CS_READY && b->conns[i].state != CS_CLOSED) {
            note_error(b, "connect phase timed out");
            conn_end(b, &b->conns[i], CLOSE_ERROR);
        }
    b->failed += b->opt.connections - b->next_to_open;
    b->next_to_open = b->opt.connections;
}

/* Deliveries owed to subscribed connections once `published` messages went out round-robin. */
uint64_t bench_expected(const struct bench *b, uint64_t published)
{
    uint64_t k = b->opt.channels, total = 0;
    for (uint32_t i = 0; i < b->opt.connections; i++)
        if (b->conns[i].was_ready)
            total += published / k + (b->conns[i].channel < published % k ? 1 : 0);
    return total;
}

/* Send a 1000 close frame (best effort) on every open connection and close it. */
void bench_close_all(struct bench *b)
{
    const uint8_t normal[2] = {0x03, 0xe8};
    for (uint32_t i = 0; i < b->opt.connections; i++) {
        struct conn *c = &b->conns[i];
        if (c->state == CS_READY && c->out_len == 0)
            send_frame(b, c, WS_OP_CLOSE, normal, sizeof(normal));
        conn_end(b, c, 0);
    }
}

/* Free what bench_init allocated. */
void bench_free(struct bench *b)
{
    free(b->conns);
    free(b->scratch);
    free(b->inflated);
    if (b->epfd >= 0)
        close(b->epfd);
}
