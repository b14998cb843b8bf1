#include "outq.h"

#include <stdlib.h>

/* Rings up to this size are kept when the queue drains, so a busy client does not
 * reallocate on every burst; larger ones are released. */
#define OUTQ_KEEP_CAP 16

static int grow(struct outq *q)
{
    uint32_t cap = q->cap ? q->cap * 2 : 4;
    struct frame **ring = malloc(cap * sizeof *ring);
    if (!ring)
        return -1;
    for (uint32_t i = 0; i < q->count; i++)
        ring[i] = q->ring[(q->head + i) & (q->cap - 1)];
    free(q->ring);
    q->ring = ring;
    q->head = 0;
    q->cap = cap;
    return 0;
}

int outq_push(struct outq *q, struct frame *f)
{
    if (q->count == q->cap && grow(q))
        return -1;
    q->ring[(q->head + q->count) & (q->cap - 1)] = frame_ref(f);
    q->count++;
    q->bytes += f->len;
    return 0;
}

int outq_push_front(struct outq *q, struct frame *f)
{
    if (q->count == q->cap && grow(q))
        return -1;
    q->head = (q->head - 1) & (q->cap - 1);
    q->ring[q->head] = frame_ref(f);
    q->count++;
    q->bytes += f->len;
    return 0;
}

void outq_pop(struct outq *q)
{
    if (!q->count)
        return;
    struct frame *f = q->ring[q->head];
    q->head = (q->head + 1) & (q->cap - 1);
    q->count--;
    q->bytes -= f->len;
    frame_unref(f);
    if (q->count == 0 && q->cap > OUTQ_KEEP_CAP) {
        free(q->ring);
        q->ring = NULL;
        q->cap = 0;
        q->head = 0;
    }
}

void outq_clear(struct outq *q)
{
    while (q->count)
        outq_pop(q);
    free(q->ring);
    q->ring = NULL;
    q->cap = q->head = 0;
    q->bytes = 0;
}
