/* The deferred-completion queue (later.c) on a real libuv loop: items run from the loop,
 * never inside later_post, once each, in order; cancel and close keep that true. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>
#include <string.h>

#include "later.h"

struct job {
    struct later item;
    struct later_queue *q;
    int runs;
    int order;
    int repost; /* times it posts itself again from run */
};

static int ran_in_order;

static void run_job(struct later *item)
{
    struct job *j = (struct job *)((char *)item - offsetof(struct job, item));
    j->runs++;
    j->order = ++ran_in_order;
    if (j->repost > 0) {
        j->repost--;
        later_post(j->q, &j->item, run_job);
    }
}

static void runs_later_once_in_order(void **state)
{
    uv_loop_t loop;
    uv_loop_init(&loop);
    struct later_queue q;
    later_init(&q, &loop);
    struct job a = {.q = &q}, b = {.q = &q};
    ran_in_order = 0;
    later_enter(&q);
    later_post(&q, &a.item, run_job);
    later_post(&q, &b.item, run_job);
    later_post(&q, &a.item, run_job); /* already queued: nothing more */
    later_leave(&q);
    assert_int_equal(a.runs + b.runs, 0); /* not inside the call that posted them */
    uv_run(&loop, UV_RUN_NOWAIT);
    assert_int_equal(a.runs, 1);
    assert_int_equal(b.runs, 1);
    assert_true(a.order < b.order);
    uv_run(&loop, UV_RUN_NOWAIT);
    assert_int_equal(a.runs, 1); /* once */
    later_close(&q);
    uv_run(&loop, UV_RUN_DEFAULT);
    assert_int_equal(uv_loop_close(&loop), 0);
}

static void cancel_and_close(void **state)
{
    uv_loop_t loop;
    uv_loop_init(&loop);
    struct later_queue q;
    later_init(&q, &loop);
    struct job a = {.q = &q}, b = {.q = &q}, c = {.q = &q};
    later_post(&q, &a.item, run_job);
    later_post(&q, &b.item, run_job);
    later_post(&q, &c.item, run_job);
    later_cancel(&q, &b.item); /* the middle one */
    later_cancel(&q, &c.item); /* the tail */
    later_cancel(&q, &c.item); /* not queued any more: nothing */
    later_post(&q, &c.item, run_job);
    assert_int_equal(q.count, 2);
    later_close(&q); /* what is queued runs before the handle goes */
    assert_int_equal(a.runs, 1);
    assert_int_equal(b.runs, 0);
    assert_int_equal(c.runs, 1);
    uv_run(&loop, UV_RUN_DEFAULT);
    assert_int_equal(uv_loop_close(&loop), 0);
}

static void a_reposting_item_cannot_starve_the_loop(void **state)
{
    uv_loop_t loop;
    uv_loop_init(&loop);
    struct later_queue q;
    later_init(&q, &loop);
    struct job a = {.q = &q, .repost = 1000};
    later_post(&q, &a.item, run_job);
    uv_run(&loop, UV_RUN_NOWAIT);
    assert_true(a.runs >= 1 && a.runs < 100); /* some rounds per turn, then the next turn */
    while (a.repost > 0)
        uv_run(&loop, UV_RUN_NOWAIT);
    uv_run(&loop, UV_RUN_NOWAIT);
    assert_int_equal(a.runs, 1001);
    later_close(&q);
    uv_run(&loop, UV_RUN_DEFAULT);
    assert_int_equal(uv_loop_close(&loop), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(runs_later_once_in_order),
        cmocka_unit_test(cancel_and_close),
        cmocka_unit_test(a_reposting_item_cannot_starve_the_loop),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
