#include "http_guard.h"
#include "cors.h"
#include "herald.h"
#include "http_reply.h"
#include "http_framing.h"
#include "iplimit.h"
#include "log.h"
#include "peer.h"
#include "http_session.h"

#include "sock_input.h"

#include <libwebsockets.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

#define ALLOW_HEADER   "allow: GET, POST\r\n"
#define VERSION_HEADER "sec-websocket-version: 13\r\n"

void http_guard_refuse(struct herald *app, struct lws *wsi, unsigned status, enum errcode code,
                       const char *why)
{
    char body[512], buf[LWS_PRE + 1024];
    size_t blen = http_error_body(body, sizeof body, code, why);
    char *p = buf + LWS_PRE;
    size_t h = http_json_head(p, sizeof buf - LWS_PRE - blen, status, blen, true,
                              status == 405   ? ALLOW_HEADER
                              : status == 426 ? VERSION_HEADER
                                              : NULL);
    app->metrics.client_errors[code]++;
    if (h == 0 || blen == 0)
        return;
    memcpy(p + h, body, blen);
    lws_write(wsi, (unsigned char *)p, h + blen, LWS_WRITE_RAW);
}

/* The header is in the head, even with an empty value (lws keeps an empty fragment for
 * it, and no fragment at all for a missing one). */
static bool present(struct lws *wsi, enum lws_token_indexes h)
{
    char none[1];
    return lws_hdr_total_length(wsi, h) > 0 || lws_hdr_copy_fragment(wsi, none, 1, h, 0) == 0;
}

/* Reads the head's framing headers. A Content-Length too long to copy is kept as text that
 * fails the check, so an oversized header never passes for an absent one. */
static void read_head(struct lws *wsi, struct http_head *head, char *cl, size_t cap)
{
    char *uri = NULL;
    int uri_len = 0;
    int m = lws_http_get_uri_and_method(wsi, &uri, &uri_len);
    head->method = m == LWSHUMETH_GET ? HTTP_GET : m == LWSHUMETH_POST ? HTTP_POST : HTTP_OTHER;
    head->takes_body = uri && uri_len >= 4 && strncmp(uri, "/v1/", 4) == 0;
    head->content_length = NULL;
    if (present(wsi, WSI_TOKEN_HTTP_CONTENT_LENGTH)) {
        if (lws_hdr_copy(wsi, cl, (int)cap, WSI_TOKEN_HTTP_CONTENT_LENGTH) < 0)
            snprintf(cl, cap, "too long");
        head->content_length = cl;
    }
    head->transfer_encoding = present(wsi, WSI_TOKEN_HTTP_TRANSFER_ENCODING);
    head->max_body = 0;
}

static int socket_consumed(struct lws *wsi, uint64_t *out)
{
    return sock_input_consumed(lws_get_socket_fd(wsi), out);
}

void http_guard_request_whole(struct lws *wsi)
{
    struct http_session *s = http_session_make(wsi);
    if (!s)
        return;
    s->seen_whole = true;
    s->consumed_known = socket_consumed(wsi, &s->consumed) == 0;
}

/* While lws sends a file it keeps reading the socket and stashes what comes in its buffer,
 * to parse once the file is out; the next request then comes from that buffer. Counting
 * from the file's end, a request whose head comes while lws has read nothing more came
 * from there (pipelined() below), as after a request answered at once. */
void http_guard_file_done(struct lws *wsi)
{
    http_guard_request_whole(wsi);
}

/* lws 4.1 reads a POST whose head it takes from its own buffer (the request came in one
 * read with the one before it, or while a file was being sent: pipelined) from the wrong
 * place, then loops forever in lws_http_action: such a POST must never reach a route. lws
 * reads the socket only once its buffer is empty, so a request whose head comes while lws
 * has read nothing from the socket since the previous request was whole (or, for a file,
 * since the file was out) came from that buffer. */
static bool pipelined(struct lws *wsi)
{
    struct http_session *s = http_session_get(wsi);
    uint64_t now;
    if (!s || !s->seen_whole)
        return false; /* the connection's first request */
    /* when the kernel cannot tell, the POST is refused: a spurious refusal costs a retry,
     * a wrong guess the whole process */
    return !s->consumed_known || socket_consumed(wsi, &now) < 0 || now == s->consumed;
}

/* A CORS preflight of a /v1 route: answered here, before any route, and closed. */
static int preflight(struct herald *app, struct lws *wsi)
{
    char buf[LWS_PRE + 1024];
    size_t n = cors_preflight_answer(app, wsi, buf + LWS_PRE, sizeof buf - LWS_PRE);
    if (n)
        lws_write(wsi, (unsigned char *)buf + LWS_PRE, n, LWS_WRITE_RAW);
    else
        http_guard_refuse(app, wsi, 403, ERR_FORBIDDEN,
                          "this Origin may not call /v1 (HERALD_CORS_ORIGINS)");
    return -1;
}

/* A body over the limit is not refused here: refused with its bytes unread, the connection
 * would be reset and most clients would lose the answer. The session says so, and rest_begin
 * answers 413 at once, then reads the body to its end before closing. */
static bool too_large(struct lws *wsi, const struct http_refusal *no)
{
    struct http_session *s = no->status == 413 ? http_session_make(wsi) : NULL;
    if (s)
        s->too_large = true;
    return s != NULL;
}

int http_guard_request(struct herald *app, struct lws *wsi)
{
    struct http_head head;
    struct http_refusal no;
    char cl[32];
    uint64_t body;
    read_head(wsi, &head, cl, sizeof cl);
    head.max_body = (uint64_t)app->cfg->max_publish_bytes;
    if (head.method == HTTP_OTHER && cors_is_preflight(app, wsi))
        return preflight(app, wsi);
    if (http_framing_check(&head, &body, &no) < 0 && !too_large(wsi, &no)) {
        log_debug("http_refused", "%u: %s", no.status, no.why);
        http_guard_refuse(app, wsi, no.status, no.code, no.why);
        return -1;
    }
    if (head.method == HTTP_POST && pipelined(wsi)) {
        http_guard_refuse(app, wsi, 400, ERR_BAD_REQUEST,
                          "a POST pipelined behind another request: send it once the answer "
                          "to the one before has come");
        return -1;
    }
    if (head.method == HTTP_GET)
        http_guard_request_whole(wsi);
    return 0;
}

uint64_t http_guard_body_length(struct lws *wsi)
{
    char cl[32];
    uint64_t len = 0;
    if (lws_hdr_copy(wsi, cl, sizeof cl, WSI_TOKEN_HTTP_CONTENT_LENGTH) > 0)
        http_content_length(cl, &len);
    return len;
}

/* The refusal of an upgrade, counted as a refused handshake. */
static int refuse_upgrade(struct herald *app, struct lws *wsi, unsigned status, enum errcode code,
                          const char *why)
{
    app->metrics.rejected_connections++;
    log_debug("handshake_refused", "%u: %s", status, why);
    http_guard_refuse(app, wsi, status, code, why);
    return -1;
}

/* Why a WebSocket handshake may not go on, or NULL; *status and *code go with it. */
static const char *admission(struct herald *app, struct lws *wsi, unsigned *status,
                             enum errcode *code)
{
    struct http_head head;
    struct http_refusal no;
    char cl[32], uri[256] = "", protocols[256] = "", ip[64] = "";
    uint64_t body;
    read_head(wsi, &head, cl, sizeof cl);
    *status = 400;
    *code = ERR_BAD_REQUEST;
    if (lws_hdr_copy(wsi, uri, sizeof uri, WSI_TOKEN_GET_URI) <= 0 || strcmp(uri, "/ws") != 0) {
        *status = 404;
        *code = ERR_NOT_FOUND;
        return "the WebSocket endpoint is /ws";
    }
    if (head.method != HTTP_GET || http_framing_check(&head, &body, &no) < 0)
        return "a WebSocket handshake is a GET without a body";
    char version[8] = "";
    if (lws_hdr_copy(wsi, version, sizeof version, WSI_TOKEN_VERSION) <= 0 ||
        strcmp(version, "13") != 0) {
        *status = 426; /* RFC 6455 4.4: say which version is understood */
        return "Sec-WebSocket-Version must be 13";
    }
    if (lws_hdr_copy(wsi, protocols, sizeof protocols, WSI_TOKEN_PROTOCOL) < 0 ||
        !http_subprotocols_ok(protocols))
        return "unsupported subprotocol: name herald, or none";
    *status = 503;
    *code = ERR_UNAVAILABLE;
    if (app->draining)
        return "this instance is draining: connect to another one";
    if (app->metrics.connections >= app->cfg->max_connections)
        return "connection limit reached";
    peer_address(app, wsi, ip, sizeof ip);
    if (peer_limited(app, ip) && iplimit_full(app->ips, ip, app->cfg->max_connections_per_ip)) {
        *status = 429;
        *code = ERR_RATE_LIMITED;
        return "too many connections from this address";
    }
    return NULL;
}

int http_guard_upgrade(struct herald *app, struct lws *wsi)
{
    /* lws has already answered 403 to an Upgrade it does not know and may have released
     * the headers (CVE-2025-11677): `in` is not read, and an Upgrade header that cannot be
     * read back as "websocket" only hangs up */
    char up[16] = "";
    if (lws_hdr_copy(wsi, up, sizeof up, WSI_TOKEN_UPGRADE) <= 0)
        return -1;
    if (strcasecmp(up, "h2c") == 0)
        return refuse_upgrade(app, wsi, 400, ERR_BAD_REQUEST,
                              "HTTP/2 is not offered: send HTTP/1.1 without Upgrade: h2c");
    if (strcasecmp(up, "websocket") != 0)
        return -1;
    unsigned status;
    enum errcode code;
    const char *why = admission(app, wsi, &status, &code);
    return why ? refuse_upgrade(app, wsi, status, code, why) : 0;
}
