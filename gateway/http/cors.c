#include "cors.h"
#include "herald.h"
#include "http_framing.h"

#include <libwebsockets.h>
#include <stdio.h>
#include <string.h>

#define ACRM "access-control-request-method:"

/* The request's Origin when CORS is on and lists it. */
static bool listed_origin(const struct herald *app, struct lws *wsi, char *origin, size_t cap)
{
    const char *list = app->cfg->cors_origins;
    return list[0] && lws_hdr_total_length(wsi, WSI_TOKEN_ORIGIN) > 0 &&
           lws_hdr_copy(wsi, origin, (int)cap, WSI_TOKEN_ORIGIN) > 0 &&
           http_origin_listed(list, origin);
}

void cors_lines(const struct herald *app, struct lws *wsi, char *out, size_t cap)
{
    char origin[512];
    out[0] = '\0';
    if (listed_origin(app, wsi, origin, sizeof origin))
        snprintf(out, cap,
                 "access-control-allow-origin: %s\r\nvary: origin\r\n"
                 "access-control-expose-headers: retry-after, stream-next-offset, "
                 "stream-cursor, stream-up-to-date\r\n",
                 origin);
}

bool cors_is_preflight(const struct herald *app, struct lws *wsi)
{
    char *uri = NULL;
    int uri_len = 0;
    return app->cfg->cors_origins[0] &&
           lws_http_get_uri_and_method(wsi, &uri, &uri_len) == LWSHUMETH_OPTIONS && uri &&
           uri_len >= 4 && strncmp(uri, "/v1/", 4) == 0 &&
           lws_hdr_custom_length(wsi, ACRM, (int)strlen(ACRM)) > 0 &&
           lws_hdr_total_length(wsi, WSI_TOKEN_HTTP_CONTENT_LENGTH) <= 0 &&
           lws_hdr_total_length(wsi, WSI_TOKEN_HTTP_TRANSFER_ENCODING) <= 0;
}

size_t cors_preflight_answer(const struct herald *app, struct lws *wsi, char *out, size_t cap)
{
    char origin[512];
    if (!listed_origin(app, wsi, origin, sizeof origin))
        return 0;
    int n = snprintf(out, cap,
                     "HTTP/1.1 204 No Content\r\naccess-control-allow-origin: %s\r\n"
                     "vary: origin\r\naccess-control-allow-methods: GET, POST\r\n"
                     "access-control-allow-headers: authorization, content-type, "
                     "idempotency-key\r\naccess-control-max-age: 600\r\nconnection: close\r\n\r\n",
                     origin);
    return n > 0 && (size_t)n < cap ? (size_t)n : 0;
}
