#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>
#include <string.h>

#include "outq.h"

static void bytes_follow_pushes_and_pops(void **state)
{
    struct outq q = {0};
    struct frame *a = frame_from("aaaa", 4), *b = frame_from("bbbbbbbb", 8);
    assert_true(outq_empty(&q));
    assert_int_equal(outq_push(&q, a), 0);
    assert_int_equal(outq_push(&q, b), 0);
    assert_int_equal(q.count, 2);
    assert_int_equal(q.bytes, a->len + b->len);
    assert_int_equal(a->refs, 2);
    assert_ptr_equal(outq_peek(&q), a);
    outq_pop(&q);
    assert_int_equal(q.bytes, b->len);
    assert_int_equal(a->refs, 1);
    assert_ptr_equal(outq_peek(&q), b);
    outq_pop(&q);
    assert_true(outq_empty(&q));
    assert_int_equal(q.bytes, 0);
    assert_null(outq_peek(&q));
    outq_pop(&q); /* popping an empty queue is harmless */
    frame_unref(a);
    frame_unref(b);
    outq_clear(&q);
}

static void order_survives_growth_and_wraparound(void **state)
{
    struct outq q = {0};
    struct frame *f[100];
    for (int i = 0; i < 100; i++)
        f[i] = frame_new((size_t)i);
    int next_pop = 0;
    /* interleave so that head moves while the ring grows */
    for (int i = 0; i < 100; i++) {
        assert_int_equal(outq_push(&q, f[i]), 0);
        if (i % 3 == 2) {
            assert_ptr_equal(outq_peek(&q), f[next_pop++]);
            outq_pop(&q);
        }
    }
    size_t expect = 0;
    for (int i = next_pop; i < 100; i++)
        expect += f[i]->len;
    assert_int_equal(q.bytes, expect);
    while (!outq_empty(&q)) {
        assert_ptr_equal(outq_peek(&q), f[next_pop++]);
        outq_pop(&q);
    }
    assert_int_equal(next_pop, 100);
    assert_null(q.ring); /* a large ring is released when it drains */
    for (int i = 0; i < 100; i++) {
        assert_int_equal(f[i]->refs, 1);
        frame_unref(f[i]);
    }
}

static void clear_drops_every_reference(void **state)
{
    struct outq q = {0};
    struct frame *f = frame_from("x", 1);
    for (int i = 0; i < 10; i++)
        outq_push(&q, f);
    assert_int_equal(f->refs, 11);
    outq_clear(&q);
    assert_int_equal(f->refs, 1);
    assert_int_equal(q.bytes, 0);
    assert_true(outq_empty(&q));
    frame_unref(f);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(bytes_follow_pushes_and_pops),
        cmocka_unit_test(order_survives_growth_and_wraparound),
        cmocka_unit_test(clear_drops_every_reference),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
