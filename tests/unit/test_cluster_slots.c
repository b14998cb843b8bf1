#include "cluster_slots.h"

#include <hiredis/hiredis.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <string.h>

#include <cmocka.h>

/* The reply hiredis makes of raw RESP bytes, parsed as a slot map; *reason gets the refusal. */
static int parse_len(const char *resp, size_t len, struct cluster_slots *m, const char **reason)
{
    redisReader *rd = redisReaderCreate();
    redisReaderFeed(rd, resp, len);
    void *reply = NULL;
    assert_int_equal(redisReaderGetReply(rd, &reply), REDIS_OK);
    assert_non_null(reply);
    *reason = cluster_slots_parse(reply, "10.0.0.9", m);
    freeReplyObject(reply);
    redisReaderFree(rd);
    return *reason ? -1 : 0;
}

static int parse(const char *resp, struct cluster_slots *m, const char **reason)
{
    return parse_len(resp, strlen(resp), m, reason);
}

static void a_three_master_map(void **state)
{
    (void)state;
    struct cluster_slots m;
    const char *why;
    const char *resp = "*3\r\n"
                       "*4\r\n:0\r\n:5460\r\n*2\r\n$8\r\n10.0.0.1\r\n:7000\r\n"
                       "*2\r\n$8\r\n10.0.0.4\r\n:7003\r\n"
                       "*3\r\n:5461\r\n:10922\r\n*2\r\n$8\r\n10.0.0.2\r\n:7001\r\n"
                       "*3\r\n:10923\r\n:16383\r\n*2\r\n$0\r\n\r\n:7002\r\n";
    assert_int_equal(parse(resp, &m, &why), 0);
    assert_int_equal(m.n, 3);
    assert_string_equal(m.masters[0].host, "10.0.0.1");
    assert_int_equal(m.masters[0].port, 7000);
    assert_string_equal(m.masters[2].host, "10.0.0.9"); /* empty: the node asked */
    assert_int_equal(m.owner[0], 0);
    assert_int_equal(m.owner[5460], 0);
    assert_int_equal(m.owner[5461], 1);
    assert_int_equal(m.owner[16383], 2);
}

static void holes_and_one_master_twice(void **state)
{
    (void)state;
    struct cluster_slots m;
    const char *why;
    const char *resp = "*2\r\n"
                       "*3\r\n:0\r\n:99\r\n*2\r\n$1\r\na\r\n:1\r\n"
                       "*3\r\n:200\r\n:299\r\n*2\r\n$1\r\na\r\n:1\r\n";
    assert_int_equal(parse(resp, &m, &why), 0);
    assert_int_equal(m.n, 1);
    assert_int_equal(m.owner[99], 0);
    assert_int_equal(m.owner[100], CLUSTER_NO_OWNER);
    assert_int_equal(m.owner[250], 0);
}

static void bad_answers_are_refused_whole(void **state)
{
    (void)state;
    const char *bad[] = {
        "-ERR This instance has cluster support disabled\r\n",
        "*-1\r\n",
        ":3\r\n",
        "*0\r\n",                                               /* no slot served */
        "*1\r\n*3\r\n:0\r\n:16384\r\n*2\r\n$1\r\na\r\n:1\r\n",  /* slot 16384 */
        "*1\r\n*3\r\n:9\r\n:5\r\n*2\r\n$1\r\na\r\n:1\r\n",      /* ends before it starts */
        "*1\r\n*3\r\n:-1\r\n:5\r\n*2\r\n$1\r\na\r\n:1\r\n",     /* negative */
        "*1\r\n*3\r\n:0\r\n:5\r\n*2\r\n$1\r\na\r\n$1\r\n1\r\n", /* port as text */
        "*1\r\n*3\r\n:0\r\n:5\r\n*2\r\n$1\r\na\r\n:0\r\n",      /* port 0 */
        "*1\r\n*3\r\n:0\r\n:5\r\n*2\r\n$1\r\na\r\n:65536\r\n",  /* port too large */
        "*1\r\n*3\r\n:0\r\n:5\r\n*2\r\n$1\r\n?\r\n:1\r\n",      /* unknown address */
        "*1\r\n*3\r\n:0\r\n:5\r\n*2\r\n$5\r\na b;c\r\n:1\r\n",  /* not a host */
        "*1\r\n*3\r\n:0\r\n:5\r\n*1\r\n$1\r\na\r\n",            /* no port */
        "*1\r\n*2\r\n:0\r\n:5\r\n",                             /* no master */
        "*1\r\n:7\r\n",                                         /* not a range */
        "*1\r\n*3\r\n$1\r\n0\r\n:5\r\n*2\r\n$1\r\na\r\n:1\r\n", /* start as text */
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        struct cluster_slots m;
        const char *why = NULL;
        assert_int_equal(parse(bad[i], &m, &why), -1);
        assert_non_null(why);
    }
    static const char nul[] = "*1\r\n*3\r\n:0\r\n:5\r\n*2\r\n$3\r\na\0b\r\n:1\r\n";
    struct cluster_slots m;
    const char *why = NULL;
    assert_int_equal(parse_len(nul, sizeof nul - 1, &m, &why), -1); /* a NUL in the host */
}

static void at_most_64_masters(void **state)
{
    (void)state;
    char resp[16384];
    size_t n = 0;
    n += (size_t)snprintf(resp + n, sizeof resp - n, "*65\r\n");
    for (int i = 0; i < 65; i++)
        n += (size_t)snprintf(resp + n, sizeof resp - n,
                              "*3\r\n:%d\r\n:%d\r\n*2\r\n$1\r\nh\r\n:%d\r\n", i, i, 1000 + i);
    struct cluster_slots m;
    const char *why;
    assert_int_equal(parse(resp, &m, &why), -1);
    assert_non_null(strstr(why, "64"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(a_three_master_map),
        cmocka_unit_test(holes_and_one_master_twice),
        cmocka_unit_test(bad_answers_are_refused_whole),
        cmocka_unit_test(at_most_64_masters),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
