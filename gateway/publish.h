/* Durable publish with group commit: step 1 (the herald_publish_batch SQL function,
 * committed) then step 2 (PUBLISH of each new envelope to Redis, in seq order).
 *
 * Publishes that arrive while earlier batches are still committing wait in a queue and
 * leave together as one statement and one COMMIT: one WAL flush for the whole group
 * instead of one per message. An idle gateway sends each publish at once, so batching adds
 * no latency when there is no load. */
#ifndef HERALD_PUBLISH_H
#define HERALD_PUBLISH_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct herald;
struct publisher;

/* seq and epoch of the stored message (a retry with a known key: the first one's, and
 * duplicate is true); err set (and seq 0) when it failed: nothing was stored. */
typedef void (*publish_cb)(void *arg, uint64_t seq, const char *epoch, bool duplicate,
                           const char *err);

struct publisher *publisher_new(struct herald *app);
/* Fails what is still queued ("shutting down"); the batches in flight fail when the db
 * ends them (db_free), and the publisher is freed after the last one. */
void publisher_free(struct publisher *p);

/* Queues a publish of data[0..len) (JSON text, copied) on channel; key may be NULL. cb is
 * called exactly once, later. -1 (cb not called): PostgreSQL is down or the queue is full. */
int publish_durable(struct herald *app, const char *channel, const char *data, size_t len,
                    const char *key, publish_cb cb, void *arg);

/* For /metrics: batches sent, messages stored, publishes waiting for a batch. */
uint64_t publisher_batches(const struct publisher *p);
uint64_t publisher_messages(const struct publisher *p);
size_t publisher_queued(const struct publisher *p);

#endif
