/*
 * herald-bench: shared declarations of the load generator's parts.
 *
 * herald_bench.c  options, the run's phases, the report
 * bench_conn.c    the client sockets: epoll loop, handshake, frames, message verification
 * bench_ws.c      the minimal WebSocket client: URL, handshake, frame encode and parse
 * bench_pub.c     the publisher thread (hiredis, synchronous, pipelined, paced)
 * bench_stats.c   latency histogram, clocks, /proc readings, CPU use
 */
#ifndef HERALD_BENCH_H
#define HERALD_BENCH_H

#include <netinet/in.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

/* ---- WebSocket client (bench_ws.c) ---- */

/* A parsed ws:// URL. */
struct ws_url {
    char host[256];
    char port[16];
    char path[512];
};

/* One server frame, pointing into the caller's buffer. */
struct ws_frame {
    int fin;
    int opcode;
    int compressed; /* RSV1: a permessage-deflate message */
    const uint8_t *payload;
    size_t len;
};

enum { WS_OP_CONT = 0, WS_OP_TEXT = 1, WS_OP_BIN = 2, WS_OP_CLOSE = 8, WS_OP_PING = 9 };

/* Parse status: a frame, more bytes needed, or a protocol violation. */
enum { WS_PARSE_OK = 1, WS_PARSE_MORE = 0, WS_PARSE_ERROR = -1 };

int ws_url_parse(const char *url, struct ws_url *out);
int ws_handshake_request(const struct ws_url *u, const char *protocol, int deflate, char *buf,
                         size_t cap);
long ws_handshake_response(const char *buf, size_t len);
size_t ws_frame_encode(int opcode, const void *payload, size_t len, uint32_t mask, uint8_t *out);
int ws_frame_parse(const uint8_t *buf, size_t len, struct ws_frame *f, size_t *used);

/* ---- statistics (bench_stats.c) ---- */

#define HIST_SUB_BITS 6
#define HIST_BUCKETS  ((64 - HIST_SUB_BITS + 2) << (HIST_SUB_BITS - 1))

/* Log-linear histogram of nanosecond values: ~1.5-3% relative bucket width. */
struct hist {
    uint64_t count;
    uint64_t max;
    uint64_t buckets[HIST_BUCKETS];
};

uint64_t now_ns(void);
void sleep_until_ns(uint64_t t);
void hist_add(struct hist *h, uint64_t v);
uint64_t hist_percentile(const struct hist *h, double q);
long proc_rss_kib(int pid);
double proc_cpu_seconds(int pid);
double thread_cpu_seconds(void);
double process_cpu_seconds(void);

/* ---- publisher thread (bench_pub.c) ---- */

/* Shared state of the publisher thread; counters are read by the main thread. */
struct publisher {
    /* set before the thread starts */
    char redis_host[256];
    int redis_port;
    const char *prefix;
    uint32_t channels;
    double rate;
    uint32_t payload_bytes;
    uint64_t start_ns;
    uint64_t warm_end_ns;
    uint64_t end_ns;
    /* --nchan-publish: HTTP POST to http://<http_host>:<http_port><http_path><channel> over
     * http_conns pipelined keep-alive connections instead of Redis PUBLISH */
    int http;
    char http_host[256];
    int http_port;
    char http_path[256];
    uint32_t http_conns;
    atomic_int stop; /* set by main to end early */
    /* written by the thread */
    atomic_uint_fast64_t published;
    atomic_uint_fast64_t no_receivers;
    atomic_uint_fast64_t at_warm_end;
    atomic_int done;
    double cpu_seconds;
    uint64_t max_lag_ns;
    char error[256];
};

void *publisher_main(void *arg);
int publisher_http_target(struct publisher *p, const char *url, uint32_t conns);
size_t publisher_payload(char *buf, size_t cap, uint64_t t, uint64_t n, uint32_t bytes);

/* ---- client connections and the receive loop (bench_conn.c) ---- */

/* Command-line options. */
struct options {
    const char *url_str;
    struct ws_url url;
    const char *protocol;
    uint32_t connections;
    uint32_t channels;
    const char *prefix;
    uint32_t source_addrs;
    char redis_host[256];
    int redis_port;
    double rate;
    uint32_t payload_bytes;
    double warmup;
    double duration;
    double drain;
    int idle;
    int gateway_pid;
    int json;
    uint32_t connect_concurrency;
    double connect_timeout;
    const char *nchan_pub; /* Nchan mode: publish by HTTP POST to this URL + channel */
    uint32_t pub_conns;    /* keep-alive connections of the HTTP publisher */
    int deflate;           /* offer permessage-deflate and inflate what arrives compressed */
};

enum conn_state { CS_NEW, CS_CONNECTING, CS_HANDSHAKE, CS_SUBSCRIBING, CS_READY, CS_CLOSED };

/* One WebSocket client. Buffers are allocated only while something is pending. */
struct conn {
    int fd;
    uint8_t state;
    uint8_t was_ready;
    uint8_t watching_out;
    uint32_t channel;
    int64_t last_n;
    uint64_t received;
    uint8_t *in; /* unparsed input: a partial handshake or frame */
    uint32_t in_len;
    uint8_t *out; /* unsent output */
    uint32_t out_len;
    uint8_t *frag; /* a fragmented message being assembled */
    uint32_t frag_len;
    struct z_stream_s *z; /* --deflate: this connection's inflate stream */
};

#define MAX_CLOSE_KINDS 16
#define CLOSE_EOF       (-1) /* connection ended without a close frame */
#define CLOSE_ERROR     (-2) /* socket error or protocol violation */

/* How many connections closed with one close code. */
struct close_count {
    int code;
    uint64_t count;
};

/* Everything the receive side knows; owned by main. */
struct bench {
    struct options opt;
    struct conn *conns;
    int epfd;
    struct sockaddr_in dst;
    char handshake[1024];
    size_t handshake_len;
    uint8_t *scratch;
    size_t scratch_cap;
    uint8_t *inflated; /* --deflate: the message being verified, inflated */
    size_t inflated_cap;
    uint64_t compressed; /* messages that arrived compressed */
    uint32_t mask_seed;
    /* connect phase */
    uint32_t next_to_open;
    uint32_t in_progress;
    uint32_t subscribed;
    uint32_t failed;
    /* delivery checks */
    uint64_t warm_end_ns;
    uint64_t measure_end_ns;
    uint64_t received;
    uint64_t reads; /* successful read() calls: received / reads shows the gateway's batching */
    uint64_t in_window;
    uint64_t gaps;
    uint64_t dups;
    uint64_t misrouted;
    uint64_t unparsable;
    uint64_t error_replies;
    uint64_t other_frames;
    struct hist hist;
    struct close_count closes[MAX_CLOSE_KINDS];
    uint64_t closes_total;
    char first_error[256];
};

int bench_init(struct bench *b);
void bench_open_more(struct bench *b);
int bench_poll(struct bench *b, int timeout_ms);
void bench_fail_pending(struct bench *b);
uint64_t bench_expected(const struct bench *b, uint64_t published);
void bench_close_all(struct bench *b);
void bench_free(struct bench *b);

#endif
