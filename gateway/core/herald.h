/* The state of one gateway process. main owns it; every module reaches it through the
 * pointer it was given. The process-wide exceptions, each set or used by the loop's one
 * thread only: the log level (log.h, set before the loop runs) and frame.c's compressor. */
#ifndef HERALD_HERALD_H
#define HERALD_HERALD_H

#include "config.h"
#include "later.h"
#include "metrics.h"

#include <stdbool.h>
#include <stdint.h>
#include <uv.h>

struct lws_context;
struct hub;
struct bus;
struct db;
struct retention;
struct rest;
struct publisher;
struct iplimit;
struct sigkey;
struct client;
struct presence;
struct keyring;
struct streams;
struct hub_sink;

/* Bytes gathered from a client's queue into one write() per WRITEABLE callback. */
#define HERALD_WRITE_BATCH (64 * 1024)

/* Each field says who writes it (the way libuv labels a handle's fields): "main" fields are
 * set by app/main.c before the loop runs and only read afterwards; a module's own fields
 * are written by that module alone. */
struct herald {
    /* main */
    const struct herald_config *cfg;
    uv_loop_t *loop;
    struct hub *hub;
    struct bus *bus;
    struct db *db;               /* NULL without HERALD_DATABASE_URL */
    struct db *db_read;          /* a standby's pool; NULL without HERALD_DATABASE_READ_URL */
    struct publisher *publisher; /* durable publish; NULL without the db */
    struct retention *retention; /* NULL without the db */
    struct sigkey *sigkey;       /* PostgreSQL's envelope key; NULL without the db */
    struct presence *presence;   /* who is on the HERALD_PRESENCE channels */
    struct keyring *keyring;     /* public keys for RS256 and ES256 tokens */
    struct rest *rest;           /* REST sessions reading a body */
    struct streams *streams;     /* HTTP streams (SSE, long-poll) */
    /* how the channel core reaches a WebSocket client (channels/sink.h); an HTTP stream
     * brings its own */
    const struct hub_sink *client_sink;
    struct iplimit *ips;    /* connections per client address */
    uint8_t *write_buf;     /* HERALD_WRITE_BATCH bytes, shared by all connections */
    uv_check_t flush_check; /* both run client_flush_dirty */
    uv_prepare_t flush_prepare;
    bool draining;
    uint64_t started_ms;
    struct later_queue later; /* completions and kicks run from the loop (later.h) */
    /* every module: each counter is written by the module metrics.h names for it */
    struct metrics metrics;
    /* http/server.c (and lws, which clears it once the context is destroyed) */
    struct lws_context *lws;
    /* http/rest.c: POST body bytes held now (HERALD_BODY_BUFFER_BYTES) */
    size_t http_body_bytes;
    /* ws/client.c: clients with output queued during this loop turn; every client; the
     * liveness sweep (pings) */
    struct client *dirty;
    struct client *clients;
    uv_timer_t liveness;
};

/* Milliseconds on the loop's clock. */
static inline uint64_t herald_now_ms(const struct herald *app)
{
    return uv_now(app->loop);
}

#endif
