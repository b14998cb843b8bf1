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

static void nesting_depth_is_measured_outside_strings(void **state)
{
    const char ok[] = "{\"a\":[1,{\"b\":[]}],\"s\":\"[[[[[[\"}";
    assert_false(json_too_deep(ok, sizeof ok - 1, 4)); /* { [ { [ */
    assert_true(json_too_deep(ok, sizeof ok - 1, 3));
    const char esc[] = "[\"\\\"[[[[\"]"; /* an escaped quote does not end the string */
    assert_false(json_too_deep(esc, sizeof esc - 1, 1));
    char deep[200];
    memset(deep, '[', sizeof deep);
    assert_true(json_too_deep(deep, sizeof deep, 16));
    assert_false(json_too_deep(deep, 16, 16));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(escapes_quotes_backslashes_and_controls),
        cmocka_unit_test(truncates_without_splitting_an_escape),
        cmocka_unit_test(nesting_depth_is_measured_outside_strings),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
