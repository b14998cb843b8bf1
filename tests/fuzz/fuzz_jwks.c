/* jwt_keys_add_jwks() and jwt_keys_add_pem() on arbitrary bytes (what a JWKS URL, or a key
 * file, may hold): never a crash or a leak; an accepted set holds at most JWT_KEYS_MAX keys,
 * each of a type it serves, and checking a signature with any of them is safe. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "jwt_keys.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static struct jwt_keys ks;
    char err[200];
    const char *text = (const char *)data;
    if (jwt_keys_add_jwks(&ks, text, size, err, sizeof err) == 0 ||
        jwt_keys_add_pem(&ks, text, size, err, sizeof err) == 0) {
        if (ks.n > JWT_KEYS_MAX)
            abort();
        unsigned char sig[64] = {1};
        for (size_t i = 0; i < ks.n; i++) {
            if (!ks.keys[i].pkey ||
                (ks.keys[i].alg != JWT_KEY_RS256 && ks.keys[i].alg != JWT_KEY_ES256))
                abort();
            if (jwt_key_verify(&ks.keys[i], "a.b", 3, sig, sizeof sig))
                abort(); /* a signature of ones never verifies */
        }
    } else if (ks.n != 0) {
        abort(); /* a refused input adds nothing */
    }
    jwt_keys_clear(&ks);
    return 0;
}
