/* jwt_auth_verify() with a fixed secret. First byte even: the rest is the token. Odd: the
 * rest is a payload that libjwt signs with HS256 first, so the claim checks get exercised
 * too; such a token must never be refused as malformed, mis-signed or of the wrong alg. */
#include <jwt.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "jwt_auth.h"

static const unsigned char secret[] = "fuzz-secret-0123456789";
#define NOW 1764000000LL

static int verify(const char *token)
{
    struct jwt_claims c;
    char err[160];
    int rc = jwt_auth_verify(token, secret, sizeof secret - 1, NOW, 5, &c, err, sizeof err);
    if (rc == 0) {
        if (c.sub[0] == '\0' || !json_is_array(c.channels) || !json_is_array(c.publish))
            abort();
        jwt_auth_can_subscribe(&c, "bot:status:42", 13);
        jwt_auth_can_publish(&c, "room.lobby", 10);
    } else if (c.channels || c.publish || err[0] == '\0') {
        abort();
    }
    jwt_claims_free(&c);
    return rc;
}

/* Signs payload with libjwt; NULL when libjwt will not take it as a JSON object. */
static char *sign(const char *payload)
{
    jwt_t *jwt = NULL;
    char *token = NULL;
    if (jwt_new(&jwt) == 0 && jwt_add_grants_json(jwt, payload) == 0 &&
        jwt_set_alg(jwt, JWT_ALG_HS256, secret, (int)(sizeof secret - 1)) == 0)
        token = jwt_encode_str(jwt);
    jwt_free(jwt);
    return token;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1 || size > 2 * JWT_AUTH_TOKEN_MAX)
        return 0;
    char *text = malloc(size);
    memcpy(text, data + 1, size - 1);
    text[size - 1] = '\0';
    if ((data[0] & 1) == 0) {
        verify(text);
    } else {
        char *token = sign(text);
        if (token) {
            int rc = verify(token);
            if (rc == JWT_AUTH_EMALFORMED || rc == JWT_AUTH_EALG || rc == JWT_AUTH_ESIGNATURE)
                abort();
            free(token);
        }
    }
    free(text);
    return 0;
}
