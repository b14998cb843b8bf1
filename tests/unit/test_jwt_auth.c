#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>
#include <jwt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "jwt_auth.h"
#include "jwt_fixtures.h"
#include "jwt_keys.h"

#define NOW 1764000000LL

static const unsigned char secret[] = "test-secret-0123456789abcdef";
#define SECRET_LEN (sizeof secret - 1)

/* A token signed by libjwt with alg, extra header members (JSON object or NULL) and the
 * given payload members. The caller frees it. */
static char *sign_with(jwt_alg_t alg, const unsigned char *key, size_t keylen, const char *headers,
                       const char *payload)
{
    jwt_t *jwt = NULL;
    assert_int_equal(jwt_new(&jwt), 0);
    assert_int_equal(jwt_add_grants_json(jwt, payload), 0);
    if (headers)
        assert_int_equal(jwt_add_headers_json(jwt, headers), 0);
    assert_int_equal(jwt_set_alg(jwt, alg, key, (int)keylen), 0);
    char *token = jwt_encode_str(jwt);
    assert_non_null(token);
    jwt_free(jwt);
    return token;
}

static char *sign(const char *payload)
{
    return sign_with(JWT_ALG_HS256, secret, SECRET_LEN, NULL, payload);
}

/* Unpadded base64url of s, into out (big enough). */
static void b64url(const char *s, char *out)
{
    static const char abc[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    size_t n = strlen(s), o = 0;
    for (size_t i = 0; i < n; i += 3) {
        unsigned v = (unsigned char)s[i] << 16;
        if (i + 1 < n)
            v |= (unsigned char)s[i + 1] << 8;
        if (i + 2 < n)
            v |= (unsigned char)s[i + 2];
        out[o++] = abc[(v >> 18) & 63];
        out[o++] = abc[(v >> 12) & 63];
        if (i + 1 < n)
            out[o++] = abc[(v >> 6) & 63];
        if (i + 2 < n)
            out[o++] = abc[v & 63];
    }
    out[o] = '\0';
}

/* header.payload.sig from JSON texts and a raw signature part. */
static char *by_hand(const char *header, const char *payload, const char *sig)
{
    char *t = malloc(strlen(header) * 2 + strlen(payload) * 2 + strlen(sig) + 8);
    b64url(header, t);
    strcat(t, ".");
    b64url(payload, t + strlen(t));
    strcat(t, ".");
    strcat(t, sig);
    return t;
}

static int verify(const char *token, int leeway, struct jwt_claims *c)
{
    char err[200] = "";
    int rc = jwt_auth_verify(token, secret, SECRET_LEN, NOW, leeway, c, err, sizeof err);
    if (rc != 0) {
        assert_true(strlen(err) > 0);
        assert_null(c->channels);
        assert_null(c->publish);
    }
    return rc;
}

static int verify_payload(const char *payload)
{
    struct jwt_claims c;
    char *t = sign(payload);
    int rc = verify(t, 0, &c);
    jwt_claims_free(&c);
    free(t);
    return rc;
}

static void a_valid_token_grants_its_patterns(void **state)
{
    struct jwt_claims c;
    char *t = sign("{\"sub\":\"user-7\",\"exp\":1764000600,\"channels\":[\"bot:status:*\","
                   "\"room.?\"],\"publish\":[\"room.lobby\"]}");
    assert_int_equal(verify(t, 0, &c), 0);
    assert_string_equal(c.sub, "user-7");
    assert_int_equal(c.exp, 1764000600LL);
    assert_true(jwt_auth_can_subscribe(&c, "bot:status:42", 13));
    assert_true(jwt_auth_can_subscribe(&c, "room.a", 6));
    assert_false(jwt_auth_can_subscribe(&c, "room.ab", 7));
    assert_false(jwt_auth_can_subscribe(&c, "bot:other", 9));
    assert_true(jwt_auth_can_publish(&c, "room.lobby", 10));
    assert_false(jwt_auth_can_publish(&c, "bot:status:42", 13));
    jwt_claims_free(&c);
    jwt_claims_free(&c); /* twice is harmless */
    assert_false(jwt_auth_can_subscribe(&c, "room.a", 6));
    free(t);
}

static void missing_lists_allow_nothing(void **state)
{
    struct jwt_claims c;
    char *t = sign("{\"sub\":\"svc\",\"exp\":1764000600}");
    assert_int_equal(verify(t, 0, &c), 0);
    assert_non_null(c.channels);
    assert_non_null(c.publish);
    assert_false(jwt_auth_can_subscribe(&c, "a", 1));
    assert_false(jwt_auth_can_publish(&c, "a", 1));
    jwt_claims_free(&c);
    free(t);
    assert_false(jwt_auth_can_subscribe(NULL, "a", 1));
}

static void a_typ_header_and_real_exp_are_fine(void **state)
{
    struct jwt_claims c;
    char *t = sign_with(JWT_ALG_HS256, secret, SECRET_LEN, "{\"typ\":\"JWT\",\"kid\":\"k1\"}",
                        "{\"sub\":\"u\",\"exp\":1764000000.9}");
    assert_int_equal(verify(t, 0, &c), 0);
    assert_int_equal(c.exp, 1764000000LL);
    jwt_claims_free(&c);
    free(t);
}

static void tampering_breaks_the_signature(void **state)
{
    struct jwt_claims c;
    char *t = sign("{\"sub\":\"user\",\"exp\":1764000600,\"channels\":[\"a\"]}");
    /* payload swapped for one that grants everything, signature kept */
    char forged[1024], p[512];
    b64url("{\"sub\":\"user\",\"exp\":1764000600,\"channels\":[\"*\"]}", p);
    const char *d1 = strchr(t, '.'), *d2 = strrchr(t, '.');
    snprintf(forged, sizeof forged, "%.*s.%s%s", (int)(d1 - t), t, p, d2);
    assert_int_equal(verify(forged, 0, &c), JWT_AUTH_ESIGNATURE);
    /* one signature character changed (the first: no padding bits involved) */
    char *s = strrchr(t, '.') + 1;
    s[0] = s[0] == 'A' ? 'B' : 'A';
    assert_int_equal(verify(t, 0, &c), JWT_AUTH_ESIGNATURE);
    s[0] = '\0'; /* signature removed */
    assert_int_equal(verify(t, 0, &c), JWT_AUTH_EMALFORMED);
    free(t);
    /* signed with another secret */
    t = sign_with(JWT_ALG_HS256, (const unsigned char *)"other", 5, NULL,
                  "{\"sub\":\"u\",\"exp\":1764000600}");
    assert_int_equal(verify(t, 0, &c), JWT_AUTH_ESIGNATURE);
    free(t);
}

static void only_hs256_is_accepted(void **state)
{
    struct jwt_claims c;
    const char *payload = "{\"sub\":\"u\",\"exp\":1764000600}";
    char *t = sign_with(JWT_ALG_HS512, secret, SECRET_LEN, NULL, payload);
    assert_int_equal(verify(t, 0, &c), JWT_AUTH_EALG);
    free(t);
    t = sign_with(JWT_ALG_HS384, secret, SECRET_LEN, NULL, payload);
    assert_int_equal(verify(t, 0, &c), JWT_AUTH_EALG);
    free(t);

    /* alg none, unsigned (libjwt 1.x alone would accept this with an empty key) */
    char *good = sign(payload);
    const char *goodsig = strrchr(good, '.') + 1;
    const char *algs[] = {"{\"alg\":\"none\"}",    "{\"alg\":\"None\"}",  "{\"alg\":\"hs256\"}",
                          "{\"alg\":\"RS256\"}",   "{\"typ\":\"JWT\"}",   "{\"alg\":null}",
                          "{\"alg\":[\"HS256\"]}", "{\"alg\":\"HS256 \"}"};
    for (size_t i = 0; i < sizeof algs / sizeof algs[0]; i++) {
        t = by_hand(algs[i], payload, "");
        assert_int_not_equal(verify(t, 0, &c), 0);
        free(t);
        /* even carrying a signature that is valid for another header */
        t = by_hand(algs[i], payload, goodsig);
        assert_int_equal(verify(t, 0, &c), JWT_AUTH_EALG);
        free(t);
    }
    /* a duplicated alg is refused, whichever value a reader would keep */
    t = by_hand("{\"alg\":\"HS256\",\"alg\":\"none\"}", payload, goodsig);
    assert_int_equal(verify(t, 0, &c), JWT_AUTH_EMALFORMED);
    free(t);
    free(good);
}

static void odd_headers_are_refused(void **state)
{
    struct jwt_claims c;
    const char *payload = "{\"sub\":\"u\",\"exp\":1764000600}";
    char *t =
        sign_with(JWT_ALG_HS256, secret, SECRET_LEN, "{\"crit\":[\"b64\"],\"b64\":false}", payload);
    assert_int_equal(verify(t, 0, &c), JWT_AUTH_EALG);
    free(t);
    /* by hand: libjwt 1.10's encoder always writes typ "JWT", whatever was set */
    t = by_hand("{\"alg\":\"HS256\",\"typ\":\"JWE\"}", payload,
                "yckvd_H6fWYkpqsi7bHLLwwgmYUEAXdavbUmYPCKR3Y");
    assert_int_equal(verify(t, 0, &c), JWT_AUTH_EMALFORMED);
    free(t);
}

static void expiry_is_checked_with_leeway(void **state)
{
    struct jwt_claims c;
    char *t = sign("{\"sub\":\"u\",\"exp\":1763999990}"); /* 10 s ago */
    assert_int_equal(verify(t, 0, &c), JWT_AUTH_EEXPIRED);
    assert_int_equal(verify(t, 5, &c), JWT_AUTH_EEXPIRED);
    assert_int_equal(verify(t, 10, &c), 0);
    jwt_claims_free(&c);
    free(t);
    t = sign("{\"sub\":\"u\",\"exp\":1764000000}"); /* now: still valid */
    assert_int_equal(verify(t, 0, &c), 0);
    jwt_claims_free(&c);
    free(t);
    t = sign("{\"sub\":\"u\",\"exp\":1763990000}"); /* long ago: leeway is clamped */
    assert_int_equal(verify(t, 1000000, &c), JWT_AUTH_EEXPIRED);
    assert_int_equal(verify(t, -5, &c), JWT_AUTH_EEXPIRED);
    free(t);
    t = sign("{\"sub\":\"u\",\"exp\":-9223372036854775807}");
    assert_int_equal(verify(t, 60, &c), JWT_AUTH_EEXPIRED);
    free(t);
    t = sign("{\"sub\":\"u\",\"exp\":9223372036854775807}");
    assert_int_equal(verify(t, 60, &c), 0);
    jwt_claims_free(&c);
    free(t);
}

static void nbf_in_the_future_is_refused(void **state)
{
    assert_int_equal(verify_payload("{\"sub\":\"u\",\"exp\":1764000600,\"nbf\":1764000100}"),
                     JWT_AUTH_ENOTYET);
    assert_int_equal(verify_payload("{\"sub\":\"u\",\"exp\":1764000600,\"nbf\":1763999999}"), 0);
    assert_int_equal(verify_payload("{\"sub\":\"u\",\"exp\":1764000600,\"nbf\":\"soon\"}"),
                     JWT_AUTH_ECLAIMS);
}

static void required_claims_must_be_there_and_typed(void **state)
{
    const char *bad[] = {
        "{\"sub\":\"u\"}",
        "{\"sub\":\"u\",\"exp\":\"1764000600\"}",
        "{\"sub\":\"u\",\"exp\":null}",
        "{\"sub\":\"u\",\"exp\":true}",
        "{\"sub\":\"u\",\"exp\":1e300}",
        "{\"exp\":1764000600}",
        "{\"sub\":7,\"exp\":1764000600}",
        "{\"sub\":\"\",\"exp\":1764000600}",
        "{\"sub\":\"u\",\"exp\":1764000600,\"channels\":\"bot:*\"}",
        "{\"sub\":\"u\",\"exp\":1764000600,\"channels\":null}",
        "{\"sub\":\"u\",\"exp\":1764000600,\"channels\":{\"a\":1}}",
        "{\"sub\":\"u\",\"exp\":1764000600,\"channels\":[\"a\",1]}",
        "{\"sub\":\"u\",\"exp\":1764000600,\"publish\":\"*\"}",
        "{\"sub\":\"u\",\"exp\":1764000600,\"publish\":[null]}",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        assert_int_equal(verify_payload(bad[i]), JWT_AUTH_ECLAIMS);

    char payload[400], sub[200];
    memset(sub, 's', 128);
    sub[128] = '\0';
    snprintf(payload, sizeof payload, "{\"sub\":\"%s\",\"exp\":1764000600}", sub);
    assert_int_equal(verify_payload(payload), JWT_AUTH_ECLAIMS);
    sub[127] = '\0';
    snprintf(payload, sizeof payload, "{\"sub\":\"%s\",\"exp\":1764000600}", sub);
    assert_int_equal(verify_payload(payload), 0);
}

static void malformed_tokens_are_refused(void **state)
{
    struct jwt_claims c;
    char *good = sign("{\"sub\":\"u\",\"exp\":1764000600}");
    const char *goodsig = strrchr(good, '.') + 1;
    char buf[512];
    const char *bad[] = {"",
                         "abc",
                         "a.b",
                         "a.b.c.d",
                         "..",
                         "a..c",
                         ".b.c",
                         "eyJ=.eyJ.abc",
                         "e!J.eyJ.abc",
                         "eyJhbGciOiJIUzI1NiJ9.eyJ+.abc",
                         "eyJhbGci OiJ9.e.a"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        assert_int_equal(verify(bad[i], 0, &c), JWT_AUTH_EMALFORMED);
    assert_int_equal(jwt_auth_verify(NULL, secret, SECRET_LEN, NOW, 0, &c, buf, sizeof buf),
                     JWT_AUTH_EMALFORMED);

    /* well-formed parts around JSON that is not an object, or not JSON */
    const char *payloads[] = {"[1]", "\"x\"", "{\"sub\":\"u\"", "{\"sub\":\"u\",\"sub\":\"v\"}",
                              "{} x"};
    for (size_t i = 0; i < sizeof payloads / sizeof payloads[0]; i++) {
        char *t = by_hand("{\"alg\":\"HS256\",\"typ\":\"JWT\"}", payloads[i], goodsig);
        assert_int_equal(verify(t, 0, &c), JWT_AUTH_EMALFORMED);
        free(t);
    }
    /* NUL bytes inside JSON strings are refused by the parser itself */
    char *t = by_hand("{\"alg\":\"HS256\\u0000\"}", "{}", goodsig);
    assert_int_equal(verify(t, 0, &c), JWT_AUTH_EMALFORMED);
    free(t);
    t = by_hand("{\"alg\":\"HS256\"}", "{\"sub\":\"a\\u0000b\",\"exp\":1764000600}", goodsig);
    assert_int_equal(verify(t, 0, &c), JWT_AUTH_EMALFORMED);
    free(t);
    t = by_hand("[\"HS256\"]", "{}", goodsig);
    assert_int_equal(verify(t, 0, &c), JWT_AUTH_EMALFORMED);
    free(t);

    /* padding, a non-canonical last character, a short signature */
    snprintf(buf, sizeof buf, "%s=", good);
    assert_int_equal(verify(buf, 0, &c), JWT_AUTH_EMALFORMED);
    snprintf(buf, sizeof buf, "%s", good);
    char *last = buf + strlen(buf) - 1; /* 43 chars: the last one carries 2 unused bits */
    *last = *last == 'B' ? 'C' : 'B';
    if ((*last - 'A') & 3)
        assert_int_equal(verify(buf, 0, &c), JWT_AUTH_EMALFORMED);
    buf[strlen(buf) - 4] = '\0';
    assert_int_equal(verify(buf, 0, &c), JWT_AUTH_EMALFORMED);
    free(good);
}

static void huge_tokens_are_refused_early(void **state)
{
    struct jwt_claims c;
    char *t = malloc(JWT_AUTH_TOKEN_MAX + 100);
    memset(t, 'a', JWT_AUTH_TOKEN_MAX + 99);
    t[10] = '.';
    t[20] = '.';
    t[JWT_AUTH_TOKEN_MAX + 99] = '\0';
    assert_int_equal(verify(t, 0, &c), JWT_AUTH_ETOOLONG);
    t[JWT_AUTH_TOKEN_MAX + 1] = '\0';
    assert_int_equal(verify(t, 0, &c), JWT_AUTH_ETOOLONG);
    t[JWT_AUTH_TOKEN_MAX] = '\0'; /* at the cap: judged on its content */
    assert_int_equal(verify(t, 0, &c), JWT_AUTH_EMALFORMED);
    free(t);

    /* a real, validly signed token just over the cap */
    char *pad = malloc(JWT_AUTH_TOKEN_MAX);
    memset(pad, 'x', JWT_AUTH_TOKEN_MAX - 1);
    pad[JWT_AUTH_TOKEN_MAX - 1] = '\0';
    char *payload = malloc(JWT_AUTH_TOKEN_MAX + 100);
    snprintf(payload, JWT_AUTH_TOKEN_MAX + 100, "{\"sub\":\"u\",\"exp\":1764000600,\"pad\":\"%s\"}",
             pad);
    t = sign(payload);
    assert_int_equal(verify(t, 0, &c), JWT_AUTH_ETOOLONG);
    free(t);
    free(payload);
    free(pad);
}

static void the_secret_must_be_usable(void **state)
{
    struct jwt_claims c;
    char err[100];
    char *t = sign("{\"sub\":\"u\",\"exp\":1764000600}");
    assert_int_equal(jwt_auth_verify(t, secret, 0, NOW, 0, &c, err, sizeof err), JWT_AUTH_EKEY);
    assert_int_equal(jwt_auth_verify(t, NULL, 5, NOW, 0, &c, err, sizeof err), JWT_AUTH_EKEY);
    free(t);
}

static void error_codes_have_names(void **state)
{
    for (int code = JWT_AUTH_EAUDIENCE; code <= 0; code++)
        assert_string_not_equal(jwt_auth_strerror(code), "unknown error");
    assert_string_equal(jwt_auth_strerror(-100), "unknown error");
}

/* ---- RS256 and ES256 (tokens made by fixtures/make_jwt_fixtures.py with openssl) ---- */

static struct jwt_keys pem_keys, jwks_keys;

static int load_keys(void **state)
{
    (void)state;
    char err[200];
    assert_int_equal(jwt_keys_add_pem(&pem_keys, RSA_PUB, strlen(RSA_PUB), err, sizeof err), 0);
    assert_int_equal(jwt_keys_add_pem(&pem_keys, EC_PUB, strlen(EC_PUB), err, sizeof err), 0);
    assert_int_equal(jwt_keys_add_jwks(&jwks_keys, JWKS, strlen(JWKS), err, sizeof err), 0);
    return 0;
}

static int free_keys(void **state)
{
    (void)state;
    jwt_keys_clear(&pem_keys);
    jwt_keys_clear(&jwks_keys);
    return 0;
}

static int check_with(const struct jwt_keys *keys, const char *iss, const char *aud,
                      const char *token)
{
    struct jwt_verifier v = {.keys = keys, .issuer = iss, .audience = aud};
    struct jwt_claims c;
    char err[200] = "";
    int rc = jwt_auth_check(&v, token, NOW, &c, err, sizeof err);
    if (rc == 0)
        assert_string_equal(c.sub, "alice");
    else
        assert_true(strlen(err) > 0);
    jwt_claims_free(&c);
    return rc;
}

static void a_key_set_holds_only_signing_keys_it_can_use(void **state)
{
    (void)state;
    /* the JWKS has an RSA and two EC signing keys, an encryption key and a symmetric one */
    assert_int_equal(jwks_keys.n, 3);
    assert_int_equal(pem_keys.n, 2);
    assert_string_equal(jwks_keys.keys[0].kid, "rsa-1");
    assert_int_equal(jwks_keys.keys[1].alg, JWT_KEY_ES256);
    assert_string_equal(pem_keys.keys[0].kid, "");
    struct jwt_keys ks = {0};
    char err[200];
    static const char *bad[] = {
        "[]",
        "{\"keys\":{}}",
        "{\"keys\":[{\"kty\":\"RSA\",\"n\":\"AQAB\",\"e\":\"AQAB\"}]}", /* 16 bits */
        "{\"keys\":[{\"kty\":\"RSA\",\"n\":\"!!\",\"e\":\"AQAB\"}]}",
        "{\"keys\":[{\"kty\":\"EC\",\"crv\":\"P-256\",\"x\":\"AAAA\",\"y\":\"AAAA\"}]}",
        "{\"keys\":[{\"kty\":\"EC\",\"crv\":\"P-256\",\"x\":"
        "\"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA\",\"y\":"
        "\"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA\"}]}", /* not on the curve */
        "{\"keys\":[{\"kty\":\"EC\",\"kid\":7}]}",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        assert_int_equal(jwt_keys_add_jwks(&ks, bad[i], strlen(bad[i]), err, sizeof err), -1);
        assert_int_equal(ks.n, 0);
    }
    /* an RSA key under 2048 bits, and text without a key */
    assert_int_equal(jwt_keys_add_pem(&ks, RSA1024_PUB, strlen(RSA1024_PUB), err, sizeof err), -1);
    assert_int_equal(jwt_keys_add_pem(&ks, "hello", 5, err, sizeof err), -1);
    assert_int_equal(ks.n, 0);
    /* keys of other curves or uses are skipped, not refused */
    const char *other = "{\"keys\":[{\"kty\":\"EC\",\"crv\":\"P-384\",\"x\":\"AA\",\"y\":\"AA\","
                        "\"alg\":\"ES384\"},{\"kty\":\"OKP\"}]}";
    assert_int_equal(jwt_keys_add_jwks(&ks, other, strlen(other), err, sizeof err), 0);
    assert_int_equal(ks.n, 0);
}

static void rs256_and_es256_verify_with_their_keys(void **state)
{
    (void)state;
    assert_int_equal(check_with(&pem_keys, NULL, NULL, TOK_RS256), 0);
    assert_int_equal(check_with(&pem_keys, NULL, NULL, TOK_ES256_NOKID), 0);
    assert_int_equal(check_with(&jwks_keys, NULL, NULL, TOK_RS256_KID), 0);
    assert_int_equal(check_with(&jwks_keys, NULL, NULL, TOK_ES256_KID), 0);
    assert_int_equal(check_with(&jwks_keys, NULL, NULL, TOK_RS256), 0); /* the only RSA key */
}

static void the_key_must_be_the_right_one(void **state)
{
    (void)state;
    /* ec-2 is another key: the signature fails; an unknown kid, or no kid among two EC keys:
     * no key (a set may be stale) */
    assert_int_equal(check_with(&jwks_keys, NULL, NULL, TOK_ES256_WRONG_KID), JWT_AUTH_ESIGNATURE);
    assert_int_equal(check_with(&jwks_keys, NULL, NULL, TOK_ES256_UNKNOWN_KID), JWT_AUTH_EKID);
    assert_int_equal(check_with(&jwks_keys, NULL, NULL, TOK_ES256_NOKID), JWT_AUTH_EKID);
    /* an ES256 signature under a header that says RS256 and names the RSA key */
    assert_int_equal(check_with(&jwks_keys, NULL, NULL, TOK_ES256_AS_RS256), JWT_AUTH_ESIGNATURE);
    /* another payload under the same header and signature */
    const char *d1 = strchr(TOK_RS256, '.'), *d2 = strrchr(TOK_RS256, '.');
    char payload[200], t[2048];
    b64url("{\"sub\":\"alice\",\"exp\":4102444800,\"channels\":[\"*\"]}", payload);
    snprintf(t, sizeof t, "%.*s.%s%s", (int)(d1 - TOK_RS256), TOK_RS256, payload, d2);
    assert_int_equal(check_with(&pem_keys, NULL, NULL, t), JWT_AUTH_ESIGNATURE);
}

static void algorithms_follow_the_configured_keys(void **state)
{
    (void)state;
    struct jwt_claims c;
    char err[200];
    /* only a secret: RS256 is refused before any key is looked at */
    assert_int_equal(jwt_auth_verify(TOK_RS256, secret, SECRET_LEN, NOW, 0, &c, err, sizeof err),
                     JWT_AUTH_EALG);
    /* only keys: an HS256 token (even one whose HMAC key is the public key's PEM text, the
     * classic confusion) is refused */
    char *hs = sign_with(JWT_ALG_HS256, (const unsigned char *)RSA_PUB, strlen(RSA_PUB), NULL,
                         "{\"sub\":\"alice\",\"exp\":4102444800}");
    assert_int_equal(check_with(&pem_keys, NULL, NULL, hs), JWT_AUTH_EALG);
    /* both: HS256 is checked with the secret only */
    struct jwt_verifier v = {.secret = secret, .secret_len = SECRET_LEN, .keys = &pem_keys};
    assert_int_equal(jwt_auth_check(&v, hs, NOW, &c, err, sizeof err), JWT_AUTH_ESIGNATURE);
    assert_int_equal(jwt_auth_check(&v, TOK_RS256, NOW, &c, err, sizeof err), 0);
    jwt_claims_free(&c);
    free(hs);
    /* nothing at all */
    struct jwt_verifier none = {0};
    assert_int_equal(jwt_auth_check(&none, TOK_RS256, NOW, &c, err, sizeof err), JWT_AUTH_EKEY);
}

static void issuer_and_audience(void **state)
{
    (void)state;
    const char *iss = "https://idp.example";
    assert_int_equal(check_with(&pem_keys, iss, "herald", TOK_RS256), 0); /* aud array */
    assert_int_equal(check_with(&pem_keys, iss, "herald", TOK_RS256_AUD_STRING), 0);
    assert_int_equal(check_with(&pem_keys, iss, "herald", TOK_RS256_WRONG_AUD), JWT_AUTH_EAUDIENCE);
    assert_int_equal(check_with(&pem_keys, iss, "herald", TOK_RS256_NO_ISS), JWT_AUTH_EAUDIENCE);
    assert_int_equal(check_with(&pem_keys, "https://other", NULL, TOK_RS256), JWT_AUTH_EAUDIENCE);
    assert_int_equal(check_with(&pem_keys, "", "", TOK_RS256_WRONG_AUD), 0); /* not asked for */
}

static void secret_equal_compares_whole_values(void **state)
{
    assert_true(secret_equal("k3y-value", 9, "k3y-value", 9));
    assert_false(secret_equal("k3y-value", 9, "k3y-valuf", 9));
    assert_false(secret_equal("k3y-value", 9, "x3y-value", 9));
    assert_false(secret_equal("k3y-value", 9, "k3y-valu", 8));
    assert_false(secret_equal("k3y-value", 9, "k3y-valuek3y-value", 18)); /* a repeated */
    assert_false(secret_equal("k3y-value", 9, "k3y-value\0", 10));
    assert_false(secret_equal("k3y-value", 9, "", 0));
    assert_false(secret_equal("", 0, "", 0));
    assert_false(secret_equal(NULL, 0, "x", 1));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(a_valid_token_grants_its_patterns),
        cmocka_unit_test(missing_lists_allow_nothing),
        cmocka_unit_test(a_typ_header_and_real_exp_are_fine),
        cmocka_unit_test(tampering_breaks_the_signature),
        cmocka_unit_test(only_hs256_is_accepted),
        cmocka_unit_test(odd_headers_are_refused),
        cmocka_unit_test(expiry_is_checked_with_leeway),
        cmocka_unit_test(nbf_in_the_future_is_refused),
        cmocka_unit_test(required_claims_must_be_there_and_typed),
        cmocka_unit_test(malformed_tokens_are_refused),
        cmocka_unit_test_setup_teardown(a_key_set_holds_only_signing_keys_it_can_use, load_keys,
                                        free_keys),
        cmocka_unit_test_setup_teardown(rs256_and_es256_verify_with_their_keys, load_keys,
                                        free_keys),
        cmocka_unit_test_setup_teardown(the_key_must_be_the_right_one, load_keys, free_keys),
        cmocka_unit_test_setup_teardown(algorithms_follow_the_configured_keys, load_keys,
                                        free_keys),
        cmocka_unit_test_setup_teardown(issuer_and_audience, load_keys, free_keys),
        cmocka_unit_test(huge_tokens_are_refused_early),
        cmocka_unit_test(the_secret_must_be_usable),
        cmocka_unit_test(error_codes_have_names),
        cmocka_unit_test(secret_equal_compares_whole_values),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
