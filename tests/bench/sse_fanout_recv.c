/* sse_fanout_recv: the receiving side of tests/bench/sse_fanout.py. One single-threaded epoll
 * process opens --ws WebSocket clients (subscribe to --channel) and --sse SSE clients
 * (GET /v1/channels/<channel>/stream, Accept: text/event-stream) to 127.0.0.1:--port, and
 * counts what arrives without parsing JSON: a message is one occurrence of the marker
 * `"bn":` that the publisher puts once in every payload (the same count for both transports;
 * for SSE it also counts the blank lines that end events). A connection is "ready" once it
 * has seen the gateway's `subscribed` answer (the WS reply op, the SSE event). Counters live in
 * a shared file (--counters, 16 little-endian uint64) that the script reads while it runs:
 *   0 ws ready     1 sse ready     2 ws messages   3 sse messages
 *   4 ws closed    5 sse closed    6 connect errors 7 sse events (blank lines after ready)
 *   8 ws bytes     9 sse bytes     10 reads         11 sse comments (heartbeat lines)
 * Runs until SIGTERM or SIGINT. Built by sse_fanout.py with `cc -O2`; no dependencies.
 *
 *   sse_fanout_recv --port P --channel C --ws N --sse N --counters FILE [--sources K]
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <unistd.h>

#define MARK     "\"bn\":"
#define MARK_LEN 5
#define PRE_MAX  8192 /* bytes kept before `subscribed` (the handshake and the first answer) */
#define BUF_CAP  (256 * 1024)
#define INFLIGHT 200 /* connections being opened at once */

enum {
    C_WS_READY,
    C_SSE_READY,
    C_WS_MSG,
    C_SSE_MSG,
    C_WS_CLOSED,
    C_SSE_CLOSED,
    C_ERR,
    C_SSE_EVENTS,
    C_WS_BYTES,
    C_SSE_BYTES,
    C_READS,
    C_SSE_COMMENTS,
    C_N = 16
};

struct conn {
    int fd;
    uint8_t sse;
    uint8_t state; /* 0 connecting, 1 waiting for the answer, 2 ready, 3 closed */
    uint8_t tail_len;
    char tail[MARK_LEN]; /* the last bytes of the previous read: a marker split over reads */
    char *pre;           /* before ready */
    uint32_t pre_len;
};

static volatile sig_atomic_t stop;
static volatile uint64_t *ctr;
static struct conn *conns;
static uint32_t n_ws, n_sse, n_total, next_open, opening;
static int epfd, port, sources = 1;
static const char *channel = "bench";
static char *buf;

static void on_signal(int sig)
{
    (void)sig;
    stop = 1;
}

static size_t count(const char *p, size_t n, const char *needle, size_t k)
{
    size_t c = 0;
    const char *end = p + n;
    while (p < end) {
        const char *q = memmem(p, (size_t)(end - p), needle, k);
        if (!q)
            break;
        c++;
        p = q + k;
    }
    return c;
}

static void close_conn(struct conn *c, int counted)
{
    if (c->state == 3)
        return;
    if (c->state < 2)
        opening--;
    epoll_ctl(epfd, EPOLL_CTL_DEL, c->fd, NULL);
    close(c->fd);
    free(c->pre);
    c->pre = NULL;
    if (counted)
        ctr[c->sse ? C_SSE_CLOSED : C_WS_CLOSED]++;
    else
        ctr[C_ERR]++;
    c->state = 3;
}

static void send_all(struct conn *c, const char *p, size_t n)
{
    while (n) {
        ssize_t w = write(c->fd, p, n);
        if (w <= 0) {
            close_conn(c, 0);
            return;
        }
        p += w;
        n -= (size_t)w;
    }
}

static void send_request(struct conn *c)
{
    char req[512];
    int n;
    if (c->sse)
        n = snprintf(req, sizeof req,
                     "GET /v1/channels/%s/stream HTTP/1.1\r\nHost: 127.0.0.1:%d\r\n"
                     "Accept: text/event-stream\r\n\r\n",
                     channel, port);
    else
        n = snprintf(req, sizeof req,
                     "GET /ws HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nUpgrade: websocket\r\n"
                     "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                     "Sec-WebSocket-Version: 13\r\n\r\n",
                     port);
    send_all(c, req, (size_t)n);
}

/* The subscribe op, one masked text frame (mask 0: the payload is its own masked form). */
static void send_subscribe(struct conn *c)
{
    char body[300], frame[310];
    int n = snprintf(body, sizeof body, "{\"op\":\"subscribe\",\"channel\":\"%s\"}", channel);
    frame[0] = (char)0x81;
    frame[1] = (char)(0x80 | n);
    memset(frame + 2, 0, 4);
    memcpy(frame + 6, body, (size_t)n);
    send_all(c, frame, (size_t)n + 6);
}

static void count_ready(struct conn *c, const char *p, size_t n)
{
    ctr[c->sse ? C_SSE_BYTES : C_WS_BYTES] += n;
    /* a marker split over two reads: the tail (at most MARK_LEN - 1 bytes) and as many of
     * the new ones; every marker found there crosses the boundary, so none is counted twice */
    char tmp[2 * (MARK_LEN - 1)];
    size_t head = n < MARK_LEN - 1 ? n : MARK_LEN - 1;
    memcpy(tmp, c->tail, c->tail_len);
    memcpy(tmp + c->tail_len, p, head);
    size_t msgs = count(tmp, c->tail_len + head, MARK, MARK_LEN) + count(p, n, MARK, MARK_LEN);
    ctr[c->sse ? C_SSE_MSG : C_WS_MSG] += msgs;
    if (c->sse) {
        size_t ev = (c->tail_len && c->tail[c->tail_len - 1] == '\n' && p[0] == '\n') +
                    count(p, n, "\n\n", 2);
        ctr[C_SSE_EVENTS] += ev;
        ctr[C_SSE_COMMENTS] += count(p, n, "\n:", 2);
    }
    size_t keep = n < MARK_LEN - 1 ? n : MARK_LEN - 1;
    if (keep < MARK_LEN - 1 && c->tail_len) { /* a short read: keep what it extends */
        char t[2 * MARK_LEN];
        memcpy(t, c->tail, c->tail_len);
        memcpy(t + c->tail_len, p, n);
        size_t all = c->tail_len + n, k = all < MARK_LEN - 1 ? all : MARK_LEN - 1;
        memcpy(c->tail, t + all - k, k);
        c->tail_len = (uint8_t)k;
    } else {
        memcpy(c->tail, p + n - keep, keep);
        c->tail_len = (uint8_t)keep;
    }
}

static void on_data(struct conn *c, const char *p, size_t n)
{
    if (c->state == 2) {
        count_ready(c, p, n);
        return;
    }
    if (!c->pre && !(c->pre = malloc(PRE_MAX))) {
        close_conn(c, 0);
        return;
    }
    size_t take = n < PRE_MAX - c->pre_len ? n : PRE_MAX - c->pre_len;
    memcpy(c->pre + c->pre_len, p, take);
    c->pre_len += (uint32_t)take;
    char *hend = memmem(c->pre, c->pre_len, "\r\n\r\n", 4);
    if (!hend) {
        if (c->pre_len == PRE_MAX)
            close_conn(c, 0);
        return;
    }
    if (memcmp(c->pre, c->sse ? "HTTP/1.1 200" : "HTTP/1.1 101", 12) != 0) {
        fprintf(stderr, "sse_fanout_recv: %s answered: %.*s\n", c->sse ? "SSE" : "WS",
                (int)(hend - c->pre), c->pre);
        close_conn(c, 0);
        return;
    }
    if (!c->sse && c->state == 0) { /* upgraded: now subscribe */
        c->state = 1;
        send_subscribe(c);
        if (c->state == 3)
            return;
    }
    const char *want = c->sse ? "event: subscribed" : "\"subscribed\"";
    char *body = hend + 4;
    char *at = memmem(body, (size_t)(c->pre + c->pre_len - body), want, strlen(want));
    if (!at) {
        if (c->pre_len == PRE_MAX)
            close_conn(c, 0);
        return;
    }
    /* ready: what follows the answer's end is counted */
    char *end = c->sse ? memmem(at, (size_t)(c->pre + c->pre_len - at), "\n\n", 2) : at;
    if (!end)
        return;
    c->state = 2;
    opening--;
    ctr[c->sse ? C_SSE_READY : C_WS_READY]++;
    size_t rest = (size_t)(c->pre + c->pre_len - end);
    size_t skip = 2; /* SSE: the blank line; WS: up to the answer's closing brace */
    if (!c->sse) {
        char *brace = memchr(end, '}', rest);
        skip = brace ? (size_t)(brace - end) + 1 : rest;
    }
    char *pre = c->pre;
    size_t from = (size_t)(end - pre) + skip;
    size_t left = c->pre_len - from;
    c->pre = NULL;
    if (left)
        count_ready(c, pre + from, left);
    if (take < n)
        count_ready(c, p + take, n - take);
    free(pre);
}

static void open_more(void)
{
    while (next_open < n_total && opening < INFLIGHT) {
        struct conn *c = &conns[next_open];
        c->sse = next_open >= n_ws;
        next_open++;
        opening++;
        c->fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
        if (c->fd < 0) {
            c->state = 3;
            opening--;
            ctr[C_ERR]++;
            continue;
        }
        struct sockaddr_in src = {.sin_family = AF_INET};
        src.sin_addr.s_addr = htonl(0x7f000001u + (next_open % (uint32_t)sources));
        if (sources > 1)
            bind(c->fd, (struct sockaddr *)&src, sizeof src);
        struct sockaddr_in dst = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
        dst.sin_addr.s_addr = htonl(0x7f000001u);
        int one = 1;
        setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        struct epoll_event ev = {.events = EPOLLIN | EPOLLOUT | EPOLLRDHUP,
                                 .data.u32 = (uint32_t)(c - conns)};
        epoll_ctl(epfd, EPOLL_CTL_ADD, c->fd, &ev);
        if (connect(c->fd, (struct sockaddr *)&dst, sizeof dst) < 0 && errno != EINPROGRESS)
            close_conn(c, 0);
    }
}

int main(int argc, char **argv)
{
    const char *path = NULL;
    for (int i = 1; i + 1 < argc; i += 2) {
        if (!strcmp(argv[i], "--port"))
            port = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--channel"))
            channel = argv[i + 1];
        else if (!strcmp(argv[i], "--ws"))
            n_ws = (uint32_t)atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--sse"))
            n_sse = (uint32_t)atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--counters"))
            path = argv[i + 1];
        else if (!strcmp(argv[i], "--sources"))
            sources = atoi(argv[i + 1]) > 0 ? atoi(argv[i + 1]) : 1;
    }
    if (!port || !path || strlen(channel) > 200) {
        fprintf(stderr, "usage: sse_fanout_recv --port P --channel C --ws N --sse N "
                        "--counters FILE [--sources K]\n");
        return 2;
    }
    int fd = open(path, O_RDWR | O_CREAT, 0600);
    if (fd < 0 || ftruncate(fd, C_N * 8) < 0)
        return perror(path), 2;
    ctr = mmap(NULL, C_N * 8, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (ctr == MAP_FAILED)
        return perror("mmap"), 2;
    close(fd);
    signal(SIGPIPE, SIG_IGN);
    signal(SIGTERM, on_signal);
    signal(SIGINT, on_signal);
    n_total = n_ws + n_sse;
    conns = calloc(n_total ? n_total : 1, sizeof *conns);
    buf = malloc(BUF_CAP);
    epfd = epoll_create1(0);
    if (!conns || !buf || epfd < 0)
        return 2;
    struct epoll_event evs[512];
    while (!stop) {
        open_more();
        int k = epoll_wait(epfd, evs, 512, 100);
        for (int i = 0; i < k; i++) {
            struct conn *c = &conns[evs[i].data.u32];
            if (c->state == 3)
                continue;
            if (c->state == 0 && (evs[i].events & EPOLLOUT) && !c->pre_len) {
                int err = 0;
                socklen_t l = sizeof err;
                getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &l);
                if (err) {
                    close_conn(c, 0);
                    continue;
                }
                struct epoll_event ev = {.events = EPOLLIN | EPOLLRDHUP,
                                         .data.u32 = evs[i].data.u32};
                epoll_ctl(epfd, EPOLL_CTL_MOD, c->fd, &ev);
                if (c->sse)
                    c->state = 1;
                send_request(c);
                if (c->state == 3)
                    continue;
                if (!c->sse)
                    c->pre_len = 0; /* state 0 still: the 101 comes next */
            }
            if (evs[i].events & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR)) {
                for (;;) {
                    ssize_t r = read(c->fd, buf, BUF_CAP);
                    if (r > 0) {
                        ctr[C_READS]++;
                        on_data(c, buf, (size_t)r);
                        if (c->state == 3 || r < BUF_CAP)
                            break;
                        continue;
                    }
                    if (r < 0 && (errno == EAGAIN || errno == EINTR))
                        break;
                    close_conn(c, c->state == 2);
                    break;
                }
            }
        }
    }
    return 0;
}
