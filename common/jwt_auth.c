#include "jwt_auth.h"

#include "b64url.h"
#include "glob.h"
#include "json_text.h"
#include "jwt_keys.h"

#include <errno.h>
#include <jwt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Decoded header or payload: at most 3/4 of the token text. */
#define DECODED_MAX (JWT_AUTH_TOKEN_MAX / 4 * 3 + 3)
#define HS256_LEN   32

/* Decodes one base64url part and parses it as a JSON object (duplicate keys refused, so
 * no reader can see a different value than we do). Returns NULL when it is not one. */
static json_t *decode_object(const char *s, size_t n)
{
    unsigned char buf[DECODED_MAX];
    if (n == 0 || n > JWT_AUTH_TOKEN_MAX)
        return NULL;
    long len = b64url_decode(s, n, buf);
    if (len < 0)
        return NULL;
    json_t *obj = json_text_load((const char *)buf, (size_t)len, JSON_REJECT_DUPLICATES, NULL);
    if (obj && !json_is_object(obj)) {
        json_decref(obj);
        return NULL;
    }
    return obj;
}

/* A JSON string equal to want, with no NUL byte hidden inside it. */
static bool string_is(const json_t *v, const char *want)
{
    return json_is_string(v) && json_string_length(v) == strlen(want) &&
           strcmp(json_string_value(v), want) == 0;
}

/* What a token's header names: its algorithm and, for a key set, its key. */
struct token_alg {
    enum { ALG_HS256, ALG_RS256, ALG_ES256 } alg;
    char kid[JWT_KEY_KID_MAX + 1]; /* "" when the header has none */
};

/* We check alg ourselves: libjwt 1.x takes the algorithm from the token, and with an empty
 * key it accepts alg "none" unsigned. Only what the verifier has a key for is allowed: HS256
 * with a secret, RS256 and ES256 with public keys. typ is optional; crit names extensions we
 * do not implement, so RFC 7515 says to refuse the token. */
static int check_header(const struct jwt_verifier *v, const json_t *hdr, struct token_alg *out,
                        char *err, size_t errlen)
{
    const json_t *typ = json_object_get(hdr, "typ"), *alg = json_object_get(hdr, "alg"),
                 *kid = json_object_get(hdr, "kid");
    bool keys = v->keys && v->keys->n > 0;
    if (v->secret_len && string_is(alg, "HS256"))
        out->alg = ALG_HS256;
    else if (keys && string_is(alg, "RS256"))
        out->alg = ALG_RS256;
    else if (keys && string_is(alg, "ES256"))
        out->alg = ALG_ES256;
    else {
        snprintf(err, errlen, "token alg must be %s",
                 v->secret_len && keys ? "HS256, RS256 or ES256"
                 : keys                ? "RS256 or ES256"
                                       : "HS256");
        return JWT_AUTH_EALG;
    }
    if (json_object_get(hdr, "crit")) {
        snprintf(err, errlen, "token header has crit extensions");
        return JWT_AUTH_EALG;
    }
    if (typ && !string_is(typ, "JWT")) {
        snprintf(err, errlen, "token typ must be JWT");
        return JWT_AUTH_EMALFORMED;
    }
    out->kid[0] = '\0';
    if (kid) {
        if (!json_is_string(kid) || json_string_length(kid) > JWT_KEY_KID_MAX ||
            strlen(json_string_value(kid)) != json_string_length(kid)) {
            snprintf(err, errlen, "token kid must be a string of at most %d bytes",
                     JWT_KEY_KID_MAX);
            return JWT_AUTH_EMALFORMED;
        }
        memcpy(out->kid, json_string_value(kid), json_string_length(kid) + 1);
    }
    return 0;
}

/* A NumericDate (RFC 7519): an integer, or a real we round down; must fit in int64_t. */
static bool numeric_date(const json_t *v, int64_t *out)
{
    if (json_is_integer(v)) {
        *out = (int64_t)json_integer_value(v);
        return true;
    }
    if (json_is_real(v)) {
        double d = json_real_value(v);
        if (!(d >= -9.2e18 && d <= 9.2e18))
            return false;
        *out = (int64_t)d;
        if ((double)*out > d)
            (*out)--;
        return true;
    }
    return false;
}

/* A claim that must be absent (an empty array stands in) or an array of strings without
 * NUL bytes. Returns a new reference, or NULL with err filled. */
static json_t *pattern_list(const json_t *payload, const char *name, char *err, size_t errlen)
{
    json_t *v = json_object_get(payload, name);
    if (!v)
        return json_array();
    if (!json_is_array(v)) {
        snprintf(err, errlen, "token %s claim is not an array", name);
        return NULL;
    }
    for (size_t i = 0; i < json_array_size(v); i++) {
        json_t *p = json_array_get(v, i);
        if (!json_is_string(p) || strlen(json_string_value(p)) != json_string_length(p)) {
            snprintf(err, errlen, "token %s claim holds a non-string", name);
            return NULL;
        }
    }
    return json_incref(v);
}

/* Is `when` later than now by more than leeway? Written so no value can overflow. */
static bool after(int64_t when, int64_t now, int leeway)
{
    return when > now && (uint64_t)when - (uint64_t)now > (uint64_t)leeway;
}

/* The aud claim names want: a string equal to it, or an array holding it. */
static bool audience_has(const json_t *aud, const char *want)
{
    if (string_is(aud, want))
        return true;
    for (size_t i = 0; json_is_array(aud) && i < json_array_size(aud); i++)
        if (string_is(json_array_get(aud, i), want))
            return true;
    return false;
}

/* iss and aud, when the verifier names them. */
static int check_audience(const struct jwt_verifier *v, const json_t *payload, char *err,
                          size_t errlen)
{
    if (v->issuer && v->issuer[0] && !string_is(json_object_get(payload, "iss"), v->issuer)) {
        snprintf(err, errlen, "token iss is not the expected issuer");
        return JWT_AUTH_EAUDIENCE;
    }
    if (v->audience && v->audience[0] &&
        !audience_has(json_object_get(payload, "aud"), v->audience)) {
        snprintf(err, errlen, "token aud does not name this service");
        return JWT_AUTH_EAUDIENCE;
    }
    return 0;
}

/* exp, nbf and sub, then the two pattern lists, into out. */
static int check_claims(const json_t *payload, int64_t now, int leeway, struct jwt_claims *out,
                        char *err, size_t errlen)
{
    const json_t *exp = json_object_get(payload, "exp");
    const json_t *nbf = json_object_get(payload, "nbf");
    const json_t *sub = json_object_get(payload, "sub");
    int64_t nbf_s = 0;

    if (!exp || !numeric_date(exp, &out->exp)) {
        snprintf(err, errlen, "token exp claim is missing or not a number");
        return JWT_AUTH_ECLAIMS;
    }
    if (nbf && !numeric_date(nbf, &nbf_s)) {
        snprintf(err, errlen, "token nbf claim is not a number");
        return JWT_AUTH_ECLAIMS;
    }
    if (!json_is_string(sub) || json_string_length(sub) == 0 ||
        json_string_length(sub) > JWT_AUTH_SUB_MAX ||
        strlen(json_string_value(sub)) != json_string_length(sub)) {
        snprintf(err, errlen, "token sub claim must be a string of 1 to %d bytes",
                 JWT_AUTH_SUB_MAX);
        return JWT_AUTH_ECLAIMS;
    }
    if (after(now, out->exp, leeway)) {
        snprintf(err, errlen, "token expired");
        return JWT_AUTH_EEXPIRED;
    }
    if (nbf && after(nbf_s, now, leeway)) {
        snprintf(err, errlen, "token not valid yet (nbf)");
        return JWT_AUTH_ENOTYET;
    }
    memcpy(out->sub, json_string_value(sub), json_string_length(sub) + 1);
    out->channels = pattern_list(payload, "channels", err, errlen);
    if (!out->channels)
        return JWT_AUTH_ECLAIMS;
    out->publish = pattern_list(payload, "publish", err, errlen);
    if (!out->publish)
        return JWT_AUTH_ECLAIMS;
    json_t *info = json_object_get(payload, "info");
    if (info && !(out->info = json_dumps(info, JSON_ENCODE_ANY | JSON_COMPACT))) {
        snprintf(err, errlen, "out of memory");
        return JWT_AUTH_ENOMEM;
    }
    return 0;
}

/* Lets libjwt check the HMAC over the token text, then makes sure it used HS256. */
static int check_hmac(const char *token, const unsigned char *secret, size_t secret_len, char *err,
                      size_t errlen)
{
    jwt_t *jwt = NULL;
    int rc = jwt_decode(&jwt, token, secret, (int)secret_len);
    if (rc == ENOMEM) {
        snprintf(err, errlen, "out of memory");
        return JWT_AUTH_ENOMEM;
    }
    if (rc != 0 || !jwt || jwt_get_alg(jwt) != JWT_ALG_HS256) {
        jwt_free(jwt);
        snprintf(err, errlen, "token signature does not verify");
        return JWT_AUTH_ESIGNATURE;
    }
    jwt_free(jwt);
    return 0;
}

/* Splits token into its three parts; each must be non-empty. */
static int split(const char *token, size_t n, size_t *hlen, size_t *plen)
{
    const char *d1 = memchr(token, '.', n);
    if (!d1)
        return -1;
    const char *d2 = memchr(d1 + 1, '.', n - (size_t)(d1 + 1 - token));
    if (!d2 || memchr(d2 + 1, '.', n - (size_t)(d2 + 1 - token)))
        return -1;
    *hlen = (size_t)(d1 - token);
    *plen = (size_t)(d2 - d1 - 1);
    if (*hlen == 0 || *plen == 0 || d2 + 1 == token + n)
        return -1;
    return 0;
}

/* RS256 or ES256 with the key the header's kid (or, without one, the only key of the type)
 * names. */
static int check_public_key(const struct jwt_verifier *v, const struct token_alg *ta,
                            const char *token, size_t signed_len, const char *sig, size_t slen,
                            char *err, size_t errlen)
{
    enum jwt_key_alg alg = ta->alg == ALG_RS256 ? JWT_KEY_RS256 : JWT_KEY_ES256;
    const struct jwt_key *k = jwt_keys_find(v->keys, ta->kid[0] ? ta->kid : NULL, alg);
    if (!k) {
        snprintf(err, errlen,
                 ta->kid[0] ? "token kid names no known key"
                            : "token has no kid and there are several keys");
        return JWT_AUTH_EKID;
    }
    unsigned char raw[DECODED_MAX];
    long n = slen <= JWT_AUTH_TOKEN_MAX ? b64url_decode(sig, slen, raw) : -1;
    if (n < 0 || !jwt_key_verify(k, token, signed_len, raw, (size_t)n)) {
        snprintf(err, errlen, "token signature does not verify");
        return JWT_AUTH_ESIGNATURE;
    }
    return 0;
}

/* Shape, header, payload, then signature, then claims: a forged token never gets its claims
 * looked at, and nothing but the verifier's algorithms over its keys gets through. */
int jwt_auth_check(const struct jwt_verifier *v, const char *token, int64_t now_s,
                   struct jwt_claims *out, char *err, size_t errlen)
{
    memset(out, 0, sizeof *out);
    bool keys = v->keys && v->keys->n > 0;
    if ((!keys && (!v->secret || v->secret_len == 0)) || v->secret_len > JWT_AUTH_SECRET_MAX) {
        snprintf(err, errlen,
                 "no key: the JWT secret is empty or longer than %d bytes, and there "
                 "is no public key",
                 JWT_AUTH_SECRET_MAX);
        return JWT_AUTH_EKEY;
    }
    size_t n = token ? strnlen(token, JWT_AUTH_TOKEN_MAX + 1) : 0;
    if (n > JWT_AUTH_TOKEN_MAX) {
        snprintf(err, errlen, "token is longer than %d bytes", JWT_AUTH_TOKEN_MAX);
        return JWT_AUTH_ETOOLONG;
    }
    size_t hlen, plen;
    if (n == 0 || split(token, n, &hlen, &plen) != 0) {
        snprintf(err, errlen, "token is not three dot-separated parts");
        return JWT_AUTH_EMALFORMED;
    }
    json_t *hdr = decode_object(token, hlen);
    if (!hdr) {
        snprintf(err, errlen, "token header is not a base64url JSON object");
        return JWT_AUTH_EMALFORMED;
    }
    struct token_alg ta;
    int rc = check_header(v, hdr, &ta, err, errlen);
    json_decref(hdr);
    if (rc)
        return rc;
    const char *sig = token + hlen + plen + 2;
    size_t slen = n - hlen - plen - 2;
    if (ta.alg == ALG_HS256 && b64url_decode(sig, slen, NULL) != HS256_LEN) {
        snprintf(err, errlen, "token signature is not 32 bytes of base64url");
        return JWT_AUTH_EMALFORMED;
    }
    json_t *payload = decode_object(token + hlen + 1, plen);
    if (!payload) {
        snprintf(err, errlen, "token payload is not a base64url JSON object");
        return JWT_AUTH_EMALFORMED;
    }
    rc = ta.alg == ALG_HS256
             ? check_hmac(token, v->secret, v->secret_len, err, errlen)
             : check_public_key(v, &ta, token, hlen + plen + 1, sig, slen, err, errlen);
    int leeway = v->leeway_s < 0 ? 0 : v->leeway_s;
    if (leeway > JWT_AUTH_LEEWAY_MAX)
        leeway = JWT_AUTH_LEEWAY_MAX;
    if (rc == 0)
        rc = check_audience(v, payload, err, errlen);
    if (rc == 0)
        rc = check_claims(payload, now_s, leeway, out, err, errlen);
    json_decref(payload);
    if (rc)
        jwt_claims_free(out);
    return rc;
}

int jwt_auth_verify(const char *token, const unsigned char *secret, size_t secret_len,
                    int64_t now_s, int leeway_s, struct jwt_claims *out, char *err, size_t errlen)
{
    if (!secret || secret_len == 0 || secret_len > JWT_AUTH_SECRET_MAX) {
        memset(out, 0, sizeof *out);
        snprintf(err, errlen, "JWT secret is empty or longer than %d bytes", JWT_AUTH_SECRET_MAX);
        return JWT_AUTH_EKEY;
    }
    struct jwt_verifier v = {.secret = secret, .secret_len = secret_len, .leeway_s = leeway_s};
    return jwt_auth_check(&v, token, now_s, out, err, errlen);
}

/* Drops our references; the struct can be freed again. */
void jwt_claims_free(struct jwt_claims *c)
{
    json_decref(c->channels);
    json_decref(c->publish);
    free(c->info);
    c->channels = NULL;
    c->publish = NULL;
    c->info = NULL;
}

/* Short, stable, safe to send to a client. */
const char *jwt_auth_strerror(int code)
{
    switch (code) {
    case 0:
        return "ok";
    case JWT_AUTH_EMALFORMED:
        return "malformed token";
    case JWT_AUTH_ETOOLONG:
        return "token too long";
    case JWT_AUTH_EALG:
        return "token algorithm not allowed";
    case JWT_AUTH_ESIGNATURE:
        return "bad token signature";
    case JWT_AUTH_EEXPIRED:
        return "token expired";
    case JWT_AUTH_ENOTYET:
        return "token not valid yet";
    case JWT_AUTH_ECLAIMS:
        return "token claims invalid";
    case JWT_AUTH_EKEY:
        return "bad JWT secret";
    case JWT_AUTH_ENOMEM:
        return "out of memory";
    case JWT_AUTH_EKID:
        return "token key unknown";
    case JWT_AUTH_EAUDIENCE:
        return "token issuer or audience not accepted";
    default:
        return "unknown error";
    }
}

/* Subscribing and reading history both need the channels claim. */
bool jwt_auth_can_subscribe(const struct jwt_claims *c, const char *channel, size_t len)
{
    return c && glob_match_any(c->channels, channel, len);
}

/* Publishing over WebSocket or REST needs the publish claim. */
bool jwt_auth_can_publish(const struct jwt_claims *c, const char *channel, size_t len)
{
    return c && glob_match_any(c->publish, channel, len);
}

/* Every byte of b is compared (against a, cycled) and the differences ORed together, so the
 * time depends on blen only, never on where a mismatch is or on alen. */
bool secret_equal(const char *a, size_t alen, const char *b, size_t blen)
{
    if (!a || alen == 0)
        return false;
    volatile unsigned char diff = (unsigned char)(alen != blen);
    for (size_t i = 0; i < blen; i++)
        diff |= (unsigned char)(a[i % alen] ^ b[i]);
    return diff == 0;
}
