#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>
#include <string.h>
#include <time.h>

#include "glob.h"

static bool m(const char *pattern, const char *s)
{
    return glob_match(pattern, s, strlen(s));
}

static void literals_match_only_themselves(void **state)
{
    assert_true(m("bot:status:42", "bot:status:42"));
    assert_false(m("bot:status:42", "bot:status:421"));
    assert_false(m("bot:status:42", "bot:status:4"));
    assert_false(m("Bot", "bot"));
    assert_true(m("", ""));
    assert_false(m("", "a"));
    assert_false(m("a", ""));
}

static void star_matches_any_run_including_colons(void **state)
{
    assert_true(m("*", ""));
    assert_true(m("*", "anything:at:all"));
    assert_true(m("bot:*", "bot:"));
    assert_true(m("bot:*", "bot:status:42"));
    assert_false(m("bot:*", "bot"));
    assert_false(m("bot:*", "robot:1"));
    assert_true(m("*:42", "bot:status:42"));
    assert_true(m("bot:*:42", "bot:status:42"));
    assert_true(m("bot:*:42", "bot:a:b:c:42"));
    assert_false(m("bot:*:42", "bot:status:43"));
    assert_true(m("a*b*c", "abc"));
    assert_true(m("a*b*c", "axxbyyc"));
    assert_false(m("a*b*c", "axxbyy"));
    assert_true(m("**", "x"));
    assert_true(m("a**", "a"));
    assert_true(m("*a", "aaa"));
    assert_false(m("*a", "aab"));
    assert_true(m("*b", "*ab")); /* a literal * in the subject is just a byte */
}

static void question_mark_matches_one_byte(void **state)
{
    assert_true(m("room.?", "room.a"));
    assert_false(m("room.?", "room."));
    assert_false(m("room.?", "room.ab"));
    assert_true(m("?*", "x"));
    assert_false(m("?*", ""));
    assert_true(m("user:??:*", "user:12:inbox"));
    assert_false(m("user:??:*", "user:1:inbox"));
}

static void the_length_is_what_counts(void **state)
{
    assert_true(glob_match("a?c", "a\0c", 3));
    assert_false(glob_match("a", "a\0", 2));
    assert_true(glob_match("ab", "abc", 2));
    assert_true(glob_match("*", NULL, 0));
}

static void pathological_patterns_stay_fast(void **state)
{
    char pattern[400], s[2001];
    size_t p = 0;
    for (int i = 0; i < 100; i++) {
        pattern[p++] = '*';
        pattern[p++] = 'a';
    }
    pattern[p++] = 'b';
    pattern[p] = '\0';
    memset(s, 'a', 2000);
    s[2000] = '\0';
    clock_t t0 = clock();
    for (int i = 0; i < 10; i++)
        assert_false(glob_match(pattern, s, 2000));
    double secs = (double)(clock() - t0) / CLOCKS_PER_SEC;
    assert_true(secs < 1.0); /* backtracking would take longer than the universe */
}

static void any_of_a_list(void **state)
{
    json_t *list = json_pack("[s,i,n,s]", "room.*", 5, "bot:?");
    json_array_append_new(list, json_stringn("x\0*", 3));
    assert_true(glob_match_any(list, "room.1", 6));
    assert_true(glob_match_any(list, "bot:1", 5));
    assert_false(glob_match_any(list, "bot:12", 6));
    assert_false(glob_match_any(list, "x", 1));   /* cut short at the NUL: skipped */
    assert_false(glob_match_any(list, "xyz", 3)); /* and never widened */
    assert_false(glob_match_any(NULL, "room.1", 6));
    json_t *obj = json_pack("{s:s}", "a", "*");
    assert_false(glob_match_any(obj, "room.1", 6));
    json_t *empty = json_array();
    assert_false(glob_match_any(empty, "", 0));
    json_decref(list);
    json_decref(obj);
    json_decref(empty);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(literals_match_only_themselves),
        cmocka_unit_test(star_matches_any_run_including_colons),
        cmocka_unit_test(question_mark_matches_one_byte),
        cmocka_unit_test(the_length_is_what_counts),
        cmocka_unit_test(pathological_patterns_stay_fast),
        cmocka_unit_test(any_of_a_list),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
