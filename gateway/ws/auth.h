/* Who a WebSocket connection or a /v1 request is (PROTOCOL: 6. Authentication): an HS256
 * JWT from ?token= or Authorization: Bearer, or the service API key; and which browser
 * Origins may connect. With neither HERALD_JWT_SECRET nor HERALD_API_KEY set, auth is off. */
#ifndef HERALD_AUTH_H
#define HERALD_AUTH_H

#include "jwt_auth.h"

#include <stdbool.h>
#include <stddef.h>

struct lws;
struct herald;

struct principal {
    bool service;             /* the API key: everything */
    struct jwt_claims claims; /* valid when has_claims */
    bool has_claims;
};

enum auth_result { AUTH_OK, AUTH_MISSING, AUTH_INVALID };

/* True when the WebSocket side needs a token (HERALD_JWT_SECRET set). */
bool auth_ws_required(const struct herald *app);

/* True when /v1 needs credentials (a secret or an API key is set). */
bool auth_api_required(const struct herald *app);

/* Reads and checks the request's credentials. allow_key: the API key counts (for /v1).
 * On AUTH_OK, out must be released with auth_release. why gets a reason for the client. */
enum auth_result auth_identify(struct herald *app, struct lws *wsi, bool allow_key,
                               struct principal *out, char *why, size_t whylen);

/* Checks a JWT given in full (a WebSocket `refresh`), as auth_identify checks one from a
 * request. On AUTH_OK, out must be released with auth_release. */
enum auth_result auth_verify(struct herald *app, const char *token, struct principal *out,
                             char *why, size_t whylen);

void auth_release(struct principal *p);

/* With auth off, or for the service key, everything is allowed. */
bool auth_may_read(const struct principal *p, const char *channel, size_t len);
bool auth_may_publish(const struct principal *p, const char *channel, size_t len);

/* The handshake's Origin is allowed (no Origin header: not a browser, allowed). */
bool auth_origin_allowed(const struct herald *app, struct lws *wsi);

#endif
