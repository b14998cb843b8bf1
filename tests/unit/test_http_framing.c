/* The framing rules every plain HTTP request passes before a route (http_framing.c). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>
#include <string.h>

#include "http_framing.h"

#define MAX_BODY 4096

static struct http_head head(enum http_method m, bool v1, const char *cl, bool te)
{
    return (struct http_head){m, v1, cl, te, MAX_BODY};
}

/* The status of a refusal, or 0 when the request goes on (with its body length). */
static unsigned check(struct http_head h, uint64_t *body)
{
    struct http_refusal no = {0};
    uint64_t len = 12345;
    int rc = http_framing_check(&h, &len, &no);
    if (body)
        *body = len;
    if (rc == 0)
        return 0;
    assert_non_null(no.why);
    return no.status;
}

static void plain_requests_pass(void **state)
{
    uint64_t body;
    assert_int_equal(check(head(HTTP_GET, false, NULL, false), &body), 0);
    assert_int_equal(body, 0);
    assert_int_equal(check(head(HTTP_GET, true, "0", false), &body), 0);
    assert_int_equal(body, 0);
    assert_int_equal(check(head(HTTP_POST, true, "17", false), &body), 0);
    assert_int_equal(body, 17);
    assert_int_equal(check(head(HTTP_POST, true, "0", false), &body), 0);
    assert_int_equal(check(head(HTTP_POST, true, "4096", false), &body), 0);
    assert_int_equal(body, 4096);
}

static void methods(void **state)
{
    assert_int_equal(check(head(HTTP_OTHER, false, NULL, false), NULL), 405);
    assert_int_equal(check(head(HTTP_OTHER, true, "5", false), NULL), 405);
    assert_int_equal(check(head(HTTP_POST, false, "5", false), NULL), 405); /* not /v1 */
}

static void bodies_where_none_belong(void **state)
{
    assert_int_equal(check(head(HTTP_GET, true, "14", false), NULL), 400);
    assert_int_equal(check(head(HTTP_GET, false, "1", false), NULL), 400);
    assert_int_equal(check(head(HTTP_GET, true, NULL, true), NULL), 400);
}

static void post_framing(void **state)
{
    assert_int_equal(check(head(HTTP_POST, true, NULL, false), NULL), 411);
    assert_int_equal(check(head(HTTP_POST, true, NULL, true), NULL), 411);
    assert_int_equal(check(head(HTTP_POST, true, "7", true), NULL), 411); /* TE and CL */
    assert_int_equal(check(head(HTTP_POST, true, "4097", false), NULL), 413);
    assert_int_equal(check(head(HTTP_POST, true, "9999999999999999999", false), NULL), 413);
}

static void content_length_is_one_number(void **state)
{
    const char *bad[] = {"",        "5,5", "5,100", "+5",  "-1", "0x10",
                         "5 5",     " 5",  "5 ",    "1e3", "５", "12345678901234567890",
                         "too long"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        assert_int_equal(check(head(HTTP_POST, true, bad[i], false), NULL), 400);
        uint64_t v = 7;
        assert_int_equal(http_content_length(bad[i], &v), -1);
        assert_int_equal(v, 7);
    }
    uint64_t v;
    assert_int_equal(http_content_length("0000000000000000042", &v), 0);
    assert_int_equal(v, 42);
    assert_int_equal(http_content_length("9223372036854775807", &v), 0);
}

static void subprotocols(void **state)
{
    assert_true(http_subprotocols_ok(NULL));
    assert_true(http_subprotocols_ok(""));
    assert_true(http_subprotocols_ok("herald"));
    assert_true(http_subprotocols_ok("chat, herald"));
    assert_true(http_subprotocols_ok("herald,x"));
    assert_false(http_subprotocols_ok("http"));
    assert_false(http_subprotocols_ok("herald, http"));
    assert_false(http_subprotocols_ok("http,herald"));
    assert_false(http_subprotocols_ok("foo"));
    assert_false(http_subprotocols_ok("heraldx"));
    assert_false(http_subprotocols_ok("Herald")); /* subprotocol names are case-sensitive */
    assert_true(http_subprotocols_ok("httpx, herald"));
}

static void idempotency_keys(void **state)
{
    assert_true(idempotency_key_valid("order-42", 8));
    assert_true(idempotency_key_valid("!~", 2));
    char max[IDEMPOTENCY_KEY_MAX + 1];
    memset(max, 'k', sizeof max);
    assert_true(idempotency_key_valid(max, IDEMPOTENCY_KEY_MAX));
    assert_false(idempotency_key_valid(max, IDEMPOTENCY_KEY_MAX + 1));
    assert_false(idempotency_key_valid("", 0));
    assert_false(idempotency_key_valid("a b", 3));
    assert_false(idempotency_key_valid("a\tb", 3));
    assert_false(idempotency_key_valid("\xff\xfe", 2));
    assert_false(idempotency_key_valid("caf\xc3\xa9", 5));
    assert_false(idempotency_key_valid("a\0b", 3));
    assert_false(idempotency_key_valid("a\x7f", 2));
}

static void origin_lists(void **state)
{
    const char *list = "https://app.example, http://127.0.0.1:8080 ,https://b.example";
    assert_true(http_origin_listed(list, "https://app.example"));
    assert_true(http_origin_listed(list, "HTTPS://APP.EXAMPLE"));
    assert_true(http_origin_listed(list, "http://127.0.0.1:8080"));
    assert_true(http_origin_listed(list, "https://b.example"));
    assert_false(http_origin_listed(list, "https://app.example.evil"));
    assert_false(http_origin_listed(list, "https://app.exampl"));
    assert_false(http_origin_listed(list, "http://127.0.0.1"));
    assert_false(http_origin_listed(list, ""));
    assert_false(http_origin_listed(list, "null"));
    assert_false(http_origin_listed("", "https://app.example"));
    assert_false(http_origin_listed(" , ", ""));
    assert_true(http_origin_listed("*", "https://anything.example"));
    assert_true(http_origin_listed("https://a.example,*", "null"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(plain_requests_pass),
        cmocka_unit_test(methods),
        cmocka_unit_test(bodies_where_none_belong),
        cmocka_unit_test(post_framing),
        cmocka_unit_test(content_length_is_one_number),
        cmocka_unit_test(subprotocols),
        cmocka_unit_test(idempotency_keys),
        cmocka_unit_test(origin_lists),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
