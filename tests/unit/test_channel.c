#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>
#include <string.h>

#include "channel.h"

static void accepts_the_allowed_alphabet(void **state)
{
    const char *ok[] = {"bot:status:42",
                        "task_updates",
                        "property:7:conversations",
                        "room.lobby",
                        "user@example=1",
                        "A-Z_a-z.0-9:@=",
                        "x"};
    for (size_t i = 0; i < sizeof ok / sizeof ok[0]; i++)
        assert_true(channel_name_valid(ok[i], strlen(ok[i])));
}

static void rejects_other_bytes(void **state)
{
    const char *bad[] = {"has space", "quote\"", "back\\slash", "slash/", "star*",   "hash#",
                         "ünicode",   "tab\t",   "new\nline",   "{json}", "percent%"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        assert_false(channel_name_valid(bad[i], strlen(bad[i])));
    assert_false(channel_name_valid("a\0b", 3));
}

static void enforces_length_bounds(void **state)
{
    char name[202];
    memset(name, 'a', sizeof name);
    assert_false(channel_name_valid(name, 0));
    assert_false(channel_name_valid(NULL, 1));
    assert_true(channel_name_valid(name, 1));
    assert_true(channel_name_valid(name, 200));
    assert_false(channel_name_valid(name, 201));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(accepts_the_allowed_alphabet),
        cmocka_unit_test(rejects_other_bytes),
        cmocka_unit_test(enforces_length_bounds),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
