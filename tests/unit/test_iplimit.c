#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>
#include <stdio.h>
#include <sys/wait.h>
#include <unistd.h>

#include "iplimit.h"

/* The count of ip's key is exactly n. */
static void assert_count(struct iplimit *t, const char *ip, long n)
{
    if (n > 0)
        assert_true(iplimit_full(t, ip, n));
    assert_false(iplimit_full(t, ip, n + 1));
}

static void keys_group_addresses(void **state)
{
    struct iplimit *t = iplimit_new(16, 1);
    assert_non_null(t);
    struct ipcount *c[5] = {
        iplimit_acquire(t, "192.0.2.1"),
        iplimit_acquire(t, "2001:db8:1:2::1"),
        iplimit_acquire(t, "::ffff:198.51.100.7"),
        iplimit_acquire(t, "not an address"),
        iplimit_acquire(t, ""),
    };
    for (int i = 0; i < 5; i++)
        assert_non_null(c[i]);
    /* IPv4, also in its IPv4-mapped IPv6 form; a neighbour is another key */
    assert_count(t, "192.0.2.1", 1);
    assert_count(t, "::ffff:192.0.2.1", 1);
    assert_count(t, "::FFFF:c000:0201", 1);
    assert_count(t, "192.0.2.2", 0);
    assert_count(t, "198.51.100.7", 1);
    /* IPv6 by its /64 */
    assert_count(t, "2001:db8:1:2::2", 1);
    assert_count(t, "2001:db8:1:2:ffff:ffff:ffff:ffff", 1);
    assert_count(t, "2001:db8:1:3::1", 0);
    assert_count(t, "2001:db8:1::1", 0);
    /* text that is no address has a key of its own, like no address's */
    assert_count(t, "not an address", 1);
    assert_count(t, "", 1);
    assert_count(t, "not an address ", 0);
    assert_count(t, "192.0.2.1%eth0", 0);
    assert_count(t, "0.0.0.0", 0);
    assert_count(t, "::", 0);
    assert_count(t, "::ffff:0.0.0.0", 0);
    for (int i = 0; i < 5; i++)
        iplimit_release(t, c[i]);
    assert_count(t, "192.0.2.1", 0);
    assert_count(t, "2001:db8:1:2::1", 0);
    assert_count(t, "not an address", 0);
    iplimit_free(t);
}

static void counts_and_full(void **state)
{
    struct iplimit *t = iplimit_new(16, 1);
    struct ipcount *a = iplimit_acquire(t, "203.0.113.5");
    struct ipcount *b = iplimit_acquire(t, "::ffff:203.0.113.5");
    struct ipcount *c = iplimit_acquire(t, "203.0.113.5");
    assert_true(iplimit_full(t, "203.0.113.5", 3));
    assert_false(iplimit_full(t, "203.0.113.5", 4));
    assert_false(iplimit_full(t, "203.0.113.6", 1));
    iplimit_release(t, b);
    assert_false(iplimit_full(t, "203.0.113.5", 3));
    assert_true(iplimit_full(t, "203.0.113.5", 2));
    iplimit_release(t, a);
    iplimit_release(t, c);
    assert_false(iplimit_full(t, "203.0.113.5", 1));
    iplimit_release(t, NULL); /* a connection that was not counted */
    iplimit_free(t);
}

/* iplimit_new(1, 1) has room for one address at a time. */
static void release_to_zero_frees_the_entry(void **state)
{
    struct iplimit *t = iplimit_new(1, 1);
    struct ipcount *a = iplimit_acquire(t, "10.0.0.1");
    struct ipcount *a2 = iplimit_acquire(t, "10.0.0.1");
    assert_non_null(a);
    assert_non_null(a2);
    assert_null(iplimit_acquire(t, "10.0.0.2")); /* no room: not counted */
    iplimit_release(t, a);
    assert_null(iplimit_acquire(t, "10.0.0.2")); /* 10.0.0.1 still holds the entry */
    iplimit_release(t, a2);
    struct ipcount *b = iplimit_acquire(t, "10.0.0.2");
    assert_non_null(b);
    assert_count(t, "10.0.0.1", 0);
    assert_count(t, "10.0.0.2", 1);
    iplimit_release(t, b);
    iplimit_free(t);
}

#define TINY_MAX   4 /* iplimit_new(4, 1): 8 entries, room for 7 addresses */
#define TINY_ADDRS 7
#define HANDLES    (TINY_ADDRS * (TINY_ADDRS + 1) / 2)

/* In a table that small, 7 addresses collide and their runs wrap around the end; whatever
 * order they leave in, backward-shift deletion keeps the others found with their counts. */
static void removal_keeps_colliding_entries_found(void **state)
{
    unsigned rnd = 12345;
    for (int round = 0; round < 300; round++) {
        struct iplimit *t = iplimit_new(TINY_MAX, 1);
        char ip[TINY_ADDRS][48];
        long left[TINY_ADDRS];
        struct ipcount *h[HANDLES];
        int owner[HANDLES], n = 0;
        for (int a = 0; a < TINY_ADDRS; a++) {
            if (round % 2)
                snprintf(ip[a], sizeof ip[a], "2001:db8:%x:%x::1", round, a);
            else
                snprintf(ip[a], sizeof ip[a], "10.%d.%d.%d", round / 256, round % 256, a);
            left[a] = a + 1; /* address a holds a + 1 connections */
            for (int k = 0; k <= a; k++) {
                owner[n] = a;
                h[n] = iplimit_acquire(t, ip[a]);
                assert_non_null(h[n++]);
            }
        }
        assert_null(iplimit_acquire(t, "192.0.2.200")); /* full: one entry stays free */
        while (n > 0) {
            rnd = rnd * 1103515245u + 12345u;
            int i = (int)((rnd >> 8) % (unsigned)n);
            iplimit_release(t, h[i]);
            left[owner[i]]--;
            h[i] = h[--n];
            owner[i] = owner[n];
            for (int a = 0; a < TINY_ADDRS; a++)
                assert_count(t, ip[a], left[a]);
        }
        /* every entry was freed: the table takes 7 new addresses again */
        for (int a = 0; a < TINY_ADDRS; a++) {
            snprintf(ip[a], sizeof ip[a], "172.16.%d.%d", round % 256, a);
            h[a] = iplimit_acquire(t, ip[a]);
            assert_non_null(h[a]);
        }
        for (int a = 0; a < TINY_ADDRS; a++)
            iplimit_release(t, h[a]);
        iplimit_free(t);
    }
}

/* A worker forked after the table was made counts in the same table, in its own column. */
static void a_forked_worker_counts_in_the_shared_table(void **state)
{
    struct iplimit *t = iplimit_new(4, 2);
    struct ipcount *mine = iplimit_acquire(t, "198.51.100.1");
    int done[2];
    assert_int_equal(pipe(done), 0);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        /* it dies holding its connections, as a crashed worker would */
        iplimit_set_slot(t, 1);
        iplimit_acquire(t, "198.51.100.1");
        iplimit_acquire(t, "198.51.100.1");
        iplimit_release(t, iplimit_acquire(t, "198.51.100.1"));
        iplimit_acquire(t, "2001:db8::7");
        _exit(write(done[1], "x", 1) == 1 ? 0 : 1);
    }
    char x;
    assert_int_equal(read(done[0], &x, 1), 1);
    int status;
    assert_int_equal(waitpid(pid, &status, 0), pid);
    assert_int_equal(status, 0);
    close(done[0]);
    close(done[1]);
    assert_count(t, "198.51.100.1", 3);
    assert_count(t, "2001:db8::1234", 1);
    /* clearing the dead worker's column releases its connections, not the others' */
    iplimit_clear_slot(t, 1);
    assert_count(t, "198.51.100.1", 1);
    assert_count(t, "2001:db8::7", 0);
    iplimit_release(t, mine);
    assert_count(t, "198.51.100.1", 0);
    iplimit_free(t);
}

/* Clearing a column in a crowded table frees the entries only it held; those that move back
 * into freed entries are still cleared and still found. */
static void clearing_a_slot_keeps_the_other_slots(void **state)
{
    for (int round = 0; round < 100; round++) {
        struct iplimit *t = iplimit_new(4, 2); /* 16 entries, room for 15 */
        char ip[15][32];
        struct ipcount *h[15][4];
        for (int a = 0; a < 15; a++) {
            snprintf(ip[a], sizeof ip[a], "10.1.%d.%d", round, a);
            /* slot 0 holds a % 3 connections, slot 1 one or two */
            for (int k = 0; k < 4; k++) {
                iplimit_set_slot(t, k < a % 3 ? 0 : 1);
                h[a][k] = k < a % 3 + 1 + a % 2 ? iplimit_acquire(t, ip[a]) : NULL;
            }
        }
        iplimit_clear_slot(t, 1);
        for (int a = 0; a < 15; a++)
            assert_count(t, ip[a], a % 3);
        /* handing back a connection its column no longer counts changes nothing */
        iplimit_set_slot(t, 1);
        for (int a = 0; a < 15; a++)
            for (int k = a % 3; k < 4; k++)
                iplimit_release(t, h[a][k]);
        for (int a = 0; a < 15; a++)
            assert_count(t, ip[a], a % 3);
        iplimit_set_slot(t, 0);
        for (int a = 0; a < 15; a++)
            for (int k = 0; k < a % 3; k++)
                iplimit_release(t, h[a][k]);
        for (int a = 0; a < 15; a++)
            assert_count(t, ip[a], 0);
        iplimit_free(t);
    }
}

/* This process's shared memory in KiB (RssShmem), or -1. */
static long rss_shmem_kib(void)
{
    FILE *f = fopen("/proc/self/status", "r");
    char line[256];
    long kib = -1;
    while (f && fgets(line, sizeof line, f))
        if (sscanf(line, "RssShmem: %ld kB", &kib) == 1)
            break;
    if (f)
        fclose(f);
    return kib;
}

/* A dead worker's column is cleared without touching the table's untouched pages: a table
 * sized for 100,000 connections on 4 workers (25 MiB) stays mostly unallocated. */
static void clearing_a_slot_leaves_untouched_pages_alone(void **state)
{
    (void)state;
    struct iplimit *t = iplimit_new(100000, 4);
    assert_non_null(t);
    iplimit_set_slot(t, 2);
    struct ipcount *h[64];
    char ip[32];
    for (int i = 0; i < 64; i++) {
        snprintf(ip, sizeof ip, "10.9.%d.%d", i / 8, i);
        h[i] = iplimit_acquire(t, ip);
        assert_non_null(h[i]);
    }
    long before = rss_shmem_kib();
    assert_true(before >= 0);
    iplimit_clear_slot(t, 2);
    long grown = rss_shmem_kib() - before;
    assert_true(grown < 1024);
    for (int i = 0; i < 64; i++) {
        snprintf(ip, sizeof ip, "10.9.%d.%d", i / 8, i);
        assert_count(t, ip, 0);
        iplimit_release(t, h[i]); /* no longer counted: changes nothing */
    }
    iplimit_free(t);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(keys_group_addresses),
        cmocka_unit_test(counts_and_full),
        cmocka_unit_test(release_to_zero_frees_the_entry),
        cmocka_unit_test(removal_keeps_colliding_entries_found),
        cmocka_unit_test(a_forked_worker_counts_in_the_shared_table),
        cmocka_unit_test(clearing_a_slot_keeps_the_other_slots),
        cmocka_unit_test(clearing_a_slot_leaves_untouched_pages_alone),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
