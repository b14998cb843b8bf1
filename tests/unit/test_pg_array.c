/* pg_array.c: elements quoted and escaped, NULLs, separators, and the room it promises. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <string.h>

#include <cmocka.h>

#include "pg_array.h"

/* The literal of items[0..n) (NULL entries are SQL NULLs), checked against the room. */
static void literal(const char *const *items, size_t n, char *out, size_t cap)
{
    size_t room = 3;
    for (size_t i = 0; i < n; i++)
        room += pg_array_room(items[i]);
    assert_true(room <= cap);
    char *p = out;
    *p++ = '{';
    for (size_t i = 0; i < n; i++)
        p = pg_array_put(p, items[i], i == 0);
    memcpy(p, "}", 2);
    assert_true(strlen(out) + 1 <= room);
}

static void elements_are_quoted_escaped_and_separated(void **state)
{
    (void)state;
    char out[256];
    const char *items[] = {"bot:status:42", "{\"a\":\"x\\\\y\"}", NULL, ""};
    literal(items, 4, out, sizeof out);
    assert_string_equal(out, "{\"bot:status:42\",\"{\\\"a\\\":\\\"x\\\\\\\\y\\\"}\",NULL,\"\"}");
}

static void empty_and_worst_case(void **state)
{
    (void)state;
    char out[64];
    literal(NULL, 0, out, sizeof out);
    assert_string_equal(out, "{}");
    const char *worst[] = {"\"\"\"\\\\\\"}; /* every byte escaped: room is exact */
    literal(worst, 1, out, sizeof out);
    assert_string_equal(out, "{\"\\\"\\\"\\\"\\\\\\\\\\\\\"}");
    assert_int_equal(strlen(out) + 1, 3 + pg_array_room(worst[0]) - 1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(elements_are_quoted_escaped_and_separated),
        cmocka_unit_test(empty_and_worst_case),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
