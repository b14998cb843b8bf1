/*
 * herald-bench: fan-out load generator for Herald.
 *
 * Opens N WebSocket connections (single thread, epoll), subscribes connection i to channel
 * <prefix><i % K>, waits for every "subscribed" reply, then a publisher thread PUBLISHes stamped
 * payloads to Redis at a fixed total rate. Every delivery is checked (channel, no gap, no
 * duplicate) and its latency recorded. --idle only connects, subscribes and holds, to measure
 * the gateway's memory per connection. With --nchan-publish the same run measures Nchan instead:
 * connection i opens <url><prefix><i % K> (the channel is in the URL, no subscribe op; the
 * upgrade means subscribed), messages arrive as the raw payload, and the publisher thread POSTs
 * them to <nchan-publish URL><channel>. Exit status: 0 clean, 2 delivery or connection errors,
 * 1 bad usage or setup failure.
 */
#define _GNU_SOURCE
#include <getopt.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>

#include "herald_bench.h"

#define NS_PER_S 1e9

/* Set by SIGINT/SIGTERM: stop early, still close everything and report. */
static volatile sig_atomic_t g_stop;

/* What one run measured, besides the counters in struct bench. */
struct results {
    double connect_s;
    long rss_before;
    long rss_subscribed;
    long rss_end;
    double window_s;
    double recv_cpu[2]; /* receiver thread CPU at window start and end */
    double gw_cpu[2];   /* gateway CPU at window start and end */
    int sampled;        /* how many of the two window samples were taken */
    uint64_t published;
    uint64_t published_window;
    uint64_t expected;
    double process_cpu;
};

/* Signal handler: ask the loops to stop. */
static void on_signal(int sig)
{
    (void)sig;
    g_stop = 1;
}

/* Print usage to f. */
static void usage(FILE *f)
{
    fprintf(f, "usage: herald-bench [options]\n"
               "  --url URL                 gateway WebSocket URL (ws://127.0.0.1:8080/ws)\n"
               "  --connections N           WebSocket connections (100)\n"
               "  --channels K              connection i subscribes to <prefix><i %% K> (1)\n"
               "  --channel-prefix P        channel name prefix (bench:)\n"
               "  --source-addrs N          bind sockets round-robin to 127.0.0.1..N (0: no bind)\n"
               "  --redis HOST:PORT         Redis to PUBLISH to (127.0.0.1:6379)\n"
               "  --rate R                  messages/s published, total over all channels (100)\n"
               "  --payload-bytes B         payload size (100)\n"
               "  --warmup S                seconds published but not measured (2)\n"
               "  --duration S              measured seconds, or the hold time with --idle (10)\n"
               "  --drain S                 max seconds to wait for in-flight messages (2)\n"
               "  --idle                    connect, subscribe, hold; no publishing\n"
               "  --gateway-pid PID         report the gateway's RSS per connection and CPU\n"
               "  --connect-concurrency N   connections in handshake at once (256)\n"
               "  --connect-timeout S       give up on the connect phase after S seconds (60)\n"
               "  --protocol NAME           send Sec-WebSocket-Protocol: NAME\n"
               "  --json                    print one JSON object instead of text\n"
               "  --nchan-publish URL       Nchan mode: POST to URL<channel> (http://h:p/pub/);\n"
               "                            --url is then the subscriber prefix (ws://h:p/sub/)\n"
               "  --pub-connections N       keep-alive connections of the HTTP publisher (2)\n"
               "  --deflate                 offer permessage-deflate; inflate compressed messages\n"
               "exit status: 0 clean, 2 delivery/connection errors, 1 usage or setup error\n");
}

/* Set the defaults. */
static void options_default(struct options *o)
{
    memset(o, 0, sizeof(*o));
    o->url_str = "ws://127.0.0.1:8080/ws";
    o->connections = 100;
    o->channels = 1;
    o->prefix = "bench:";
    snprintf(o->redis_host, sizeof(o->redis_host), "127.0.0.1");
    o->redis_port = 6379;
    o->rate = 100;
    o->payload_bytes = 100;
    o->warmup = 2;
    o->duration = 10;
    o->drain = 2;
    o->gateway_pid = 0;
    o->connect_concurrency = 256;
    o->connect_timeout = 60;
    o->pub_conns = 2;
}

/* Split HOST:PORT into o->redis_host and o->redis_port. */
static int parse_redis(struct options *o, const char *arg)
{
    const char *colon = strrchr(arg, ':');
    if (!colon || colon == arg || (size_t)(colon - arg) >= sizeof(o->redis_host))
        return -1;
    memcpy(o->redis_host, arg, (size_t)(colon - arg));
    o->redis_host[colon - arg] = '\0';
    o->redis_port = atoi(colon + 1);
    return o->redis_port > 0 && o->redis_port < 65536 ? 0 : -1;
}

/* Apply one parsed option; returns -1 on a bad value. */
static int apply_option(struct options *o, int opt, const char *arg)
{
    switch (opt) {
    case 'u':
        o->url_str = arg;
        return ws_url_parse(arg, &o->url);
    case 'c':
        o->connections = (uint32_t)strtoul(arg, NULL, 10);
        return o->connections ? 0 : -1;
    case 'k':
        o->channels = (uint32_t)strtoul(arg, NULL, 10);
        return o->channels ? 0 : -1;
    case 'p':
        o->prefix = arg;
        return strlen(arg) < 180 ? 0 : -1;
    case 's':
        o->source_addrs = (uint32_t)strtoul(arg, NULL, 10);
        return o->source_addrs < 255 ? 0 : -1;
    case 'r':
        return parse_redis(o, arg);
    case 'R':
        o->rate = strtod(arg, NULL);
        return o->rate >= 0 ? 0 : -1;
    case 'b':
        o->payload_bytes = (uint32_t)strtoul(arg, NULL, 10);
        return o->payload_bytes < (64u << 20) ? 0 : -1;
    case 'w':
        o->warmup = strtod(arg, NULL);
        return o->warmup >= 0 ? 0 : -1;
    case 'd':
        o->duration = strtod(arg, NULL);
        return o->duration > 0 ? 0 : -1;
    case 'D':
        o->drain = strtod(arg, NULL);
        return o->drain >= 0 ? 0 : -1;
    case 'i':
        o->idle = 1;
        return 0;
    case 'g':
        o->gateway_pid = atoi(arg);
        return o->gateway_pid > 0 ? 0 : -1;
    case 'j':
        o->json = 1;
        return 0;
    case 'C':
        o->connect_concurrency = (uint32_t)strtoul(arg, NULL, 10);
        return o->connect_concurrency ? 0 : -1;
    case 'T':
        o->connect_timeout = strtod(arg, NULL);
        return o->connect_timeout > 0 ? 0 : -1;
    case 'P':
        o->protocol = arg;
        return strlen(arg) < 200 ? 0 : -1;
    case 'N':
        o->nchan_pub = arg;
        return strncmp(arg, "http://", 7) == 0 ? 0 : -1;
    case 'z':
        o->deflate = 1;
        return 0;
    case 'M':
        o->pub_conns = (uint32_t)strtoul(arg, NULL, 10);
        return o->pub_conns > 0 && o->pub_conns <= 64 ? 0 : -1;
    default:
        return -1;
    }
}

/* Parse argv into o; returns 0, 1 for --help, -1 on error. */
static int parse_options(int argc, char **argv, struct options *o)
{
    static const struct option longopts[] = {{"url", required_argument, 0, 'u'},
                                             {"connections", required_argument, 0, 'c'},
                                             {"channels", required_argument, 0, 'k'},
                                             {"channel-prefix", required_argument, 0, 'p'},
                                             {"source-addrs", required_argument, 0, 's'},
                                             {"redis", required_argument, 0, 'r'},
                                             {"rate", required_argument, 0, 'R'},
                                             {"payload-bytes", required_argument, 0, 'b'},
                                             {"warmup", required_argument, 0, 'w'},
                                             {"duration", required_argument, 0, 'd'},
                                             {"drain", required_argument, 0, 'D'},
                                             {"idle", no_argument, 0, 'i'},
                                             {"gateway-pid", required_argument, 0, 'g'},
                                             {"json", no_argument, 0, 'j'},
                                             {"connect-concurrency", required_argument, 0, 'C'},
                                             {"connect-timeout", required_argument, 0, 'T'},
                                             {"protocol", required_argument, 0, 'P'},
                                             {"nchan-publish", required_argument, 0, 'N'},
                                             {"pub-connections", required_argument, 0, 'M'},
                                             {"deflate", no_argument, 0, 'z'},
                                             {"help", no_argument, 0, 'h'},
                                             {0, 0, 0, 0}};
    options_default(o);
    ws_url_parse(o->url_str, &o->url);
    int opt;
    while ((opt = getopt_long(argc, argv, "h", longopts, NULL)) != -1) {
        if (opt == 'h')
            return 1;
        if (apply_option(o, opt, optarg) != 0) {
            fprintf(stderr, "herald-bench: bad value for option: %s\n", argv[optind - 1]);
            return -1;
        }
    }
    if (optind < argc) {
        fprintf(stderr, "herald-bench: unexpected argument: %s\n", argv[optind]);
        return -1;
    }
    return 0;
}

/* Raise the open-file soft limit to the hard limit; fail if `need` descriptors won't fit. */
static int raise_nofile(rlim_t need)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) != 0)
        return -1;
    rl.rlim_cur = rl.rlim_max;
    if (setrlimit(RLIMIT_NOFILE, &rl) != 0 || rl.rlim_cur < need) {
        fprintf(stderr, "herald-bench: need %llu open files, the limit is %llu\n",
                (unsigned long long)need, (unsigned long long)rl.rlim_cur);
        return -1;
    }
    return 0;
}

/* Take the CPU sample at the window's start (warm_end) and end (measure_end) when due. */
static void sample_window(struct bench *b, struct results *r, uint64_t now)
{
    uint64_t at = r->sampled == 0 ? b->warm_end_ns : b->measure_end_ns;
    if (r->sampled >= 2 || now < at)
        return;
    r->recv_cpu[r->sampled] = thread_cpu_seconds();
    r->gw_cpu[r->sampled] = b->opt.gateway_pid ? proc_cpu_seconds(b->opt.gateway_pid) : 0;
    r->sampled++;
}

/* Connect and subscribe everything; returns -1 if the loop itself failed. */
static int connect_phase(struct bench *b, struct results *r)
{
    uint64_t t0 = now_ns();
    uint64_t deadline = t0 + (uint64_t)(b->opt.connect_timeout * NS_PER_S);
    bench_open_more(b);
    while (b->subscribed + b->failed < b->opt.connections && !g_stop) {
        if (now_ns() >= deadline) {
            bench_fail_pending(b);
            break;
        }
        if (bench_poll(b, 10) < 0)
            return -1;
        bench_open_more(b);
    }
    if (g_stop)
        bench_fail_pending(b);
    r->connect_s = (double)(now_ns() - t0) / NS_PER_S;
    return 0;
}

/* Idle mode: hold every connection open for --duration, reading whatever comes. */
static int idle_phase(struct bench *b, struct results *r)
{
    b->warm_end_ns = now_ns();
    b->measure_end_ns = b->warm_end_ns + (uint64_t)(b->opt.duration * NS_PER_S);
    uint64_t now;
    while ((now = now_ns()) < b->measure_end_ns + 2000000 && !g_stop) {
        sample_window(b, r, now);
        if (bench_poll(b, 5) < 0)
            return -1;
    }
    return 0;
}

/* Start the publisher, receive until it is done, then drain in-flight messages. */
static int publish_phase(struct bench *b, struct results *r, struct publisher *p)
{
    p->start_ns = now_ns() + 20000000;
    b->warm_end_ns = p->warm_end_ns = p->start_ns + (uint64_t)(b->opt.warmup * NS_PER_S);
    b->measure_end_ns = p->end_ns = p->warm_end_ns + (uint64_t)(b->opt.duration * NS_PER_S);
    pthread_t tid;
    if (pthread_create(&tid, NULL, publisher_main, p) != 0)
        return -1;
    int rc = 0;
    uint64_t now, drain_end = 0;
    while (!g_stop) {
        now = now_ns();
        sample_window(b, r, now);
        if (!drain_end && atomic_load(&p->done))
            drain_end = now + (uint64_t)(b->opt.drain * NS_PER_S);
        if (drain_end && (now >= drain_end || p->error[0] ||
                          b->received >= bench_expected(b, atomic_load(&p->published))))
            break;
        if (bench_poll(b, 5) < 0) {
            rc = -1;
            break;
        }
    }
    if (g_stop)
        atomic_store(&p->stop, 1);
    pthread_join(tid, NULL);
    r->published = atomic_load(&p->published);
    r->published_window = r->published - atomic_load(&p->at_warm_end);
    r->expected = bench_expected(b, r->published);
    return rc;
}

/* Print s as a JSON string (quoted, escaped). */
static void json_string(const char *s)
{
    putchar('"');
    for (; *s; s++) {
        if (*s == '"' || *s == '\\')
            printf("\\%c", *s);
        else if ((unsigned char)*s < 0x20)
            printf("\\u%04x", *s);
        else
            putchar(*s);
    }
    putchar('"');
}

/* Name of a close code for the report: the number, or eof / error. */
static const char *close_name(int code, char *buf, size_t cap)
{
    if (code == CLOSE_EOF)
        return "eof";
    if (code == CLOSE_ERROR)
        return "error";
    snprintf(buf, cap, "%d", code);
    return buf;
}

/* Did the run see no error at all? */
static int run_clean(const struct bench *b, const struct results *r, const struct publisher *p)
{
    return b->failed == 0 && b->subscribed == b->opt.connections && b->gaps == 0 && b->dups == 0 &&
           b->misrouted == 0 && b->unparsable == 0 && b->error_replies == 0 &&
           b->closes_total == 0 && b->received == r->expected && !p->error[0] && !g_stop;
}

/* Percent of one core used between the two window samples. */
static double window_pct(const double cpu[2], const struct results *r)
{
    return r->sampled == 2 && r->window_s > 0 ? 100.0 * (cpu[1] - cpu[0]) / r->window_s : -1;
}

/* A percentage for the text report, or n/a when it was not measured. */
static const char *pct_text(double v, char *buf, size_t cap)
{
    if (v < 0)
        return "n/a";
    snprintf(buf, cap, "%.1f%%", v);
    return buf;
}

/* Gateway RSS growth per subscribed connection, in KiB (-1 when unknown). */
static double rss_per_conn(const struct bench *b, const struct results *r)
{
    if (r->rss_before < 0 || r->rss_subscribed < 0 || b->subscribed == 0)
        return -1;
    return (double)(r->rss_subscribed - r->rss_before) / b->subscribed;
}

/* One JSON object with everything. */
static void report_json(const struct bench *b, const struct results *r, const struct publisher *p)
{
    const struct options *o = &b->opt;
    const struct hist *h = &b->hist;
    char nb[16];
    printf("{\"mode\":\"%s\",\"server_kind\":\"%s\",\"url\":", o->idle ? "idle" : "fanout",
           o->nchan_pub ? "nchan" : "herald-protocol");
    json_string(o->url_str);
    printf(",\"connections\":%u,\"subscribed\":%u,\"failed\":%u,\"channels\":%u,"
           "\"payload_bytes\":%u,\"target_rate\":%.1f,\"warmup_s\":%.1f,\"duration_s\":%.1f,"
           "\"connect_s\":%.3f,\"deflate\":%s,\"compressed\":%llu,",
           o->connections, b->subscribed, b->failed, o->channels, o->payload_bytes, o->rate,
           o->warmup, o->duration, r->connect_s, o->deflate ? "true" : "false",
           (unsigned long long)b->compressed);
    printf("\"published\":%llu,\"published_per_s\":%.1f,\"publish_no_receivers\":%llu,"
           "\"publisher_max_lag_ms\":%.3f,\"expected\":%llu,\"received\":%llu,\"missing\":%lld,"
           "\"delivered_per_s\":%.1f,\"expected_delivered_per_s\":%.1f,\"messages_per_read\":%.2f,",
           (unsigned long long)r->published, r->published_window / r->window_s,
           (unsigned long long)atomic_load(&p->no_receivers), p->max_lag_ns / 1e6,
           (unsigned long long)r->expected, (unsigned long long)b->received,
           (long long)(r->expected - b->received), b->in_window / r->window_s,
           o->idle ? 0.0 : o->rate * b->subscribed / o->channels,
           b->reads ? (double)b->received / b->reads : 0.0);
    printf("\"gaps\":%llu,\"duplicates\":%llu,\"misrouted\":%llu,\"unparsable\":%llu,"
           "\"error_replies\":%llu,\"other_frames\":%llu,\"closes\":%llu,\"close_codes\":{",
           (unsigned long long)b->gaps, (unsigned long long)b->dups,
           (unsigned long long)b->misrouted, (unsigned long long)b->unparsable,
           (unsigned long long)b->error_replies, (unsigned long long)b->other_frames,
           (unsigned long long)b->closes_total);
    for (int i = 0; i < MAX_CLOSE_KINDS && b->closes[i].count; i++)
        printf("%s\"%s\":%llu", i ? "," : "", close_name(b->closes[i].code, nb, sizeof(nb)),
               (unsigned long long)b->closes[i].count);
    printf("},\"latency_ms\":{\"count\":%llu,\"p50\":%.3f,\"p90\":%.3f,\"p99\":%.3f,"
           "\"p999\":%.3f,\"max\":%.3f},",
           (unsigned long long)h->count, hist_percentile(h, 0.5) / 1e6,
           hist_percentile(h, 0.9) / 1e6, hist_percentile(h, 0.99) / 1e6,
           hist_percentile(h, 0.999) / 1e6, h->max / 1e6);
    printf("\"bench_cpu\":{\"receiver_pct\":%.1f,\"publisher_pct\":%.1f,\"process_s\":%.2f},",
           window_pct(r->recv_cpu, r), 100.0 * p->cpu_seconds / (o->warmup + o->duration),
           r->process_cpu);
    printf("\"gateway\":{\"pid\":%d,\"rss_before_kib\":%ld,\"rss_subscribed_kib\":%ld,"
           "\"rss_end_kib\":%ld,\"rss_per_conn_kib\":%.2f,\"cpu_pct\":%.1f},\"first_error\":",
           o->gateway_pid, r->rss_before, r->rss_subscribed, r->rss_end, rss_per_conn(b, r),
           o->gateway_pid ? window_pct(r->gw_cpu, r) : -1);
    json_string(p->error[0] ? p->error : b->first_error);
    printf(",\"ok\":%s}\n", run_clean(b, r, p) ? "true" : "false");
}

/* The same, for people. */
static void report_text(const struct bench *b, const struct results *r, const struct publisher *p)
{
    const struct options *o = &b->opt;
    const struct hist *h = &b->hist;
    char nb[16], pb[32];
    printf("herald-bench %s: %u connections, %u channels, %s\n", o->idle ? "idle" : "fan-out",
           o->connections, o->channels, o->url_str);
    printf("  connect     %u subscribed, %u failed, in %.2f s\n", b->subscribed, b->failed,
           r->connect_s);
    if (!o->idle) {
        printf("  publish     target %.0f msg/s, achieved %.1f msg/s (%llu total, %llu reached "
               "no subscriber, max lag %.2f ms), payload %u B\n",
               o->rate, r->published_window / r->window_s, (unsigned long long)r->published,
               (unsigned long long)atomic_load(&p->no_receivers), p->max_lag_ns / 1e6,
               o->payload_bytes);
        printf("  delivered   %.0f msg/s after warmup (expected %.0f); received %llu of %llu, "
               "missing %lld; %.1f messages per read()\n",
               b->in_window / r->window_s, o->rate * b->subscribed / o->channels,
               (unsigned long long)b->received, (unsigned long long)r->expected,
               (long long)(r->expected - b->received),
               b->reads ? (double)b->received / b->reads : 0.0);
        if (o->deflate)
            printf("  deflate     %llu messages arrived compressed and were inflated\n",
                   (unsigned long long)b->compressed);
        printf("  latency ms  p50 %.3f  p90 %.3f  p99 %.3f  p99.9 %.3f  max %.3f  (n=%llu)\n",
               hist_percentile(h, 0.5) / 1e6, hist_percentile(h, 0.9) / 1e6,
               hist_percentile(h, 0.99) / 1e6, hist_percentile(h, 0.999) / 1e6, h->max / 1e6,
               (unsigned long long)h->count);
    }
    printf("  errors      gaps %llu, duplicates %llu, misrouted %llu, unparsable %llu, error "
           "replies %llu, closes %llu",
           (unsigned long long)b->gaps, (unsigned long long)b->dups,
           (unsigned long long)b->misrouted, (unsigned long long)b->unparsable,
           (unsigned long long)b->error_replies, (unsigned long long)b->closes_total);
    for (int i = 0; i < MAX_CLOSE_KINDS && b->closes[i].count; i++)
        printf("%s%s x%llu", i ? ", " : " (", close_name(b->closes[i].code, nb, sizeof(nb)),
               (unsigned long long)b->closes[i].count);
    printf("%s\n", b->closes_total ? ")" : "");
    printf("  bench cpu   receiver %s of a core, publisher %.1f%%, process %.2f s\n",
           pct_text(window_pct(r->recv_cpu, r), pb, sizeof(pb)),
           100.0 * p->cpu_seconds / (o->warmup + o->duration), r->process_cpu);
    if (o->gateway_pid)
        printf("  gateway     rss %ld -> %ld KiB subscribed (%.2f KiB/conn), %ld KiB at end, "
               "cpu %s\n",
               r->rss_before, r->rss_subscribed, rss_per_conn(b, r), r->rss_end,
               pct_text(window_pct(r->gw_cpu, r), pb, sizeof(pb)));
    if (p->error[0] || b->first_error[0])
        printf("  first error %s\n", p->error[0] ? p->error : b->first_error);
    printf("  result      %s\n", run_clean(b, r, p) ? "OK" : "ERRORS");
}

/* Set up, run the phases, tear down, report. */
static int run(struct bench *b, struct publisher *p)
{
    struct results r = {.rss_before = -1, .rss_subscribed = -1, .rss_end = -1};
    int pid = b->opt.gateway_pid;
    if (bench_init(b) != 0)
        return 1;
    r.rss_before = pid ? proc_rss_kib(pid) : -1;
    int rc = connect_phase(b, &r);
    r.rss_subscribed = pid ? proc_rss_kib(pid) : -1;
    if (rc == 0 && b->subscribed > 0)
        rc = b->opt.idle ? idle_phase(b, &r) : publish_phase(b, &r, p);
    r.rss_end = pid ? proc_rss_kib(pid) : -1;
    r.window_s = b->opt.duration;
    r.process_cpu = process_cpu_seconds();
    bench_close_all(b);
    if (rc != 0)
        perror("herald-bench: event loop");
    if (b->opt.json)
        report_json(b, &r, p);
    else
        report_text(b, &r, p);
    return rc != 0 ? 1 : run_clean(b, &r, p) ? 0 : 2;
}

int main(int argc, char **argv)
{
    static struct bench b; /* large (histogram): keep it off the stack */
    static struct publisher p;
    int rc = parse_options(argc, argv, &b.opt);
    if (rc != 0) {
        usage(rc > 0 ? stdout : stderr);
        return rc > 0 ? 0 : 1;
    }
    if (raise_nofile((rlim_t)b.opt.connections + b.opt.pub_conns + 64) != 0)
        return 1;
    signal(SIGPIPE, SIG_IGN);
    signal(SIGINT, on_signal);
    signal(SIGTERM, on_signal);
    b.epfd = -1;
    snprintf(p.redis_host, sizeof(p.redis_host), "%s", b.opt.redis_host);
    p.redis_port = b.opt.redis_port;
    p.prefix = b.opt.prefix;
    p.channels = b.opt.channels;
    p.rate = b.opt.rate;
    p.payload_bytes = b.opt.payload_bytes;
    if (b.opt.nchan_pub && publisher_http_target(&p, b.opt.nchan_pub, b.opt.pub_conns) != 0) {
        fprintf(stderr, "herald-bench: bad --nchan-publish URL: %s\n", b.opt.nchan_pub);
        return 1;
    }
    rc = run(&b, &p);
    bench_free(&b);
    return rc;
}
