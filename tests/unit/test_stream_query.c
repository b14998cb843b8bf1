/* The stream route's query and position tokens (common/stream_query.c). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>
#include <stdio.h>
#include <string.h>

#include "stream_query.h"

/* Parses "k=v&k=v" (no %-escapes: lws decodes them before Herald sees a pair). */
static int parse(const char *qs, struct stream_query *q, char *err, size_t errlen)
{
    struct stream_query_parser p;
    stream_query_begin(&p, q);
    char buf[512];
    snprintf(buf, sizeof buf, "%s", qs);
    for (char *save = NULL, *pair = strtok_r(buf, "&", &save); pair;
         pair = strtok_r(NULL, "&", &save)) {
        char *eq = strchr(pair, '=');
        const char *val = eq ? eq + 1 : pair + strlen(pair);
        size_t klen = eq ? (size_t)(eq - pair) : strlen(pair);
        if (stream_query_pair(&p, pair, klen, val, strlen(val), err, errlen) < 0)
            return -1;
    }
    return stream_query_end(&p, err, errlen);
}

static int ok(const char *qs, struct stream_query *q)
{
    char err[200] = "";
    int rc = parse(qs, q, err, sizeof err);
    if (rc)
        print_error("%s: %s\n", qs, err);
    return rc;
}

static void herald_parameters_parse(void **state)
{
    (void)state;
    struct stream_query q;
    assert_int_equal(ok("", &q), 0);
    assert_false(q.ds || q.resume || q.strict || q.has_timeout);
    assert_int_equal(ok("since=42&epoch=ab-12&strict=1&timeout=7&token=x.y.z", &q), 0);
    assert_true(q.resume && q.strict && q.has_timeout && !q.ds);
    assert_true(q.since == 42);
    assert_string_equal(q.epoch, "ab-12");
    assert_int_equal(q.timeout_s, 7);
    assert_int_equal(ok("last=5&strict=false", &q), 0);
    assert_true(q.last == 5 && !q.resume && !q.strict);
    assert_int_equal(ok("timeout=0", &q), 0);
    assert_true(q.has_timeout && q.timeout_s == 0);
}

static void durable_streams_parameters_parse(void **state)
{
    (void)state;
    struct stream_query q;
    assert_int_equal(ok("offset=-1", &q), 0);
    assert_true(q.ds && q.resume && q.oldest && q.since == 0 && q.live == STREAM_LIVE_NONE);
    assert_int_equal(ok("offset=now&live=sse&cursor=123", &q), 0);
    assert_true(q.ds && !q.resume && q.live == STREAM_LIVE_SSE);
    assert_int_equal(ok("offset=e1f2_00000000000000000042&live=long-poll", &q), 0);
    assert_true(q.ds && q.resume && !q.oldest && q.since == 42 && q.live == STREAM_LIVE_POLL);
    assert_string_equal(q.epoch, "e1f2");
}

static void refused(const char *qs, const char *why_part)
{
    struct stream_query q;
    char err[200] = "";
    assert_int_equal(parse(qs, &q, err, sizeof err), -1);
    if (!strstr(err, why_part))
        fail_msg("%s: '%s' does not say '%s'", qs, err, why_part);
}

static void bad_values_and_combinations_are_refused(void **state)
{
    (void)state;
    refused("since=-1", "since");
    refused("since=1&since=2", "more than once");
    refused("since=9223372036854775808", "since");
    refused("last=0", "at least 1");
    refused("last=x", "last");
    refused("strict=yes", "strict");
    refused("timeout=301", "timeout");
    refused("epoch=a_b", "epoch");
    refused("epoch=", "epoch");
    refused("epoch=abc", "needs since");
    refused("last=2&since=1", "last cannot");
    refused("live=sse", "live needs offset");
    refused("live=poll&offset=now", "live must");
    refused("offset=abc", "offset");
    refused("offset=", "offset");
    refused("offset=now&since=1", "cannot be combined");
    refused("offset=now&strict=1", "cannot be combined");
    refused("offset=-1&offset=now", "more than once");
}

static void positions_round_trip(void **state)
{
    (void)state;
    char tok[STREAM_POSITION_MAX], epoch[REQUEST_EPOCH_MAX];
    uint64_t seq = 0;
    size_t n = stream_position_write(tok, "9f86d081884c7d65", 42);
    assert_string_equal(tok, "9f86d081884c7d65_00000000000000000042");
    assert_int_equal(n, strlen(tok));
    assert_int_equal(stream_position_parse(tok, n, &seq, epoch), 0);
    assert_true(seq == 42);
    assert_string_equal(epoch, "9f86d081884c7d65");
    /* the widest epoch and seq fit */
    char wide[REQUEST_EPOCH_MAX];
    memset(wide, 'z', sizeof wide - 1);
    wide[sizeof wide - 1] = '\0';
    n = stream_position_write(tok, wide, 9223372036854775807ULL);
    assert_true(n > 0 && n < STREAM_POSITION_MAX);
    assert_int_equal(stream_position_parse(tok, n, &seq, epoch), 0);
    assert_true(seq == 9223372036854775807ULL);
    /* tokens of one epoch sort as their seqs */
    char a[STREAM_POSITION_MAX], b[STREAM_POSITION_MAX];
    stream_position_write(a, "e", 9);
    stream_position_write(b, "e", 10);
    assert_true(strcmp(a, b) < 0);
}

static void bad_positions_are_refused(void **state)
{
    (void)state;
    const char *bad[] = {"",
                         "_",
                         "e_",
                         "_1",
                         "e1",
                         "e_1x",
                         "e_-1",
                         "e_+1",
                         "e.f_1",
                         "e f_1",
                         "e_9223372036854775808",
                         "e_000000000000000000001",
                         "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa_1"};
    char epoch[REQUEST_EPOCH_MAX] = "untouched";
    uint64_t seq = 7;
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        if (stream_position_parse(bad[i], strlen(bad[i]), &seq, epoch) != -1)
            fail_msg("accepted '%s'", bad[i]);
    /* the last '_' splits: an epoch cannot hold one, so a_b_1 is refused */
    assert_int_equal(stream_position_parse("a_b_1", 5, &seq, epoch), -1);
    assert_string_equal(epoch, "untouched");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(herald_parameters_parse),
        cmocka_unit_test(durable_streams_parameters_parse),
        cmocka_unit_test(bad_values_and_combinations_are_refused),
        cmocka_unit_test(positions_round_trip),
        cmocka_unit_test(bad_positions_are_refused),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
