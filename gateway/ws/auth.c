#include "auth.h"
#include "herald.h"
#include "http_framing.h"
#include "keyring.h"

#include <libwebsockets.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

bool auth_ws_required(const struct herald *app)
{
    const struct herald_config *cfg = app->cfg;
    return cfg->jwt_secret[0] || cfg->jwt_public_key[0] || cfg->jwks_url[0];
}

bool auth_api_required(const struct herald *app)
{
    return auth_ws_required(app) || app->cfg->api_key[0];
}

/* The token: ?token= first, then Authorization: Bearer. Returns its length, 0 if none (or
 * too long to be one); *in_query tells where it came from. */
static int read_token(struct lws *wsi, char *out, int cap, bool *in_query)
{
    /* lws returns a pointer past "token=" inside out, not the value at its start */
    const char *arg = lws_get_urlarg_by_name(wsi, "token=", out, cap);
    *in_query = arg && *arg;
    if (*in_query) {
        memmove(out, arg, strlen(arg) + 1);
        return (int)strlen(out);
    }
    char header[JWT_AUTH_TOKEN_MAX + 16];
    if (lws_hdr_copy(wsi, header, sizeof header, WSI_TOKEN_HTTP_AUTHORIZATION) <= 0)
        return 0;
    if (strncasecmp(header, "Bearer ", 7) != 0)
        return 0;
    int n = snprintf(out, (size_t)cap, "%s", header + 7);
    return n > 0 && n < cap ? n : 0;
}

enum auth_result auth_identify(struct herald *app, struct lws *wsi, bool allow_key,
                               struct principal *out, char *why, size_t whylen)
{
    const struct herald_config *cfg = app->cfg;
    char token[JWT_AUTH_TOKEN_MAX + 1];
    bool in_query;
    memset(out, 0, sizeof *out);
    int n = read_token(wsi, token, sizeof token, &in_query);
    if (n <= 0) {
        snprintf(why, whylen, "a token is required (?token= or Authorization: Bearer)");
        return AUTH_MISSING;
    }
    /* the long-lived key would land in proxy logs from a URL: it counts only in the header,
     * and one sent in the URL is told so */
    if (allow_key && cfg->api_key[0] &&
        secret_equal(cfg->api_key, strlen(cfg->api_key), token, (size_t)n)) {
        if (!in_query) {
            out->service = true;
            return AUTH_OK;
        }
        snprintf(why, whylen, "the API key is accepted only in an Authorization header");
        return AUTH_INVALID;
    }
    if (!auth_ws_required(app)) {
        snprintf(why, whylen, "invalid API key");
        return AUTH_INVALID;
    }
    return auth_verify(app, token, out, why, whylen);
}

enum auth_result auth_verify(struct herald *app, const char *token, struct principal *out,
                             char *why, size_t whylen)
{
    const struct herald_config *cfg = app->cfg;
    char err[128] = "";
    memset(out, 0, sizeof *out);
    struct jwt_verifier v = {.secret = (const unsigned char *)cfg->jwt_secret,
                             .secret_len = strlen(cfg->jwt_secret),
                             .keys = app->keyring ? keyring_keys(app->keyring) : NULL,
                             .issuer = cfg->jwt_issuer,
                             .audience = cfg->jwt_audience,
                             .leeway_s = (int)cfg->jwt_leeway};
    int rc = jwt_auth_check(&v, token, (int64_t)time(NULL), &out->claims, err, sizeof err);
    if (rc == JWT_AUTH_EKID && app->keyring)
        keyring_unknown_kid(app->keyring); /* a key rotated in: fetch the set again */
    if (rc != 0) {
        snprintf(why, whylen, "invalid token: %s", jwt_auth_strerror(rc));
        return AUTH_INVALID;
    }
    out->has_claims = true;
    return AUTH_OK;
}

void auth_release(struct principal *p)
{
    if (p->has_claims)
        jwt_claims_free(&p->claims);
    p->has_claims = false;
}

bool auth_may_read(const struct principal *p, const char *channel, size_t len)
{
    if (!p || p->service)
        return true;
    return p->has_claims && jwt_auth_can_subscribe(&p->claims, channel, len);
}

bool auth_may_publish(const struct principal *p, const char *channel, size_t len)
{
    if (!p || p->service)
        return true;
    return p->has_claims && jwt_auth_can_publish(&p->claims, channel, len);
}

bool auth_origin_allowed(const struct herald *app, struct lws *wsi)
{
    const char *list = app->cfg->allowed_origins;
    char origin[512];
    if (!list[0] || strcmp(list, "*") == 0)
        return true;
    if (lws_hdr_total_length(wsi, WSI_TOKEN_ORIGIN) <= 0)
        return true; /* not a browser */
    if (lws_hdr_copy(wsi, origin, sizeof origin, WSI_TOKEN_ORIGIN) <= 0)
        return false; /* longer than any Origin we could allow */
    return http_origin_listed(list, origin);
}
