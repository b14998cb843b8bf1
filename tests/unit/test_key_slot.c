#include "key_slot.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <string.h>

#include <cmocka.h>

static unsigned slot(const char *s)
{
    return redis_key_slot(s, strlen(s));
}

/* Values from CLUSTER KEYSLOT of redis-server 7.0 (the integration harness checks more
 * against a live cluster). */
static void slots_match_redis(void **state)
{
    (void)state;
    assert_int_equal(slot("123456789"), 0x31C3 % 16384); /* the CRC16/XMODEM check value */
    assert_int_equal(slot("foo"), 12182);
    assert_int_equal(slot(""), 0);
}

static void hash_tags_pick_the_hashed_part(void **state)
{
    (void)state;
    assert_int_equal(slot("{user1000}.following"), slot("user1000"));
    assert_int_equal(slot("x{user1000}y"), slot("user1000"));
    assert_int_equal(slot("a{b}{c}"), slot("b"));     /* only the first tag */
    assert_int_equal(slot("a{}{c}"), slot("a{}{c}")); /* an empty tag: the whole name */
    assert_int_not_equal(slot("a{}{c}"), slot("c"));
    assert_int_equal(slot("a{b"), slot("a{b")); /* no closing brace: the whole name */
    assert_int_not_equal(slot("a{b"), slot("b"));
    assert_int_equal(slot("}{x}"), slot("x")); /* a '}' before the '{' is ordinary */
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(slots_match_redis),
        cmocka_unit_test(hash_tags_pick_the_hashed_part),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
