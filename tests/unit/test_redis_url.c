#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>
#include <string.h>

#include "redis_url.h"

static void full_urls_parse(void **state)
{
    struct redis_url u;
    char err[200];
    assert_int_equal(redis_url_parse("redis://app:s%40cret@redis.svc:6380/3", &u, err, 200), 0);
    assert_string_equal(u.user, "app");
    assert_string_equal(u.password, "s@cret");
    assert_string_equal(u.host, "redis.svc");
    assert_int_equal(u.port, 6380);
    assert_int_equal(u.db, 3);
}

static void parts_are_optional(void **state)
{
    struct redis_url u;
    char err[200];
    assert_int_equal(redis_url_parse("redis://localhost", &u, err, 200), 0);
    assert_string_equal(u.host, "localhost");
    assert_int_equal(u.port, 6379);
    assert_int_equal(u.db, 0);
    assert_string_equal(u.password, "");
    assert_int_equal(redis_url_parse("redis://:pw@h/", &u, err, 200), 0);
    assert_string_equal(u.user, "");
    assert_string_equal(u.password, "pw");
    assert_int_equal(u.db, 0);
}

static void bad_urls_are_refused(void **state)
{
    struct redis_url u;
    char err[200];
    const char *bad[] = {"http://h",       "redis://",    "redis://h:0",     "redis://h:99999",
                         "redis://h:12ab", "redis://h/x", "redis://u:%zz@h", "rediss://h"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        err[0] = '\0';
        assert_int_equal(redis_url_parse(bad[i], &u, err, 200), -1);
        assert_true(err[0] != '\0');
    }
}

static void lists_parse_in_order(void **state)
{
    (void)state;
    struct redis_url u[REDIS_URL_MAX];
    char err[200];
    assert_int_equal(redis_url_parse_list("redis://a:7001, redis://:pw@b:7002/2 ,redis://c", u,
                                          REDIS_URL_MAX, err, 200),
                     3);
    assert_string_equal(u[0].host, "a");
    assert_int_equal(u[0].port, 7001);
    assert_string_equal(u[1].host, "b");
    assert_string_equal(u[1].password, "pw");
    assert_int_equal(u[1].db, 2);
    assert_string_equal(u[2].host, "c");
    assert_int_equal(u[2].port, 6379);
    assert_int_equal(redis_url_parse_list("redis://only", u, REDIS_URL_MAX, err, 200), 1);
}

static void bad_lists_are_refused(void **state)
{
    (void)state;
    struct redis_url u[2];
    char err[200];
    const char *bad[] = {"",
                         "redis://a,",
                         ",redis://a",
                         "redis://a,,redis://b",
                         "redis://a, http://b",
                         "redis://a,redis://b,redis://c"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        err[0] = '\0';
        assert_int_equal(redis_url_parse_list(bad[i], u, 2, err, 200), -1);
        assert_true(err[0] != '\0');
    }
    redis_url_parse_list("redis://a, http://b", u, 2, err, 200);
    assert_non_null(strstr(err, "URL 2"));
}

static void sentinel_urls_parse(void **state)
{
    (void)state;
    struct redis_url u;
    char err[200];
    assert_int_equal(redis_url_parse("redis-sentinel://app:pw@s1.svc:26380,10.0.0.2,s3:5000"
                                     "/mymaster/2",
                                     &u, err, 200),
                     0);
    assert_string_equal(u.master_name, "mymaster");
    assert_int_equal(u.nhosts, 3);
    assert_string_equal(u.hosts[0].host, "s1.svc");
    assert_int_equal(u.hosts[0].port, 26380);
    assert_string_equal(u.hosts[1].host, "10.0.0.2");
    assert_int_equal(u.hosts[1].port, 26379); /* the sentinel default */
    assert_int_equal(u.hosts[2].port, 5000);
    assert_string_equal(u.user, "app"); /* the master's credentials */
    assert_string_equal(u.password, "pw");
    assert_int_equal(u.db, 2);
    /* host and port name the first sentinel until the master is known */
    assert_string_equal(u.host, "s1.svc");
    assert_int_equal(u.port, 26380);
    assert_int_equal(redis_url_parse("redis-sentinel://h/m", &u, err, 200), 0);
    assert_int_equal(u.nhosts, 1);
    assert_int_equal(u.db, 0);
    /* a plain URL has no master name */
    assert_int_equal(redis_url_parse("redis://h", &u, err, 200), 0);
    assert_string_equal(u.master_name, "");
    assert_int_equal(u.nhosts, 0);
}

static void bad_sentinel_urls_are_refused(void **state)
{
    (void)state;
    struct redis_url u;
    char err[200];
    const char *bad[] = {
        "redis-sentinel://h:26379",                                     /* no master name */
        "redis-sentinel://h:26379/",                                    /* empty master name */
        "redis-sentinel:///m",                                          /* no sentinel */
        "redis-sentinel://a,,b/m",                                      /* an empty sentinel */
        "redis-sentinel://a:0/m",                                       /* bad port */
        "redis-sentinel://a/m/x",                                       /* bad db */
        "redis-sentinel://a/m a",                                       /* a space in the name */
        "redis-sentinel://1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17/m", /* too many */
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        err[0] = '\0';
        assert_int_equal(redis_url_parse(bad[i], &u, err, 200), -1);
        assert_true(err[0] != '\0');
    }
}

static void cluster_urls_parse(void **state)
{
    (void)state;
    struct redis_url u;
    char err[200];
    assert_int_equal(
        redis_url_parse("redis-cluster://app:p%40w@n1.svc:7000,10.0.0.2", &u, err, 200), 0);
    assert_true(u.cluster);
    assert_int_equal(u.nhosts, 2);
    assert_string_equal(u.hosts[0].host, "n1.svc");
    assert_int_equal(u.hosts[0].port, 7000);
    assert_string_equal(u.hosts[1].host, "10.0.0.2");
    assert_int_equal(u.hosts[1].port, 6379);
    assert_string_equal(u.user, "app");
    assert_string_equal(u.password, "p@w");
    assert_string_equal(u.master_name, "");
    assert_int_equal(redis_url_parse("redis-cluster://h/0", &u, err, 200), 0);
    assert_int_equal(u.db, 0);
    assert_false(((struct redis_url){0}).cluster);
    assert_int_equal(redis_url_parse("redis://h", &u, err, 200), 0);
    assert_false(u.cluster);
    const char *bad[] = {
        "redis-cluster://",        /* no node */
        "redis-cluster://a,,b",    /* an empty node */
        "redis-cluster://a:70000", /* bad port */
        "redis-cluster://a/1",     /* a cluster has only db 0 */
        "redis-cluster://a b",     /* a space */
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        err[0] = '\0';
        assert_int_equal(redis_url_parse(bad[i], &u, err, 200), -1);
        assert_true(err[0] != '\0');
    }
    redis_url_parse("redis-cluster://a/1", &u, err, 200);
    assert_non_null(strstr(err, "only database 0"));
}

/* A list may mix plain and sentinel URLs; a comma before a scheme starts the next URL, any
 * other comma separates sentinels. */
static void sentinel_urls_in_lists(void **state)
{
    (void)state;
    struct redis_url u[3];
    char err[200];
    assert_int_equal(redis_url_parse_list("redis-sentinel://a:1,b:2/m1, redis://c:3,"
                                          "redis-sentinel://d/m2/1",
                                          u, 3, err, 200),
                     3);
    assert_int_equal(u[0].nhosts, 2);
    assert_string_equal(u[0].master_name, "m1");
    assert_string_equal(u[1].host, "c");
    assert_string_equal(u[1].master_name, "");
    assert_string_equal(u[2].master_name, "m2");
    assert_int_equal(u[2].db, 1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(full_urls_parse),
        cmocka_unit_test(parts_are_optional),
        cmocka_unit_test(bad_urls_are_refused),
        cmocka_unit_test(lists_parse_in_order),
        cmocka_unit_test(bad_lists_are_refused),
        cmocka_unit_test(sentinel_urls_parse),
        cmocka_unit_test(bad_sentinel_urls_are_refused),
        cmocka_unit_test(sentinel_urls_in_lists),
        cmocka_unit_test(cluster_urls_parse),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
