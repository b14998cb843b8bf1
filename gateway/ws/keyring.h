/* The public keys tokens are checked with (RS256, ES256): those of HERALD_JWT_PUBLIC_KEY (a
 * PEM file read at start) and those of the JWK Set at HERALD_JWKS_URL, fetched on libuv's
 * worker threads (core/fetch.h), never on the loop: at start, every HERALD_JWKS_REFRESH, and
 * soon after a token names a kid the set does not have (a key the issuer has just rotated
 * in), at most once every JWKS_MIN_INTERVAL_MS. A failed fetch keeps the keys there were
 * and is tried again after a few seconds; a set that arrives whole replaces the set before
 * it (so a key the issuer removed stops working). */
#ifndef HERALD_KEYRING_H
#define HERALD_KEYRING_H

#include <stdbool.h>
#include <stddef.h>

#define JWKS_MIN_INTERVAL_MS 10000
#define JWKS_RETRY_MS        5000
#define JWKS_MAX_BYTES       (1u << 20)

struct herald;
struct jwt_keys;
struct keyring;

/* Reads HERALD_JWT_PUBLIC_KEY when set. NULL with err filled when the file cannot be read or
 * holds no usable key (the process must not start), or memory ran out. */
struct keyring *keyring_new(struct herald *app, char *err, size_t errlen);
/* Starts fetching the JWK Set, when HERALD_JWKS_URL is set. */
void keyring_start(struct keyring *k);
/* Stops the timer; a fetch in flight finishes into nothing. The loop must run afterwards. */
void keyring_stop(struct keyring *k);
void keyring_free(struct keyring *k);

/* The keys now: the file's and the set's (NULL when there are none). */
const struct jwt_keys *keyring_keys(const struct keyring *k);

/* A token named a kid no key has: fetch the set again soon. */
void keyring_unknown_kid(struct keyring *k);

#endif
