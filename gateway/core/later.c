#include "later.h"

#include <stddef.h>

/* Rounds of newly posted items run in one turn before the rest waits for the next turn:
 * chains (a publish that queues a query that kicks the pool) finish in one turn, while an
 * item that keeps reposting itself cannot starve the loop. */
#define ROUNDS_PER_TURN 8

/* Pops and runs as many items as were queued at the start of the round, oldest first;
 * items stay on the queue until their turn so that later_cancel can always find them. */
static void run_round(struct later_queue *q)
{
    for (size_t n = q->count; n > 0 && q->head; n--) {
        struct later *item = q->head;
        q->head = item->next;
        if (!q->head)
            q->tail = NULL;
        q->count--;
        item->next = NULL;
        item->queued = false;
        later_assert_outside(q);
        item->run(item); /* may free item, or post it again */
    }
}

static void on_idle(uv_idle_t *h)
{
    struct later_queue *q = h->data;
    for (int round = 0; round < ROUNDS_PER_TURN && q->head; round++)
        run_round(q);
    if (!q->head)
        uv_idle_stop(&q->idle);
}

void later_init(struct later_queue *q, uv_loop_t *loop)
{
    q->head = q->tail = NULL;
    q->count = 0;
    q->depth = 0;
    q->closing = false;
    uv_idle_init(loop, &q->idle);
    q->idle.data = q;
}

void later_post(struct later_queue *q, struct later *item, void (*run)(struct later *item))
{
    if (item->queued)
        return;
    item->run = run;
    item->next = NULL;
    item->queued = true;
    if (q->tail)
        q->tail->next = item;
    else
        q->head = item;
    q->tail = item;
    q->count++;
    if (!q->closing)
        uv_idle_start(&q->idle, on_idle);
}

void later_cancel(struct later_queue *q, struct later *item)
{
    if (!item->queued)
        return;
    struct later **pp = &q->head, *prev = NULL;
    while (*pp != item) {
        prev = *pp;
        pp = &(*pp)->next;
    }
    *pp = item->next;
    if (q->tail == item)
        q->tail = prev;
    q->count--;
    item->next = NULL;
    item->queued = false;
}

void later_close(struct later_queue *q)
{
    while (q->head)
        on_idle(&q->idle);
    q->closing = true;
    uv_idle_stop(&q->idle);
    uv_close((uv_handle_t *)&q->idle, NULL);
}
