#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>
#include <string.h>

#include "request.h"

static int parse(const char *msg, struct request *r, const char **why)
{
    *why = NULL;
    return request_parse(msg, strlen(msg), 16, r, why);
}

static void subscribe_with_resume(void **state)
{
    struct request r;
    const char *why;
    assert_int_equal(parse("{\"op\":\"subscribe\",\"channel\":\"room:1\",\"since\":17,\"epoch\":"
                           "\"e1\",\"id\":\"a\"}",
                           &r, &why),
                     0);
    assert_int_equal(r.op, REQ_SUBSCRIBE);
    assert_int_equal(r.channel_len, 6);
    assert_memory_equal(r.channel, "room:1", 6);
    assert_true(r.resume);
    assert_int_equal(r.since, 17);
    assert_string_equal(r.epoch, "e1");
    assert_string_equal(r.id, "\"a\"");
    assert_int_equal(r.last, 0);
    request_free(&r);
    assert_int_equal(parse("{\"op\":\"subscribe\",\"channel\":\"c\",\"last\":5}", &r, &why), 0);
    assert_true(r.resume);
    assert_int_equal(r.last, 5);
    assert_int_equal(r.since, 0);
    assert_null(r.epoch);
    assert_false(r.strict);
    request_free(&r);
    assert_int_equal(
        parse("{\"op\":\"subscribe\",\"channel\":\"c\",\"since\":2,\"strict\":true}", &r, &why), 0);
    assert_true(r.strict);
    assert_int_equal(r.since, 2);
    request_free(&r);
}

static void plain_ops(void **state)
{
    struct request r;
    const char *why;
    assert_int_equal(parse("{\"op\":\"ping\",\"id\":42}", &r, &why), 0);
    assert_int_equal(r.op, REQ_PING);
    assert_string_equal(r.id, "42");
    request_free(&r);
    assert_int_equal(parse("{\"op\":\"publish\",\"channel\":\"c\",\"data\":[1]}", &r, &why), 0);
    assert_int_equal(r.op, REQ_PUBLISH);
    assert_true(json_is_array(r.data));
    assert_int_equal(r.data_len, 3);
    assert_memory_equal(r.data_text, "[1]", 3);
    request_free(&r);
    /* data is kept as written: re-encoding would turn 0.1 into 0.10000000000000001 */
    assert_int_equal(
        parse("{\"data\" : {\"x\": 0.1} ,\"op\":\"publish\",\"channel\":\"c\"}", &r, &why), 0);
    assert_int_equal(r.data_len, 10);
    assert_memory_equal(r.data_text, "{\"x\": 0.1}", 10);
    assert_string_equal(r.id, "");
    request_free(&r);
    assert_int_equal(parse("{\"op\":\"subscribe\",\"channel\":\"c\"}", &r, &why), 0);
    assert_false(r.resume);
    request_free(&r);
}

static void presence_fields(void **state)
{
    struct request r;
    const char *why;
    assert_int_equal(parse("{\"op\":\"subscribe\",\"channel\":\"c\",\"sub\":\"al\\\"ice\","
                           "\"info\": {\"n\": 0.1} }",
                           &r, &why),
                     0);
    assert_int_equal(r.sub_len, 6);
    assert_memory_equal(r.sub, "al\"ice", 6);
    assert_int_equal(r.info_len, 10); /* as written */
    assert_memory_equal(r.info_text, "{\"n\": 0.1}", 10);
    request_free(&r);
    assert_int_equal(parse("{\"op\":\"subscribe\",\"channel\":\"c\",\"info\":null}", &r, &why), 0);
    assert_null(r.sub);
    assert_int_equal(r.info_len, 4);
    request_free(&r);
    assert_int_equal(parse("{\"op\":\"presence\",\"channel\":\"room:1\",\"id\":3}", &r, &why), 0);
    assert_int_equal(r.op, REQ_PRESENCE);
    assert_int_equal(r.channel_len, 6);
    assert_string_equal(r.id, "3");
    request_free(&r);
    assert_int_equal(parse("{\"op\":\"refresh\",\"token\":\"a.b.c\"}", &r, &why), 0);
    assert_int_equal(r.op, REQ_REFRESH);
    assert_string_equal(r.token, "a.b.c");
    request_free(&r);
}

static void refusals_say_why_and_keep_the_id(void **state)
{
    const char *bad[] = {
        "nope",
        "[1]",
        "{\"op\":1}",
        "{\"op\":\"dance\"}",
        "{\"op\":\"ping\",\"id\":{}}",
        "{\"op\":\"ping\",\"id\":"
        "\"xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx\"}",
        "{\"op\":\"subscribe\"}",
        "{\"op\":\"subscribe\",\"channel\":\"a b\"}",
        "{\"op\":\"subscribe\",\"channel\":\"c\",\"since\":-1}",
        "{\"op\":\"subscribe\",\"channel\":\"c\",\"since\":\"3\"}",
        "{\"op\":\"subscribe\",\"channel\":\"c\",\"since\":3,\"epoch\":7}",
        "{\"op\":\"subscribe\",\"channel\":\"c\",\"last\":0}",
        "{\"op\":\"subscribe\",\"channel\":\"c\",\"last\":-2}",
        "{\"op\":\"subscribe\",\"channel\":\"c\",\"last\":\"5\"}",
        "{\"op\":\"subscribe\",\"channel\":\"c\",\"last\":1.5}",
        "{\"op\":\"subscribe\",\"channel\":\"c\",\"last\":5,\"since\":3}",
        "{\"op\":\"subscribe\",\"channel\":\"c\",\"last\":5,\"epoch\":\"e\"}",
        "{\"op\":\"subscribe\",\"channel\":\"c\",\"since\":5,\"strict\":1}",
        "{\"op\":\"subscribe\",\"channel\":\"c\",\"strict\":true}",
        "{\"op\":\"publish\",\"channel\":\"c\"}",
        "{\"op\":\"subscribe\",\"channel\":\"c\",\"sub\":\"\"}",
        "{\"op\":\"subscribe\",\"channel\":\"c\",\"sub\":7}",
        "{\"op\":\"subscribe\",\"channel\":\"c\",\"sub\":"
        "\"xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"
        "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx\"}",
        "{\"op\":\"presence\"}",
        "{\"op\":\"refresh\"}",
        "{\"op\":\"refresh\",\"token\":\"\"}",
        "{\"op\":\"refresh\",\"token\":7}",
        "{\"op\":\"presence\",\"channel\":\"\"}",
        "{\"op\":\"ping\",\"op\":\"ping\"}",
        "[[[[[[[[[[[[[[[[[[[[]]]]]]]]]]]]]]]]]]]]",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        struct request r;
        const char *why;
        assert_int_equal(parse(bad[i], &r, &why), -1);
        assert_non_null(why);
        request_free(&r);
    }
    struct request r;
    const char *why;
    assert_int_equal(parse("{\"op\":\"subscribe\",\"channel\":\"a b\",\"id\":7}", &r, &why), -1);
    assert_string_equal(r.id, "7"); /* the error reply can echo it */
    request_free(&r);
}

/* JSON has no raw NUL; jansson alone would take these, and the NUL would reach every
 * subscriber in the data, or every member list in the info. */
static void a_nul_byte_anywhere_is_refused(void **state)
{
    static const char pub[] = "{\"op\":\"publish\",\"channel\":\"c\",\"data\":{\"n\":1\0}}";
    static const char sub[] = "{\"op\":\"subscribe\",\"channel\":\"c\",\"info\":[7\0]}";
    const char *msg[] = {pub, sub};
    size_t len[] = {sizeof pub - 1, sizeof sub - 1};
    for (size_t k = 0; k < 2; k++) {
        struct request r;
        const char *why = NULL;
        assert_int_equal(request_parse(msg[k], len[k], 16, &r, &why), -1);
        assert_non_null(why);
        request_free(&r);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(subscribe_with_resume),
        cmocka_unit_test(plain_ops),
        cmocka_unit_test(presence_fields),
        cmocka_unit_test(refusals_say_why_and_keep_the_id),
        cmocka_unit_test(a_nul_byte_anywhere_is_refused),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
