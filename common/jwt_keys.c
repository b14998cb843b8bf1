#include "jwt_keys.h"
#include "b64url.h"
#include "json_text.h"

#include <jansson.h>
#include <openssl/bio.h>
#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/ec.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/param_build.h>
#include <openssl/pem.h>
#include <stdio.h>
#include <string.h>

#define RSA_MIN_BITS 2048
#define P256_COORD   32   /* bytes of an x or y, and of ES256's R and S */
#define JWK_PART_MAX 1024 /* decoded bytes of n (8192-bit keys) */

/* The algorithm a key serves, from its type; -1 for a type we do not take. */
static int alg_of(EVP_PKEY *k)
{
    if (EVP_PKEY_is_a(k, "RSA"))
        return EVP_PKEY_get_bits(k) >= RSA_MIN_BITS ? JWT_KEY_RS256 : -1;
    char group[32];
    if (EVP_PKEY_is_a(k, "EC") &&
        EVP_PKEY_get_utf8_string_param(k, OSSL_PKEY_PARAM_GROUP_NAME, group, sizeof group, NULL) ==
            1 &&
        strcmp(group, "prime256v1") == 0)
        return JWT_KEY_ES256;
    return -1;
}

/* Adds k (taken over) to the staging set; -1 when it is full or of a type we do not take. */
static int stage(struct jwt_keys *st, EVP_PKEY *k, const char *kid, char *err, size_t errlen)
{
    int alg = alg_of(k);
    if (alg < 0 || st->n == JWT_KEYS_MAX) {
        snprintf(err, errlen,
                 alg < 0 ? "a key is neither RSA of %d bits or more nor EC P-256"
                         : "more than %d keys",
                 alg < 0 ? RSA_MIN_BITS : JWT_KEYS_MAX);
        EVP_PKEY_free(k);
        return -1;
    }
    struct jwt_key *e = &st->keys[st->n++];
    e->alg = (enum jwt_key_alg)alg;
    e->pkey = k;
    snprintf(e->kid, sizeof e->kid, "%s", kid ? kid : "");
    return 0;
}

/* Appends the staged keys to ks when they all fit; frees them otherwise. */
static int commit(struct jwt_keys *ks, struct jwt_keys *st, int rc, char *err, size_t errlen)
{
    if (rc == 0 && ks->n + st->n > JWT_KEYS_MAX) {
        snprintf(err, errlen, "more than %d keys", JWT_KEYS_MAX);
        rc = -1;
    }
    if (rc == 0) {
        memcpy(ks->keys + ks->n, st->keys, st->n * sizeof st->keys[0]);
        ks->n += st->n;
        st->n = 0;
    }
    jwt_keys_clear(st);
    return rc;
}

int jwt_keys_add_pem(struct jwt_keys *ks, const char *pem, size_t len, char *err, size_t errlen)
{
    struct jwt_keys st = {0}; /* staging (about 9 KiB) */
    BIO *b = BIO_new_mem_buf(pem, (int)len);
    int rc = b ? 0 : -1;
    EVP_PKEY *k;
    while (rc == 0 && (k = PEM_read_bio_PUBKEY(b, NULL, NULL, NULL)))
        rc = stage(&st, k, NULL, err, errlen);
    BIO_free(b);
    ERR_clear_error(); /* the read that ends the loop leaves "no start line" queued */
    if (rc == 0 && st.n == 0) {
        snprintf(err, errlen, "no PUBLIC KEY block in the PEM text");
        rc = -1;
    }
    return commit(ks, &st, rc, err, errlen);
}

/* A base64url member of a JWK, decoded into out (cap bytes); its length, or -1. */
static long jwk_part(const json_t *jwk, const char *name, unsigned char *out, size_t cap)
{
    const json_t *v = json_object_get(jwk, name);
    size_t n = json_string_length(v);
    if (!json_is_string(v) || n == 0 || n / 4 * 3 + 2 > cap)
        return -1;
    return b64url_decode(json_string_value(v), n, out);
}

static EVP_PKEY *from_params(const char *type, OSSL_PARAM_BLD *bld)
{
    OSSL_PARAM *params = bld ? OSSL_PARAM_BLD_to_param(bld) : NULL;
    EVP_PKEY_CTX *ctx = params ? EVP_PKEY_CTX_new_from_name(NULL, type, NULL) : NULL;
    EVP_PKEY *k = NULL;
    if (!ctx || EVP_PKEY_fromdata_init(ctx) != 1 ||
        EVP_PKEY_fromdata(ctx, &k, EVP_PKEY_PUBLIC_KEY, params) != 1)
        k = NULL;
    EVP_PKEY_CTX_free(ctx);
    OSSL_PARAM_free(params);
    return k;
}

static EVP_PKEY *rsa_from_jwk(const json_t *jwk)
{
    unsigned char n[JWK_PART_MAX], e[16];
    long nl = jwk_part(jwk, "n", n, sizeof n), el = jwk_part(jwk, "e", e, sizeof e);
    if (nl <= 0 || el <= 0)
        return NULL;
    BIGNUM *bn = BN_bin2bn(n, (int)nl, NULL), *be = BN_bin2bn(e, (int)el, NULL);
    OSSL_PARAM_BLD *bld = bn && be ? OSSL_PARAM_BLD_new() : NULL;
    EVP_PKEY *k = NULL;
    if (bld && OSSL_PARAM_BLD_push_BN(bld, OSSL_PKEY_PARAM_RSA_N, bn) == 1 &&
        OSSL_PARAM_BLD_push_BN(bld, OSSL_PKEY_PARAM_RSA_E, be) == 1)
        k = from_params("RSA", bld);
    OSSL_PARAM_BLD_free(bld);
    BN_free(bn);
    BN_free(be);
    return k;
}

static EVP_PKEY *ec_from_jwk(const json_t *jwk)
{
    const json_t *crv = json_object_get(jwk, "crv");
    unsigned char point[1 + 2 * P256_COORD], x[P256_COORD + 2], y[P256_COORD + 2];
    if (!json_is_string(crv) || strcmp(json_string_value(crv), "P-256") != 0 ||
        jwk_part(jwk, "x", x, sizeof x) != P256_COORD ||
        jwk_part(jwk, "y", y, sizeof y) != P256_COORD)
        return NULL;
    point[0] = 0x04; /* uncompressed */
    memcpy(point + 1, x, P256_COORD);
    memcpy(point + 1 + P256_COORD, y, P256_COORD);
    OSSL_PARAM_BLD *bld = OSSL_PARAM_BLD_new();
    EVP_PKEY *k = NULL;
    if (bld &&
        OSSL_PARAM_BLD_push_utf8_string(bld, OSSL_PKEY_PARAM_GROUP_NAME, "prime256v1", 0) == 1 &&
        OSSL_PARAM_BLD_push_octet_string(bld, OSSL_PKEY_PARAM_PUB_KEY, point, sizeof point) == 1)
        k = from_params("EC", bld); /* fails for a point off the curve */
    OSSL_PARAM_BLD_free(bld);
    return k;
}

/* One JWK: 1 staged, 0 skipped (not a signing key of a type we take), -1 malformed. */
static int stage_jwk(struct jwt_keys *st, const json_t *jwk, char *err, size_t errlen)
{
    const char *kty = json_string_value(json_object_get(jwk, "kty"));
    const json_t *use = json_object_get(jwk, "use"), *alg = json_object_get(jwk, "alg"),
                 *kid = json_object_get(jwk, "kid");
    bool rsa = kty && strcmp(kty, "RSA") == 0, ec = kty && strcmp(kty, "EC") == 0;
    if (!json_is_object(jwk) || !(rsa || ec) ||
        (use && !(json_is_string(use) && strcmp(json_string_value(use), "sig") == 0)))
        return 0;
    const char *want = rsa ? "RS256" : "ES256";
    if (alg && !(json_is_string(alg) && strcmp(json_string_value(alg), want) == 0))
        return 0; /* e.g. an RSA key for RS512 or RSA-OAEP: not ours to use */
    if (kid && (!json_is_string(kid) || json_string_length(kid) > JWT_KEY_KID_MAX ||
                strlen(json_string_value(kid)) != json_string_length(kid))) {
        snprintf(err, errlen, "a key's kid is not a string of at most %d bytes", JWT_KEY_KID_MAX);
        return -1;
    }
    EVP_PKEY *k = rsa ? rsa_from_jwk(jwk) : ec_from_jwk(jwk);
    if (!k) {
        snprintf(err, errlen, "a %s key is malformed", kty);
        return -1;
    }
    return stage(st, k, json_string_value(kid), err, errlen) == 0 ? 1 : -1;
}

int jwt_keys_add_jwks(struct jwt_keys *ks, const char *json, size_t len, char *err, size_t errlen)
{
    struct jwt_keys st = {0};
    json_t *root = json_text_load(json, len, JSON_REJECT_DUPLICATES, NULL);
    json_t *keys = json_object_get(root, "keys");
    int rc = 0;
    if (!json_is_array(keys)) {
        snprintf(err, errlen, "not a JWK Set (an object with a keys array)");
        rc = -1;
    }
    for (size_t i = 0; rc == 0 && i < json_array_size(keys); i++)
        if (stage_jwk(&st, json_array_get(keys, i), err, errlen) < 0)
            rc = -1;
    json_decref(root);
    return commit(ks, &st, rc, err, errlen);
}

void jwt_keys_clear(struct jwt_keys *ks)
{
    for (size_t i = 0; i < ks->n; i++)
        EVP_PKEY_free(ks->keys[i].pkey);
    ks->n = 0;
}

void jwt_keys_move(struct jwt_keys *dst, struct jwt_keys *src)
{
    jwt_keys_clear(dst);
    memcpy(dst->keys, src->keys, src->n * sizeof src->keys[0]);
    dst->n = src->n;
    src->n = 0;
}

const struct jwt_key *jwt_keys_find(const struct jwt_keys *ks, const char *kid,
                                    enum jwt_key_alg alg)
{
    const struct jwt_key *only = NULL;
    size_t of_alg = 0;
    for (size_t i = 0; i < ks->n; i++) {
        const struct jwt_key *k = &ks->keys[i];
        if (k->alg != alg)
            continue;
        if (kid && strcmp(k->kid, kid) == 0)
            return k;
        only = k;
        of_alg++;
    }
    return !kid && of_alg == 1 ? only : NULL;
}

/* ES256's R||S as the DER ECDSA-Sig-Value OpenSSL verifies; its length, or 0. */
static int ecdsa_der(const unsigned char *sig, unsigned char *out, size_t cap)
{
    ECDSA_SIG *s = ECDSA_SIG_new();
    BIGNUM *r = BN_bin2bn(sig, P256_COORD, NULL),
           *sv = BN_bin2bn(sig + P256_COORD, P256_COORD, NULL);
    int n = 0;
    if (s && r && sv && ECDSA_SIG_set0(s, r, sv) == 1) {
        r = sv = NULL; /* s owns them */
        if (i2d_ECDSA_SIG(s, NULL) <= (int)cap)
            n = i2d_ECDSA_SIG(s, &out);
    }
    BN_free(r);
    BN_free(sv);
    ECDSA_SIG_free(s);
    return n > 0 ? n : 0;
}

bool jwt_key_verify(const struct jwt_key *k, const char *input, size_t ilen,
                    const unsigned char *sig, size_t slen)
{
    unsigned char der[80];
    if (k->alg == JWT_KEY_ES256) {
        int n = slen == 2 * P256_COORD ? ecdsa_der(sig, der, sizeof der) : 0;
        if (!n)
            return false;
        sig = der;
        slen = (size_t)n;
    } else if (slen != (size_t)EVP_PKEY_get_size(k->pkey)) {
        return false;
    }
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    bool ok = ctx && EVP_DigestVerifyInit(ctx, NULL, EVP_sha256(), NULL, k->pkey) == 1 &&
              EVP_DigestVerify(ctx, sig, slen, (const unsigned char *)input, ilen) == 1;
    EVP_MD_CTX_free(ctx);
    return ok;
}
