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

/* The text of the span, for comparing. */
static const char *span(const char *s, struct json_span sp)
{
    static char buf[256];
    memcpy(buf, s + sp.off, sp.len);
    buf[sp.len] = '\0';
    return buf;
}

static void member_spans_keep_the_senders_bytes(void **state)
{
    const char s[] =
        " { \"op\" : \"publish\", \"x\":{\"data\":1},\"s\":\"}\\\"{\" ,"
        "\"data\" : {\"b\": 0.1, \"a\": [1e400, 18446744073709551616]} , \"n\":-2.5e3}";
    struct json_span sp;
    assert_int_equal(json_member_span(s, sizeof s - 1, 0, "data", &sp), 0);
    assert_string_equal(span(s, sp), "{\"b\": 0.1, \"a\": [1e400, 18446744073709551616]}");
    assert_int_equal(json_member_span(s, sizeof s - 1, 0, "s", &sp), 0);
    assert_string_equal(span(s, sp), "\"}\\\"{\"");
    assert_int_equal(json_member_span(s, sizeof s - 1, 0, "n", &sp), 0);
    assert_string_equal(span(s, sp), "-2.5e3");
    assert_int_equal(json_member_span(s, sizeof s - 1, 0, "op", &sp), 0);
    assert_string_equal(span(s, sp), "\"publish\"");
    assert_int_equal(json_member_span(s, sizeof s - 1, 0, "missing", &sp), -1);
    assert_int_equal(json_member_span("{}", 2, 0, "data", &sp), -1);
    assert_int_equal(json_member_span("[1]", 3, 0, "data", &sp), -1);
    const char last[] = "{\"a\":true}";
    assert_int_equal(json_member_span(last, sizeof last - 1, 0, "a", &sp), 0);
    assert_string_equal(span(last, sp), "true");
}

static void member_keys_are_compared_decoded(void **state)
{
    const char s[] = "{\"dat\":1,\"d\\u0061ta\":[2],\"data2\":3}";
    struct json_span sp;
    assert_int_equal(json_member_span(s, sizeof s - 1, 0, "data", &sp), 0);
    assert_string_equal(span(s, sp), "[2]");
    assert_int_equal(json_member_span(s, sizeof s - 1, 0, "dat", &sp), 0);
    assert_string_equal(span(s, sp), "1");
}

static void element_spans_cover_every_kind_of_value(void **state)
{
    const char s[] = "{\"m\": [ {\"a\":[1,2]} , \"x,]\" ,3.5,null,[[]],true ] }";
    struct json_span m, el[8];
    assert_int_equal(json_member_span(s, sizeof s - 1, 0, "m", &m), 0);
    assert_int_equal(json_element_spans(s, sizeof s - 1, m.off, el, 8), 6);
    const char *want[] = {"{\"a\":[1,2]}", "\"x,]\"", "3.5", "null", "[[]]", "true"};
    for (int i = 0; i < 6; i++)
        assert_string_equal(span(s, el[i]), want[i]);
    assert_int_equal(json_element_spans(s, sizeof s - 1, m.off, el, 2), 6); /* counts all */
    assert_int_equal(json_element_spans(" [ ] ", 5, 0, el, 8), 0);
    assert_int_equal(json_element_spans("{}", 2, 0, el, 8), -1);
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

/* jansson alone takes each of these: it ends a number at a NUL and reads on. */
static void text_with_a_nul_byte_is_refused(void **state)
{
    static const struct {
        const char *s;
        size_t n, at;
    } nul[] = {{"[1\0]", 4, 2}, {"{\"n\":1\0}", 8, 6}, {"{\"a\":{\"n\":-2.5\0}}", 17, 14}};
    for (size_t k = 0; k < sizeof nul / sizeof nul[0]; k++) {
        json_error_t err;
        assert_null(json_text_load(nul[k].s, nul[k].n, JSON_DECODE_ANY, &err));
        assert_int_equal(err.position, nul[k].at);
        assert_non_null(strstr(err.text, "NUL"));
        assert_null(json_text_load(nul[k].s, nul[k].n, JSON_DECODE_ANY, NULL));
    }
    json_t *ok = json_text_load("{\"n\":1}", 7, 0, NULL);
    assert_int_equal(json_integer_value(json_object_get(ok, "n")), 1);
    json_decref(ok);
    /* an escaped NUL inside a string is JSON, and refused only as jansson refuses it */
    ok = json_text_load("\"a\\u0000b\"", 10, JSON_DECODE_ANY | JSON_ALLOW_NUL, NULL);
    assert_int_equal(json_string_length(ok), 3);
    json_decref(ok);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(escapes_quotes_backslashes_and_controls),
        cmocka_unit_test(truncates_without_splitting_an_escape),
        cmocka_unit_test(nesting_depth_is_measured_outside_strings),
        cmocka_unit_test(member_spans_keep_the_senders_bytes),
        cmocka_unit_test(member_keys_are_compared_decoded),
        cmocka_unit_test(element_spans_cover_every_kind_of_value),
        cmocka_unit_test(text_with_a_nul_byte_is_refused),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
