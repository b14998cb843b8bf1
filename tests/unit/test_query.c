#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>
#include <string.h>

#include "query.h"

static int u64(const char *s, uint64_t max, uint64_t *out)
{
    return query_parse_u64(s, strlen(s), max, out);
}

static void plain_digits_parse(void **state)
{
    uint64_t v = 99;
    assert_int_equal(u64("0", 10, &v), 0);
    assert_int_equal(v, 0);
    assert_int_equal(u64("42", 100, &v), 0);
    assert_int_equal(v, 42);
    assert_int_equal(u64("0007", 100, &v), 0);
    assert_int_equal(v, 7);
    assert_int_equal(u64("18446744073709551615", UINT64_MAX, &v), 0);
    assert_true(v == UINT64_MAX);
    assert_int_equal(u64("000000000000000000000000018446744073709551615", UINT64_MAX, &v), 0);
    assert_true(v == UINT64_MAX);
    assert_int_equal(query_parse_u64("123", 2, 1000, &v), 0);
    assert_int_equal(v, 12);
}

static void anything_else_is_refused(void **state)
{
    uint64_t v = 5;
    const char *bad[] = {"", "+1", "-1", " 1", "1 ", "1a", "0x10", "1.0", "1e3", "١"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        assert_int_equal(u64(bad[i], UINT64_MAX, &v), QUERY_EINVAL);
    assert_int_equal(query_parse_u64("1\0", 2, 10, &v), QUERY_EINVAL);
    assert_int_equal(query_parse_u64(NULL, 0, 10, &v), QUERY_EINVAL);
    assert_int_equal(v, 5); /* untouched on failure */
}

static void range_and_overflow_are_refused(void **state)
{
    uint64_t v = 5;
    assert_int_equal(u64("101", 100, &v), QUERY_ERANGE);
    assert_int_equal(u64("18446744073709551616", UINT64_MAX, &v), QUERY_ERANGE);
    assert_int_equal(u64("99999999999999999999999", UINT64_MAX, &v), QUERY_ERANGE);
    assert_int_equal(u64("99999999999999999999999x", UINT64_MAX, &v), QUERY_EINVAL);
    assert_int_equal(v, 5);
}

static int history(const char *qs, struct query_history *q, char *err)
{
    err[0] = '\0';
    return query_parse_history(qs, strlen(qs), q, err, 200);
}

static void defaults_apply(void **state)
{
    struct query_history q;
    char err[200];
    assert_int_equal(history("", &q, err), 0);
    assert_int_equal(q.since, 0);
    assert_int_equal(q.limit, QUERY_LIMIT_DEFAULT);
    assert_int_equal(query_parse_history(NULL, 0, &q, err, 200), 0);
    assert_int_equal(history("other=1&&x", &q, err), 0);
    assert_int_equal(q.limit, 100);
}

static void since_and_limit_parse(void **state)
{
    struct query_history q;
    char err[200];
    assert_int_equal(history("since=17&limit=50", &q, err), 0);
    assert_int_equal(q.since, 17);
    assert_int_equal(q.limit, 50);
    assert_int_equal(history("limit=1000&since=9223372036854775807&", &q, err), 0);
    assert_int_equal(q.limit, 1000);
    assert_true(q.since == 9223372036854775807ULL);
    assert_int_equal(history("foo=%20bar&limit=1&since=0", &q, err), 0);
    assert_int_equal(q.limit, 1);
    assert_int_equal(history("%73ince=%32", &q, err), 0); /* escapes decode first */
    assert_int_equal(q.since, 2);
    assert_int_equal(history("Since=5", &q, err), 0); /* keys are case-sensitive */
    assert_int_equal(q.since, 0);
}

static void bad_values_are_explained(void **state)
{
    struct query_history q;
    char err[200];
    assert_int_equal(history("limit=0", &q, err), -1);
    assert_non_null(strstr(err, "limit must be 1 to 1000"));
    assert_int_equal(history("limit=1001", &q, err), -1);
    assert_non_null(strstr(err, "limit"));
    assert_int_equal(history("since=9223372036854775808", &q, err), -1);
    assert_non_null(strstr(err, "since"));
    const char *bad[] = {"since=",
                         "since",
                         "since=-1",
                         "since=+1",
                         "since=1+",
                         "since=%201",
                         "limit=ten",
                         "limit=1.5",
                         "since=0x1",
                         "limit=%",
                         "limit=%4",
                         "limit=%zz",
                         "x=%g0",
                         "%=1",
                         "since=1%00",
                         "since=1&since=1",
                         "limit=5&x=1&limit=5",
                         "li%6dit=2&limit=2"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        assert_int_equal(history(bad[i], &q, err), -1);
        assert_true(strlen(err) > 0);
    }
    assert_int_equal(history("since=1&since=2", &q, err), -1);
    assert_non_null(strstr(err, "more than once"));
    assert_int_equal(history("a=%zz", &q, err), -1);
    assert_non_null(strstr(err, "escape"));
}

static void long_input_is_bounded(void **state)
{
    struct query_history q;
    char err[200], qs[QUERY_LEN_MAX + 2];
    memset(qs, 'a', sizeof qs - 1);
    qs[sizeof qs - 1] = '\0';
    assert_int_equal(history(qs, &q, err), -1);
    char zeros[120] = "since=";
    memset(zeros + 6, '0', 100);
    zeros[106] = '\0';
    assert_int_equal(history(zeros, &q, err), -1);
    assert_non_null(strstr(err, "too long"));
    zeros[6 + 40] = '\0'; /* 40 leading zeros are fine */
    assert_int_equal(history(zeros, &q, err), 0);
    assert_int_equal(q.since, 0);
}

/* The pair-at-a-time parser the gateway feeds with lws's decoded fragments. */
static int pair(struct query_history_parser *p, const char *k, const char *v)
{
    char err[128];
    return query_history_pair(p, k, strlen(k), v, strlen(v), err, sizeof err);
}

static void pairs_parse_strictly(void **state)
{
    struct query_history q;
    struct query_history_parser p;
    query_history_begin(&p, &q);
    assert_int_equal(q.since, 0);
    assert_int_equal(q.limit, QUERY_LIMIT_DEFAULT);
    char token[600];
    memset(token, 'a', sizeof token - 1);
    token[sizeof token - 1] = '\0';
    assert_int_equal(pair(&p, "token", token), 0); /* not ours, whatever its length */
    assert_int_equal(pair(&p, "since", "50"), 0);
    assert_int_equal(pair(&p, "limit", "10"), 0);
    assert_int_equal(q.since, 50);
    assert_int_equal(q.limit, 10);
    assert_int_equal(pair(&p, "since", "51"), -1); /* twice */
    query_history_begin(&p, &q);
    assert_int_equal(pair(&p, "since", "abc"), -1);
    query_history_begin(&p, &q);
    assert_int_equal(pair(&p, "since", ""), -1);
    query_history_begin(&p, &q);
    assert_int_equal(pair(&p, "limit", "0"), -1);
    query_history_begin(&p, &q);
    assert_int_equal(pair(&p, "limit", "1001"), -1);
    query_history_begin(&p, &q);
    assert_int_equal(pair(&p, "since", "9223372036854775808"), -1);
    query_history_begin(&p, &q);
    assert_int_equal(pair(&p, "sincex", "abc"), 0); /* another key */
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(plain_digits_parse),
        cmocka_unit_test(anything_else_is_refused),
        cmocka_unit_test(range_and_overflow_are_refused),
        cmocka_unit_test(defaults_apply),
        cmocka_unit_test(since_and_limit_parse),
        cmocka_unit_test(bad_values_are_explained),
        cmocka_unit_test(long_input_is_bounded),
        cmocka_unit_test(pairs_parse_strictly),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
