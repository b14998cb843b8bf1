#include "http_session.h"

#include <libwebsockets.h>
#include <stdlib.h>

struct http_session *http_session_get(struct lws *wsi)
{
    return lws_get_opaque_user_data(wsi);
}

struct http_session *http_session_make(struct lws *wsi)
{
    struct http_session *s = http_session_get(wsi);
    if (!s && (s = calloc(1, sizeof *s)))
        lws_set_opaque_user_data(wsi, s);
    return s;
}
