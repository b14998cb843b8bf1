/* Address ranges and the client behind trusted proxies (common/cidr.c). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>
#include <string.h>

#include "cidr.h"

static struct cidr_list list(const char *text)
{
    struct cidr_list l;
    char err[128];
    assert_int_equal(cidr_list_parse(text, &l, err, sizeof err), 0);
    return l;
}

static void ranges_match_v4_v6_and_mapped(void **state)
{
    struct cidr_list l = list("10.0.0.0/8, 192.168.1.7,fc00::/7 ,::1");
    assert_int_equal(l.n, 4);
    assert_true(cidr_list_match(&l, "10.255.1.2"));
    assert_false(cidr_list_match(&l, "11.0.0.1"));
    assert_true(cidr_list_match(&l, "192.168.1.7"));
    assert_false(cidr_list_match(&l, "192.168.1.8"));
    assert_true(cidr_list_match(&l, "fd12:3456::1"));
    assert_false(cidr_list_match(&l, "fe80::1"));
    assert_true(cidr_list_match(&l, "::1"));
    assert_true(cidr_list_match(&l, "::ffff:10.1.2.3")); /* an IPv4 peer on a v6 socket */
    assert_false(cidr_list_match(&l, "not-an-address"));
    assert_false(cidr_list_match(&l, ""));
    struct cidr_list odd = list("172.16.0.0/12");
    assert_true(cidr_list_match(&odd, "172.31.255.255"));
    assert_false(cidr_list_match(&odd, "172.32.0.0"));
    struct cidr_list all = list("0.0.0.0/0");
    assert_true(cidr_list_match(&all, "8.8.8.8"));
    assert_false(cidr_list_match(&all, "2001:db8::1")); /* v4 /0 is not every v6 address */
    struct cidr_list none = list("");
    assert_int_equal(none.n, 0);
    assert_false(cidr_list_match(&none, "10.0.0.1"));
}

static void bad_ranges_are_refused_with_their_text(void **state)
{
    const char *bad[] = {"10.0.0.0/33", "::1/129",     "10.0.0/8",    "10.0.0.0/",
                         "10.0.0.0/-1", "10.0.0.0/8x", "example.com", "1.2.3.4:80"};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        struct cidr_list l;
        char err[128] = "";
        assert_int_equal(cidr_list_parse(bad[i], &l, err, sizeof err), -1);
        assert_non_null(strstr(err, bad[i]));
    }
    char many[1024] = "";
    for (int i = 0; i <= CIDR_LIST_MAX; i++)
        strcat(many, "10.0.0.1,");
    struct cidr_list l;
    char err[128];
    assert_int_equal(cidr_list_parse(many, &l, err, sizeof err), -1);
}

static const char *client(const char *peer, const char *xff, const char *trusted)
{
    static char out[CIDR_ADDR_MAX + 1];
    struct cidr_list t = list(trusted);
    cidr_client_address(peer, xff, &t, out, sizeof out);
    return out;
}

static void the_client_is_the_rightmost_untrusted_hop(void **state)
{
    /* no trusted proxy: the header is the client's own text, ignored */
    assert_string_equal(client("203.0.113.9", "1.1.1.1", ""), "203.0.113.9");
    /* an untrusted peer cannot name another client */
    assert_string_equal(client("203.0.113.9", "1.1.1.1", "10.0.0.0/8"), "203.0.113.9");
    /* one trusted proxy */
    assert_string_equal(client("10.0.0.5", "198.51.100.7", "10.0.0.0/8"), "198.51.100.7");
    /* a forged left part does not count: the proxy appended the real address last */
    assert_string_equal(client("10.0.0.5", "1.2.3.4, 198.51.100.7", "10.0.0.0/8"), "198.51.100.7");
    /* two trusted hops, spaces and tabs */
    assert_string_equal(client("10.0.0.5", "1.2.3.4,198.51.100.7 ,\t10.0.0.9", "10.0.0.0/8"),
                        "198.51.100.7");
    /* IPv6 */
    assert_string_equal(client("::1", "2001:db8::42", "::1"), "2001:db8::42");
    /* the trusted proxy sent no header: the proxy itself */
    assert_string_equal(client("10.0.0.5", NULL, "10.0.0.0/8"), "10.0.0.5");
    /* garbage, an address with a port, an empty entry: the last trusted hop stands */
    assert_string_equal(client("10.0.0.5", "junk", "10.0.0.0/8"), "10.0.0.5");
    assert_string_equal(client("10.0.0.5", "198.51.100.7:4242", "10.0.0.0/8"), "10.0.0.5");
    assert_string_equal(client("10.0.0.5", "198.51.100.7, ", "10.0.0.0/8"), "10.0.0.5");
    assert_string_equal(client("10.0.0.5", "198.51.100.7, 10.0.0.9, junk", "10.0.0.0/8"),
                        "10.0.0.5");
    /* only trusted hops: the left-most of them */
    assert_string_equal(client("10.0.0.5", "10.0.0.7, 10.0.0.6", "10.0.0.0/8"), "10.0.0.7");
    /* an over-long entry */
    char longer[200];
    memset(longer, '1', sizeof longer - 1);
    longer[sizeof longer - 1] = '\0';
    assert_string_equal(client("10.0.0.5", longer, "10.0.0.0/8"), "10.0.0.5");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(ranges_match_v4_v6_and_mapped),
        cmocka_unit_test(bad_ranges_are_refused_with_their_text),
        cmocka_unit_test(the_client_is_the_rightmost_untrusted_hop),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
