#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>
#include <stdlib.h>
#include <string.h>

#include "presence_event.h"

static void events_are_told_by_their_first_bytes(void **state)
{
    (void)state;
    const char *join = "{\"op\":\"join\",\"channel\":\"c\"}", *leave = "{\"op\":\"leave\",\"x\":1}";
    assert_int_equal(presence_event_kind(join, strlen(join)), PRESENCE_JOIN);
    assert_int_equal(presence_event_kind(leave, strlen(leave)), PRESENCE_LEAVE);
    const char *others[] = {
        "{\"op\":\"join\"}", "{\"op\": \"join\",", "{\"data\":1}", "{\"op\":\"jo", "", "[]"};
    for (size_t i = 0; i < sizeof others / sizeof others[0]; i++)
        assert_int_equal(presence_event_kind(others[i], strlen(others[i])), PRESENCE_NONE);
}

static void an_event_is_the_frame_clients_get(void **state)
{
    (void)state;
    size_t len;
    char *ev =
        presence_event_new(PRESENCE_JOIN, "room:1", 6, "al\"ice\n", 7, "{\"n\": 0.1}", 10, 0, &len);
    assert_non_null(ev);
    const char *want =
        "{\"op\":\"join\",\"channel\":\"room:1\",\"member\":{\"sub\":\"al\\\"ice\\n\","
        "\"info\":{\"n\": 0.1}}}";
    assert_int_equal(len, strlen(want));
    assert_memory_equal(ev, want, len);
    assert_true(presence_event_valid("room:1", 6, ev, len));
    assert_false(presence_event_valid("room:2", 6, ev, len)); /* another channel's */
    free(ev);
    /* a leave carries no info; the spare bytes are there to sign in place */
    ev = presence_event_new(PRESENCE_LEAVE, "c", 1, "bob", 3, "{}", 2, 100, &len);
    want = "{\"op\":\"leave\",\"channel\":\"c\",\"member\":{\"sub\":\"bob\"}}";
    assert_int_equal(len, strlen(want));
    assert_memory_equal(ev, want, len);
    assert_true(presence_event_valid("c", 1, ev, len));
    memset(ev + len, 'x', 100); /* writable */
    free(ev);
    assert_null(presence_event_new(PRESENCE_JOIN, "c", 1, "", 0, NULL, 0, 0, &len));
    assert_null(presence_event_new(PRESENCE_JOIN, "c", 1, "\xff\xfe", 2, NULL, 0, 0, &len));
    assert_null(presence_event_new(PRESENCE_LEAVE, "c", 1, "a\0b", 3, NULL, 0, 0, &len));
}

static void malformed_events_are_refused(void **state)
{
    (void)state;
    const char *bad[] = {
        "{\"op\":\"join\",\"channel\":\"c\"}",
        "{\"op\":\"join\",\"channel\":\"c\",\"member\":{}}",
        "{\"op\":\"join\",\"channel\":\"c\",\"member\":{\"sub\":\"\"}}",
        "{\"op\":\"join\",\"channel\":\"c\",\"member\":{\"sub\":1}}",
        "{\"op\":\"join\",\"channel\":\"c\",\"member\":{\"sub\":\"a\",\"x\":1}}",
        "{\"op\":\"join\",\"channel\":\"c\",\"member\":{\"sub\":\"a\"},\"x\":1}",
        "{\"op\":\"join\",\"channel\":\"c\",\"member\":[\"a\"]}",
        "{\"op\":\"join\",\"channel\":\"cc\",\"member\":{\"sub\":\"a\"}}",
        "{\"op\":\"join\",\"channel\":\"c\",\"member\":{\"sub\":\"a\"}",
        "{\"op\":\"join\",\"channel\":\"c\",\"channel\":\"c\",\"member\":{\"sub\":\"a\"}}",
        "{\"op\":\"message\",\"channel\":\"c\",\"member\":{\"sub\":\"a\"}}",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        assert_false(presence_event_valid("c", 1, bad[i], strlen(bad[i])));
}

#define E(k, v)                                                                                    \
    {                                                                                              \
        k, v, sizeof k - 1, sizeof v - 1                                                           \
    }

static void the_list_counts_each_user_once(void **state)
{
    (void)state;
    struct presence_entry e[] = {
        E("i2\0bob", "{\"n\": 0.1}"),
        E("i1\0alice", "{\"n\":\"A\"}"),
        E("i1\0", "3"),
        E("i3\0alice", "{\"n\":\"A2\"}"),
        E("i2\0", "2"),
        E("i3\0carol", "not json"),
        E("i3\0dave", ""),
    };
    size_t len, skipped;
    char *t = presence_list_text(e, sizeof e / sizeof e[0], &len, &skipped);
    assert_non_null(t);
    assert_int_equal(skipped, 0);
    /* sorted by sub; alice once (either instance's info); info kept as written; no info or
     * not JSON: null; count 4 users + 5 anonymous */
    const char *want_a =
        "\"count\":9,\"members\":[{\"sub\":\"alice\",\"info\":{\"n\":\"A\"}},"
        "{\"sub\":\"bob\",\"info\":{\"n\": 0.1}},{\"sub\":\"carol\",\"info\":null},"
        "{\"sub\":\"dave\",\"info\":null}]";
    const char *want_b =
        "\"count\":9,\"members\":[{\"sub\":\"alice\",\"info\":{\"n\":\"A2\"}},"
        "{\"sub\":\"bob\",\"info\":{\"n\": 0.1}},{\"sub\":\"carol\",\"info\":null},"
        "{\"sub\":\"dave\",\"info\":null}]";
    assert_int_equal(len, strlen(t));
    assert_true(strcmp(t, want_a) == 0 || strcmp(t, want_b) == 0);
    free(t);
}

static void malformed_entries_are_left_out(void **state)
{
    (void)state;
    struct presence_entry e[] = {
        E("no-nul", "{}"),      E("\0anon-without-instance", "{}"),
        E("i1\0", "-1"),        E("i1\0", "1234567890"),
        E("i2\0", "x"),         E("i1\0\xff", "{}"),
        E("i1\0ok\"\n", "[1]"), E("i1\0a\0b", "{}"), /* a NUL in the sub */
        E("i1\0p", "1\0"),                           /* a NUL in the info: shown as null */
    };
    size_t len, skipped;
    char *t = presence_list_text(e, sizeof e / sizeof e[0], &len, &skipped);
    assert_non_null(t);
    assert_int_equal(skipped, 7);
    assert_string_equal(t, "\"count\":2,\"members\":[{\"sub\":\"ok\\\"\\n\",\"info\":[1]},"
                           "{\"sub\":\"p\",\"info\":null}]");
    free(t);
    t = presence_list_text(NULL, 0, &len, &skipped);
    assert_string_equal(t, "\"count\":0,\"members\":[]");
    free(t);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(events_are_told_by_their_first_bytes),
        cmocka_unit_test(an_event_is_the_frame_clients_get),
        cmocka_unit_test(malformed_events_are_refused),
        cmocka_unit_test(the_list_counts_each_user_once),
        cmocka_unit_test(malformed_entries_are_left_out),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
