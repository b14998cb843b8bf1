#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>
#include <stdlib.h>
#include <string.h>

#include "envelope.h"

static struct payload_info classify(const char *channel, const char *payload)
{
    struct payload_info info;
    envelope_classify(channel, strlen(channel), payload, strlen(payload), &info);
    return info;
}

static void a_valid_envelope_is_sequenced(void **state)
{
    struct payload_info i = classify(
        "bot:status:42",
        "{\"op\":\"message\",\"channel\":\"bot:status:42\",\"seq\":18,\"ts\":1764000000000,"
        "\"data\":{\"state\":\"active\"}}");
    assert_int_equal(i.kind, PAYLOAD_SEQUENCED);
    assert_int_equal(i.seq, 18);
    assert_int_equal(i.ts, 1764000000000LL);
}

static void any_other_json_is_raw(void **state)
{
    const char *raw[] = {"{\"state\":\"active\"}",
                         "[1,2,3]",
                         "42",
                         "\"text\"",
                         "null",
                         "{\"op\":\"message\",\"data\":1}",
                         "{\"op\":\"other\",\"seq\":3}",
                         "  {\"a\" : 1}  "};
    for (size_t k = 0; k < sizeof raw / sizeof raw[0]; k++)
        assert_int_equal(classify("c", raw[k]).kind, PAYLOAD_RAW);
}

static void non_json_is_invalid(void **state)
{
    const char *bad[] = {"", "not json", "{\"a\":", "{\"a\":1}}", "\"\\u0000\"", "\xff\xfe"};
    for (size_t k = 0; k < sizeof bad / sizeof bad[0]; k++) {
        struct payload_info i = classify("c", bad[k]);
        assert_int_equal(i.kind, PAYLOAD_INVALID);
        assert_non_null(i.error);
    }
}

/* jansson alone would take both, and the raw one would reach browsers with its NUL */
static void a_payload_with_a_nul_byte_is_invalid(void **state)
{
    static const char raw[] = "{\"n\":1\0}";
    static const char seq[] = "{\"op\":\"message\",\"channel\":\"c\",\"seq\":3,\"data\":[1\0]}";
    struct payload_info i;
    envelope_classify("c", 1, raw, sizeof raw - 1, &i);
    assert_int_equal(i.kind, PAYLOAD_INVALID);
    assert_non_null(i.error);
    envelope_classify("c", 1, seq, sizeof seq - 1, &i);
    assert_int_equal(i.kind, PAYLOAD_INVALID);
}

static void broken_envelopes_are_invalid(void **state)
{
    const char *bad[] = {
        "{\"op\":\"message\",\"channel\":\"other\",\"seq\":1,\"ts\":1,\"data\":1}",
        "{\"op\":\"message\",\"channel\":\"c\",\"seq\":0,\"ts\":1,\"data\":1}",
        "{\"op\":\"message\",\"channel\":\"c\",\"seq\":-4,\"ts\":1,\"data\":1}",
        "{\"op\":\"message\",\"channel\":\"c\",\"seq\":\"7\",\"ts\":1,\"data\":1}",
        "{\"op\":\"message\",\"channel\":\"c\",\"seq\":1.5,\"ts\":1,\"data\":1}",
        "{\"op\":\"message\",\"channel\":\"c\",\"seq\":1,\"data\":1}",
        "{\"op\":\"message\",\"channel\":\"c\",\"seq\":1,\"ts\":1}",
        "{\"op\":\"message\",\"seq\":1,\"ts\":1,\"data\":1}",
    };
    for (size_t k = 0; k < sizeof bad / sizeof bad[0]; k++)
        assert_int_equal(classify("c", bad[k]).kind, PAYLOAD_INVALID);
}

static void raw_wrapping_is_exact(void **state)
{
    const char *raw = "{\"x\": [1, 2]}";
    size_t n = envelope_raw_size(4, strlen(raw));
    char *out = malloc(n + 1);
    assert_int_equal(envelope_write_raw(out, "room", 4, raw, strlen(raw)), n);
    out[n] = '\0';
    assert_string_equal(out, "{\"op\":\"message\",\"channel\":\"room\",\"data\":{\"x\": [1, 2]}}");
    free(out);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(a_valid_envelope_is_sequenced),
        cmocka_unit_test(any_other_json_is_raw),
        cmocka_unit_test(non_json_is_invalid),
        cmocka_unit_test(broken_envelopes_are_invalid),
        cmocka_unit_test(a_payload_with_a_nul_byte_is_invalid),
        cmocka_unit_test(raw_wrapping_is_exact),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
