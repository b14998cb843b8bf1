/*
 * hist_common.c: helpers shared by hist-publish and hist-resume (see hist_common.h).
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include "hist_common.h"

int hb_parse_hostport(const char *s, char *host, size_t hostcap, int *port)
{
    const char *colon = strrchr(s, ':');
    if (!colon || colon == s || (size_t)(colon - s) >= hostcap)
        return -1;
    memcpy(host, s, (size_t)(colon - s));
    host[colon - s] = '\0';
    char *end;
    long p = strtol(colon + 1, &end, 10);
    if (*end || p <= 0 || p > 65535)
        return -1;
    *port = (int)p;
    return 0;
}

int hb_tcp_connect(const char *host, int port, uint32_t src, int timeout_ms)
{
    struct sockaddr_in dst = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    if (inet_pton(AF_INET, host, &dst.sin_addr) != 1) {
        errno = EINVAL;
        return -1;
    }
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -1;
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    struct timeval tv = {.tv_sec = timeout_ms / 1000, .tv_usec = (timeout_ms % 1000) * 1000};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    if (src) {
        setsockopt(fd, IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, &one, sizeof one);
        struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(src)};
        if (bind(fd, (struct sockaddr *)&a, sizeof a) != 0)
            goto fail;
    }
    if (connect(fd, (struct sockaddr *)&dst, sizeof dst) != 0)
        goto fail;
    return fd;
fail:;
    int e = errno;
    close(fd);
    errno = e;
    return -1;
}

/* ---- HTTP ---- */

void hb_http_init(struct hb_http *h, const char *host, int port, int timeout_ms)
{
    memset(h, 0, sizeof *h);
    snprintf(h->host, sizeof h->host, "%s", host);
    h->port = port;
    h->fd = -1;
    h->timeout_ms = timeout_ms;
}

void hb_http_close(struct hb_http *h)
{
    if (h->fd >= 0)
        close(h->fd);
    h->fd = -1;
    h->len = 0;
}

static int send_all(int fd, const void *p, size_t n)
{
    const char *c = p;
    while (n) {
        ssize_t w = send(fd, c, n, MSG_NOSIGNAL);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            return -1;
        c += w;
        n -= (size_t)w;
    }
    return 0;
}

/* Reads more into h->buf; -1 on EOF, error or timeout. */
static int fill(struct hb_http *h)
{
    if (h->cap - h->len < 4096) {
        size_t cap = h->cap ? h->cap * 2 : 16384;
        char *b = realloc(h->buf, cap);
        if (!b)
            return -1;
        h->buf = b;
        h->cap = cap;
    }
    ssize_t n;
    do
        n = recv(h->fd, h->buf + h->len, h->cap - h->len - 1, 0);
    while (n < 0 && errno == EINTR);
    if (n <= 0)
        return -1;
    h->len += (size_t)n;
    h->buf[h->len] = '\0';
    return 0;
}

int hb_http_request(struct hb_http *h, const char *method, const char *path, const char *ctype,
                    const char *body, size_t blen, const char **rbody, size_t *rlen)
{
    if (h->fd < 0) {
        h->fd = hb_tcp_connect(h->host, h->port, 0, h->timeout_ms);
        h->len = 0;
        if (h->fd < 0)
            return -1;
    }
    char head[1024];
    int n = snprintf(head, sizeof head,
                     "%s %s HTTP/1.1\r\nHost: %s:%d\r\n%s%s%sContent-Length: %zu\r\n\r\n", method,
                     path, h->host, h->port, ctype ? "Content-Type: " : "", ctype ? ctype : "",
                     ctype ? "\r\n" : "", blen);
    if (n <= 0 || (size_t)n >= sizeof head)
        return -1;
    /* one send when it fits: no Nagle/delayed-ACK interplay with a split request */
    char one[8192];
    int rc;
    if ((size_t)n + blen <= sizeof one) {
        memcpy(one, head, (size_t)n);
        if (blen)
            memcpy(one + n, body, blen);
        rc = send_all(h->fd, one, (size_t)n + blen);
    } else {
        rc = send_all(h->fd, head, (size_t)n);
        if (rc == 0 && blen)
            rc = send_all(h->fd, body, blen);
    }
    if (rc < 0)
        goto broken;
    char *end;
    while (!(h->buf && (end = memmem(h->buf, h->len, "\r\n\r\n", 4))))
        if (fill(h) < 0)
            goto broken;
    size_t hlen = (size_t)(end - h->buf) + 4;
    int status = 0;
    if (sscanf(h->buf, "HTTP/1.%*d %d", &status) != 1)
        goto broken;
    size_t clen = 0;
    int closing = 0;
    for (char *line = strstr(h->buf, "\r\n") + 2; line < end; line = strstr(line, "\r\n") + 2) {
        if (strncasecmp(line, "content-length:", 15) == 0)
            clen = strtoul(line + 15, NULL, 10);
        else if (strncasecmp(line, "connection:", 11) == 0 && strcasestr(line, "close") &&
                 strcasestr(line, "close") < strstr(line, "\r\n"))
            closing = 1;
    }
    while (h->len < hlen + clen)
        if (fill(h) < 0)
            goto broken;
    /* hand the body out in place; it is moved away at the next call */
    free(h->body);
    h->body = malloc(clen + 1);
    if (!h->body)
        goto broken;
    memcpy(h->body, h->buf + hlen, clen);
    h->body[clen] = '\0';
    memmove(h->buf, h->buf + hlen + clen, h->len - hlen - clen);
    h->len -= hlen + clen;
    if (rbody)
        *rbody = h->body;
    if (rlen)
        *rlen = clen;
    if (closing)
        hb_http_close(h);
    return status;
broken:
    hb_http_close(h);
    return -1;
}

void hb_http_free(struct hb_http *h)
{
    hb_http_close(h);
    free(h->buf);
    free(h->body);
    h->buf = h->body = NULL;
    h->cap = 0;
}

char *hb_metrics_fetch(const char *host, int port)
{
    struct hb_http h;
    hb_http_init(&h, host, port, 5000);
    const char *body;
    size_t len;
    int st = hb_http_request(&h, "GET", "/metrics", NULL, NULL, 0, &body, &len);
    char *out = st == 200 ? strndup(body, len) : NULL;
    hb_http_free(&h);
    return out;
}

double hb_metric(const char *text, const char *name)
{
    size_t n = strlen(name);
    for (const char *p = text; p && *p; p = strchr(p, '\n'), p = p ? p + 1 : NULL) {
        if (strncmp(p, name, n) == 0 && p[n] == ' ')
            return strtod(p + n + 1, NULL);
    }
    return -1;
}

/* ---- WebSocket (blocking, one connection) ---- */

int hb_ws_open(struct hb_ws *w, const char *host, int port, int timeout_ms)
{
    memset(w, 0, sizeof *w);
    w->mask = 0x9e3779b9u;
    w->fd = hb_tcp_connect(host, port, 0, timeout_ms);
    if (w->fd < 0)
        return -1;
    struct ws_url u;
    snprintf(u.host, sizeof u.host, "%s", host);
    snprintf(u.port, sizeof u.port, "%d", port);
    snprintf(u.path, sizeof u.path, "/ws");
    char req[1024];
    int n = ws_handshake_request(&u, NULL, 0, req, sizeof req);
    if (n < 0 || send_all(w->fd, req, (size_t)n) < 0)
        goto fail;
    char resp[4096];
    size_t got = 0;
    for (;;) {
        ssize_t r = recv(w->fd, resp + got, sizeof resp - 1 - got, 0);
        if (r <= 0)
            goto fail;
        got += (size_t)r;
        long hl = ws_handshake_response(resp, got);
        if (hl < 0)
            goto fail;
        if (hl > 0) {
            w->cap = 1 << 20;
            w->buf = malloc(w->cap);
            if (!w->buf)
                goto fail;
            w->len = got - (size_t)hl;
            memcpy(w->buf, resp + hl, w->len);
            return 0;
        }
        if (got >= sizeof resp - 1)
            goto fail;
    }
fail:
    close(w->fd);
    w->fd = -1;
    return -1;
}

int hb_ws_send_text(struct hb_ws *w, const char *text, size_t len)
{
    uint8_t frame[4096];
    if (len + 14 > sizeof frame)
        return -1;
    w->mask = w->mask * 1103515245u + 12345u;
    size_t n = ws_frame_encode(WS_OP_TEXT, text, len, w->mask, frame);
    return send_all(w->fd, frame, n);
}

/* Hands every complete buffered frame to fn; the count, or -1 on close or a bad frame. */
static int ws_parse_buffered(struct hb_ws *w,
                             void (*fn)(void *arg, const char *msg, size_t len, uint64_t now),
                             void *arg)
{
    int handled = 0;
    size_t off = 0;
    uint64_t now = now_ns();
    for (;;) {
        struct ws_frame f;
        size_t used;
        int st = ws_frame_parse(w->buf + off, w->len - off, &f, &used);
        if (st == WS_PARSE_ERROR || (st == WS_PARSE_OK && f.opcode == WS_OP_CLOSE))
            return -1;
        if (st == WS_PARSE_MORE)
            break;
        if (f.opcode == WS_OP_TEXT && f.fin)
            fn(arg, (const char *)f.payload, f.len, now);
        handled++;
        off += used;
    }
    memmove(w->buf, w->buf + off, w->len - off);
    w->len -= off;
    return handled;
}

int hb_ws_poll(struct hb_ws *w, int timeout_ms,
               void (*fn)(void *arg, const char *msg, size_t len, uint64_t now), void *arg)
{
    struct pollfd p = {.fd = w->fd, .events = POLLIN};
    int pr = poll(&p, 1, timeout_ms);
    if (pr < 0)
        return errno == EINTR ? 0 : -1;
    if (pr == 0)
        return 0;
    if (w->cap - w->len < 65536) {
        uint8_t *b = realloc(w->buf, w->cap * 2);
        if (!b)
            return -1;
        w->buf = b;
        w->cap *= 2;
    }
    ssize_t n = recv(w->fd, w->buf + w->len, w->cap - w->len, MSG_DONTWAIT);
    if (n == 0 || (n < 0 && errno != EAGAIN && errno != EINTR))
        return -1;
    if (n > 0)
        w->len += (size_t)n;
    return ws_parse_buffered(w, fn, arg);
}

void hb_ws_close(struct hb_ws *w)
{
    if (w->fd >= 0)
        close(w->fd);
    w->fd = -1;
    free(w->buf);
    w->buf = NULL;
}

/* ---- numbers ---- */

void hb_hist_merge(struct hist *dst, const struct hist *src)
{
    dst->count += src->count;
    if (src->max > dst->max)
        dst->max = src->max;
    for (unsigned i = 0; i < HIST_BUCKETS; i++)
        dst->buckets[i] += src->buckets[i];
}

double hb_ms(const struct hist *h, double q)
{
    return (double)hist_percentile(h, q) / 1e6;
}

double hb_max_ms(const struct hist *h)
{
    return (double)h->max / 1e6;
}

int hb_json_u64(const char *s, size_t len, const char *key, uint64_t *out)
{
    char pat[80];
    int n = snprintf(pat, sizeof pat, "\"%s\":", key);
    const char *p = memmem(s, len, pat, (size_t)n);
    if (!p)
        return -1;
    p += n;
    const char *end = s + len;
    if (p >= end || *p < '0' || *p > '9')
        return -1;
    uint64_t v = 0;
    while (p < end && *p >= '0' && *p <= '9')
        v = v * 10 + (uint64_t)(*p++ - '0');
    *out = v;
    return 0;
}

long hb_raise_nofile(void)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) != 0)
        return -1;
    rl.rlim_cur = rl.rlim_max;
    setrlimit(RLIMIT_NOFILE, &rl);
    getrlimit(RLIMIT_NOFILE, &rl);
    return (long)rl.rlim_cur;
}
