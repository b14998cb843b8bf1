/* shard.c: the documented hash (FNV-1a 64 + jump consistent hash), its spread and how few
 * channels move when a server is appended. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "shard.h"

static int shard_of_str(const char *s, int n)
{
    return shard_of(s, strlen(s), n);
}

/* Values from the Python version given in docs/OPERATIONS.md: the C and the docs agree. */
static void matches_the_documented_reference(void **state)
{
    (void)state;
    assert_true(shard_hash("", 0) == 0xcbf29ce484222325ULL);
    assert_true(shard_hash("a", 1) == 0xaf63dc4c8601ec8cULL);
    assert_true(shard_hash("bot:status:42", 13) == 0xebf93a0ee8a6ed26ULL);
    const int n[] = {2, 3, 5, 16};
    const int want_bot[] = {0, 2, 2, 8}, want_a[] = {1, 2, 2, 12}, want_tasks[] = {0, 0, 0, 0};
    for (int i = 0; i < 4; i++) {
        assert_int_equal(shard_of_str("bot:status:42", n[i]), want_bot[i]);
        assert_int_equal(shard_of_str("a", n[i]), want_a[i]);
        assert_int_equal(shard_of_str("task_updates", n[i]), want_tasks[i]);
    }
}

static void one_server_takes_everything(void **state)
{
    (void)state;
    assert_int_equal(shard_of_str("anything", 1), 0);
    assert_int_equal(shard_of_str("anything", 0), 0);
}

static void channels_spread_evenly(void **state)
{
    (void)state;
    enum { CHANNELS = 30000, N = 3 };
    int count[N] = {0};
    char name[64];
    for (int i = 0; i < CHANNELS; i++) {
        snprintf(name, sizeof name, "property:%d:conversations", i);
        int s = shard_of_str(name, N);
        assert_true(s >= 0 && s < N);
        count[s]++;
    }
    for (int s = 0; s < N; s++) /* within 5% of a third */
        assert_true(count[s] > CHANNELS / N * 95 / 100 && count[s] < CHANNELS / N * 105 / 100);
}

/* Appending a 4th server moves about a quarter of the channels, all of them to the new
 * server: none moves between the servers that were already there. */
static void appending_a_server_moves_few_channels(void **state)
{
    (void)state;
    enum { CHANNELS = 20000 };
    int moved = 0;
    char name[64];
    for (int i = 0; i < CHANNELS; i++) {
        snprintf(name, sizeof name, "bot:status:%d", i);
        int before = shard_of_str(name, 3), after = shard_of_str(name, 4);
        if (before != after) {
            assert_int_equal(after, 3);
            moved++;
        }
    }
    assert_true(moved > CHANNELS * 22 / 100 && moved < CHANNELS * 28 / 100);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(matches_the_documented_reference),
        cmocka_unit_test(one_server_takes_everything),
        cmocka_unit_test(channels_spread_evenly),
        cmocka_unit_test(appending_a_server_moves_few_channels),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
