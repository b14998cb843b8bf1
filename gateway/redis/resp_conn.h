/* One connection to a Redis server, built on hiredis' reply reader and command formatter with
 * libuv I/O. hiredis 0.14's async client cannot carry sharded pub/sub: it knows only
 * SUBSCRIBE and PSUBSCRIBE, so an SSUBSCRIBE confirmation or an `smessage` reaches the wrong
 * callback or trips an assertion. Here every reply goes to the command waiting for it, in
 * order, except pub/sub messages and replies no command waits for, which go to `push`.
 *
 * Every event runs from the loop, never inside a resp_conn_* call. */
#ifndef HERALD_RESP_CONN_H
#define HERALD_RESP_CONN_H

#include <hiredis/hiredis.h>
#include <stddef.h>
#include <uv.h>

struct resp_conn;

/* What the gateway's Redis connections allow a reply beyond HERALD_MAX_PUBLISH_BYTES: a
 * producer's oversized message is dropped by the layer above, not worth a reconnect; past
 * this the server is taken for broken. */
#define RESP_REPLY_SLACK (64u << 20)

/* A command's reply (valid during the call). reply is NULL when the connection ended before
 * the reply came (closed by the server, an error, or resp_conn_close): the callback may then
 * only release what arg owns. Each callback runs exactly once. */
typedef void resp_reply_fn(void *arg, redisReply *reply);

struct resp_conn_events {
    void *arg;
    void (*connected)(void *arg);
    /* a message (`message`, `smessage`, `pmessage`) or a reply no command waits for */
    void (*push)(void *arg, redisReply *reply);
    /* the connection failed or ended; once, before the waiting callbacks run with NULL, and
     * never after resp_conn_close */
    void (*closed)(void *arg, const char *why);
};

/* Connects to addr (a numeric IPv4 or IPv6 address) and port. A reply larger than max_reply
 * bytes ends the connection (a server, or something posing as one, cannot make the process
 * buffer without bound). ev is copied. NULL on an immediate failure (no event follows). */
struct resp_conn *resp_conn_open(uv_loop_t *loop, const char *addr, int port, size_t max_reply,
                                 const struct resp_conn_events *ev);

/* Queues a command (argv/lens as redisFormatCommandArgv takes them); fn (may be NULL) gets its
 * reply. 0, or -1 when the connection has ended or memory ran out (fn will not run). */
int resp_conn_send(struct resp_conn *c, resp_reply_fn *fn, void *arg, int argc, const char **argv,
                   const size_t *lens);

/* AUTH [user] password, when password is not empty (nothing is sent otherwise). */
void resp_conn_send_auth(struct resp_conn *c, const char *user, const char *password,
                         resp_reply_fn *fn, void *arg);

/* Closes the connection; no event follows, and the waiting commands' callbacks run with NULL
 * from the loop. */
void resp_conn_close(struct resp_conn *c);

#endif
