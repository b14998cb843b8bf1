/* History retention: every HERALD_PRUNE_INTERVAL, messages older than HERALD_HISTORY_TTL or
 * beyond the newest HERALD_HISTORY_MAX of their channel are deleted in bounded batches, by
 * one instance at a time, and so are channel rows left without a message (idle: a later
 * publish starts them again with a new epoch). last_seq is never lowered. */
#ifndef HERALD_RETENTION_H
#define HERALD_RETENTION_H

#include <stdint.h>

struct herald;
struct retention;

struct retention *retention_new(struct herald *app);
void retention_start(struct retention *r);
/* Stops the timer; a batch in flight finishes harmlessly. The loop must run afterwards. */
void retention_free(struct retention *r);

/* Messages deleted since start (a metric). */
uint64_t retention_pruned(const struct retention *r);

#endif
