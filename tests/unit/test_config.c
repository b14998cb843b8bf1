#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"

static int clean_env(void **state)
{
    unsetenv("HERALD_LISTEN");
    unsetenv("HERALD_REDIS_URL");
    unsetenv("HERALD_CLIENT_QUEUE_BYTES");
    unsetenv("HERALD_LOG_LEVEL");
    return 0;
}

static enum config_result load(struct herald_config *cfg, int argc, char **argv, char *err)
{
    FILE *out = fopen("/dev/null", "w");
    enum config_result r = config_load(cfg, argc, argv, out, err, 256);
    fclose(out);
    return r;
}

static void defaults_match_the_contract(void **state)
{
    struct herald_config cfg;
    char err[256];
    char *argv[] = {"herald"};
    assert_int_equal(load(&cfg, 1, argv, err), CONFIG_OK);
    assert_string_equal(cfg.listen, "0.0.0.0:8080");
    assert_int_equal(cfg.listen_port, 8080);
    assert_string_equal(cfg.redis[0].host, "127.0.0.1");
    assert_int_equal(cfg.redis[0].port, 6379);
    assert_int_equal(cfg.client_queue_bytes, 1 << 20);
    assert_int_equal(cfg.max_frame_bytes, 64 * 1024);
    assert_int_equal(cfg.max_subscriptions, 256);
    assert_int_equal(cfg.log_level, LOG_INFO);
    assert_true(cfg.instance_id[0] != '\0');
}

static void flags_win_over_environment(void **state)
{
    struct herald_config cfg;
    char err[256];
    setenv("HERALD_LISTEN", "127.0.0.1:9000", 1);
    setenv("HERALD_CLIENT_QUEUE_BYTES", "2M", 1);
    char *argv[] = {"herald", "--listen", "127.0.0.1:9100", "--log-level=debug"};
    assert_int_equal(load(&cfg, 4, argv, err), CONFIG_OK);
    assert_string_equal(cfg.listen_host, "127.0.0.1");
    assert_int_equal(cfg.listen_port, 9100);
    assert_int_equal(cfg.client_queue_bytes, 2 << 20);
    assert_int_equal(cfg.log_level, LOG_DEBUG);
}

static void bad_values_are_reported(void **state)
{
    struct herald_config cfg;
    char err[256];
    char *a1[] = {"herald", "--max-subscriptions", "0"};
    assert_int_equal(load(&cfg, 3, a1, err), CONFIG_ERROR);
    assert_non_null(strstr(err, "HERALD_MAX_SUBSCRIPTIONS"));
    char *a2[] = {"herald", "--no-such-flag", "1"};
    assert_int_equal(load(&cfg, 3, a2, err), CONFIG_ERROR);
    char *a3[] = {"herald", "--listen"};
    assert_int_equal(load(&cfg, 2, a3, err), CONFIG_ERROR);
    char *a4[] = {"herald", "--listen", "nocolon"};
    assert_int_equal(load(&cfg, 3, a4, err), CONFIG_ERROR);
    char *a5[] = {"herald", "--log-level", "loud"};
    assert_int_equal(load(&cfg, 3, a5, err), CONFIG_ERROR);
    char *a6[] = {"herald", "--client-queue-bytes", "12q"};
    assert_int_equal(load(&cfg, 3, a6, err), CONFIG_ERROR);
    char *a7[] = {"herald", "--redis-url", "rediss://h:6380"};
    assert_int_equal(load(&cfg, 3, a7, err), CONFIG_ERROR);
    assert_non_null(strstr(err, "TLS"));
}

/* Settings that are valid alone but not together refuse to start, naming both. */
static void limits_that_cannot_hold_the_largest_message_are_refused(void **state)
{
    (void)state;
    struct herald_config cfg;
    char err[256];
    char *q[] = {"herald", "--max-publish-bytes", "64k", "--client-queue-bytes", "64k"};
    assert_int_equal(load(&cfg, 5, q, err), CONFIG_ERROR);
    assert_non_null(strstr(err, "HERALD_CLIENT_QUEUE_BYTES"));
    assert_non_null(strstr(err, "HERALD_MAX_PUBLISH_BYTES"));
    char *q_ok[] = {"herald", "--max-publish-bytes", "63k", "--client-queue-bytes", "64k"};
    assert_int_equal(load(&cfg, 5, q_ok, err), CONFIG_OK);
    char *b[] = {"herald", "--max-publish-bytes", "128k", "--body-buffer-bytes", "127k"};
    assert_int_equal(load(&cfg, 5, b, err), CONFIG_ERROR);
    assert_non_null(strstr(err, "HERALD_BODY_BUFFER_BYTES"));
    assert_non_null(strstr(err, "HERALD_MAX_PUBLISH_BYTES"));
    char *b_ok[] = {"herald", "--max-publish-bytes", "128k", "--body-buffer-bytes", "128k"};
    assert_int_equal(load(&cfg, 5, b_ok, err), CONFIG_OK);
}

static void help_and_version_exit(void **state)
{
    struct herald_config cfg;
    char err[256];
    char *a1[] = {"herald", "--help"};
    assert_int_equal(load(&cfg, 2, a1, err), CONFIG_EXIT);
    char *a2[] = {"herald", "--version"};
    assert_int_equal(load(&cfg, 2, a2, err), CONFIG_EXIT);
}

static void sizes_parse_binary_units(void **state)
{
    long v;
    assert_int_equal(config_parse_size("123", &v), 0);
    assert_int_equal(v, 123);
    assert_int_equal(config_parse_size("64k", &v), 0);
    assert_int_equal(v, 65536);
    assert_int_equal(config_parse_size("1MiB", &v), 0);
    assert_int_equal(v, 1048576);
    assert_int_equal(config_parse_size("2G", &v), 0);
    assert_int_equal(v, 2L << 30);
    assert_int_equal(config_parse_size("", &v), -1);
    assert_int_equal(config_parse_size("-1", &v), -1);
    assert_int_equal(config_parse_size("5x", &v), -1);
    assert_int_equal(config_parse_size("99999999999999999999", &v), -1);
}

static void durations_parse_to_milliseconds(void **state)
{
    long v;
    assert_int_equal(config_parse_duration("250ms", &v), 0);
    assert_int_equal(v, 250);
    assert_int_equal(config_parse_duration("90", &v), 0);
    assert_int_equal(v, 90000);
    assert_int_equal(config_parse_duration("30m", &v), 0);
    assert_int_equal(v, 1800000);
    assert_int_equal(config_parse_duration("24h", &v), 0);
    assert_int_equal(v, 86400000);
    assert_int_equal(config_parse_duration("7d", &v), 0);
    assert_int_equal(v, 604800000);
    assert_int_equal(config_parse_duration("5x", &v), -1);
    assert_int_equal(config_parse_duration("h", &v), -1);
    assert_int_equal(config_parse_duration("-1s", &v), -1);
}

static void boolean_flags_stand_alone_or_take_a_value(void **state)
{
    struct herald_config cfg;
    char err[256];
    char *a1[] = {"herald", "--migrate-on-start", "--listen", "127.0.0.1:1"};
    assert_int_equal(load(&cfg, 4, a1, err), CONFIG_OK);
    assert_int_equal(cfg.migrate_on_start, 1);
    char *a2[] = {"herald", "--migrate-on-start", "false"};
    assert_int_equal(load(&cfg, 3, a2, err), CONFIG_OK);
    assert_int_equal(cfg.migrate_on_start, 0);
    char *a3[] = {"herald", "--migrate-on-start=maybe"};
    assert_int_equal(load(&cfg, 2, a3, err), CONFIG_ERROR);
    char *a4[] = {"herald", "--history-ttl", "2h"};
    assert_int_equal(load(&cfg, 3, a4, err), CONFIG_OK);
    assert_int_equal(cfg.history_ttl_ms, 7200000);
    char *a5[] = {"herald", "--history-ttl", "2x"};
    assert_int_equal(load(&cfg, 3, a5, err), CONFIG_ERROR);
    assert_non_null(strstr(err, "duration"));
}

static void listen_addresses_parse(void **state)
{
    char host[64];
    int port;
    assert_int_equal(config_parse_listen("0.0.0.0:8080", host, sizeof host, &port), 0);
    assert_string_equal(host, "0.0.0.0");
    assert_int_equal(port, 8080);
    assert_int_equal(config_parse_listen("*:81", host, sizeof host, &port), 0);
    assert_string_equal(host, "");
    assert_int_equal(config_parse_listen(":81", host, sizeof host, &port), 0);
    assert_int_equal(config_parse_listen("h:70000", host, sizeof host, &port), -1);
    assert_int_equal(config_parse_listen("h:", host, sizeof host, &port), -1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup(defaults_match_the_contract, clean_env),
        cmocka_unit_test_setup(flags_win_over_environment, clean_env),
        cmocka_unit_test_setup(bad_values_are_reported, clean_env),
        cmocka_unit_test_setup(limits_that_cannot_hold_the_largest_message_are_refused, clean_env),
        cmocka_unit_test_setup(help_and_version_exit, clean_env),
        cmocka_unit_test(sizes_parse_binary_units),
        cmocka_unit_test(listen_addresses_parse),
        cmocka_unit_test(durations_parse_to_milliseconds),
        cmocka_unit_test_setup(boolean_flags_stand_alone_or_take_a_value, clean_env),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
