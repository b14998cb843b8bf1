/* HS256 JWT verification and the claims it grants (PROTOCOL: 6. Authentication and
 * authorization), plus the constant-time compare used for HERALD_API_KEY. */
#ifndef HERALD_JWT_AUTH_H
#define HERALD_JWT_AUTH_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define JWT_AUTH_TOKEN_MAX  8192 /* bytes of compact token text */
#define JWT_AUTH_SECRET_MAX 4096 /* bytes of HERALD_JWT_SECRET */
#define JWT_AUTH_LEEWAY_MAX 60   /* seconds; a larger leeway is clamped to this */
#define JWT_AUTH_SUB_MAX    127  /* bytes of the sub claim */

/* Negative return codes of jwt_auth_verify(); jwt_auth_strerror() names them. */
#define JWT_AUTH_EMALFORMED -1 /* not header.payload.signature of base64url JSON objects */
#define JWT_AUTH_ETOOLONG   -2 /* longer than JWT_AUTH_TOKEN_MAX */
#define JWT_AUTH_EALG       -3 /* header alg is not exactly HS256, or crit is present */
#define JWT_AUTH_ESIGNATURE -4 /* signature does not verify with the secret */
#define JWT_AUTH_EEXPIRED   -5 /* now > exp + leeway */
#define JWT_AUTH_ENOTYET    -6 /* now + leeway < nbf */
#define JWT_AUTH_ECLAIMS    -7 /* exp, sub, nbf, channels or publish missing or mistyped */
#define JWT_AUTH_EKEY       -8 /* the secret is empty or too long: a configuration error */
#define JWT_AUTH_ENOMEM     -9
#define JWT_AUTH_EKID       -10 /* no key: an unknown kid, or several keys and none named */
#define JWT_AUTH_EAUDIENCE  -11 /* iss or aud is not the one the verifier expects */

struct jwt_claims {
    char sub[JWT_AUTH_SUB_MAX + 1];
    int64_t exp;      /* Unix seconds */
    json_t *channels; /* array of glob strings: may subscribe to and read; never NULL on success */
    json_t *publish;  /* array of glob strings: may publish to; never NULL on success */
    char *info;       /* the info claim as compact JSON text (presence); NULL when absent */
};

struct jwt_keys;

/* What a token is checked against. At least one of the secret and the keys must be given;
 * the token's alg must be one they serve (HS256 for the secret, RS256 or ES256 for keys of
 * that type). issuer and audience, when not empty, must be the token's iss and be named by
 * its aud (a string, or an array of strings). */
struct jwt_verifier {
    const unsigned char *secret; /* HS256; NULL: none */
    size_t secret_len;
    const struct jwt_keys *keys; /* RS256 and ES256 (jwt_keys.h); NULL: none */
    const char *issuer;          /* NULL or "": not checked */
    const char *audience;
    int leeway_s; /* 0..JWT_AUTH_LEEWAY_MAX seconds of clock skew on exp and nbf */
};

/* Verifies a compact token (NUL-terminated) at time now_s and fills out, as jwt_auth_verify
 * below does for HS256 alone; JWT_AUTH_EKID when no key matches (a JWK Set may be stale). */
int jwt_auth_check(const struct jwt_verifier *v, const char *token, int64_t now_s,
                   struct jwt_claims *out, char *err, size_t errlen);

/* Verifies a compact HS256 token (NUL-terminated) against secret[0..secret_len) at time
 * now_s with leeway_s (0..JWT_AUTH_LEEWAY_MAX) seconds of clock skew, and fills out.
 * The header must say alg HS256 whatever libjwt would accept; exp and sub are required;
 * channels and publish, when present, must be arrays of strings (absent means none).
 * An optional info claim (any JSON) is kept as text.
 * Returns 0 (release out with jwt_claims_free) or a JWT_AUTH_E* code with a reason in
 * err (errlen bytes); on failure out holds nothing to free. */
int jwt_auth_verify(const char *token, const unsigned char *secret, size_t secret_len,
                    int64_t now_s, int leeway_s, struct jwt_claims *out, char *err, size_t errlen);

/* Releases what jwt_auth_verify put in c; safe on a zeroed or already freed struct. */
void jwt_claims_free(struct jwt_claims *c);

/* "malformed token", "token expired", ... for a JWT_AUTH_E* code. */
const char *jwt_auth_strerror(int code);

/* True when a pattern of the channels claim matches channel[0..len). */
bool jwt_auth_can_subscribe(const struct jwt_claims *c, const char *channel, size_t len);

/* True when a pattern of the publish claim matches channel[0..len). */
bool jwt_auth_can_publish(const struct jwt_claims *c, const char *channel, size_t len);

/* Compares the expected secret a[0..alen) with the presented b[0..blen) in time that depends
 * only on blen: no early exit on a mismatch or a length difference. An empty a never
 * matches (an unset key grants nothing). */
bool secret_equal(const char *a, size_t alen, const char *b, size_t blen);

#endif
