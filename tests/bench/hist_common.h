/*
 * hist_common.h: shared parts of the history benchmark tools (hist-publish, hist-resume).
 *
 * hist_common.c  host:port parsing, blocking TCP connect, a minimal keep-alive HTTP/1.1
 *                client, /metrics scraping, a blocking WebSocket client, histogram helpers
 * Reuses bench_ws.c (frame encode/parse, handshake) and bench_stats.c (clock, histogram)
 * of herald-bench through herald_bench.h.
 */
#ifndef HERALD_HIST_COMMON_H
#define HERALD_HIST_COMMON_H

#include <stddef.h>
#include <stdint.h>

#include "herald_bench.h"

/* "host:port" -> parts; 0 or -1. */
int hb_parse_hostport(const char *s, char *host, size_t hostcap, int *port);

/* Blocking TCP connect to host:port (numeric IPv4), TCP_NODELAY, receive/send timeouts of
 * timeout_ms; when src is not 0 the socket is bound to that IPv4 address (host order) first.
 * Returns the fd or -1 (errno set). */
int hb_tcp_connect(const char *host, int port, uint32_t src, int timeout_ms);

/* One keep-alive HTTP/1.1 connection (blocking). */
struct hb_http {
    char host[64];
    int port;
    int fd;
    int timeout_ms;
    char *buf; /* received bytes not consumed yet */
    size_t len, cap;
    char *body; /* the last answer's body */
};

void hb_http_init(struct hb_http *h, const char *host, int port, int timeout_ms);
/* Sends one request (connecting first if needed) and reads the whole answer. Returns the
 * HTTP status, or -1 on a connection error (the connection is then closed; the next call
 * reconnects). *body (may be NULL) points into h's buffer, valid until the next call. */
int hb_http_request(struct hb_http *h, const char *method, const char *path, const char *ctype,
                    const char *body, size_t blen, const char **rbody, size_t *rlen);
void hb_http_close(struct hb_http *h);
/* Closes and frees the buffers. */
void hb_http_free(struct hb_http *h);

/* GET /metrics on a fresh connection; returns a malloc'd NUL-terminated body or NULL. */
char *hb_metrics_fetch(const char *host, int port);
/* The value of an unlabelled metric in a Prometheus text body, or -1. */
double hb_metric(const char *text, const char *name);

/* A blocking WebSocket client (one connection, used by the latency subscriber). */
struct hb_ws {
    int fd;
    uint32_t mask;
    uint8_t *buf;
    size_t len, cap;
};

/* Connects and upgrades to ws://host:port/ws; 0 or -1. */
int hb_ws_open(struct hb_ws *w, const char *host, int port, int timeout_ms);
int hb_ws_send_text(struct hb_ws *w, const char *text, size_t len);
/* Reads once (waiting up to timeout_ms) and calls fn for every complete text frame.
 * Returns the number of frames handled, 0 on timeout, -1 on close or error. */
int hb_ws_poll(struct hb_ws *w, int timeout_ms,
               void (*fn)(void *arg, const char *msg, size_t len, uint64_t now), void *arg);
void hb_ws_close(struct hb_ws *w);

/* Adds src's counts to dst. */
void hb_hist_merge(struct hist *dst, const struct hist *src);
/* Quantile q of h in milliseconds (3 decimals). */
double hb_ms(const struct hist *h, double q);
double hb_max_ms(const struct hist *h);

/* Finds "key": in a JSON text and parses the integer after it; returns 0 and sets *out, or
 * -1. Only for the gateway's own compact output (no spaces), first occurrence. */
int hb_json_u64(const char *s, size_t len, const char *key, uint64_t *out);

/* Raises RLIMIT_NOFILE's soft limit to the hard limit; returns the new soft limit. */
long hb_raise_nofile(void);

#endif
