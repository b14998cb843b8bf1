#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>
#include <string.h>

#include "json_text.h"

static void escapes_quotes_backslashes_and_controls(void **state)
{
    char out[64];
    const char in[] = "a\"b\\c\nd\x01";
    size_t n = json_escape(in, sizeof in - 1, out, sizeof out);
    assert_string_equal(out, "a\\\"b\\\\c\\nd\\u0001");
    assert_int_equal(n, strlen(out));
}

static void truncates_without_splitting_an_escape(void **state)
{
    char out[8];
    json_escape("abcd\x01zz", 7, out, sizeof out);
    assert_string_equal(out, "abcd"); /* \u0001 does not fit in the 3 bytes left */
    json_escape("abc", 3, out, 1);
    assert_string_equal(out, "");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(escapes_quotes_backslashes_and_controls),
        cmocka_unit_test(truncates_without_splitting_an_escape),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
