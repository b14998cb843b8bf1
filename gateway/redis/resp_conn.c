#include "resp_conn.h"
#include "resp_reader.h"

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define READ_CHUNK 65536

struct waiting {
    resp_reply_fn *fn;
    void *arg;
};

struct resp_conn {
    uv_tcp_t tcp;
    uv_connect_t connect_req;
    struct resp_conn_events ev;
    redisReader *reader;
    size_t max_reply;
    size_t reply_bytes; /* fed since the last whole reply: what the reader holds, at most */
    /* commands waiting for their reply, oldest first: a ring of cap entries */
    struct waiting *wait;
    size_t head, count, cap;
    char *rbuf;
    /* Commands written while a write is in flight wait here and go out in one write when it
     * completes: under load many commands share a system call, as in hiredis' own client. */
    char *out;
    size_t out_len, out_cap;
    bool writing;      /* a uv_write in flight */
    bool ended;        /* no more events or sends: closing */
    bool closed_by_us; /* resp_conn_close: `closed` is not reported */
    char why[128];     /* why it ended, for `closed` */
};

struct write_req {
    uv_write_t req;
    struct resp_conn *c;
    char *buf; /* malloc'd: one command, or the commands gathered while the last was out */
};

/* `closed` and the callbacks of the replies that will never come run here, from the loop,
 * whatever ended the connection. */
static void on_closed(uv_handle_t *h)
{
    struct resp_conn *c = h->data;
    if (!c->closed_by_us && c->ev.closed)
        c->ev.closed(c->ev.arg, c->why);
    /* the replies that will never come: each callback still runs once */
    while (c->count) {
        struct waiting w = c->wait[c->head];
        c->head = (c->head + 1) % c->cap;
        c->count--;
        if (w.fn)
            w.fn(w.arg, NULL);
    }
    redisReaderFree(c->reader);
    free(c->wait);
    free(c->rbuf);
    free(c->out);
    free(c);
}

static void end(struct resp_conn *c, const char *why)
{
    if (c->ended)
        return;
    c->ended = true;
    snprintf(c->why, sizeof c->why, "%s", why ? why : "closed");
    uv_close((uv_handle_t *)&c->tcp, on_closed);
}

void resp_conn_close(struct resp_conn *c)
{
    if (!c)
        return;
    c->closed_by_us = true;
    end(c, NULL);
}

static bool is_message(const redisReply *r)
{
    if (r->type != REDIS_REPLY_ARRAY || r->elements < 3 ||
        r->element[0]->type != REDIS_REPLY_STRING)
        return false;
    const char *kind = r->element[0]->str;
    return strcmp(kind, "message") == 0 || strcmp(kind, "smessage") == 0 ||
           strcmp(kind, "pmessage") == 0;
}

static void dispatch(struct resp_conn *c, redisReply *r)
{
    if (c->count == 0 || is_message(r)) {
        if (c->ev.push)
            c->ev.push(c->ev.arg, r);
        return;
    }
    struct waiting w = c->wait[c->head];
    c->head = (c->head + 1) % c->cap;
    c->count--;
    if (w.fn)
        w.fn(w.arg, r);
}

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    (void)suggested;
    struct resp_conn *c = h->data;
    *buf = uv_buf_init(c->rbuf, READ_CHUNK);
}

static void on_read(uv_stream_t *s, ssize_t n, const uv_buf_t *buf)
{
    (void)buf;
    struct resp_conn *c = s->data;
    if (c->ended)
        return;
    if (n < 0) {
        end(c, n == UV_EOF ? "connection closed" : uv_strerror((int)n));
        return;
    }
    if (n == 0)
        return;
    c->reply_bytes += (size_t)n;
    if (redisReaderFeed(c->reader, c->rbuf, (size_t)n) != REDIS_OK) {
        end(c, "out of memory");
        return;
    }
    while (!c->ended) {
        void *reply = NULL;
        if (redisReaderGetReply(c->reader, &reply) != REDIS_OK) {
            end(c, strcmp(c->reader->errstr, "Out of memory") == 0
                       ? "a reply with too many elements (or out of memory)"
                   : c->reader->errstr[0] ? c->reader->errstr
                                          : "protocol error");
            return;
        }
        if (!reply)
            break;
        c->reply_bytes = c->reader->len - c->reader->pos;
        dispatch(c, reply);
        freeReplyObject(reply);
    }
    if (!c->ended && c->reply_bytes > c->max_reply)
        end(c, "a reply exceeds the size limit");
}

static void on_connect(uv_connect_t *req, int status)
{
    struct resp_conn *c = req->data;
    if (c->ended)
        return;
    if (status < 0) {
        end(c, uv_strerror(status));
        return;
    }
    uv_tcp_nodelay(&c->tcp, 1);
    int rc = uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read);
    if (rc < 0) {
        end(c, uv_strerror(rc));
        return;
    }
    if (c->ev.connected)
        c->ev.connected(c->ev.arg);
}

static void free_on_close(uv_handle_t *h)
{
    struct resp_conn *c = h->data;
    redisReaderFree(c->reader);
    free(c->rbuf);
    free(c);
}

struct resp_conn *resp_conn_open(uv_loop_t *loop, const char *addr, int port, size_t max_reply,
                                 const struct resp_conn_events *ev)
{
    union {
        struct sockaddr sa;
        struct sockaddr_in in;
        struct sockaddr_in6 in6;
    } sa;
    if (uv_ip4_addr(addr, port, &sa.in) != 0 && uv_ip6_addr(addr, port, &sa.in6) != 0)
        return NULL;
    struct resp_conn *c = calloc(1, sizeof *c);
    if (!c)
        return NULL;
    c->ev = *ev;
    c->max_reply = max_reply;
    c->reader = redisReaderCreate();
    resp_reader_bound(c->reader);
    c->rbuf = malloc(READ_CHUNK);
    if (!c->reader || !c->rbuf || uv_tcp_init(loop, &c->tcp) != 0) {
        if (c->reader)
            redisReaderFree(c->reader);
        free(c->rbuf);
        free(c);
        return NULL;
    }
    c->tcp.data = c;
    c->connect_req.data = c;
    if (uv_tcp_connect(&c->connect_req, &c->tcp, &sa.sa, on_connect) != 0) {
        c->ended = true;
        uv_close((uv_handle_t *)&c->tcp, free_on_close);
        return NULL;
    }
    return c;
}

static int write_out(struct resp_conn *c, char *buf, size_t len);

static void on_written(uv_write_t *req, int status)
{
    struct write_req *w = (struct write_req *)req;
    struct resp_conn *c = w->c;
    free(w->buf);
    free(w);
    if (c->ended)
        return;
    c->writing = false;
    if (status < 0) {
        end(c, uv_strerror(status));
        return;
    }
    if (c->out_len) { /* what gathered meanwhile, in one write */
        char *buf = c->out;
        size_t len = c->out_len;
        c->out = NULL;
        c->out_len = c->out_cap = 0;
        if (write_out(c, buf, len) < 0)
            end(c, "cannot write");
    }
}

/* Starts writing buf (taken over). */
static int write_out(struct resp_conn *c, char *buf, size_t len)
{
    struct write_req *w = malloc(sizeof *w);
    if (!w) {
        free(buf);
        return -1;
    }
    w->c = c;
    w->buf = buf;
    uv_buf_t b = uv_buf_init(buf, (unsigned)len);
    if (uv_write(&w->req, (uv_stream_t *)&c->tcp, &b, 1, on_written) < 0) {
        free(buf);
        free(w);
        return -1;
    }
    c->writing = true;
    return 0;
}

/* Appends a formatted command to what waits for the write in flight. */
static int gather(struct resp_conn *c, const char *cmd, size_t len)
{
    if (c->out_len + len > c->out_cap) {
        size_t cap = c->out_cap ? c->out_cap : 4096;
        while (cap < c->out_len + len)
            cap *= 2;
        char *out = realloc(c->out, cap);
        if (!out)
            return -1;
        c->out = out;
        c->out_cap = cap;
    }
    memcpy(c->out + c->out_len, cmd, len);
    c->out_len += len;
    return 0;
}

static int push_waiting(struct resp_conn *c, resp_reply_fn *fn, void *arg)
{
    if (c->count == c->cap) {
        size_t cap = c->cap ? c->cap * 2 : 16;
        struct waiting *q = malloc(cap * sizeof *q);
        if (!q)
            return -1;
        for (size_t i = 0; i < c->count; i++)
            q[i] = c->wait[(c->head + i) % c->cap];
        free(c->wait);
        c->wait = q;
        c->head = 0;
        c->cap = cap;
    }
    c->wait[(c->head + c->count) % c->cap] = (struct waiting){fn, arg};
    c->count++;
    return 0;
}

int resp_conn_send(struct resp_conn *c, resp_reply_fn *fn, void *arg, int argc, const char **argv,
                   const size_t *lens)
{
    if (c->ended)
        return -1;
    char *cmd;
    int n = redisFormatCommandArgv(&cmd, argc, argv, lens);
    if (n < 0)
        return -1;
    if (push_waiting(c, fn, arg) != 0) {
        redisFreeCommand(cmd);
        return -1;
    }
    /* copied into our own buffers: hiredis' allocator and ours need not be the same */
    int rc = -1;
    if (c->writing) {
        rc = gather(c, cmd, (size_t)n);
    } else {
        char *buf = malloc((size_t)n);
        if (buf) {
            memcpy(buf, cmd, (size_t)n);
            rc = write_out(c, buf, (size_t)n);
        }
    }
    redisFreeCommand(cmd);
    if (rc < 0) /* fn is queued: it runs with NULL when the connection, now ended, closes */
        end(c, "cannot write");
    return 0;
}

void resp_conn_send_auth(struct resp_conn *c, const char *user, const char *password,
                         resp_reply_fn *fn, void *arg)
{
    if (!password[0])
        return;
    const char *argv[] = {"AUTH", user, password};
    size_t lens[] = {4, strlen(user), strlen(password)};
    if (user[0]) {
        resp_conn_send(c, fn, arg, 3, argv, lens);
        return;
    }
    argv[1] = password;
    lens[1] = lens[2];
    resp_conn_send(c, fn, arg, 2, argv, lens);
}
