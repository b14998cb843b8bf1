/* Completions that must not run inside the call that started them. An async API that fails
 * at once (PostgreSQL down, a full queue) or must start work on the next loop turn posts an
 * item here instead of calling back: every completion callback then runs exactly once, from
 * the loop, never before the call that started the work has returned.
 *
 * The item is embedded in the caller's own request struct (no allocation, so posting cannot
 * fail) and `run` recovers it with LATER_OWNER. */
#ifndef HERALD_LATER_H
#define HERALD_LATER_H

#include <assert.h>
#include <stdbool.h>
#include <stddef.h>
#include <uv.h>

/* The struct of type `type` whose `member` is the item a run callback got. */
#define LATER_OWNER(item, type, member) ((type *)((char *)(item)-offsetof(type, member)))

struct later {
    struct later *next;
    void (*run)(struct later *item);
    bool queued;
};

struct later_queue {
    struct later *head, *tail;
    size_t count;
    uv_idle_t idle; /* active only while items wait: an idle handle keeps the loop from blocking */
    unsigned depth; /* async API calls in progress (later_enter/later_leave) */
    bool closing;
};

void later_init(struct later_queue *q, uv_loop_t *loop);

/* Queues item; run(item) is called from the loop on this or the next turn. Posting an item
 * that is already queued does nothing (a "kick" can be posted any number of times). */
void later_post(struct later_queue *q, struct later *item, void (*run)(struct later *item));

/* Takes item off the queue if it is there (its owner is going away). */
void later_cancel(struct later_queue *q, struct later *item);

/* Runs what is still queued, then closes the handle; the loop must run afterwards. */
void later_close(struct later_queue *q);

/* Brackets around the body of every async entry point (db_query, publish_durable, ...):
 * a completion callback found running while one is in progress broke the contract. Checked
 * by assertions, so debug and sanitizer builds fail loudly. */
static inline void later_enter(struct later_queue *q)
{
    q->depth++;
}

static inline void later_leave(struct later_queue *q)
{
    assert(q->depth > 0);
    q->depth--;
}

/* Called right before a completion callback runs. */
static inline void later_assert_outside(const struct later_queue *q)
{
    assert(q->depth == 0 && "a completion callback ran inside the call that started it");
    (void)q;
}

#endif
