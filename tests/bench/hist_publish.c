/*
 * hist-publish: durable publish throughput and publish-to-delivery latency of Herald's history.
 *
 *   --mode sql      N threads, each with its own libpq connection and hiredis connection:
 *                   SELECT seq, herald_sign(epoch, envelope) FROM herald_publish($1,$2,$3)
 *                   (prepared), then PUBLISH <prefix+channel> <signed envelope>; as fast
 *                   as possible for D seconds.
 *                   With --batch B, each call is herald_publish_batch over B messages (one
 *                   statement, one COMMIT), then B pipelined PUBLISHes.
 *   --mode rest     N threads, each with one keep-alive HTTP/1.1 connection to the gateway:
 *                   POST /v1/channels/{C}/messages (201 expected); as fast as possible.
 *                   With --batch B, each request is POST /v1/messages with B messages.
 *   --mode latency  N REST publishers sharing one fixed total rate; one WebSocket subscriber
 *                   on all K channels measures publish-to-delivery latency from the intended
 *                   send time stamped in the data (so a late publisher counts against it).
 *
 * With --database-url in rest/latency mode too, the run checks that the channels' last_seq
 * grew by exactly the number of acknowledged publishes. Output: a summary, or --json.
 */
#define _GNU_SOURCE
#include <getopt.h>
#include <hiredis/hiredis.h>
#include <libpq-fe.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "hist_common.h"
#include "pg_array.h"

enum mode { M_SQL, M_REST, M_LATENCY };

/* what a producer PUBLISHes is the signed envelope (docs/PROTOCOL.md): an unsigned one is
 * only a hint to the gateways, which would fetch the message from PostgreSQL instead */
static const char publish_sql[] =
    "SELECT seq, herald_sign(epoch, envelope) FROM herald_publish($1::text, $2::json, $3::text)";
static const char batch_sql[] = "SELECT seq, herald_sign(epoch, envelope) FROM "
                                "herald_publish_batch($1::text[], $2::json[], $3::text[])";

struct opts {
    enum mode mode;
    int publishers;
    double duration, warmup, drain;
    int channels;
    const char *prefix;
    char gw_host[64];
    int gw_port;
    const char *db_url;
    char redis_host[64];
    int redis_port;
    double rate;
    int payload_bytes;
    int json;
    int no_prepare; /* sql: PQexecParams each time, like the gateway (no prepared statement) */
    int batch;      /* sql: messages per herald_publish_batch call (1: herald_publish); rest:
                       messages per POST /v1/messages (1: POST /v1/channels/{C}/messages) */
};

static struct opts O = {.mode = M_SQL,
                        .publishers = 1,
                        .duration = 10,
                        .warmup = 1,
                        .drain = 3,
                        .channels = 10,
                        .prefix = "hb-pub-",
                        .redis_port = 6379,
                        .rate = 1000,
                        .payload_bytes = 64,
                        .batch = 1,
                        .json = 0};

static uint64_t t_start, t_warm, t_end;
static atomic_int stop_flag;

struct worker {
    pthread_t th;
    int id;
    uint64_t ok, errors, publish_errors; /* in the measured window */
    uint64_t ok_total, errors_total;     /* the whole run (for the DB check) */
    uint64_t max_lag_ns;                 /* latency mode: behind schedule */
    struct hist lat;                     /* per publish, ns */
    char first_error[200];
};

static void note(struct worker *w, const char *fmt, const char *detail)
{
    if (!w->first_error[0])
        snprintf(w->first_error, sizeof w->first_error, fmt, detail);
}

/* {"t":<ns>,"w":<worker>,"n":<n>,"p":"xxx..."}: t is CLOCK_MONOTONIC (intended send time). */
static size_t make_data(char *buf, size_t cap, uint64_t t, int w, uint64_t n)
{
    int len = snprintf(buf, cap, "{\"t\":%llu,\"w\":%d,\"n\":%llu,\"p\":\"", (unsigned long long)t,
                       w, (unsigned long long)n);
    size_t i = (size_t)len;
    while ((int)i < O.payload_bytes - 2 && i + 3 < cap)
        buf[i++] = 'x';
    buf[i++] = '"';
    buf[i++] = '}';
    buf[i] = '\0';
    return i;
}

static void channel_name(char *buf, size_t cap, uint64_t k)
{
    snprintf(buf, cap, "%s%llu", O.prefix, (unsigned long long)k);
}

/* The channel of worker w's message m (the sql and rest modes): the workers' messages
 * interleave over the channels. */
static void worker_channel(char *buf, size_t cap, int w, uint64_t m)
{
    channel_name(buf, cap, ((uint64_t)w + m * (uint64_t)O.publishers) % (uint64_t)O.channels);
}

static void account(struct worker *w, uint64_t t0, uint64_t t1, int ok)
{
    if (ok)
        w->ok_total++;
    else
        w->errors_total++;
    if (t0 < t_warm || t0 >= t_end)
        return;
    if (ok) {
        w->ok++;
        hist_add(&w->lat, t1 - t0);
    } else {
        w->errors++;
    }
}

/* One herald_publish_batch of O.batch messages starting at message n, then their PUBLISHes,
 * pipelined. Returns how many were published, or -1 when a connection broke. */
static int sql_batch_round(struct worker *w, PGconn *pg, redisContext *rc, uint64_t n, uint64_t t0)
{
    char data[4096];
    char names[512][64];
    char *chans = malloc((size_t)O.batch * 2 * sizeof names[0] + 3);
    char *datas = malloc((size_t)O.batch * (2 * sizeof data + 3) + 3);
    char *klit = malloc((size_t)O.batch * 5 + 3), *k = klit;
    if (!chans || !datas || !klit) {
        free(chans);
        free(datas);
        free(klit);
        note(w, "%s", "out of memory");
        return -1;
    }
    char *co = chans, *dout = datas;
    *co++ = '{';
    *dout++ = '{';
    *k++ = '{';
    for (int i = 0; i < O.batch; i++) {
        uint64_t m = n + (uint64_t)i;
        worker_channel(names[i], sizeof names[i], w->id, m);
        make_data(data, sizeof data, t0, w->id, m);
        co = pg_array_put(co, names[i], i == 0);
        dout = pg_array_put(dout, data, i == 0);
        k = pg_array_put(k, NULL, i == 0); /* no idempotency keys */
    }
    memcpy(co, "}", 2);
    memcpy(dout, "}", 2);
    memcpy(k, "}", 2);
    const char *params[3] = {chans, datas, klit};
    PGresult *r = O.no_prepare ? PQexecParams(pg, batch_sql, 3, NULL, params, NULL, NULL, 0)
                               : PQexecPrepared(pg, "pub", 3, params, NULL, NULL, 0);
    free(chans);
    free(datas);
    free(klit);
    int ok = PQresultStatus(r) == PGRES_TUPLES_OK && PQntuples(r) == O.batch;
    int published = 0;
    if (!ok) {
        note(w, "herald_publish_batch: %s", PQresultErrorMessage(r));
    } else {
        for (int i = 0; i < O.batch; i++)
            redisAppendCommand(rc, "PUBLISH %s %b", names[i], PQgetvalue(r, i, 1),
                               (size_t)PQgetlength(r, i, 1));
        for (int i = 0; i < O.batch; i++) {
            redisReply *rep = NULL;
            if (redisGetReply(rc, (void **)&rep) != REDIS_OK || !rep) {
                note(w, "PUBLISH: %s", rc->errstr);
                PQclear(r);
                return -1;
            }
            if (rep->type == REDIS_REPLY_INTEGER)
                published++;
            else
                w->publish_errors++;
            freeReplyObject(rep);
        }
    }
    PQclear(r);
    return PQstatus(pg) == CONNECTION_OK ? published : -1;
}

static void *sql_worker(void *arg)
{
    struct worker *w = arg;
    PGconn *pg = PQconnectdb(O.db_url);
    redisContext *rc = redisConnectWithTimeout(O.redis_host, O.redis_port, (struct timeval){5, 0});
    if (PQstatus(pg) != CONNECTION_OK || !rc || rc->err) {
        note(w, "connect: %s", PQstatus(pg) != CONNECTION_OK ? PQerrorMessage(pg) : "redis");
        w->errors++;
        goto out;
    }
    PGresult *r = O.no_prepare
                      ? PQexec(pg, "SELECT 1")
                      : PQprepare(pg, "pub", O.batch > 1 ? batch_sql : publish_sql, 3, NULL);
    if (PQresultStatus(r) != PGRES_COMMAND_OK && PQresultStatus(r) != PGRES_TUPLES_OK) {
        note(w, "prepare: %s", PQresultErrorMessage(r));
        w->errors++;
        PQclear(r);
        goto out;
    }
    PQclear(r);
    char data[4096], chan[256];
    for (uint64_t n = 0; O.batch > 1 && !atomic_load(&stop_flag); n += (uint64_t)O.batch) {
        uint64_t t0 = now_ns();
        if (t0 >= t_end)
            break;
        int published = sql_batch_round(w, pg, rc, n, t0);
        uint64_t t1 = now_ns();
        for (int i = 0; i < O.batch; i++)
            account(w, t0, t1, i < published);
        if (published < 0)
            break;
    }
    for (uint64_t n = 0; O.batch == 1 && !atomic_load(&stop_flag); n++) {
        uint64_t t0 = now_ns();
        if (t0 >= t_end)
            break;
        worker_channel(chan, sizeof chan, w->id, n);
        make_data(data, sizeof data, t0, w->id, n);
        const char *params[3] = {chan, data, NULL};
        r = O.no_prepare ? PQexecParams(pg, publish_sql, 3, NULL, params, NULL, NULL, 0)
                         : PQexecPrepared(pg, "pub", 3, params, NULL, NULL, 0);
        int ok = PQresultStatus(r) == PGRES_TUPLES_OK && PQntuples(r) == 1;
        if (!ok) {
            note(w, "herald_publish: %s", PQresultErrorMessage(r));
        } else {
            redisReply *rep = redisCommand(rc, "PUBLISH %s %b", chan, PQgetvalue(r, 0, 1),
                                           (size_t)PQgetlength(r, 0, 1));
            if (!rep || rep->type != REDIS_REPLY_INTEGER) {
                note(w, "PUBLISH: %s", rc->err ? rc->errstr : "bad reply");
                w->publish_errors++;
                ok = 0;
            }
            if (rep)
                freeReplyObject(rep);
            else
                break; /* the Redis connection is gone */
        }
        PQclear(r);
        account(w, t0, now_ns(), ok);
        if (PQstatus(pg) != CONNECTION_OK)
            break;
    }
out:
    PQfinish(pg);
    if (rc)
        redisFree(rc);
    return NULL;
}

/* One POST to path; 1 when answered 201. */
static int rest_post(struct worker *w, struct hb_http *h, const char *path, const char *data,
                     size_t dlen)
{
    const char *body;
    size_t blen;
    int st = hb_http_request(h, "POST", path, "application/json", data, dlen, &body, &blen);
    if (st == 201)
        return 1;
    char why[160];
    snprintf(why, sizeof why, "%d %.*s", st, (int)(blen < 120 ? blen : 120), st > 0 ? body : "");
    note(w, "POST: %s", st > 0 ? why : "connection error");
    return 0;
}

/* Worker w's request for its messages n..n+O.batch-1 into path and body; returns the body's
 * length. One message: POST /v1/channels/{C}/messages with the data; --batch: POST
 * /v1/messages with {"messages":[{"channel":C,"data":D},...]}. */
static size_t rest_request(int w, uint64_t n, uint64_t t0, char path[320], char *body, size_t cap)
{
    char chan[256];
    if (O.batch == 1) {
        worker_channel(chan, sizeof chan, w, n);
        snprintf(path, 320, "/v1/channels/%s/messages", chan);
        return make_data(body, cap, t0, w, n);
    }
    snprintf(path, 320, "/v1/messages");
    size_t len = (size_t)snprintf(body, cap, "{\"messages\":[");
    for (int i = 0; i < O.batch; i++) {
        worker_channel(chan, sizeof chan, w, n + (uint64_t)i);
        len += (size_t)snprintf(body + len, cap - len,
                                "%s{\"channel\":\"%s\",\"data\":", i ? "," : "", chan);
        len += make_data(body + len, cap - len, t0, w, n + (uint64_t)i);
        len += (size_t)snprintf(body + len, cap - len, "}");
    }
    return len + (size_t)snprintf(body + len, cap - len, "]}");
}

static void *rest_worker(void *arg)
{
    struct worker *w = arg;
    struct hb_http h;
    hb_http_init(&h, O.gw_host, O.gw_port, 10000);
    size_t cap = (size_t)O.batch * 4400 + 32;
    char *body = malloc(cap), path[320];
    for (uint64_t n = 0; body && !atomic_load(&stop_flag); n += (uint64_t)O.batch) {
        uint64_t t0 = now_ns();
        if (t0 >= t_end)
            break;
        size_t len = rest_request(w->id, n, t0, path, body, cap);
        int ok = rest_post(w, &h, path, body, len);
        uint64_t t1 = now_ns();
        for (int i = 0; i < O.batch; i++)
            account(w, t0, t1, ok);
    }
    free(body);
    hb_http_free(&h);
    return NULL;
}

/* Latency mode: message m (global) is due at t_start + m / rate; worker id sends
 * m = id, id + N, id + 2N, ... on channel m % K, stamping the due time. */
static void *paced_worker(void *arg)
{
    struct worker *w = arg;
    struct hb_http h;
    hb_http_init(&h, O.gw_host, O.gw_port, 10000);
    char data[4096], chan[256], path[320];
    double gap_ns = 1e9 / O.rate;
    for (uint64_t m = (uint64_t)w->id; !atomic_load(&stop_flag); m += (uint64_t)O.publishers) {
        uint64_t due = t_start + (uint64_t)((double)m * gap_ns);
        if (due >= t_end)
            break;
        sleep_until_ns(due);
        uint64_t t0 = now_ns();
        if (t0 - due > w->max_lag_ns)
            w->max_lag_ns = t0 - due;
        channel_name(chan, sizeof chan, m % (uint64_t)O.channels);
        size_t dlen = make_data(data, sizeof data, due, w->id, m);
        snprintf(path, sizeof path, "/v1/channels/%s/messages", chan);
        int ok = rest_post(w, &h, path, data, dlen);
        account(w, due, now_ns(), ok);
    }
    hb_http_free(&h);
    return NULL;
}

/* ---- latency-mode subscriber ---- */

struct sub {
    uint64_t *last_seq; /* per channel */
    int *subscribed;
    int nsubscribed;
    uint64_t received, in_window, gaps, dups, errors, other;
    struct hist lat;
    char first_error[200];
};

static void on_frame(void *arg, const char *msg, size_t len, uint64_t now)
{
    struct sub *s = arg;
    const char *cp = memmem(msg, len, "\"channel\":\"", 11);
    int k = -1;
    size_t plen = strlen(O.prefix);
    if (cp && (size_t)(msg + len - cp) > 11 + plen && memcmp(cp + 11, O.prefix, plen) == 0)
        k = atoi(cp + 11 + plen);
    if (len > 14 && memcmp(msg, "{\"op\":\"message\"", 15) == 0) {
        uint64_t seq = 0, t = 0;
        const char *d = memmem(msg, len, "\"data\":", 7);
        if (k < 0 || k >= O.channels || hb_json_u64(msg, len, "seq", &seq) < 0 || !d ||
            hb_json_u64(d, (size_t)(msg + len - d), "t", &t) < 0) {
            s->errors++;
            return;
        }
        s->received++;
        if (s->last_seq[k] && seq != s->last_seq[k] + 1) {
            if (seq <= s->last_seq[k])
                s->dups++;
            else
                s->gaps++;
        }
        if (seq > s->last_seq[k])
            s->last_seq[k] = seq;
        if (t >= t_warm && t < t_end) {
            s->in_window++;
            hist_add(&s->lat, now > t ? now - t : 0);
        }
    } else if (len > 17 && memcmp(msg, "{\"op\":\"subscribed\"", 18) == 0) {
        uint64_t seq = 0;
        if (k >= 0 && k < O.channels && !s->subscribed[k]) {
            s->subscribed[k] = 1;
            s->nsubscribed++;
            if (hb_json_u64(msg, len, "seq", &seq) == 0)
                s->last_seq[k] = seq;
        }
    } else {
        s->other++;
        if (!s->first_error[0])
            snprintf(s->first_error, sizeof s->first_error, "%.*s", (int)(len < 150 ? len : 150),
                     msg);
    }
}

/* sum(last_seq) of this run's channels, or -1. */
static long long db_sum(void)
{
    if (!O.db_url)
        return -1;
    PGconn *pg = PQconnectdb(O.db_url);
    long long v = -1;
    if (PQstatus(pg) == CONNECTION_OK) {
        char like[300];
        snprintf(like, sizeof like, "%s%%", O.prefix);
        const char *p[1] = {like};
        PGresult *r = PQexecParams(pg,
                                   "SELECT coalesce(sum(last_seq),0) FROM herald_channels "
                                   "WHERE name LIKE $1",
                                   1, NULL, p, NULL, NULL, 0);
        if (PQresultStatus(r) == PGRES_TUPLES_OK && PQntuples(r) == 1)
            v = atoll(PQgetvalue(r, 0, 0));
        PQclear(r);
    }
    PQfinish(pg);
    return v;
}

static void usage(void)
{
    fprintf(stderr,
            "usage: hist-publish --mode sql|rest|latency [options]\n"
            "  --publishers N        concurrent publishers (default 1)\n"
            "  --duration S          measured seconds (default 10)\n"
            "  --warmup S            seconds before the measured window (default 1)\n"
            "  --channels K          channels <prefix>0..K-1 (default 10)\n"
            "  --prefix P            channel name prefix (default hb-pub-)\n"
            "  --gateway HOST:PORT   Herald (rest, latency)\n"
            "  --database-url URL    PostgreSQL (sql; optional check for rest/latency)\n"
            "  --redis HOST:PORT     Redis (sql; default 127.0.0.1:6379)\n"
            "  --rate R              latency mode: total publishes/s (default 1000)\n"
            "  --drain S             latency mode: seconds to wait for the last deliveries (3)\n"
            "  --payload-bytes B     size of the data JSON (default 64)\n"
            "  --batch B             sql: B messages per herald_publish_batch call; rest: B\n"
            "                        messages per POST /v1/messages (default 1: one per call)\n"
            "  --no-prepare          sql: no prepared statement (parse+plan each time, as herald "
            "does)\n"
            "  --json                one JSON object on stdout\n");
}

static void on_signal(int sig)
{
    (void)sig;
    atomic_store(&stop_flag, 1);
}

int main(int argc, char **argv)
{
    static const struct option lo[] = {{"mode", 1, 0, 'm'},
                                       {"publishers", 1, 0, 'n'},
                                       {"duration", 1, 0, 'd'},
                                       {"warmup", 1, 0, 'w'},
                                       {"channels", 1, 0, 'k'},
                                       {"prefix", 1, 0, 'p'},
                                       {"gateway", 1, 0, 'g'},
                                       {"database-url", 1, 0, 'D'},
                                       {"redis", 1, 0, 'r'},
                                       {"rate", 1, 0, 'R'},
                                       {"drain", 1, 0, 'x'},
                                       {"payload-bytes", 1, 0, 'b'},
                                       {"json", 0, 0, 'j'},
                                       {"help", 0, 0, 'h'},
                                       {"no-prepare", 0, 0, 'P'},
                                       {"batch", 1, 0, 'B'},
                                       {0, 0, 0, 0}};
    snprintf(O.redis_host, sizeof O.redis_host, "127.0.0.1");
    int c;
    while ((c = getopt_long(argc, argv, "", lo, NULL)) != -1) {
        switch (c) {
        case 'm':
            O.mode = !strcmp(optarg, "sql")    ? M_SQL
                     : !strcmp(optarg, "rest") ? M_REST
                     : !strcmp(optarg, "latency")
                         ? M_LATENCY
                         : (fprintf(stderr, "bad --mode\n"), exit(1), M_SQL);
            break;
        case 'n':
            O.publishers = atoi(optarg);
            break;
        case 'd':
            O.duration = atof(optarg);
            break;
        case 'w':
            O.warmup = atof(optarg);
            break;
        case 'k':
            O.channels = atoi(optarg);
            break;
        case 'p':
            O.prefix = optarg;
            break;
        case 'g':
            if (hb_parse_hostport(optarg, O.gw_host, sizeof O.gw_host, &O.gw_port) < 0)
                return fprintf(stderr, "bad --gateway\n"), 1;
            break;
        case 'D':
            O.db_url = optarg;
            break;
        case 'r':
            if (hb_parse_hostport(optarg, O.redis_host, sizeof O.redis_host, &O.redis_port) < 0)
                return fprintf(stderr, "bad --redis\n"), 1;
            break;
        case 'R':
            O.rate = atof(optarg);
            break;
        case 'x':
            O.drain = atof(optarg);
            break;
        case 'b':
            O.payload_bytes = atoi(optarg);
            break;
        case 'j':
            O.json = 1;
            break;
        case 'P':
            O.no_prepare = 1;
            break;
        case 'B':
            O.batch = atoi(optarg);
            break;
        default:
            usage();
            return c == 'h' ? 0 : 1;
        }
    }
    if (O.publishers < 1 || O.publishers > 1024 || O.channels < 1 || O.duration <= 0 ||
        O.rate <= 0 || O.payload_bytes < 16 || O.payload_bytes > 3000 || O.batch < 1 ||
        O.batch > 512 || (O.mode == M_SQL && !O.db_url) || (O.mode != M_SQL && !O.gw_port)) {
        usage();
        return 1;
    }
    signal(SIGPIPE, SIG_IGN);
    signal(SIGINT, on_signal);
    signal(SIGTERM, on_signal);

    const char *mode_name = O.mode == M_SQL ? "sql" : O.mode == M_REST ? "rest" : "latency";
    long long before = db_sum();

    /* latency mode: the subscriber is in place before anything is published */
    struct hb_ws ws = {.fd = -1};
    struct sub sub = {0};
    if (O.mode == M_LATENCY) {
        sub.last_seq = calloc((size_t)O.channels, sizeof *sub.last_seq);
        sub.subscribed = calloc((size_t)O.channels, sizeof *sub.subscribed);
        if (hb_ws_open(&ws, O.gw_host, O.gw_port, 10000) < 0) {
            fprintf(stderr, "hist-publish: WebSocket connect failed\n");
            return 1;
        }
        for (int k = 0; k < O.channels; k++) {
            char m[300], chan[256];
            channel_name(chan, sizeof chan, (uint64_t)k);
            int n = snprintf(m, sizeof m, "{\"op\":\"subscribe\",\"channel\":\"%s\"}", chan);
            hb_ws_send_text(&ws, m, (size_t)n);
        }
        uint64_t deadline = now_ns() + 10000000000ull;
        while (sub.nsubscribed < O.channels && now_ns() < deadline)
            if (hb_ws_poll(&ws, 100, on_frame, &sub) < 0)
                break;
        if (sub.nsubscribed < O.channels) {
            fprintf(stderr, "hist-publish: only %d of %d channels subscribed\n", sub.nsubscribed,
                    O.channels);
            return 1;
        }
    }

    struct worker *ws_ = calloc((size_t)O.publishers, sizeof *ws_);
    if (!ws_)
        return 1;
    t_start = now_ns() + 50000000ull; /* everyone connects first */
    t_warm = t_start + (uint64_t)(O.warmup * 1e9);
    t_end = t_warm + (uint64_t)(O.duration * 1e9);
    double cpu0 = process_cpu_seconds();
    for (int i = 0; i < O.publishers; i++) {
        ws_[i].id = i;
        void *(*fn)(void *) = O.mode == M_SQL    ? sql_worker
                              : O.mode == M_REST ? rest_worker
                                                 : paced_worker;
        pthread_create(&ws_[i].th, NULL, fn, &ws_[i]);
    }
    if (O.mode == M_LATENCY) {
        /* receive until the publishers are done and the last deliveries had time to come */
        uint64_t stop_at = t_end + (uint64_t)(O.drain * 1e9);
        while (now_ns() < stop_at && !atomic_load(&stop_flag)) {
            if (hb_ws_poll(&ws, 50, on_frame, &sub) < 0) {
                snprintf(sub.first_error, sizeof sub.first_error, "WebSocket closed");
                break;
            }
        }
    }
    struct hist lat = {0};
    uint64_t ok = 0, errors = 0, pub_errors = 0, ok_total = 0, err_total = 0, max_lag = 0;
    const char *first_error = "";
    for (int i = 0; i < O.publishers; i++) {
        pthread_join(ws_[i].th, NULL);
        ok += ws_[i].ok;
        errors += ws_[i].errors;
        pub_errors += ws_[i].publish_errors;
        ok_total += ws_[i].ok_total;
        err_total += ws_[i].errors_total;
        if (ws_[i].max_lag_ns > max_lag)
            max_lag = ws_[i].max_lag_ns;
        hb_hist_merge(&lat, &ws_[i].lat);
        if (!first_error[0] && ws_[i].first_error[0])
            first_error = ws_[i].first_error;
    }
    double cpu = process_cpu_seconds() - cpu0;
    if (O.mode == M_LATENCY) {
        /* wait (bounded) for what is still in flight after the publishers ended */
        uint64_t stop_at = now_ns() + (uint64_t)(O.drain * 1e9);
        while (sub.received < ok_total && now_ns() < stop_at && !atomic_load(&stop_flag))
            if (hb_ws_poll(&ws, 50, on_frame, &sub) < 0)
                break;
    }
    long long after = db_sum();
    long long db_delta = before >= 0 && after >= 0 ? after - before : -1;
    int db_ok = db_delta < 0 || (uint64_t)db_delta == ok_total;
    double secs = O.duration;
    int lat_ok = O.mode != M_LATENCY ||
                 (sub.received == ok_total && sub.gaps == 0 && sub.dups == 0 && sub.errors == 0);
    int good = errors == 0 && err_total == 0 && db_ok && lat_ok && ok > 0;

    if (O.json) {
        printf("{\"mode\":\"%s\",\"publishers\":%d,\"channels\":%d,\"duration_s\":%.1f,"
               "\"payload_bytes\":%d,\"publishes\":%llu,\"publishes_per_s\":%.1f,"
               "\"errors\":%llu,\"redis_publish_errors\":%llu,"
               "\"publish_ms\":{\"p50\":%.3f,\"p99\":%.3f,\"p999\":%.3f,\"max\":%.3f},"
               "\"acked_total\":%llu,\"errors_total\":%llu,\"db_seq_delta\":%lld,\"db_check\":%s,"
               "\"tool_cpu_s\":%.2f,\"prepared\":%s",
               mode_name, O.publishers, O.channels, O.duration, O.payload_bytes,
               (unsigned long long)ok, (double)ok / secs, (unsigned long long)errors,
               (unsigned long long)pub_errors, hb_ms(&lat, 0.5), hb_ms(&lat, 0.99),
               hb_ms(&lat, 0.999), hb_max_ms(&lat), (unsigned long long)ok_total,
               (unsigned long long)err_total, db_delta,
               db_delta < 0 ? "null"
               : db_ok      ? "true"
                            : "false",
               cpu, O.mode == M_SQL && !O.no_prepare ? "true" : "false");
        if (O.mode == M_LATENCY)
            printf(",\"rate\":%.0f,\"delivered\":%llu,\"delivered_in_window\":%llu,"
                   "\"latency_ms\":{\"p50\":%.3f,\"p99\":%.3f,\"p999\":%.3f,\"max\":%.3f},"
                   "\"gaps\":%llu,\"duplicates\":%llu,\"unparsable\":%llu,\"other_frames\":%llu,"
                   "\"publisher_max_lag_ms\":%.3f",
                   O.rate, (unsigned long long)sub.received, (unsigned long long)sub.in_window,
                   hb_ms(&sub.lat, 0.5), hb_ms(&sub.lat, 0.99), hb_ms(&sub.lat, 0.999),
                   hb_max_ms(&sub.lat), (unsigned long long)sub.gaps, (unsigned long long)sub.dups,
                   (unsigned long long)sub.errors, (unsigned long long)sub.other,
                   (double)max_lag / 1e6);
        const char *fe = first_error[0] ? first_error : sub.first_error;
        printf(",\"ok\":%s,\"first_error\":\"", good ? "true" : "false");
        for (const char *p = fe; *p; p++)
            printf(*p == '"' || *p == '\\' ? "\\%c" : (unsigned char)*p < 0x20 ? " " : "%c", *p);
        printf("\"}\n");
    } else {
        printf("%s x%d on %d channels, %.0f s: %.1f publishes/s, p50 %.3f ms, p99 %.3f ms, max "
               "%.3f ms, errors %llu (redis %llu), db delta %lld of %llu acked%s\n",
               mode_name, O.publishers, O.channels, O.duration, (double)ok / secs, hb_ms(&lat, 0.5),
               hb_ms(&lat, 0.99), hb_max_ms(&lat), (unsigned long long)errors,
               (unsigned long long)pub_errors, db_delta, (unsigned long long)ok_total,
               db_ok ? "" : " MISMATCH");
        if (O.mode == M_LATENCY)
            printf("delivery at %.0f/s: %llu of %llu delivered, latency p50 %.3f ms p99 %.3f ms "
                   "p99.9 %.3f ms max %.3f ms; gaps %llu dups %llu; publisher max lag %.3f ms\n",
                   O.rate, (unsigned long long)sub.received, (unsigned long long)ok_total,
                   hb_ms(&sub.lat, 0.5), hb_ms(&sub.lat, 0.99), hb_ms(&sub.lat, 0.999),
                   hb_max_ms(&sub.lat), (unsigned long long)sub.gaps, (unsigned long long)sub.dups,
                   (double)max_lag / 1e6);
        if (first_error[0] || sub.first_error[0])
            printf("first error: %s\n", first_error[0] ? first_error : sub.first_error);
    }
    hb_ws_close(&ws);
    free(ws_);
    free(sub.last_seq);
    free(sub.subscribed);
    return good ? 0 : 2;
}
