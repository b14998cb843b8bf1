/*
 * hist-resume: a resume storm against Herald's history.
 *
 * 1. Publishes M messages on each of K channels through the gateway's REST API (P threads,
 *    each owning some channels) and remembers every channel's head (the last seq answered).
 *    With --warm, one extra WebSocket client subscribes to every channel first, so the
 *    gateway's recent cache holds the messages; without it (cold) the gateway has never
 *    seen the channels and must ask PostgreSQL.
 * 2. Opens C WebSocket connections (epoll, non-blocking, from 127.0.0.1..S) and waits until
 *    every upgrade is done.
 * 3. Reads /metrics, then sends on every connection, at once,
 *    {"op":"subscribe","channel":<prefix><i % K>,"since":head - 1 - (i / K) % W}
 *    and measures from the first send to the last `subscribed` reply. Each connection must
 *    get exactly seq since+1..head, in order, then subscribed with recovered:true and
 *    replayed = head - since. The sends go out in batches of 256 with a non-blocking
 *    epoll_wait between batches, so early replies are timed when they come.
 *    --plain: the same storm without `since` (a baseline: subscribed, no replay expected).
 * 4. Reads /metrics again (after a short settle) and reports the deltas of
 *    herald_db_queries_total and herald_resumes_recovered_total / _failed_total.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <getopt.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include "hist_common.h"

struct opts {
    char host[64];
    int port;
    uint32_t connections, channels, messages, window, source_addrs, publishers, concurrency;
    const char *prefix;
    double timeout, pause;
    int warm, plain, json, gateway_pid;
};

static struct opts O = {.connections = 10000,
                        .channels = 10,
                        .messages = 100,
                        .window = 20,
                        .source_addrs = 16,
                        .publishers = 4,
                        .concurrency = 500,
                        .prefix = "hb-resume-",
                        .timeout = 60};

enum { S_NEW, S_CONNECTING, S_HANDSHAKE, S_OPEN, S_WAITING, S_DONE, S_FAILED };

struct rconn {
    int fd;
    uint8_t state;
    uint8_t want_out;
    uint32_t channel;
    uint64_t since, next; /* next: the seq expected next */
    uint64_t sent_ns;
    uint8_t *in;
    uint32_t in_len;
    uint8_t *out;
    uint32_t out_len;
};

static struct rconn *conns;
static uint64_t *heads;
static int epfd;
static struct sockaddr_in dst;
static char handshake[512];
static int handshake_len;
static uint32_t opened, in_progress, open_failed, done, failed, next_to_open;
static uint64_t messages_received, wrong_seq, wrong_reply, error_replies, closed_early;
static struct hist reply_lat;
static uint64_t t_first_send, t_last_reply;
static char first_error[256];

__attribute__((format(printf, 1, 2))) static void note(const char *fmt, ...)
{
    if (first_error[0])
        return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(first_error, sizeof first_error, fmt, ap);
    va_end(ap);
}

static void channel_name(char *buf, size_t cap, uint32_t k)
{
    snprintf(buf, cap, "%s%u", O.prefix, k);
}

/* ---- phase 1: publish through REST ---- */

struct pubber {
    pthread_t th;
    uint32_t id;
    uint64_t errors;
};

static void *pub_main(void *arg)
{
    struct pubber *p = arg;
    struct hb_http h;
    hb_http_init(&h, O.host, O.port, 10000);
    char path[320], chan[256], data[128];
    for (uint32_t k = p->id; k < O.channels; k += O.publishers) {
        channel_name(chan, sizeof chan, k);
        snprintf(path, sizeof path, "/v1/channels/%s/messages", chan);
        for (uint32_t m = 0; m < O.messages; m++) {
            int n = snprintf(data, sizeof data, "{\"k\":%u,\"m\":%u,\"p\":\"resume-storm\"}", k, m);
            const char *body;
            size_t blen;
            int st = hb_http_request(&h, "POST", path, "application/json", data, (size_t)n, &body,
                                     &blen);
            uint64_t seq;
            if (st != 201 || hb_json_u64(body, blen, "seq", &seq) < 0) {
                p->errors++;
                continue;
            }
            if (seq > heads[k])
                heads[k] = seq; /* only this thread writes channel k */
        }
    }
    hb_http_free(&h);
    return NULL;
}

/* ---- connections ---- */

static void set_out(struct rconn *c, int on)
{
    if (c->want_out == on)
        return;
    struct epoll_event ev = {.events = EPOLLIN | (on ? EPOLLOUT : 0),
                             .data.u32 = (uint32_t)(c - conns)};
    epoll_ctl(epfd, EPOLL_CTL_MOD, c->fd, &ev);
    c->want_out = (uint8_t)on;
}

static void conn_fail(struct rconn *c, const char *why)
{
    if (c->state == S_FAILED || c->state == S_DONE)
        return;
    if (c->state == S_CONNECTING || c->state == S_HANDSHAKE) {
        in_progress--;
        open_failed++;
    } else {
        failed++;
    }
    note("connection %u: %s", (uint32_t)(c - conns), why);
    close(c->fd);
    c->fd = -1;
    free(c->in);
    free(c->out);
    c->in = c->out = NULL;
    c->in_len = c->out_len = 0;
    c->state = S_FAILED;
}

static int send_bytes(struct rconn *c, const void *data, size_t len)
{
    const uint8_t *p = data;
    if (!c->out_len) {
        ssize_t n = send(c->fd, p, len, MSG_NOSIGNAL);
        if (n < 0 && errno != EAGAIN) {
            conn_fail(c, strerror(errno));
            return -1;
        }
        n = n < 0 ? 0 : n;
        p += n;
        len -= (size_t)n;
        if (!len)
            return 0;
    }
    uint8_t *g = realloc(c->out, c->out_len + len);
    if (!g) {
        conn_fail(c, "out of memory");
        return -1;
    }
    memcpy(g + c->out_len, p, len);
    c->out = g;
    c->out_len += (uint32_t)len;
    set_out(c, 1);
    return 0;
}

static void open_conn(uint32_t i)
{
    struct rconn *c = &conns[i];
    c->fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (c->fd < 0) {
        note("socket: %s", strerror(errno));
        open_failed++;
        c->state = S_FAILED;
        return;
    }
    c->state = S_CONNECTING;
    in_progress++;
    int one = 1;
    setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    struct epoll_event ev = {.events = EPOLLIN | EPOLLOUT, .data.u32 = i};
    c->want_out = 1;
    epoll_ctl(epfd, EPOLL_CTL_ADD, c->fd, &ev);
    if (O.source_addrs) {
        setsockopt(c->fd, IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, &one, sizeof one);
        struct sockaddr_in src = {.sin_family = AF_INET,
                                  .sin_addr.s_addr = htonl(0x7f000001u + i % O.source_addrs)};
        if (bind(c->fd, (struct sockaddr *)&src, sizeof src) != 0) {
            conn_fail(c, strerror(errno));
            return;
        }
    }
    if (connect(c->fd, (struct sockaddr *)&dst, sizeof dst) != 0 && errno != EINPROGRESS)
        conn_fail(c, strerror(errno));
}

/* One server text frame on connection c. */
static void on_text(struct rconn *c, const char *msg, size_t len, uint64_t now)
{
    if (c->state != S_WAITING) {
        wrong_reply++;
        note("connection %u: unexpected frame %.*s", (uint32_t)(c - conns),
             (int)(len < 120 ? len : 120), msg);
        return;
    }
    uint64_t seq = 0;
    if (len > 14 && memcmp(msg, "{\"op\":\"message\"", 15) == 0) {
        messages_received++;
        if (hb_json_u64(msg, len, "seq", &seq) < 0 || seq != c->next) {
            if (!wrong_seq)
                note("connection %u: seq %llu, expected %llu", (uint32_t)(c - conns),
                     (unsigned long long)seq, (unsigned long long)c->next);
            wrong_seq++;
        }
        c->next = seq + 1;
        return;
    }
    if (len > 17 && memcmp(msg, "{\"op\":\"subscribed\"", 18) == 0) {
        uint64_t replayed = 0, head = heads[c->channel];
        int good = O.plain ? memmem(msg, len, "\"recovered\":false", 17) && c->next == head + 1 &&
                                 hb_json_u64(msg, len, "seq", &seq) == 0 && seq == head
                           : memmem(msg, len, "\"recovered\":true", 16) &&
                                 hb_json_u64(msg, len, "replayed", &replayed) == 0 &&
                                 replayed == head - c->since && c->next == head + 1 &&
                                 hb_json_u64(msg, len, "seq", &seq) == 0 && seq == head;
        if (!good) {
            wrong_reply++;
            note("connection %u (since %llu, head %llu, next %llu): %.*s", (uint32_t)(c - conns),
                 (unsigned long long)c->since, (unsigned long long)head,
                 (unsigned long long)c->next, (int)(len < 160 ? len : 160), msg);
        }
        c->state = S_DONE;
        done++;
        hist_add(&reply_lat, now - c->sent_ns);
        t_last_reply = now;
        return;
    }
    if (memmem(msg, len, "\"op\":\"error\"", 12))
        error_replies++;
    wrong_reply++;
    note("connection %u: %.*s", (uint32_t)(c - conns), (int)(len < 160 ? len : 160), msg);
}

/* Parses every complete frame in buf; returns bytes consumed or -1 (connection failed). */
static long parse(struct rconn *c, const uint8_t *buf, size_t len, uint64_t now)
{
    size_t off = 0;
    for (;;) {
        struct ws_frame f;
        size_t used;
        int st = ws_frame_parse(buf + off, len - off, &f, &used);
        if (st == WS_PARSE_MORE)
            return (long)off;
        if (st == WS_PARSE_ERROR) {
            conn_fail(c, "bad frame");
            return -1;
        }
        if (f.opcode == WS_OP_CLOSE) {
            closed_early++;
            conn_fail(c, "closed by the server");
            return -1;
        }
        if (f.opcode == WS_OP_TEXT && f.fin)
            on_text(c, (const char *)f.payload, f.len, now);
        else if (f.opcode != WS_OP_PING)
            wrong_reply++;
        off += used;
    }
}

static uint8_t scratch[1 << 18];

static void on_readable(struct rconn *c)
{
    for (;;) {
        size_t have = c->in_len;
        if (have)
            memcpy(scratch, c->in, have);
        ssize_t n = recv(c->fd, scratch + have, sizeof scratch - have, 0);
        if (n < 0 && (errno == EAGAIN || errno == EINTR))
            return;
        if (n <= 0) {
            if (c->state != S_DONE || n < 0) {
                closed_early++;
                conn_fail(c, n == 0 ? "EOF" : strerror(errno));
            }
            return;
        }
        uint64_t now = now_ns();
        size_t len = have + (size_t)n;
        size_t off = 0;
        if (c->state == S_HANDSHAKE) {
            long hl = ws_handshake_response((const char *)scratch, len);
            if (hl < 0) {
                conn_fail(c, "upgrade refused");
                return;
            }
            if (hl == 0) {
                off = 0;
                goto keep;
            }
            c->state = S_OPEN;
            in_progress--;
            opened++;
            off = (size_t)hl;
        }
        long used = parse(c, scratch + off, len - off, now);
        if (used < 0)
            return;
        off += (size_t)used;
    keep:
        free(c->in);
        c->in = NULL;
        c->in_len = 0;
        if (off < len) {
            c->in = malloc(len - off);
            if (!c->in) {
                conn_fail(c, "out of memory");
                return;
            }
            memcpy(c->in, scratch + off, len - off);
            c->in_len = (uint32_t)(len - off);
        }
        if ((size_t)n < sizeof scratch - have)
            return;
    }
}

static void on_event(struct epoll_event *ev)
{
    struct rconn *c = &conns[ev->data.u32];
    if (c->state == S_FAILED)
        return;
    if (c->state == S_CONNECTING && (ev->events & (EPOLLOUT | EPOLLERR | EPOLLHUP))) {
        int err = 0;
        socklen_t l = sizeof err;
        getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &l);
        if (err) {
            conn_fail(c, strerror(err));
            return;
        }
        c->state = S_HANDSHAKE;
        set_out(c, 0);
        send_bytes(c, handshake, (size_t)handshake_len);
        return;
    }
    if ((ev->events & EPOLLOUT) && c->out_len) {
        ssize_t n = send(c->fd, c->out, c->out_len, MSG_NOSIGNAL);
        if (n < 0 && errno != EAGAIN) {
            conn_fail(c, strerror(errno));
            return;
        }
        if (n > 0) {
            memmove(c->out, c->out + n, c->out_len - (size_t)n);
            c->out_len -= (uint32_t)n;
        }
        if (!c->out_len)
            set_out(c, 0);
    }
    if (ev->events & (EPOLLIN | EPOLLHUP | EPOLLERR))
        on_readable(c);
}

static void poll_once(int timeout_ms)
{
    struct epoll_event evs[512];
    int n = epoll_wait(epfd, evs, 512, timeout_ms);
    for (int i = 0; i < n; i++)
        on_event(&evs[i]);
}

static void usage(void)
{
    fprintf(stderr,
            "usage: hist-resume --gateway HOST:PORT [options]\n"
            "  --connections C      resuming WebSocket clients (default 10000)\n"
            "  --channels K         channels <prefix>0..K-1 (default 10)\n"
            "  --messages M         messages published per channel first (default 100)\n"
            "  --window W           since = head-1 .. head-W (default 20)\n"
            "  --source-addrs S     bind clients round-robin to 127.0.0.1..S (default 16, 0: no)\n"
            "  --publishers P       REST publisher threads for phase 1 (default 4)\n"
            "  --connect-concurrency N  connects in flight at once (default 500)\n"
            "  --prefix P           channel name prefix (default hb-resume-)\n"
            "  --warm               one live subscriber on every channel first (recent cache)\n"
            "  --plain              subscribe without since (baseline: nothing replayed)\n"
            "  --timeout S          bound of each phase (default 60)\n"
            "  --gateway-pid PID    report the gateway's CPU seconds during the storm\n"
            "  --pause S            wait S seconds between connecting and the storm (default 0)\n"
            "  --json               one JSON object on stdout\n");
}

/* {"name":delta,...} of every unlabelled herald_*_total counter that moved. */
static void print_deltas(const char *a, const char *b)
{
    printf(",\"metric_deltas\":{");
    int first = 1;
    for (const char *p = b; p && *p; p = strchr(p, '\n'), p = p ? p + 1 : NULL) {
        char name[128];
        double v;
        if (strncmp(p, "herald_", 7) != 0 || sscanf(p, "%127s %lf", name, &v) != 2 ||
            !strstr(name, "_total"))
            continue;
        double v0 = a ? hb_metric(a, name) : -1;
        if (v0 >= 0 && v != v0) {
            printf("%s\"%s\":%.0f", first ? "" : ",", name, v - v0);
            first = 0;
        }
    }
    printf("}");
}

static double metric_of(const char *text, const char *name)
{
    return text ? hb_metric(text, name) : -1;
}

int main(int argc, char **argv)
{
    static const struct option lo[] = {{"gateway", 1, 0, 'g'},
                                       {"connections", 1, 0, 'c'},
                                       {"channels", 1, 0, 'k'},
                                       {"messages", 1, 0, 'm'},
                                       {"window", 1, 0, 'W'},
                                       {"source-addrs", 1, 0, 's'},
                                       {"publishers", 1, 0, 'P'},
                                       {"prefix", 1, 0, 'p'},
                                       {"connect-concurrency", 1, 0, 'C'},
                                       {"warm", 0, 0, 'w'},
                                       {"plain", 0, 0, 'l'},
                                       {"timeout", 1, 0, 't'},
                                       {"pause", 1, 0, 'z'},
                                       {"gateway-pid", 1, 0, 'G'},
                                       {"json", 0, 0, 'j'},
                                       {"help", 0, 0, 'h'},
                                       {0, 0, 0, 0}};
    int ch;
    while ((ch = getopt_long(argc, argv, "", lo, NULL)) != -1) {
        switch (ch) {
        case 'g':
            if (hb_parse_hostport(optarg, O.host, sizeof O.host, &O.port) < 0)
                return fprintf(stderr, "bad --gateway\n"), 1;
            break;
        case 'c':
            O.connections = (uint32_t)strtoul(optarg, NULL, 10);
            break;
        case 'k':
            O.channels = (uint32_t)strtoul(optarg, NULL, 10);
            break;
        case 'm':
            O.messages = (uint32_t)strtoul(optarg, NULL, 10);
            break;
        case 'W':
            O.window = (uint32_t)strtoul(optarg, NULL, 10);
            break;
        case 's':
            O.source_addrs = (uint32_t)strtoul(optarg, NULL, 10);
            break;
        case 'P':
            O.publishers = (uint32_t)strtoul(optarg, NULL, 10);
            break;
        case 'C':
            O.concurrency = (uint32_t)strtoul(optarg, NULL, 10);
            break;
        case 'p':
            O.prefix = optarg;
            break;
        case 'w':
            O.warm = 1;
            break;
        case 'l':
            O.plain = 1;
            break;
        case 't':
            O.timeout = atof(optarg);
            break;
        case 'z':
            O.pause = atof(optarg);
            break;
        case 'G':
            O.gateway_pid = atoi(optarg);
            break;
        case 'j':
            O.json = 1;
            break;
        default:
            usage();
            return ch == 'h' ? 0 : 1;
        }
    }
    if (!O.port || !O.connections || !O.channels || !O.window || O.messages < O.window ||
        !O.publishers || O.source_addrs > 254 || !O.concurrency) {
        usage();
        return 1;
    }
    signal(SIGPIPE, SIG_IGN);
    long nofile = hb_raise_nofile();
    if (nofile < (long)O.connections + 64) {
        fprintf(stderr, "hist-resume: RLIMIT_NOFILE %ld is too low for %u connections\n", nofile,
                O.connections);
        return 1;
    }
    dst = (struct sockaddr_in){.sin_family = AF_INET, .sin_port = htons((uint16_t)O.port)};
    inet_pton(AF_INET, O.host, &dst.sin_addr);
    struct ws_url u;
    snprintf(u.host, sizeof u.host, "%s", O.host);
    snprintf(u.port, sizeof u.port, "%d", O.port);
    snprintf(u.path, sizeof u.path, "/ws");
    handshake_len = ws_handshake_request(&u, NULL, 0, handshake, sizeof handshake);
    heads = calloc(O.channels, sizeof *heads);
    conns = calloc(O.connections, sizeof *conns);
    epfd = epoll_create1(EPOLL_CLOEXEC);
    if (!heads || !conns || epfd < 0)
        return 1;

    /* phase 1: the warm subscriber (optional), then the messages */
    struct hb_ws warm = {.fd = -1};
    if (O.warm) {
        if (hb_ws_open(&warm, O.host, O.port, 10000) < 0)
            return fprintf(stderr, "hist-resume: warm subscriber: connect failed\n"), 1;
        for (uint32_t k = 0; k < O.channels; k++) {
            char m[300], chan[256];
            channel_name(chan, sizeof chan, k);
            int n = snprintf(m, sizeof m, "{\"op\":\"subscribe\",\"channel\":\"%s\"}", chan);
            hb_ws_send_text(&warm, m, (size_t)n);
        }
        /* wait for the replies: one line each; messages are counted but not checked */
        usleep(500000);
    }
    uint64_t p0 = now_ns();
    struct pubber *pubs = calloc(O.publishers, sizeof *pubs);
    uint64_t pub_errors = 0;
    for (uint32_t i = 0; i < O.publishers; i++) {
        pubs[i].id = i;
        pthread_create(&pubs[i].th, NULL, pub_main, &pubs[i]);
    }
    for (uint32_t i = 0; i < O.publishers; i++) {
        pthread_join(pubs[i].th, NULL);
        pub_errors += pubs[i].errors;
    }
    double publish_s = (double)(now_ns() - p0) / 1e9;
    for (uint32_t k = 0; k < O.channels; k++)
        if (heads[k] < O.window) {
            fprintf(stderr, "hist-resume: channel %u has head %llu (publish errors %llu)\n", k,
                    (unsigned long long)heads[k], (unsigned long long)pub_errors);
            return 1;
        }

    /* phase 2: connect everyone */
    uint64_t c0 = now_ns(), deadline = c0 + (uint64_t)(O.timeout * 1e9);
    while ((opened + open_failed < O.connections) && now_ns() < deadline) {
        while (next_to_open < O.connections && in_progress < O.concurrency)
            open_conn(next_to_open++);
        poll_once(20);
    }
    double connect_s = (double)(now_ns() - c0) / 1e9;
    if (O.warm) /* drain what the warm subscriber got so the gateway never blocks on it */
        while (recv(warm.fd, scratch, sizeof scratch, MSG_DONTWAIT) > 0) {
        }

    if (O.pause > 0) { /* idle, still reading (nothing should come) */
        uint64_t until = now_ns() + (uint64_t)(O.pause * 1e9);
        while (now_ns() < until)
            poll_once(20);
        if (O.warm)
            while (recv(warm.fd, scratch, sizeof scratch, MSG_DONTWAIT) > 0) {
            }
    }

    /* phase 3: the storm */
    char *m_before = hb_metrics_fetch(O.host, O.port);
    uint32_t storm = 0;
    double gw_cpu0 = O.gateway_pid ? proc_cpu_seconds(O.gateway_pid) : -1;
    double my_cpu0 = process_cpu_seconds();
    t_first_send = now_ns();
    for (uint32_t i = 0; i < O.connections; i++) {
        struct rconn *c = &conns[i];
        if (c->state != S_OPEN)
            continue;
        c->channel = i % O.channels;
        c->since =
            O.plain ? heads[c->channel] : heads[c->channel] - 1 - (i / O.channels) % O.window;
        c->next = c->since + 1;
        char chan[256], m[400];
        channel_name(chan, sizeof chan, c->channel);
        int n = O.plain ? snprintf(m, sizeof m, "{\"op\":\"subscribe\",\"channel\":\"%s\"}", chan)
                        : snprintf(m, sizeof m,
                                   "{\"op\":\"subscribe\",\"channel\":\"%s\",\"since\":%llu}", chan,
                                   (unsigned long long)c->since);
        uint8_t frame[420];
        size_t fl = ws_frame_encode(WS_OP_TEXT, m, (size_t)n, 0x5a5a0000u ^ i, frame);
        c->state = S_WAITING;
        c->sent_ns = now_ns();
        if (send_bytes(c, frame, fl) == 0)
            storm++;
        if (i % 256 == 255)
            poll_once(0); /* read the replies that are already there */
    }
    uint64_t t_last_send = now_ns();
    deadline = now_ns() + (uint64_t)(O.timeout * 1e9);
    while (done + failed < storm && now_ns() < deadline)
        poll_once(20);
    double gw_cpu = O.gateway_pid ? proc_cpu_seconds(O.gateway_pid) - gw_cpu0 : -1;
    double my_cpu = process_cpu_seconds() - my_cpu0;
    /* settle: anything after the reply is a mistake; let queries finish for the metric */
    uint64_t settle = now_ns() + 500000000ull;
    while (now_ns() < settle)
        poll_once(20);
    char *m_after = hb_metrics_fetch(O.host, O.port);

    double q0 = metric_of(m_before, "herald_db_queries_total");
    double q1 = metric_of(m_after, "herald_db_queries_total");
    double r0 = metric_of(m_before, "herald_resumes_recovered_total");
    double r1 = metric_of(m_after, "herald_resumes_recovered_total");
    double f0 = metric_of(m_before, "herald_resumes_failed_total");
    double f1 = metric_of(m_after, "herald_resumes_failed_total");
    uint64_t expected_msgs = 0;
    for (uint32_t i = 0; i < O.connections; i++)
        if (conns[i].state == S_DONE || conns[i].state == S_WAITING)
            expected_msgs += heads[conns[i].channel] - conns[i].since;
    uint32_t unanswered = storm - done - failed;
    double storm_ms = done ? (double)(t_last_reply - t_first_send) / 1e6 : -1;
    int ok = done == O.connections && !open_failed && !failed && !wrong_seq && !wrong_reply &&
             !pub_errors && messages_received == expected_msgs;

    if (O.json) {
        printf("{\"connections\":%u,\"channels\":%u,\"messages_per_channel\":%u,\"window\":%u,"
               "\"warm\":%s,\"plain\":%s,\"source_addrs\":%u,\"publish_s\":%.2f,\"publish_errors\":"
               "%llu,"
               "\"connect_s\":%.2f,\"opened\":%u,\"open_failed\":%u,\"resumed\":%u,"
               "\"failed\":%u,\"unanswered\":%u,\"send_all_ms\":%.1f,\"storm_ms\":%.1f,"
               "\"reply_ms\":{\"p50\":%.2f,\"p99\":%.2f,\"max\":%.2f},"
               "\"messages_replayed\":%llu,\"messages_expected\":%llu,\"wrong_seq\":%llu,"
               "\"wrong_replies\":%llu,\"error_replies\":%llu,\"closed_early\":%llu,"
               "\"db_queries_before\":%.0f,\"db_queries_after\":%.0f,\"db_queries_delta\":%.0f,"
               "\"resumes_recovered_delta\":%.0f,\"resumes_failed_delta\":%.0f,"
               "\"storm_gateway_cpu_s\":%.3f,\"storm_tool_cpu_s\":%.3f,\"ok\":%s",
               O.connections, O.channels, O.messages, O.window, O.warm ? "true" : "false",
               O.plain ? "true" : "false", O.source_addrs, publish_s,
               (unsigned long long)pub_errors, connect_s, opened, open_failed, done, failed,
               unanswered, (double)(t_last_send - t_first_send) / 1e6, storm_ms,
               hb_ms(&reply_lat, 0.5), hb_ms(&reply_lat, 0.99), hb_max_ms(&reply_lat),
               (unsigned long long)messages_received, (unsigned long long)expected_msgs,
               (unsigned long long)wrong_seq, (unsigned long long)wrong_reply,
               (unsigned long long)error_replies, (unsigned long long)closed_early, q0, q1, q1 - q0,
               r1 - r0, f1 - f0, gw_cpu, my_cpu, ok ? "true" : "false");
        print_deltas(m_before, m_after);
        printf(",\"first_error\":\"");
        for (const char *p = first_error; *p; p++)
            printf(*p == '"' || *p == '\\' ? "\\%c" : (unsigned char)*p < 0x20 ? " " : "%c", *p);
        printf("\"}\n");
    } else {
        printf("published %u x %u in %.2f s (%llu errors); %u/%u connected in %.2f s\n", O.channels,
               O.messages, publish_s, (unsigned long long)pub_errors, opened, O.connections,
               connect_s);
        printf("%s storm: %u resumed (%u failed, %u unanswered) in %.1f ms (sends took %.1f ms); "
               "reply p50 %.2f ms p99 %.2f ms max %.2f ms\n",
               O.plain  ? "plain"
               : O.warm ? "warm"
                        : "cold",
               done, failed, unanswered, storm_ms, (double)(t_last_send - t_first_send) / 1e6,
               hb_ms(&reply_lat, 0.5), hb_ms(&reply_lat, 0.99), hb_max_ms(&reply_lat));
        printf("replayed %llu of %llu messages; wrong seq %llu, wrong replies %llu; "
               "db queries %.0f -> %.0f (+%.0f); resumes recovered +%.0f failed +%.0f: %s\n",
               (unsigned long long)messages_received, (unsigned long long)expected_msgs,
               (unsigned long long)wrong_seq, (unsigned long long)wrong_reply, q0, q1, q1 - q0,
               r1 - r0, f1 - f0, ok ? "OK" : "FAILED");
        if (first_error[0])
            printf("first error: %s\n", first_error);
    }
    for (uint32_t i = 0; i < O.connections; i++)
        if (conns[i].fd > 0)
            close(conns[i].fd);
    hb_ws_close(&warm);
    free(m_before);
    free(m_after);
    for (uint32_t i = 0; i < O.connections; i++) {
        free(conns[i].in);
        free(conns[i].out);
    }
    free(conns);
    free(heads);
    free(pubs);
    close(epfd);
    return ok ? 0 : 2;
}
