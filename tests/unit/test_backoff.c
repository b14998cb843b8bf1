/* Reconnect delays (core/backoff.c): exponential, capped, jittered within the upper half of
 * each step, back to the start after a success, different between two seeds. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>
#include <stdint.h>

#include "backoff.h"

static void delays_grow_within_the_upper_half_and_stop_at_the_cap(void **state)
{
    (void)state;
    struct backoff b;
    backoff_init(&b, 100, 5000, 42);
    const uint64_t steps[] = {100, 200, 400, 800, 1600, 3200, 5000, 5000, 5000};
    for (size_t i = 0; i < sizeof steps / sizeof *steps; i++) {
        uint64_t d = backoff_next(&b);
        assert_in_range(d, steps[i] / 2, steps[i]);
        assert_int_equal(b.attempts, i + 1);
    }
    backoff_reset(&b);
    assert_int_equal(b.attempts, 0);
    assert_in_range(backoff_next(&b), 50, 100);
}

static void two_instances_do_not_retry_in_lockstep(void **state)
{
    (void)state;
    struct backoff a, b;
    backoff_init(&a, 100, 5000, backoff_seed((uintptr_t)&a));
    backoff_init(&b, 100, 5000, backoff_seed((uintptr_t)&b));
    int same = 0;
    for (int i = 0; i < 20; i++)
        same += backoff_next(&a) == backoff_next(&b);
    assert_true(same < 5);
}

static void many_failures_do_not_overflow(void **state)
{
    (void)state;
    struct backoff b;
    backoff_init(&b, 200, 5000, 7);
    for (int i = 0; i < 1000; i++)
        assert_in_range(backoff_next(&b), 100, 5000);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(delays_grow_within_the_upper_half_and_stop_at_the_cap),
        cmocka_unit_test(two_instances_do_not_retry_in_lockstep),
        cmocka_unit_test(many_failures_do_not_overflow),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
