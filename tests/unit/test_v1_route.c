#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>
#include <string.h>

#include "v1_route.h"

static void channel_routes_name_their_channel(void **state)
{
    static const struct {
        const char *path;
        enum v1_route route;
        const char *channel;
    } ok[] = {
        {"/v1/channels/bot:status:42", V1_POSITION, "bot:status:42"},
        {"/v1/channels/a/messages", V1_MESSAGES, "a"},
        {"/v1/channels/room:1/presence", V1_PRESENCE, "room:1"},
        {"/v1/channels/task_updates/stream", V1_STREAM, "task_updates"},
        /* a suffix is one only at the end, and only once */
        {"/v1/channels/messages", V1_POSITION, "messages"},
        {"/v1/channels/stream/stream", V1_STREAM, "stream"},
    };
    for (size_t k = 0; k < sizeof ok / sizeof ok[0]; k++) {
        char ch[CHANNEL_NAME_MAX + 1] = "";
        assert_int_equal(v1_route_parse(ok[k].path, ch), ok[k].route);
        assert_string_equal(ch, ok[k].channel);
    }
    char longest[300] = "/v1/channels/", ch[CHANNEL_NAME_MAX + 1];
    memset(longest + 13, 'x', CHANNEL_NAME_MAX);
    strcpy(longest + 13 + CHANNEL_NAME_MAX, "/stream");
    assert_int_equal(v1_route_parse(longest, ch), V1_STREAM);
    assert_int_equal(strlen(ch), CHANNEL_NAME_MAX);
}

static void other_paths(void **state)
{
    char ch[CHANNEL_NAME_MAX + 1];
    assert_int_equal(v1_route_parse("/v1/messages", ch), V1_BATCH);
    const char *none[] = {
        "/",   "/v1",           "/v1/", "/v1/channels", "/v1/messages/", "/v2/channels/a",
        "/ws", "/V1/channels/a"};
    for (size_t k = 0; k < sizeof none / sizeof none[0]; k++)
        assert_int_equal(v1_route_parse(none[k], ch), V1_NONE);
    const char *bad[] = {"/v1/channels/",           "/v1/channels//stream", "/v1/channels/a b",
                         "/v1/channels/a/b/stream", "/v1/channels/a/",      "/v1/channels/a/x",
                         "/v1/channels//messages",  "/v1/channels/%41"};
    for (size_t k = 0; k < sizeof bad / sizeof bad[0]; k++)
        assert_int_equal(v1_route_parse(bad[k], ch), V1_BAD_CHANNEL);
    char over[300] = "/v1/channels/";
    memset(over + 13, 'x', CHANNEL_NAME_MAX + 1);
    strcpy(over + 14 + CHANNEL_NAME_MAX, "/stream");
    assert_int_equal(v1_route_parse(over, ch), V1_BAD_CHANNEL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(channel_routes_name_their_channel),
        cmocka_unit_test(other_paths),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
