#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include "log.h"

/* One line a second: the first passes, the rest of that second are counted, and the next
 * line that passes says how many were held back. */
static void log_limit_lets_one_line_a_second_through(void **state)
{
    (void)state;
    struct log_limit l = {0};
    uint64_t skipped = 99;
    assert_true(log_limit_pass(&l, 5000, &skipped));
    assert_int_equal(skipped, 0);
    for (int i = 0; i < 7; i++)
        assert_false(log_limit_pass(&l, 5000 + 100 * (uint64_t)i, &skipped));
    assert_false(log_limit_pass(&l, 5999, &skipped));
    assert_true(log_limit_pass(&l, 6000, &skipped));
    assert_int_equal(skipped, 8);
    assert_false(log_limit_pass(&l, 6001, &skipped));
    assert_true(log_limit_pass(&l, 60000, &skipped));
    assert_int_equal(skipped, 1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(log_limit_lets_one_line_a_second_through),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
