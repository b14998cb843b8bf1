/* Public keys for asymmetric JWTs (RS256, ES256): read from PEM (HERALD_JWT_PUBLIC_KEY) or
 * from a JSON Web Key Set (RFC 7517, what HERALD_JWKS_URL serves), and the signature check
 * with OpenSSL. Pure: no I/O; the caller reads the file or fetches the set.
 *
 * A key is used only for the algorithm of its type (an RSA key for RS256, a P-256 key for
 * ES256), whatever a token's header says, so no token can make a public key serve as an HMAC
 * secret or another curve's key. */
#ifndef HERALD_JWT_KEYS_H
#define HERALD_JWT_KEYS_H

#include <stdbool.h>
#include <stddef.h>

#define JWT_KEYS_MAX    64  /* keys in one set */
#define JWT_KEY_KID_MAX 127 /* bytes of a kid */

enum jwt_key_alg { JWT_KEY_RS256, JWT_KEY_ES256 };

struct evp_pkey_st; /* OpenSSL's EVP_PKEY */

struct jwt_key {
    char kid[JWT_KEY_KID_MAX + 1]; /* "" when the key has none (PEM) */
    enum jwt_key_alg alg;
    struct evp_pkey_st *pkey;
};

struct jwt_keys {
    struct jwt_key keys[JWT_KEYS_MAX];
    size_t n;
};

/* Adds the public keys of PEM text (one or more PUBLIC KEY blocks: RSA of 2048 bits or more,
 * or EC P-256). 0, or -1 with err filled (nothing added then). */
int jwt_keys_add_pem(struct jwt_keys *ks, const char *pem, size_t len, char *err, size_t errlen);

/* Adds the signing keys of a JWK Set ({"keys":[...]}): kty RSA (n, e) or EC (crv P-256, x, y),
 * use absent or "sig", alg absent or matching the type. Keys of other types or uses are
 * skipped; a malformed key of a known type refuses the whole set. 0, or -1 with err (nothing
 * added then). */
int jwt_keys_add_jwks(struct jwt_keys *ks, const char *json, size_t len, char *err, size_t errlen);

/* Frees the keys; ks is empty afterwards. */
void jwt_keys_clear(struct jwt_keys *ks);

/* Moves src's keys into dst (whose own are freed first); src is empty afterwards. */
void jwt_keys_move(struct jwt_keys *dst, struct jwt_keys *src);

/* The key for a token: with a kid, the key of that kid if it is of alg's type; without, the
 * only key of alg's type (NULL when there are several: a token must then say its kid). */
const struct jwt_key *jwt_keys_find(const struct jwt_keys *ks, const char *kid,
                                    enum jwt_key_alg alg);

/* True when sig[0..slen) (as the JWS carries it: RSASSA-PKCS1-v1_5, or ECDSA R||S of 64
 * bytes) signs input[0..ilen) with SHA-256 under k. */
bool jwt_key_verify(const struct jwt_key *k, const char *input, size_t ilen,
                    const unsigned char *sig, size_t slen);

#endif
