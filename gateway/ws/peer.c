#include "peer.h"
#include "herald.h"
#include "http_framing.h"

#include <libwebsockets.h>

void peer_address(const struct herald *app, struct lws *wsi, char *out, size_t cap)
{
    char peer[CIDR_ADDR_MAX + 1] = "";
    lws_get_peer_simple(wsi, peer, sizeof peer);
    const struct cidr_list *trusted = &app->cfg->trusted_proxies;
    if (!trusted->n || !cidr_list_match(trusted, peer)) {
        snprintf(out, cap, "%s", peer);
        return;
    }
    /* lws keeps at most HTTP_HEAD_MAX of a head, so X-Forwarded-For is read whole, never
     * cut to its left part, which the client could have written */
    char xff[HTTP_HEAD_MAX + 1];
    bool has = lws_hdr_total_length(wsi, WSI_TOKEN_X_FORWARDED_FOR) > 0 &&
               lws_hdr_copy(wsi, xff, sizeof xff, WSI_TOKEN_X_FORWARDED_FOR) >= 0;
    cidr_client_address(peer, has ? xff : NULL, trusted, out, cap);
}

bool peer_limited(const struct herald *app, const char *ip)
{
    return !cidr_list_match(&app->cfg->ip_limit_exempt, ip);
}
