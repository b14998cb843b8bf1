/* The state of one gateway process. main owns it; every module reaches it through the
 * pointer it was given, so there is no global mutable state. */
#ifndef HERALD_HERALD_H
#define HERALD_HERALD_H

#include "config.h"
#include "envelope_sig.h"
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
struct client;

/* Bytes gathered from a client's queue into one write() per WRITEABLE callback. */
#define HERALD_WRITE_BATCH (64 * 1024)

struct herald {
    const struct herald_config *cfg;
    uv_loop_t *loop;
    struct lws_context *lws;
    struct hub *hub;
    struct bus *bus;
    struct db *db;               /* NULL without HERALD_DATABASE_URL */
    struct publisher *publisher; /* durable publish; NULL without the db */
    struct retention *retention;
    struct rest *rest;   /* REST sessions reading a body */
    struct iplimit *ips; /* connections per client address */
    struct metrics metrics;
    struct later_queue later; /* completions and kicks run from the loop (later.h) */
    size_t http_body_bytes;   /* POST body bytes held now (HERALD_BODY_BUFFER_BYTES) */
    /* PostgreSQL's envelope key (herald_keys), once read: signs what this process publishes
     * and tells the sequenced envelopes from Redis that PostgreSQL stored */
    struct envelope_key envelope_key;
    bool has_envelope_key;
    uint8_t *write_buf;   /* HERALD_WRITE_BATCH bytes, shared by all connections */
    struct client *dirty; /* clients with output queued during this loop turn */
    uv_check_t flush_check;
    uv_prepare_t flush_prepare;
    bool draining;
    uint64_t started_ms;
};

/* Milliseconds on the loop's clock. */
static inline uint64_t herald_now_ms(const struct herald *app)
{
    return uv_now(app->loop);
}

#endif
