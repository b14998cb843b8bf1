/* HERALD_DATABASE_URL split into hosts tried one at a time (gateway/store/pg_hosts.c). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>
#include <stdio.h>
#include <string.h>

#include "pg_hosts.h"

/* The value the parameter arrays give keyword, or NULL when it is not there. */
static const char *param(const struct pg_hosts *ph, const char *keyword)
{
    for (int i = 0; ph->keywords[i]; i++)
        if (strcmp(ph->keywords[i], keyword) == 0)
            return ph->values[i];
    return NULL;
}

static void one_host_keeps_every_other_parameter(void **state)
{
    (void)state;
    struct pg_hosts ph;
    pg_hosts_parse(&ph, "postgresql://herald:pw@127.0.0.1:5433/herald?sslmode=disable");
    assert_int_equal(ph.n, 1);
    assert_string_equal(ph.hosts[0].host, "127.0.0.1");
    assert_string_equal(ph.hosts[0].port, "5433");
    assert_false(ph.hosts[0].lookup); /* numeric */
    pg_hosts_params(&ph, 0, NULL);
    assert_string_equal(param(&ph, "host"), "127.0.0.1");
    assert_string_equal(param(&ph, "port"), "5433");
    assert_string_equal(param(&ph, "hostaddr"), "");
    assert_string_equal(param(&ph, "dbname"), "herald");
    assert_string_equal(param(&ph, "user"), "herald");
    assert_string_equal(param(&ph, "password"), "pw");
    assert_string_equal(param(&ph, "sslmode"), "disable");
    pg_hosts_free(&ph);
}

static void a_host_list_with_a_port_each(void **state)
{
    (void)state;
    struct pg_hosts ph;
    pg_hosts_parse(&ph, "postgresql://u@db-a.internal:5432,127.0.0.1:5433,[::1]:5434/h"
                        "?target_session_attrs=read-write&connect_timeout=2");
    assert_int_equal(ph.n, 3);
    assert_string_equal(ph.hosts[0].host, "db-a.internal");
    assert_true(ph.hosts[0].lookup); /* a name: looked up off the loop */
    assert_string_equal(ph.hosts[1].port, "5433");
    assert_false(ph.hosts[1].lookup);
    assert_string_equal(ph.hosts[2].host, "::1");
    assert_string_equal(ph.hosts[2].port, "5434");
    assert_false(ph.hosts[2].lookup);
    /* one host per attempt, the rest of the URL unchanged */
    pg_hosts_params(&ph, 0, "10.1.2.3");
    assert_string_equal(param(&ph, "host"), "db-a.internal"); /* kept for TLS and .pgpass */
    assert_string_equal(param(&ph, "hostaddr"), "10.1.2.3");
    assert_string_equal(param(&ph, "port"), "5432");
    assert_string_equal(param(&ph, "target_session_attrs"), "read-write");
    assert_string_equal(param(&ph, "connect_timeout"), "2");
    pg_hosts_params(&ph, 1, NULL);
    assert_string_equal(param(&ph, "host"), "127.0.0.1");
    assert_string_equal(param(&ph, "port"), "5433");
    assert_string_equal(param(&ph, "hostaddr"), "");
    pg_hosts_free(&ph);
}

static void one_port_serves_every_host(void **state)
{
    (void)state;
    struct pg_hosts ph;
    pg_hosts_parse(&ph, "host=a,b,/run/postgresql port=6000 dbname=x");
    assert_int_equal(ph.n, 3);
    for (int i = 0; i < 3; i++)
        assert_string_equal(ph.hosts[i].port, "6000");
    assert_false(ph.hosts[2].lookup); /* a socket directory */
    pg_hosts_free(&ph);
    /* hostaddr given by the URL: no lookup, one address per host */
    pg_hosts_parse(&ph, "host=a,b hostaddr=10.0.0.1,10.0.0.2 dbname=x");
    assert_int_equal(ph.n, 2);
    assert_false(ph.hosts[0].lookup);
    pg_hosts_params(&ph, 1, NULL);
    assert_string_equal(param(&ph, "hostaddr"), "10.0.0.2");
    pg_hosts_free(&ph);
}

static void no_host_means_libpq_defaults(void **state)
{
    (void)state;
    struct pg_hosts ph;
    pg_hosts_parse(&ph, "dbname=herald");
    assert_int_equal(ph.n, 1);
    assert_string_equal(ph.hosts[0].host, "");
    assert_false(ph.hosts[0].lookup);
    pg_hosts_free(&ph);
}

/* Anything libpq would refuse, or lists that do not line up, is left to libpq (n == 0), so
 * that its own message reaches the log at the first connect. */
static void unusable_urls_are_left_to_libpq(void **state)
{
    (void)state;
    const char *bad[] = {
        "host=a,b,c port=1,2", /* three hosts, two ports */
        "host=a,b hostaddr=1.2.3.4,5.6.7.8,9.9.9.9",
        "postgresql://[::1", /* does not parse */
        "nonsense without equals",
    };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        struct pg_hosts ph;
        pg_hosts_parse(&ph, bad[i]);
        assert_int_equal(ph.n, 0);
        assert_null(ph.opts);
        pg_hosts_free(&ph);
    }
}

static void bounds_on_hosts_and_names(void **state)
{
    (void)state;
    char url[4096] = "host=h0";
    for (int i = 1; i < PG_HOSTS_MAX; i++)
        snprintf(url + strlen(url), sizeof url - strlen(url), ",h%d", i);
    struct pg_hosts ph;
    pg_hosts_parse(&ph, url);
    assert_int_equal(ph.n, PG_HOSTS_MAX);
    assert_string_equal(ph.hosts[PG_HOSTS_MAX - 1].host, "h15");
    pg_hosts_free(&ph);
    strcat(url, ",one-too-many");
    pg_hosts_parse(&ph, url);
    assert_int_equal(ph.n, 0);
    /* a host name longer than a DNS name can be */
    char longname[400] = "host=";
    memset(longname + 5, 'x', 300);
    longname[305] = '\0';
    pg_hosts_parse(&ph, longname);
    assert_int_equal(ph.n, 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(one_host_keeps_every_other_parameter),
        cmocka_unit_test(a_host_list_with_a_port_each),
        cmocka_unit_test(one_port_serves_every_host),
        cmocka_unit_test(no_host_means_libpq_defaults),
        cmocka_unit_test(unusable_urls_are_left_to_libpq),
        cmocka_unit_test(bounds_on_hosts_and_names),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
