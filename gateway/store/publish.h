/* Durable publish with group commit: step 1 (the herald_publish_batch SQL function,
 * committed) then step 2 (PUBLISH of each new envelope to Redis, in seq order).
 *
 * Publishes that arrive while earlier batches are still committing wait in a queue and
 * leave together as one statement and one COMMIT: one WAL flush for the whole group
 * instead of one per message. An idle gateway sends each publish at once, so batching adds
 * no latency when there is no load. */
#ifndef HERALD_PUBLISH_H
#define HERALD_PUBLISH_H

#include "later.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct herald;
struct publisher;

/* What became of a publish. Stored: seq and epoch of the message (a retry with a known key
 * gets the first one's, with duplicate set). Failed: err says why and nothing was stored;
 * refused is set when PostgreSQL refused the message itself (SQLSTATE class 22 or 23), so
 * that a retry cannot help, unlike an outage. */
struct publish_result {
    uint64_t seq;
    const char *epoch;
    bool duplicate;
    const char *err;
    bool refused;
};

typedef void (*publish_cb)(void *arg, const struct publish_result *res);

/* A publish in flight, owned by the caller (embedded in its own state) and left alone
 * from publish_durable until cb has run. */
struct publish_request {
    struct publish_request *next;
    struct later later; /* a failure decided at once, delivered on the loop */
    publish_cb cb;
    void *arg;
    bool alone;                       /* retried by itself after its batch failed */
    char *copy;                       /* channel, data and key, copied in one allocation */
    const char *channel, *data, *key; /* inside copy; key may be NULL */
    size_t size;                      /* bytes of data */
    const char *fail;
};

struct publisher *publisher_new(struct herald *app);
/* Fails what is still queued ("shutting down"); the batches in flight fail when the db
 * ends them (db_free), and the publisher is freed after the last one. */
void publisher_free(struct publisher *p);

/* Queues a publish of data[0..len) (JSON text, copied) on channel; key may be NULL. cb is
 * called exactly once and always later, from the loop: with the stored message, or with an
 * error when PostgreSQL is down, HERALD_PUBLISH_QUEUE_MAX publishes are waiting, memory ran
 * out or the statement failed. */
void publish_durable(struct herald *app, struct publish_request *r, const char *channel,
                     const char *data, size_t len, const char *key, publish_cb cb, void *arg);

/* For /metrics: batches sent, messages stored, publishes waiting for a batch. */
uint64_t publisher_batches(const struct publisher *p);
uint64_t publisher_messages(const struct publisher *p);
size_t publisher_queued(const struct publisher *p);

#endif
