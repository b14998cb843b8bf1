/*
 * bench_pub.c: the publisher thread of herald-bench.
 * PUBLISHes stamped payloads to Redis at a fixed total rate, round-robin over the channels,
 * with hiredis' synchronous API: every 1 ms it appends the messages now due and reads their
 * replies in one go (pipelining), so one thread sustains far more than the gateway can fan out.
 * In Nchan mode the same pacing POSTs each message over a few keep-alive HTTP connections
 * (pipelined the same way: every tick writes the due requests, then reads their responses).
 * A channel always uses the same connection, so its messages reach the server in order.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <hiredis/hiredis.h>
#include <netdb.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "herald_bench.h"

#define PUB_TICK_NS    1000000u /* pacing period */
#define PUB_MAX_BATCH  512u     /* messages per pipelined round trip */
#define HTTP_MAX_BATCH 128u     /* pipelined requests per HTTP connection per tick */

/*
 * Write the payload of message n stamped t into buf, padded with 'x' to `bytes` bytes
 * when that is larger than the bare object. Returns its length.
 */
size_t publisher_payload(char *buf, size_t cap, uint64_t t, uint64_t n, uint32_t bytes)
{
    int head = snprintf(buf, cap, "{\"t\":%llu,\"n\":%llu,\"pad\":\"", (unsigned long long)t,
                        (unsigned long long)n);
    size_t len = (size_t)head;
    size_t pad = bytes > len + 2 ? bytes - len - 2 : 0;
    if (len + pad + 3 > cap)
        pad = cap - len - 3;
    memset(buf + len, 'x', pad);
    len += pad;
    memcpy(buf + len, "\"}", 3);
    return len + 2;
}

/* Build the Redis channel names prefix0 .. prefix(K-1). */
static char **channel_names(const char *prefix, uint32_t k)
{
    char **names = calloc(k, sizeof(*names));
    for (uint32_t i = 0; names && i < k; i++)
        if (asprintf(&names[i], "%s%u", prefix, i) < 0)
            names[i] = NULL;
    return names;
}

/* Free what channel_names built. */
static void free_names(char **names, uint32_t k)
{
    for (uint32_t i = 0; names && i < k; i++)
        free(names[i]);
    free(names);
}

/* Read `count` PUBLISH replies; counts those that reached no subscriber. Returns 0 or -1. */
static int read_replies(struct publisher *p, redisContext *c, unsigned count)
{
    for (unsigned i = 0; i < count; i++) {
        redisReply *r = NULL;
        if (redisGetReply(c, (void **)&r) != REDIS_OK || !r) {
            snprintf(p->error, sizeof(p->error), "redis: %.200s", c->errstr);
            return -1;
        }
        if (r->type == REDIS_REPLY_INTEGER && r->integer == 0)
            atomic_fetch_add(&p->no_receivers, 1);
        else if (r->type == REDIS_REPLY_ERROR)
            snprintf(p->error, sizeof(p->error), "redis: %.200s", r->str);
        freeReplyObject(r);
    }
    return p->error[0] ? -1 : 0;
}

/* Append every message due by `now` (at most one batch); returns how many were appended. */
static unsigned append_due(struct publisher *p, redisContext *c, char **names, char *buf,
                           size_t cap, uint64_t now, uint64_t *sent)
{
    /* message i is due at start + i / rate */
    uint64_t due = (uint64_t)(p->rate * (double)(now - p->start_ns) / 1e9) + 1;
    unsigned batch = 0;
    while (*sent < due && batch < PUB_MAX_BATCH) {
        size_t len = publisher_payload(buf, cap, now_ns(), *sent, p->payload_bytes);
        redisAppendCommand(c, "PUBLISH %s %b", names[*sent % p->channels], buf, len);
        (*sent)++;
        batch++;
    }
    return batch;
}

/* One tick of a transport: sends every message due at `now` (sent counts those sent so
 * far); 0 to go on, -1 to stop (p->error says why). */
typedef int (*pace_step)(struct publisher *p, void *transport, char **names, char *buf, size_t cap,
                         uint64_t now, uint64_t *sent);

/* The pacing loop of both transports: one step per tick from start_ns to end_ns, marking
 * where the warm-up ended and recording the worst lag behind the schedule. */
static void pace(struct publisher *p, pace_step step, void *transport, char **names)
{
    size_t cap = (size_t)p->payload_bytes + 128;
    char *buf = malloc(cap);
    uint64_t sent = 0, tick = p->start_ns;
    int warm_marked = 0;
    sleep_until_ns(p->start_ns);
    while (buf) {
        uint64_t now = now_ns();
        if (now >= p->end_ns || atomic_load(&p->stop))
            break;
        if (!warm_marked && now >= p->warm_end_ns) {
            atomic_store(&p->at_warm_end, sent);
            warm_marked = 1;
        }
        if (step(p, transport, names, buf, cap, now, &sent) != 0)
            break;
        atomic_store(&p->published, sent);
        uint64_t on_time = p->start_ns + (uint64_t)((double)sent * 1e9 / p->rate);
        uint64_t after = now_ns();
        if (after > on_time && after - on_time > p->max_lag_ns)
            p->max_lag_ns = after - on_time;
        tick += PUB_TICK_NS;
        if (tick < after)
            tick = after;
        sleep_until_ns(tick);
    }
    if (!warm_marked)
        atomic_store(&p->at_warm_end, sent);
    free(buf);
}

/* Redis: one pipelined batch of PUBLISH commands, then their replies. */
static int redis_step(struct publisher *p, void *transport, char **names, char *buf, size_t cap,
                      uint64_t now, uint64_t *sent)
{
    redisContext *c = transport;
    return read_replies(p, c, append_due(p, c, names, buf, cap, now, sent));
}

/* ---- HTTP POST publishing (Nchan) ---- */

/* Parse http://host:port/path into the publisher's HTTP target. Returns 0 or -1. */
int publisher_http_target(struct publisher *p, const char *url, uint32_t conns)
{
    if (strncmp(url, "http://", 7) != 0)
        return -1;
    const char *h = url + 7, *slash = strchr(h, '/'), *colon = strchr(h, ':');
    if (!slash || !colon || colon > slash || (size_t)(colon - h) >= sizeof(p->http_host) ||
        strlen(slash) >= sizeof(p->http_path))
        return -1;
    memcpy(p->http_host, h, (size_t)(colon - h));
    p->http_host[colon - h] = '\0';
    p->http_port = atoi(colon + 1);
    snprintf(p->http_path, sizeof(p->http_path), "%s", slash);
    p->http_conns = conns;
    p->http = 1;
    return p->http_port > 0 && p->http_port < 65536 ? 0 : -1;
}

/* One blocking keep-alive connection with its unread response bytes. */
struct http_conn {
    int fd;
    char *in;
    size_t in_len, in_cap;
    char *out;
    size_t out_len, out_cap;
    unsigned pending; /* requests written, responses not yet read */
};

/* Connect to the HTTP target; returns the socket or -1. */
static int http_connect(struct publisher *p)
{
    struct addrinfo hints = {.ai_family = AF_INET, .ai_socktype = SOCK_STREAM}, *ai = NULL;
    char port[16];
    snprintf(port, sizeof(port), "%d", p->http_port);
    if (getaddrinfo(p->http_host, port, &hints, &ai) != 0)
        return -1;
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd >= 0 && connect(fd, ai->ai_addr, ai->ai_addrlen) != 0) {
        close(fd);
        fd = -1;
    }
    freeaddrinfo(ai);
    int one = 1;
    if (fd >= 0)
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    return fd;
}

/* Append one POST of message n (stamped now) to c's output buffer. */
static int http_append(struct publisher *p, struct http_conn *c, char **names, char *body,
                       size_t cap, uint64_t n)
{
    size_t blen = publisher_payload(body, cap, now_ns(), n, p->payload_bytes);
    size_t need = c->out_len + blen + 512;
    if (need > c->out_cap) {
        char *grown = realloc(c->out, need * 2);
        if (!grown)
            return -1;
        c->out = grown;
        c->out_cap = need * 2;
    }
    int h = snprintf(c->out + c->out_len, c->out_cap - c->out_len,
                     "POST %s%s HTTP/1.1\r\nHost: %s:%d\r\nContent-Type: text/plain\r\n"
                     "Content-Length: %zu\r\n\r\n",
                     p->http_path, names[n % p->channels], p->http_host, p->http_port, blen);
    c->out_len += (size_t)h;
    memcpy(c->out + c->out_len, body, blen);
    c->out_len += blen;
    c->pending++;
    return 0;
}

/* Write c's whole output buffer (blocking). */
static int http_write_all(struct http_conn *c)
{
    size_t off = 0;
    while (off < c->out_len) {
        ssize_t n = write(c->fd, c->out + off, c->out_len - off);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return -1;
        off += (size_t)n;
    }
    c->out_len = 0;
    return 0;
}

/*
 * Consume one complete response at the start of c->in, if there is one: 1 done, 0 need more,
 * -1 not a 2xx answer. A response saying "active subscribers: 0" counts as no receiver.
 */
static int http_take_response(struct publisher *p, struct http_conn *c)
{
    if (!c->in || c->in_len == 0) /* nothing read yet (memmem wants a buffer) */
        return 0;
    char *end = memmem(c->in, c->in_len, "\r\n\r\n", 4);
    if (!end)
        return 0;
    size_t hlen = (size_t)(end - c->in) + 4;
    char *cl = memmem(c->in, hlen, "Content-Length:", 15);
    size_t blen = cl ? strtoul(cl + 15, NULL, 10) : 0;
    if (c->in_len < hlen + blen)
        return 0;
    if (c->in_len < 12 || c->in[9] != '2') {
        snprintf(p->error, sizeof(p->error), "publish answered: %.*s", (int)(hlen < 60 ? hlen : 60),
                 c->in);
        return -1;
    }
    if (memmem(c->in + hlen, blen, "active subscribers: 0\n", 22))
        atomic_fetch_add(&p->no_receivers, 1);
    memmove(c->in, c->in + hlen + blen, c->in_len - hlen - blen);
    c->in_len -= hlen + blen;
    c->pending--;
    return 1;
}

/* Read until every pending response on c has arrived. */
static int http_read_all(struct publisher *p, struct http_conn *c)
{
    while (c->pending) {
        int r;
        while (c->pending && (r = http_take_response(p, c)) == 1) {
        }
        if (!c->pending)
            break;
        if (r < 0)
            return -1;
        if (c->in_cap - c->in_len < 65536) {
            char *grown = realloc(c->in, c->in_cap + 131072);
            if (!grown)
                return -1;
            c->in = grown;
            c->in_cap += 131072;
        }
        ssize_t n = read(c->fd, c->in + c->in_len, c->in_cap - c->in_len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0) {
            snprintf(p->error, sizeof(p->error), "publish connection: %s",
                     n ? strerror(errno) : "closed by the server");
            return -1;
        }
        c->in_len += (size_t)n;
    }
    return 0;
}

/* HTTP (Nchan): the messages due, pipelined over the connections (a channel always on the
 * same one, so its order is kept), at most HTTP_MAX_BATCH per connection per tick; then
 * every answer. */
static int http_step(struct publisher *p, void *transport, char **names, char *body, size_t cap,
                     uint64_t now, uint64_t *sent)
{
    struct http_conn *hc = transport;
    uint64_t due = (uint64_t)(p->rate * (double)(now - p->start_ns) / 1e9) + 1;
    uint64_t limit = *sent + (uint64_t)HTTP_MAX_BATCH * p->http_conns;
    due = due < limit ? due : limit;
    for (; *sent < due; (*sent)++)
        if (http_append(p, &hc[*sent % p->channels % p->http_conns], names, body, cap, *sent) != 0)
            return -1;
    for (uint32_t i = 0; i < p->http_conns; i++)
        if (hc[i].out_len && http_write_all(&hc[i]) != 0) {
            snprintf(p->error, sizeof(p->error), "publish write: %s", strerror(errno));
            return -1;
        }
    for (uint32_t i = 0; i < p->http_conns; i++)
        if (http_read_all(p, &hc[i]) != 0)
            return -1;
    return 0;
}

/* Open the HTTP connections, publish, close them. */
static void publish_http(struct publisher *p, char **names)
{
    struct http_conn *hc = calloc(p->http_conns, sizeof(*hc));
    uint32_t opened = 0;
    for (; hc && opened < p->http_conns; opened++)
        if ((hc[opened].fd = http_connect(p)) < 0) {
            snprintf(p->error, sizeof(p->error), "publish connect %.100s:%d: %s", p->http_host,
                     p->http_port, strerror(errno));
            break;
        }
    if (hc && opened == p->http_conns && p->rate > 0)
        pace(p, http_step, hc, names);
    for (uint32_t i = 0; hc && i < opened; i++) {
        close(hc[i].fd);
        free(hc[i].in);
        free(hc[i].out);
    }
    free(hc);
}

/* Thread entry: connect to Redis, publish until end_ns, set done. */
void *publisher_main(void *arg)
{
    struct publisher *p = arg;
    if (p->http) {
        char **names = channel_names(p->prefix, p->channels);
        if (names)
            publish_http(p, names);
        else
            snprintf(p->error, sizeof(p->error), "out of memory");
        free_names(names, p->channels);
        p->cpu_seconds = thread_cpu_seconds();
        atomic_store(&p->done, 1);
        return NULL;
    }
    struct timeval tv = {.tv_sec = 5};
    redisContext *c = redisConnectWithTimeout(p->redis_host, p->redis_port, tv);
    char **names = channel_names(p->prefix, p->channels);
    if (!c || c->err)
        snprintf(p->error, sizeof(p->error), "redis connect %.100s:%d: %.100s", p->redis_host,
                 p->redis_port, c ? c->errstr : "out of memory");
    else if (!names)
        snprintf(p->error, sizeof(p->error), "out of memory");
    else if (p->rate > 0)
        pace(p, redis_step, c, names);
    free_names(names, p->channels);
    if (c)
        redisFree(c);
    p->cpu_seconds = thread_cpu_seconds();
    atomic_store(&p->done, 1);
    return NULL;
}
