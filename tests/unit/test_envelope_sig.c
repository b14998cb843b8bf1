/* envelope_sig: HMAC-SHA256 through the precomputed key states (RFC 4231), the signed payload
 * format, and everything verify must refuse. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "envelope_sig.h"

static const char epoch[] = "0123456789abcdef";
static const char envelope[] =
    "{\"op\":\"message\",\"channel\":\"room:1\",\"seq\":1,\"ts\":1700000000000,"
    "\"data\":{\"text\":\"hi\"}}";
/* python3 -c 'import hmac, hashlib; print(hmac.new(bytes(range(32)), b"0123456789abcdef\n"
 *   + b"{\"op\":\"message\",\"channel\":\"room:1\",\"seq\":1,\"ts\":1700000000000,"
 *   + b"\"data\":{\"text\":\"hi\"}}", hashlib.sha256).hexdigest())' */
static const char python_hex[] = "3c41726663024794e5d40b737bc50188216d469ab07971c377f5471d48a7927f";

static void hex(const unsigned char *b, size_t n, char *out)
{
    for (size_t i = 0; i < n; i++)
        sprintf(out + 2 * i, "%02x", b[i]);
}

static void key_of(struct envelope_key *k, unsigned char first)
{
    unsigned char raw[ENVELOPE_KEY_LEN];
    for (size_t i = 0; i < sizeof raw; i++)
        raw[i] = (unsigned char)(first + i);
    assert_int_equal(envelope_key_init(k, raw, sizeof raw), 0);
}

/* The signed payload of envelope under key 0x00..0x1f, in a malloc'd NUL-terminated string. */
static char *signed_payload(const struct envelope_key *k, size_t *len)
{
    size_t n = strlen(envelope);
    char *out = malloc(ENVELOPE_SIG_SIGNED_LEN(n) + 1);
    *len = envelope_sig_sign(k, epoch, envelope, n, out);
    assert_int_equal(*len, ENVELOPE_SIG_SIGNED_LEN(n));
    out[*len] = '\0';
    return out;
}

static void rfc4231_vectors(void **state)
{
    unsigned char k20[20], k131[131], dd[50], cd[50], k25[25];
    memset(dd, 0xdd, sizeof dd);
    memset(cd, 0xcd, sizeof cd);
    memset(k131, 0xaa, sizeof k131);
    for (size_t i = 0; i < sizeof k25; i++)
        k25[i] = (unsigned char)(i + 1);
    struct {
        const unsigned char *key;
        size_t keylen;
        unsigned char fill; /* key of 20 bytes of fill when key is NULL */
        const void *data;
        size_t datalen;
        const char *mac; /* hex; test case 5 is truncated to 128 bits */
    } tc[] = {
        {NULL, 20, 0x0b, "Hi There", 8,
         "b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7"},
        {(const unsigned char *)"Jefe", 4, 0, "what do ya want for nothing?", 28,
         "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"},
        {NULL, 20, 0xaa, dd, sizeof dd,
         "773ea91e36800e46854db8ebd09181a72959098b3ef8c122d9635514ced565fe"},
        {k25, sizeof k25, 0, cd, sizeof cd,
         "82558a389a443c0ea4cc819899f2083a85f0faa3e578f8077a2e3ff46729665b"},
        {NULL, 20, 0x0c, "Test With Truncation", 20, "a3b6167473100ee06e0c796c2955552b"},
        {k131, sizeof k131, 0, "Test Using Larger Than Block-Size Key - Hash Key First", 54,
         "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54"},
        {k131, sizeof k131, 0,
         "This is a test using a larger than block-size key and a larger than block-size data. "
         "The key needs to be hashed before being used by the HMAC algorithm.",
         152, "9b09ffa71b942fcb27635fbcd5b0e944bfdc63644f0713938a7f51535c3a35e2"},
    };
    for (size_t i = 0; i < sizeof tc / sizeof tc[0]; i++) {
        const unsigned char *key = tc[i].key;
        if (!key) {
            memset(k20, tc[i].fill, sizeof k20);
            key = k20;
        }
        struct envelope_key k;
        assert_int_equal(envelope_key_init(&k, key, tc[i].keylen), 0);
        unsigned char mac[ENVELOPE_MAC_LEN];
        char got[2 * ENVELOPE_MAC_LEN + 1];
        /* twice: the precomputed states must not be used up by a MAC */
        for (int round = 0; round < 2; round++) {
            assert_true(envelope_key_mac(&k, tc[i].data, tc[i].datalen, mac));
            hex(mac, ENVELOPE_MAC_LEN, got);
            got[strlen(tc[i].mac)] = '\0';
            assert_string_equal(got, tc[i].mac);
        }
        envelope_key_clear(&k);
    }
}

static void sign_matches_python(void **state)
{
    struct envelope_key k;
    key_of(&k, 0);
    size_t len;
    char *p = signed_payload(&k, &len);
    char want[512];
    snprintf(want, sizeof want, "%.*s,\"sig\":\"%s\"}", (int)strlen(envelope) - 1, envelope,
             python_hex);
    assert_string_equal(p, want);
    assert_int_equal(len, strlen(envelope) + 73);
    free(p);
    envelope_key_clear(&k);
}

static void sign_then_verify_and_strip(void **state)
{
    struct envelope_key k;
    key_of(&k, 0);
    size_t len;
    char *p = signed_payload(&k, &len);
    assert_true(envelope_sig_present(p, len));
    assert_true(envelope_sig_verify(&k, epoch, p, len));
    assert_true(envelope_sig_verify(&k, epoch, p, len)); /* the key is not used up */
    assert_int_equal(envelope_sig_strip(p, len, p), strlen(envelope));
    assert_memory_equal(p, envelope, strlen(envelope));
    /* signing in place gives the same bytes */
    char buf[512];
    memcpy(buf, envelope, strlen(envelope));
    assert_int_equal(envelope_sig_sign(&k, epoch, buf, strlen(envelope), buf), len);
    char *again = signed_payload(&k, &len);
    assert_memory_equal(buf, again, len);
    free(again);
    free(p);
    envelope_key_clear(&k);
}

static void any_flipped_byte_is_refused(void **state)
{
    struct envelope_key k;
    key_of(&k, 0);
    size_t len;
    char *p = signed_payload(&k, &len);
    const unsigned char flips[] = {0x01, 0x20, 0x80};
    for (size_t i = 0; i < len; i++) {
        for (size_t f = 0; f < sizeof flips; f++) {
            p[i] ^= (char)flips[f];
            assert_false(envelope_sig_verify(&k, epoch, p, len));
            p[i] ^= (char)flips[f];
        }
    }
    char e[sizeof epoch];
    memcpy(e, epoch, sizeof epoch);
    for (size_t i = 0; i < sizeof epoch - 1; i++) {
        e[i] ^= 0x01;
        assert_false(envelope_sig_verify(&k, e, p, len));
        e[i] ^= 0x01;
    }
    assert_false(envelope_sig_verify(&k, "", p, len));
    assert_false(envelope_sig_verify(&k, "0123456789abcde", p, len));
    assert_false(envelope_sig_verify(&k, "0123456789abcdef0", p, len));
    assert_false(envelope_sig_verify(&k, NULL, p, len));
    assert_true(envelope_sig_verify(&k, e, p, len)); /* and untouched, it still verifies */
    free(p);
    envelope_key_clear(&k);
}

static void another_key_is_refused(void **state)
{
    struct envelope_key k, other;
    key_of(&k, 0);
    key_of(&other, 1);
    size_t len;
    char *p = signed_payload(&k, &len);
    assert_false(envelope_sig_verify(&other, epoch, p, len));
    struct envelope_key cleared;
    key_of(&cleared, 0);
    envelope_key_clear(&cleared);
    envelope_key_clear(&cleared); /* twice is fine */
    assert_false(envelope_sig_verify(&cleared, epoch, p, len));
    assert_int_equal(envelope_sig_sign(&cleared, epoch, envelope, strlen(envelope), p), 0);
    free(p);
    envelope_key_clear(&k);
    envelope_key_clear(&other);
}

static void uppercase_hex_is_refused(void **state)
{
    struct envelope_key k;
    key_of(&k, 0);
    size_t len;
    char *p = signed_payload(&k, &len);
    char *hexpart = p + len - 66;
    int upper = 0;
    for (int i = 0; i < 64; i++) {
        if (hexpart[i] >= 'a' && hexpart[i] <= 'f') {
            hexpart[i] = (char)(hexpart[i] - 'a' + 'A');
            upper++;
        }
    }
    assert_true(upper > 0);
    assert_false(envelope_sig_present(p, len));
    assert_false(envelope_sig_verify(&k, epoch, p, len));
    free(p);
    envelope_key_clear(&k);
}

static void truncated_or_misplaced_sig_is_refused(void **state)
{
    struct envelope_key k;
    key_of(&k, 0);
    size_t len;
    char *p = signed_payload(&k, &len);
    /* truncated: the last byte, the last two, one hex digit less */
    assert_false(envelope_sig_verify(&k, epoch, p, len - 1));
    assert_false(envelope_sig_verify(&k, epoch, p, len - 2));
    char buf[512];
    memcpy(buf, p, len - 3);
    memcpy(buf + len - 3, "\"}", 2);
    assert_false(envelope_sig_present(buf, len - 1));
    assert_false(envelope_sig_verify(&k, epoch, buf, len - 1));
    /* the sig, valid, followed by another member: not the last one */
    int n = snprintf(buf, sizeof buf, "%.*s,\"x\":1}", (int)len - 1, p);
    assert_false(envelope_sig_present(buf, (size_t)n));
    assert_false(envelope_sig_verify(&k, epoch, buf, (size_t)n));
    /* trailing whitespace after the closing brace */
    n = snprintf(buf, sizeof buf, "%s ", p);
    assert_false(envelope_sig_verify(&k, epoch, buf, (size_t)n));
    /* a sig member without the comma, or with spaces, is not the canonical form */
    n = snprintf(buf, sizeof buf, "%.*s, \"sig\":\"%s\"}", (int)strlen(envelope) - 1, envelope,
                 python_hex);
    assert_false(envelope_sig_verify(&k, epoch, buf, (size_t)n));
    free(p);
    envelope_key_clear(&k);
}

static void short_payloads_are_refused(void **state)
{
    struct envelope_key k;
    key_of(&k, 0);
    size_t len;
    char *p = signed_payload(&k, &len);
    assert_false(envelope_sig_verify(&k, epoch, "", 0));
    assert_false(envelope_sig_verify(&k, epoch, NULL, 0));
    assert_false(envelope_sig_present("", 0));
    assert_false(envelope_sig_present(NULL, 0));
    /* every tail of a valid payload up to the suffix's own length (the suffix alone included) */
    for (size_t n = 0; n <= ENVELOPE_SIG_SUFFIX_LEN; n++) {
        assert_false(envelope_sig_present(p + len - n, n));
        assert_false(envelope_sig_verify(&k, epoch, p + len - n, n));
        /* copied into a buffer of exactly n bytes, so ASan sees any read past it */
        char *exact = malloc(n ? n : 1);
        memcpy(exact, p + len - n, n);
        assert_false(envelope_sig_verify(&k, epoch, exact, n));
        assert_int_equal(envelope_sig_strip(exact, n, exact), 0);
        free(exact);
    }
    free(p);
    envelope_key_clear(&k);
}

static void sign_refuses_what_is_not_an_object(void **state)
{
    struct envelope_key k;
    key_of(&k, 0);
    char out[512];
    assert_int_equal(envelope_sig_sign(&k, epoch, "", 0, out), 0);
    assert_int_equal(envelope_sig_sign(&k, epoch, "}", 1, out), 0);
    assert_int_equal(envelope_sig_sign(&k, epoch, "{\"a\":1} ", 8, out), 0);
    assert_int_equal(envelope_sig_sign(&k, epoch, "[1]", 3, out), 0);
    assert_int_equal(envelope_sig_sign(&k, NULL, "{}", 2, out), 0);
    /* the smallest: {} signs to {,"sig":"..."} (not JSON: the caller signs real envelopes) */
    assert_int_equal(envelope_sig_sign(&k, epoch, "{}", 2, out), 75);
    assert_true(envelope_sig_verify(&k, epoch, out, 75));
    envelope_key_clear(&k);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(rfc4231_vectors),
        cmocka_unit_test(sign_matches_python),
        cmocka_unit_test(sign_then_verify_and_strip),
        cmocka_unit_test(any_flipped_byte_is_refused),
        cmocka_unit_test(another_key_is_refused),
        cmocka_unit_test(uppercase_hex_is_refused),
        cmocka_unit_test(truncated_or_misplaced_sig_is_refused),
        cmocka_unit_test(short_payloads_are_refused),
        cmocka_unit_test(sign_refuses_what_is_not_an_object),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
