/*
 * bench-ceiling: the fan-out ceiling the benchmark suite compares Herald with.
 *
 * A minimal single-threaded epoll WebSocket server that does only what a fan-out gateway
 * cannot avoid, as cheaply as C allows:
 *   - the HTTP upgrade (SHA-1 + base64 of its own) and the masked client frames;
 *   - Herald's subscribe op: {"op":"subscribe","channel":C} is answered with
 *     {"op":"subscribed","channel":C} once Redis confirmed the SUBSCRIBE (as Herald does);
 *   - one Redis connection (hiredis' reply parser on a non-blocking socket of its own), one
 *     SUBSCRIBE per channel with subscribers;
 *   - each Redis message is wrapped once, {"op":"message","channel":C,"data":<payload>}, as one
 *     prebuilt WebSocket frame, appended to the pending buffer of each subscriber;
 *   - after every loop turn, all pending bytes of a socket leave in one write(); a connection
 *     keeps its output buffer while it is busy, idle ones give it back once a second.
 * No JSON validation, no auth, no limits, no history: whatever Herald does beyond this is its
 * own cost. A socket whose pending output passes --max-pending is dropped (a slow consumer).
 *
 * usage: bench-ceiling --listen 127.0.0.1:PORT --redis 127.0.0.1:PORT [--max-pending BYTES]
 * A plain HTTP GET (no Upgrade) is answered 200 "ok", so scripts can poll for readiness.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <hiredis/hiredis.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define MAX_EVENTS     1024
#define READ_CHUNK     (64 * 1024)
#define MAX_REQUEST    8192 /* an upgrade request larger than this is refused */
#define MAX_CLIENT_MSG 4096 /* a client frame larger than this closes the connection */
#define REDIS_ID       UINT32_MAX

/* ---- SHA-1 (FIPS 180-4) and base64, just for Sec-WebSocket-Accept ---- */

/* Rotate left. */
static uint32_t rol(uint32_t v, int n)
{
    return (v << n) | (v >> (32 - n));
}

/* One 64-byte block into the state h. */
static void sha1_block(uint32_t h[5], const uint8_t *p)
{
    uint32_t w[80];
    for (int i = 0; i < 16; i++)
        w[i] = (uint32_t)p[4 * i] << 24 | (uint32_t)p[4 * i + 1] << 16 |
               (uint32_t)p[4 * i + 2] << 8 | p[4 * i + 3];
    for (int i = 16; i < 80; i++)
        w[i] = rol(w[i - 3] ^ w[i - 8] ^ w[i - 14] ^ w[i - 16], 1);
    uint32_t a = h[0], b = h[1], c = h[2], d = h[3], e = h[4];
    for (int i = 0; i < 80; i++) {
        uint32_t f, k;
        if (i < 20)
            f = (b & c) | (~b & d), k = 0x5a827999;
        else if (i < 40)
            f = b ^ c ^ d, k = 0x6ed9eba1;
        else if (i < 60)
            f = (b & c) | (b & d) | (c & d), k = 0x8f1bbcdc;
        else
            f = b ^ c ^ d, k = 0xca62c1d6;
        uint32_t t = rol(a, 5) + f + e + k + w[i];
        e = d, d = c, c = rol(b, 30), b = a, a = t;
    }
    h[0] += a, h[1] += b, h[2] += c, h[3] += d, h[4] += e;
}

/* SHA-1 of len bytes (at most 119: all this server ever hashes) into out. */
static void sha1(const void *data, size_t len, uint8_t out[20])
{
    uint32_t h[5] = {0x67452301, 0xefcdab89, 0x98badcfe, 0x10325476, 0xc3d2e1f0};
    uint8_t buf[128] = {0};
    memcpy(buf, data, len);
    buf[len] = 0x80;
    size_t total = len + 9 <= 64 ? 64 : 128;
    uint64_t bits = (uint64_t)len * 8;
    for (int i = 0; i < 8; i++)
        buf[total - 1 - i] = (uint8_t)(bits >> (8 * i));
    for (size_t off = 0; off < total; off += 64)
        sha1_block(h, buf + off);
    for (int i = 0; i < 5; i++)
        for (int j = 0; j < 4; j++)
            out[4 * i + j] = (uint8_t)(h[i] >> (24 - 8 * j));
}

/* Standard base64 of len bytes into out (NUL-terminated); out holds 4 * ceil(len / 3) + 1. */
static void base64(const uint8_t *in, size_t len, char *out)
{
    static const char tab[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    size_t o = 0;
    for (size_t i = 0; i < len; i += 3) {
        uint32_t v = (uint32_t)in[i] << 16;
        if (i + 1 < len)
            v |= (uint32_t)in[i + 1] << 8;
        if (i + 2 < len)
            v |= in[i + 2];
        out[o++] = tab[v >> 18 & 63];
        out[o++] = tab[v >> 12 & 63];
        out[o++] = i + 1 < len ? tab[v >> 6 & 63] : '=';
        out[o++] = i + 2 < len ? tab[v & 63] : '=';
    }
    out[o] = '\0';
}

/* ---- state ---- */

enum { ST_FREE, ST_HTTP, ST_WS };

/* One client socket. Buffers exist only while something is pending. */
struct conn {
    int fd;
    uint8_t state;
    uint8_t dirty;    /* on the dirty list: flush after this loop turn */
    uint8_t want_out; /* EPOLLOUT registered: the socket was full */
    uint8_t waiting;  /* subscribed, waiting for Redis to confirm */
    uint8_t busy;     /* queued output since the last sweep_idle */
    int32_t chan;     /* channel index, -1 if none */
    uint32_t slot;    /* index in that channel's subscriber array */
    uint8_t *in;
    uint32_t in_len;
    uint8_t *out;
    uint32_t out_len, out_cap;
};

/* One channel: its name and its subscribers. */
struct channel {
    char *name;
    size_t name_len;
    int confirmed; /* Redis acknowledged the SUBSCRIBE */
    uint32_t *subs;
    uint32_t nsubs, cap;
};

static struct {
    int epfd, lfd, rfd;
    struct conn *conns;
    uint32_t nconns;
    struct channel *chans;
    uint32_t nchans, chans_cap;
    int32_t *table; /* open addressing: channel index + 1, 0 empty */
    uint32_t table_size;
    uint32_t *dirty;
    uint32_t ndirty;
    redisReader *reader;
    uint8_t *rout; /* unsent bytes to Redis */
    size_t rout_len;
    size_t max_pending;
    uint64_t messages, deliveries, writes, dropped;
} S;

static volatile sig_atomic_t g_stop;

/* Signal handler: leave the loop. */
static void on_signal(int sig)
{
    (void)sig;
    g_stop = 1;
}

/* FNV-1a of a channel name. */
static uint32_t hash(const char *s, size_t n)
{
    uint32_t h = 2166136261u;
    for (size_t i = 0; i < n; i++)
        h = (h ^ (uint8_t)s[i]) * 16777619u;
    return h;
}

/* The channel named s (n bytes), or -1. *pos gets its table slot (or the free slot). */
static int32_t chan_find(const char *s, size_t n, uint32_t *pos)
{
    uint32_t i = hash(s, n) & (S.table_size - 1);
    for (; S.table[i]; i = (i + 1) & (S.table_size - 1)) {
        struct channel *c = &S.chans[S.table[i] - 1];
        if (c->name_len == n && memcmp(c->name, s, n) == 0) {
            *pos = i;
            return S.table[i] - 1;
        }
    }
    *pos = i;
    return -1;
}

/* Double the hash table and reinsert every channel. */
static int table_grow(void)
{
    uint32_t size = S.table_size ? S.table_size * 2 : 1024;
    int32_t *t = calloc(size, sizeof(*t));
    if (!t)
        return -1;
    free(S.table);
    S.table = t;
    S.table_size = size;
    for (uint32_t c = 0; c < S.nchans; c++) {
        uint32_t pos;
        chan_find(S.chans[c].name, S.chans[c].name_len, &pos);
        S.table[pos] = (int32_t)c + 1;
    }
    return 0;
}

/* ---- output ---- */

/* Queue bytes to Redis and try to send them now. */
static void redis_send(const char *data, size_t len)
{
    uint8_t *grown = realloc(S.rout, S.rout_len + len);
    if (!grown)
        return;
    S.rout = grown;
    memcpy(S.rout + S.rout_len, data, len);
    S.rout_len += len;
    ssize_t n = write(S.rfd, S.rout, S.rout_len);
    if (n > 0) {
        memmove(S.rout, S.rout + n, S.rout_len - (size_t)n);
        S.rout_len -= (size_t)n;
    }
    struct epoll_event ev = {.events = EPOLLIN | (S.rout_len ? EPOLLOUT : 0), .data.u32 = REDIS_ID};
    epoll_ctl(S.epfd, EPOLL_CTL_MOD, S.rfd, &ev);
}

/* Append bytes to c's pending output and put it on the dirty list. */
static int conn_queue(uint32_t id, const void *data, size_t len)
{
    struct conn *c = &S.conns[id];
    if (c->out_len + len > c->out_cap) {
        size_t cap = c->out_cap ? c->out_cap : 2048;
        while (cap < c->out_len + len)
            cap *= 2;
        if (cap > S.max_pending)
            return -1;
        uint8_t *grown = realloc(c->out, cap);
        if (!grown)
            return -1;
        c->out = grown;
        c->out_cap = (uint32_t)cap;
    }
    memcpy(c->out + c->out_len, data, len);
    c->out_len += (uint32_t)len;
    c->busy = 1;
    if (!c->dirty) {
        c->dirty = 1;
        S.dirty[S.ndirty++] = id;
    }
    return 0;
}

/* Write a WebSocket frame header for a payload of len bytes; returns its size. */
static size_t frame_header(uint8_t *h, int opcode, size_t len)
{
    h[0] = (uint8_t)(0x80 | opcode);
    if (len < 126) {
        h[1] = (uint8_t)len;
        return 2;
    }
    if (len <= 0xffff) {
        h[1] = 126, h[2] = (uint8_t)(len >> 8), h[3] = (uint8_t)len;
        return 4;
    }
    h[1] = 127;
    for (int i = 0; i < 8; i++)
        h[2 + i] = (uint8_t)((uint64_t)len >> (56 - 8 * i));
    return 10;
}

/* Queue one small frame (control frames, replies) on a connection. */
static int conn_frame(uint32_t id, int opcode, const void *payload, size_t len)
{
    uint8_t h[10];
    size_t hl = frame_header(h, opcode, len);
    return conn_queue(id, h, hl) == 0 && conn_queue(id, payload, len) == 0 ? 0 : -1;
}

/* Leave the channel, close the socket, free the buffers. */
static void conn_close(uint32_t id)
{
    struct conn *c = &S.conns[id];
    if (c->state == ST_FREE)
        return;
    if (c->chan >= 0) {
        struct channel *ch = &S.chans[c->chan];
        uint32_t last = ch->subs[--ch->nsubs];
        ch->subs[c->slot] = last;
        S.conns[last].slot = c->slot;
        c->chan = -1;
    }
    close(c->fd);
    free(c->in);
    free(c->out);
    int dirty = c->dirty;
    memset(c, 0, sizeof(*c));
    c->fd = -1;
    c->chan = -1;
    c->dirty = (uint8_t)dirty; /* still listed: flush_dirty skips it */
}

/* Send everything pending on c in one write(); watch EPOLLOUT while the socket is full. */
static void conn_flush(uint32_t id)
{
    struct conn *c = &S.conns[id];
    if (c->state == ST_FREE || c->out_len == 0)
        return;
    ssize_t n = write(c->fd, c->out, c->out_len);
    S.writes++;
    if (n < 0 && errno != EAGAIN) {
        conn_close(id);
        return;
    }
    n = n < 0 ? 0 : n;
    if ((uint32_t)n < c->out_len) {
        memmove(c->out, c->out + n, c->out_len - (size_t)n);
        c->out_len -= (uint32_t)n;
    } else {
        c->out_len = 0; /* the buffer stays while the connection is busy: see sweep_idle */
    }
    int want = c->out_len > 0;
    if (want != c->want_out) {
        struct epoll_event ev = {.events = EPOLLIN | (want ? EPOLLOUT : 0), .data.u32 = id};
        epoll_ctl(S.epfd, EPOLL_CTL_MOD, c->fd, &ev);
        c->want_out = (uint8_t)want;
    }
}

/* Once a second: free the output buffer of every connection that queued nothing since the
 * last sweep, so idle connections hold no buffer and busy ones do not malloc per write. */
static void sweep_idle(void)
{
    for (uint32_t id = 0; id < S.nconns; id++) {
        struct conn *c = &S.conns[id];
        if (c->out && c->out_len == 0 && !c->busy) {
            free(c->out);
            c->out = NULL;
            c->out_cap = 0;
        }
        c->busy = 0;
    }
}

/* After a loop turn: one write per socket with pending bytes. */
static void flush_dirty(void)
{
    for (uint32_t i = 0; i < S.ndirty; i++) {
        uint32_t id = S.dirty[i];
        S.conns[id].dirty = 0;
        if (!S.conns[id].want_out) /* a full socket waits for EPOLLOUT */
            conn_flush(id);
    }
    S.ndirty = 0;
}

/* ---- the subscribe op ---- */

/* Reply {"op":"subscribed","channel":C} to one client. */
static void reply_subscribed(uint32_t id, const struct channel *ch)
{
    char msg[320];
    int n = snprintf(msg, sizeof(msg), "{\"op\":\"subscribed\",\"channel\":\"%.*s\"}",
                     (int)ch->name_len, ch->name);
    S.conns[id].waiting = 0;
    if (conn_frame(id, 0x1, msg, (size_t)n) != 0)
        conn_close(id);
}

/* Add client id to channel `name`, creating it (and its Redis SUBSCRIBE) on first use. */
static void subscribe(uint32_t id, const char *name, size_t n)
{
    struct conn *c = &S.conns[id];
    if (c->chan >= 0 || n == 0 || n > 200)
        return; /* one channel per connection: all the benchmark needs */
    uint32_t pos;
    int32_t ci = chan_find(name, n, &pos);
    if (ci < 0) {
        if (S.nchans == S.chans_cap) {
            uint32_t cap = S.chans_cap ? S.chans_cap * 2 : 256;
            struct channel *grown = realloc(S.chans, cap * sizeof(*grown));
            if (!grown)
                return;
            S.chans = grown;
            S.chans_cap = cap;
        }
        if ((S.nchans + 1) * 2 > S.table_size) {
            table_grow();
            chan_find(name, n, &pos);
        }
        ci = (int32_t)S.nchans++;
        struct channel *ch = &S.chans[ci];
        memset(ch, 0, sizeof(*ch));
        ch->name = strndup(name, n);
        ch->name_len = n;
        S.table[pos] = ci + 1;
        char cmd[300];
        int len = snprintf(cmd, sizeof(cmd), "*2\r\n$9\r\nSUBSCRIBE\r\n$%zu\r\n%.*s\r\n", n, (int)n,
                           name);
        redis_send(cmd, (size_t)len);
    }
    struct channel *ch = &S.chans[ci];
    if (ch->nsubs == ch->cap) {
        uint32_t cap = ch->cap ? ch->cap * 2 : 4;
        uint32_t *grown = realloc(ch->subs, cap * sizeof(*grown));
        if (!grown)
            return;
        ch->subs = grown;
        ch->cap = cap;
    }
    c->chan = ci;
    c->slot = ch->nsubs;
    ch->subs[ch->nsubs++] = id;
    if (ch->confirmed)
        reply_subscribed(id, ch);
    else
        c->waiting = 1;
}

/* A client text message: only {"op":"subscribe","channel":"..."} does something. */
static void on_client_text(uint32_t id, const char *s, size_t len)
{
    if (!memmem(s, len, "\"subscribe\"", 11))
        return;
    const char *k = memmem(s, len, "\"channel\"", 9);
    if (!k)
        return;
    const char *end = s + len, *p = k + 9;
    while (p < end && (*p == ' ' || *p == ':'))
        p++;
    if (p >= end || *p != '"')
        return;
    p++;
    const char *q = memchr(p, '"', (size_t)(end - p));
    if (q)
        subscribe(id, p, (size_t)(q - p));
}

/* ---- input ---- */

/* Answer the upgrade (or a plain GET with 200); returns bytes consumed, 0 if incomplete. */
static long on_http(uint32_t id, const char *buf, size_t len)
{
    const char *end = memmem(buf, len, "\r\n\r\n", 4);
    if (!end)
        return len > MAX_REQUEST ? -1 : 0;
    size_t hlen = (size_t)(end - buf) + 4;
    const char *key = NULL;
    size_t klen = 0;
    for (const char *line = buf; line < end;) {
        const char *eol = memmem(line, (size_t)(end + 2 - line), "\r\n", 2);
        if (strncasecmp(line, "Sec-WebSocket-Key:", 18) == 0) {
            key = line + 18;
            while (*key == ' ')
                key++;
            klen = (size_t)(eol - key);
            while (klen && key[klen - 1] == ' ')
                klen--;
        }
        line = eol + 2;
    }
    if (!key) {
        static const char ok[] =
            "HTTP/1.1 200 OK\r\nContent-Length: 3\r\nConnection: close\r\n\r\nok\n";
        conn_queue(id, ok, sizeof(ok) - 1);
        conn_flush(id);
        return -1;
    }
    if (klen > 60)
        return -1;
    char cat[128];
    memcpy(cat, key, klen);
    memcpy(cat + klen, "258EAFA5-E914-47DA-95CA-C5AB0DC85B11", 36);
    uint8_t digest[20];
    sha1(cat, klen + 36, digest);
    char accept[32];
    base64(digest, 20, accept);
    char resp[256];
    int n = snprintf(resp, sizeof(resp),
                     "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                     "Connection: Upgrade\r\nSec-WebSocket-Accept: %s\r\n\r\n",
                     accept);
    conn_queue(id, resp, (size_t)n);
    S.conns[id].state = ST_WS;
    return (long)hlen;
}

/* Parse masked client frames in buf; returns bytes consumed or -1 to close. */
static long on_frames(uint32_t id, uint8_t *buf, size_t len)
{
    size_t off = 0;
    while (len - off >= 6) {
        uint8_t *p = buf + off;
        int opcode = p[0] & 0x0f;
        if (!(p[1] & 0x80))
            return -1; /* client frames must be masked */
        size_t plen = p[1] & 0x7f, h = 2;
        if (plen == 126) {
            if (len - off < 8)
                break;
            plen = (size_t)p[2] << 8 | p[3];
            h = 4;
        } else if (plen == 127) {
            return -1;
        }
        if (plen > MAX_CLIENT_MSG)
            return -1;
        if (len - off < h + 4 + plen)
            break;
        uint8_t *mask = p + h, *data = p + h + 4;
        for (size_t i = 0; i < plen; i++)
            data[i] ^= mask[i & 3];
        if (opcode == 0x1)
            on_client_text(id, (const char *)data, plen);
        else if (opcode == 0x9)
            conn_frame(id, 0xA, data, plen);
        else if (opcode == 0x8) {
            conn_frame(id, 0x8, data, plen < 2 ? plen : 2);
            conn_flush(id);
            return -1;
        }
        off += h + 4 + plen;
    }
    return (long)off;
}

/* Read what a client sent and act on it. */
static void on_client(uint32_t id, uint32_t events)
{
    struct conn *c = &S.conns[id];
    if (events & EPOLLOUT)
        conn_flush(id);
    if (c->state == ST_FREE || !(events & (EPOLLIN | EPOLLHUP | EPOLLERR)))
        return;
    uint8_t buf[READ_CHUNK];
    size_t have = c->in_len;
    if (have)
        memcpy(buf, c->in, have);
    ssize_t n = read(c->fd, buf + have, sizeof(buf) - have);
    if (n <= 0) {
        if (n == 0 || errno != EAGAIN)
            conn_close(id);
        return;
    }
    size_t len = have + (size_t)n, off = 0;
    if (c->state == ST_HTTP) {
        long used = on_http(id, (const char *)buf, len);
        if (used < 0) {
            conn_close(id);
            return;
        }
        off = (size_t)used;
    }
    if (c->state == ST_WS && off < len) {
        long used = on_frames(id, buf + off, len - off);
        if (used < 0) {
            conn_close(id);
            return;
        }
        off += (size_t)used;
    }
    free(c->in);
    c->in = NULL;
    c->in_len = 0;
    if (off < len) {
        c->in = malloc(len - off);
        if (!c->in) {
            conn_close(id);
            return;
        }
        memcpy(c->in, buf + off, len - off);
        c->in_len = (uint32_t)(len - off);
    }
}

/* Accept every pending connection. */
static void on_accept(void)
{
    for (;;) {
        int fd = accept4(S.lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0)
            return;
        if ((uint32_t)fd >= S.nconns) {
            close(fd);
            continue;
        }
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
        struct conn *c = &S.conns[fd]; /* the descriptor is the index: unique while open */
        uint8_t dirty = c->dirty;      /* a closed predecessor may still be on the dirty list */
        memset(c, 0, sizeof(*c));
        c->dirty = dirty;
        c->fd = fd;
        c->chan = -1;
        c->state = ST_HTTP;
        struct epoll_event ev = {.events = EPOLLIN, .data.u32 = (uint32_t)fd};
        epoll_ctl(S.epfd, EPOLL_CTL_ADD, fd, &ev);
    }
}

/* A published message: wrap it once as a frame, queue it on every subscriber. */
static void on_message(const char *chan, size_t clen, const char *payload, size_t plen)
{
    uint32_t pos;
    int32_t ci = chan_find(chan, clen, &pos);
    if (ci < 0)
        return;
    struct channel *ch = &S.chans[ci];
    static const char head[] = "{\"op\":\"message\",\"channel\":\"", mid[] = "\",\"data\":";
    size_t body = sizeof(head) - 1 + clen + sizeof(mid) - 1 + plen + 1;
    uint8_t stackbuf[4096], *frame = body + 10 <= sizeof(stackbuf) ? stackbuf : malloc(body + 10);
    if (!frame)
        return;
    size_t h = frame_header(frame, 0x1, body);
    uint8_t *p = frame + h;
    memcpy(p, head, sizeof(head) - 1), p += sizeof(head) - 1;
    memcpy(p, chan, clen), p += clen;
    memcpy(p, mid, sizeof(mid) - 1), p += sizeof(mid) - 1;
    memcpy(p, payload, plen), p += plen;
    *p++ = '}';
    size_t flen = (size_t)(p - frame);
    S.messages++;
    for (uint32_t i = 0; i < ch->nsubs; i++) {
        uint32_t id = ch->subs[i];
        if (S.conns[id].waiting)
            continue;
        if (conn_queue(id, frame, flen) != 0) {
            S.dropped++;
            conn_close(id); /* moves the last subscriber into slot i */
            i--;
            continue;
        }
        S.deliveries++;
    }
    if (frame != stackbuf)
        free(frame);
}

/* One reply from the Redis subscription. */
static void on_redis_reply(redisReply *r)
{
    if (r->type != REDIS_REPLY_ARRAY || r->elements < 3 ||
        r->element[0]->type != REDIS_REPLY_STRING)
        return;
    const char *kind = r->element[0]->str;
    redisReply *name = r->element[1];
    if (strcmp(kind, "message") == 0 && r->element[2]->type == REDIS_REPLY_STRING) {
        on_message(name->str, name->len, r->element[2]->str, r->element[2]->len);
    } else if (strcmp(kind, "subscribe") == 0) {
        uint32_t pos;
        int32_t ci = chan_find(name->str, name->len, &pos);
        if (ci < 0)
            return;
        struct channel *ch = &S.chans[ci];
        ch->confirmed = 1;
        for (uint32_t i = 0; i < ch->nsubs; i++)
            if (S.conns[ch->subs[i]].waiting)
                reply_subscribed(ch->subs[i], ch);
    }
}

/* Read from Redis and handle every complete reply. */
static int on_redis(uint32_t events)
{
    if ((events & EPOLLOUT) && S.rout_len)
        redis_send("", 0);
    if (!(events & (EPOLLIN | EPOLLHUP | EPOLLERR)))
        return 0;
    /* 16 KiB at a time, parsed before the next read: hiredis' reader moves its unparsed rest
     * to the front of its buffer as it goes, so one huge feed would cost quadratic copying */
    static char buf[16 * 1024];
    for (int round = 0; round < 16; round++) {
        ssize_t n = read(S.rfd, buf, sizeof(buf));
        if (n < 0 && errno == EAGAIN)
            return 0;
        if (n <= 0) {
            fprintf(stderr, "bench-ceiling: lost the Redis connection\n");
            return -1;
        }
        if (redisReaderFeed(S.reader, buf, (size_t)n) != REDIS_OK)
            return -1;
        void *reply;
        while (redisReaderGetReply(S.reader, &reply) == REDIS_OK && reply) {
            on_redis_reply(reply);
            freeReplyObject(reply);
        }
        if ((size_t)n < sizeof(buf))
            return 0;
    }
    return 0;
}

/* ---- setup ---- */

/* Parse HOST:PORT into sa. */
static int parse_addr(const char *s, struct sockaddr_in *sa)
{
    char host[64];
    const char *colon = strrchr(s, ':');
    if (!colon || (size_t)(colon - s) >= sizeof(host))
        return -1;
    memcpy(host, s, (size_t)(colon - s));
    host[colon - s] = '\0';
    memset(sa, 0, sizeof(*sa));
    sa->sin_family = AF_INET;
    sa->sin_port = htons((uint16_t)atoi(colon + 1));
    return inet_pton(AF_INET, host, &sa->sin_addr) == 1 ? 0 : -1;
}

/* Open the listening socket and the Redis connection; size the tables to the fd limit. */
static int setup(const char *listen_at, const char *redis_at)
{
    struct sockaddr_in la, ra;
    if (parse_addr(listen_at, &la) != 0 || parse_addr(redis_at, &ra) != 0) {
        fprintf(stderr, "bench-ceiling: bad address\n");
        return -1;
    }
    struct rlimit rl;
    getrlimit(RLIMIT_NOFILE, &rl);
    rl.rlim_cur = rl.rlim_max;
    setrlimit(RLIMIT_NOFILE, &rl);
    S.nconns = (uint32_t)(rl.rlim_cur > 1u << 20 ? 1u << 20 : rl.rlim_cur);
    S.conns = calloc(S.nconns, sizeof(*S.conns));
    S.dirty = calloc(S.nconns, sizeof(*S.dirty));
    S.reader = redisReaderCreate();
    if (!S.conns || !S.dirty || !S.reader || table_grow() != 0)
        return -1;
    S.epfd = epoll_create1(EPOLL_CLOEXEC);
    S.rfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (connect(S.rfd, (struct sockaddr *)&ra, sizeof(ra)) != 0) {
        perror("bench-ceiling: redis connect");
        return -1;
    }
    int one = 1;
    setsockopt(S.rfd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    if (fcntl(S.rfd, F_SETFL, O_NONBLOCK) != 0)
        return -1;
    struct epoll_event ev = {.events = EPOLLIN, .data.u32 = REDIS_ID};
    epoll_ctl(S.epfd, EPOLL_CTL_ADD, S.rfd, &ev);
    S.lfd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    setsockopt(S.lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    if (bind(S.lfd, (struct sockaddr *)&la, sizeof(la)) != 0 || listen(S.lfd, 4096) != 0) {
        perror("bench-ceiling: listen");
        return -1;
    }
    ev.data.u32 = REDIS_ID - 1;
    epoll_ctl(S.epfd, EPOLL_CTL_ADD, S.lfd, &ev);
    return 0;
}

int main(int argc, char **argv)
{
    static const struct option opts[] = {{"listen", required_argument, 0, 'l'},
                                         {"redis", required_argument, 0, 'r'},
                                         {"max-pending", required_argument, 0, 'm'},
                                         {"help", no_argument, 0, 'h'},
                                         {0, 0, 0, 0}};
    const char *listen_at = "127.0.0.1:8090", *redis_at = "127.0.0.1:6379";
    S.max_pending = 16u << 20;
    int o;
    while ((o = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        if (o == 'l')
            listen_at = optarg;
        else if (o == 'r')
            redis_at = optarg;
        else if (o == 'm')
            S.max_pending = strtoul(optarg, NULL, 10);
        else {
            fprintf(o == 'h' ? stdout : stderr,
                    "usage: bench-ceiling --listen HOST:PORT --redis HOST:PORT "
                    "[--max-pending BYTES]\n");
            return o == 'h' ? 0 : 1;
        }
    }
    signal(SIGPIPE, SIG_IGN);
    signal(SIGINT, on_signal);
    signal(SIGTERM, on_signal);
    if (setup(listen_at, redis_at) != 0)
        return 1;
    struct epoll_event ev[MAX_EVENTS];
    uint64_t last_sweep = (uint64_t)time(NULL);
    while (!g_stop) {
        int n = epoll_wait(S.epfd, ev, MAX_EVENTS, 1000);
        if (n < 0 && errno != EINTR)
            break;
        for (int i = 0; i < n; i++) {
            uint32_t id = ev[i].data.u32;
            if (id == REDIS_ID) {
                if (on_redis(ev[i].events) != 0)
                    g_stop = 1;
            } else if (id == REDIS_ID - 1) {
                on_accept();
            } else {
                on_client(id, ev[i].events);
            }
        }
        flush_dirty();
        uint64_t now = (uint64_t)time(NULL);
        if (now != last_sweep) {
            sweep_idle();
            last_sweep = now;
        }
    }
    fprintf(stderr, "bench-ceiling: %llu messages, %llu deliveries, %llu writes, %llu dropped\n",
            (unsigned long long)S.messages, (unsigned long long)S.deliveries,
            (unsigned long long)S.writes, (unsigned long long)S.dropped);
    return 0;
}
