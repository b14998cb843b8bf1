/* A ring of shared frames with their byte count: a client's send queue, bounded by it
 * (HERALD_CLIENT_QUEUE_BYTES), and a channel's recent-message cache. It holds one reference to
 * each frame it contains. */
#ifndef HERALD_OUTQ_H
#define HERALD_OUTQ_H

#include "frame.h"

#include <stdbool.h>
#include <stddef.h>

struct outq {
    struct frame **ring;
    uint32_t head, count, cap; /* cap is 0 or a power of two */
    size_t bytes;              /* sum of len of the queued frames */
};

/* Appends f, taking a new reference. Returns 0, or -1 when out of memory. */
int outq_push(struct outq *q, struct frame *f);

static inline bool outq_empty(const struct outq *q)
{
    return q->count == 0;
}

static inline struct frame *outq_peek(const struct outq *q)
{
    return q->count ? q->ring[q->head] : NULL;
}

/* The i-th frame from the head (i < count). */
static inline struct frame *outq_at(const struct outq *q, uint32_t i)
{
    return q->ring[(q->head + i) & (q->cap - 1)];
}

/* Puts f in front of the head, taking a new reference. Returns 0, or -1 when out of
 * memory. (The recent-message cache grows at both ends.) */
int outq_push_front(struct outq *q, struct frame *f);

/* Removes the head frame and drops the queue's reference to it. */
void outq_pop(struct outq *q);

/* Drops every frame; frees the ring so an idle connection costs nothing. */
void outq_clear(struct outq *q);

#endif
