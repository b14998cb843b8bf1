#include "server.h"
#include "client.h"
#include "protocol.h"
#include "herald.h"
#include "http_api.h"
#include "http_framing.h"
#include "http_guard.h"
#include "listener.h"
#include "log.h"
#include "rest.h"
#include "stream.h"

#include <libwebsockets.h>
#include <stdlib.h>
#include <string.h>

/* Bytes lws reads per RECEIVE callback; a bigger message comes in several pieces. It is
 * allocated per connection, so it is kept small (idle memory per connection matters). */
#define RX_BUFFER_BYTES 1024

struct server {
    struct herald *app;
    struct lws_context *ctx;
    void *loops[1];
    struct lws_http_mount mounts[5];
    struct listener *listener; /* workers only: their own SO_REUSEPORT socket */
};

/* permessage-deflate (offered only with HERALD_DEFLATE) is accepted unless the client caps
 * the server's window: Herald compresses each message once for every connection, with the
 * full window. Returns nonzero to decline; the connection then goes on uncompressed. */
static int confirm_extension(struct client *c, struct lws *wsi, const char *name)
{
    char offer[256];
    if (!c || strcmp(name, "permessage-deflate") != 0)
        return 1;
    if (lws_hdr_copy(wsi, offer, sizeof offer, WSI_TOKEN_EXTENSIONS) < 0 ||
        strstr(offer, "server_max_window_bits"))
        return 1;
    c->deflate = true;
    return 0;
}

/* The events of a request's head go to whichever protocol the connection is bound to: the
 * WebSocket protocol for its first request (the vhost default), "http" after a keep-alive
 * answer. Both callbacks pass them here. Returns 1 when reason is one of them, with *rc
 * what the callback returns. */
static int front_door(struct herald *app, struct lws *wsi, enum lws_callback_reasons reason,
                      int *rc)
{
    switch (reason) {
    case LWS_CALLBACK_FILTER_HTTP_CONNECTION:
        *rc = http_guard_request(app, wsi);
        return 1;
    case LWS_CALLBACK_HTTP_CONFIRM_UPGRADE:
        *rc = http_guard_upgrade(app, wsi);
        return 1;
    default:
        return 0;
    }
}

static int ws_callback(struct lws *wsi, enum lws_callback_reasons reason, void *user, void *in,
                       size_t len)
{
    struct client *c = user;
    struct herald *app = lws_context_user(lws_get_context(wsi));
    int rc;
    if (front_door(app, wsi, reason, &rc))
        return rc;
    switch (reason) {
    case LWS_CALLBACK_FILTER_PROTOCOL_CONNECTION:
        return 0; /* admitted by http_guard_upgrade */
    case LWS_CALLBACK_CONFIRM_EXTENSION_OKAY:
        return confirm_extension(c, wsi, in);
    case LWS_CALLBACK_ESTABLISHED:
        client_on_established(c, wsi, app);
        app->metrics.connections++;
        app->metrics.connections_total++;
        break;
    case LWS_CALLBACK_CLOSED:
        if (c && c->app) {
            protocol_client_gone(c);
            client_destroy(c);
            app->metrics.connections--;
        }
        break;
    case LWS_CALLBACK_WS_PEER_INITIATED_CLOSE:
        /* lws answers the close itself; nothing more may be written */
        if (c && c->app)
            client_close(c, LWS_CLOSE_STATUS_NORMAL, true);
        break;
    case LWS_CALLBACK_RECEIVE_PONG:
        if (c && c->app)
            client_on_pong(c);
        break;
    case LWS_CALLBACK_TIMER:
        if (c && c->app)
            client_on_timer(c);
        break;
    case LWS_CALLBACK_SERVER_WRITEABLE:
        return c && c->app ? client_on_writable(c) : 0;
    case LWS_CALLBACK_RECEIVE:
        if (c && c->app)
            client_on_receive(c, in, len, lws_is_first_fragment(wsi), lws_is_final_fragment(wsi),
                              lws_frame_is_binary(wsi), protocol_handle);
        /* lws 4.1 inflates a compressed message 1 KiB per pass and, on a libuv loop, runs
         * the pass that delivers the rest from an idle handler it stops after one pass:
         * the tail would wait for the next input. Waking its service pipe runs one more
         * pass; each part that is not the last asks again. */
        if (c && c->deflate && !c->close_code && !lws_is_final_fragment(wsi))
            lws_cancel_service(lws_get_context(wsi));
        break;
    default:
        break;
    }
    return 0;
}

static int http_callback(struct lws *wsi, enum lws_callback_reasons reason, void *user, void *in,
                         size_t len)
{
    struct herald *app = lws_context_user(lws_get_context(wsi));
    struct http_session *s = http_session_get(wsi);
    char uri[256] = "", channel[CHANNEL_NAME_MAX + 1] = "";
    enum v1_route route;
    int rc;
    if (front_door(app, wsi, reason, &rc))
        return rc;
    if (s && s->stream &&
        (reason == LWS_CALLBACK_HTTP || reason == LWS_CALLBACK_HTTP_BODY ||
         reason == LWS_CALLBACK_HTTP_BODY_COMPLETION))
        return -1; /* input behind a stream's request: the stream ends (stream.h) */
    switch (reason) {
    case LWS_CALLBACK_FILTER_PROTOCOL_CONNECTION:
        /* a handshake that named the "http" subprotocol; http_guard_upgrade refuses it
         * first, this is the second lock */
        http_guard_refuse(app, wsi, 400, ERR_BAD_REQUEST, "unsupported subprotocol");
        return -1;
    case LWS_CALLBACK_RAW_ADOPT:
        /* lws turns a CONNECT request into a raw socket bound to this protocol */
        http_guard_refuse(app, wsi, 405, ERR_BAD_REQUEST, "method not allowed: GET and POST only");
        return -1;
    case LWS_CALLBACK_HTTP:
        if (rest_stray_request(wsi))
            return 0;
        if (lws_hdr_copy(wsi, uri, sizeof uri, WSI_TOKEN_POST_URI) <= 0)
            lws_hdr_copy(wsi, uri, sizeof uri, WSI_TOKEN_GET_URI);
        route = v1_route_parse(uri, channel);
        if (route == V1_STREAM && lws_hdr_total_length(wsi, WSI_TOKEN_GET_URI) > 0)
            return stream_begin(app, wsi, channel);
        if (strncmp(uri, "/v1/", 4) == 0)
            return rest_begin(app, wsi, route, channel);
        return http_api_serve(app, wsi);
    case LWS_CALLBACK_HTTP_BODY:
        return s ? rest_body(app, wsi, s, in, len) : 0;
    case LWS_CALLBACK_HTTP_BODY_COMPLETION:
        return s ? rest_body_done(app, wsi, s) : 0;
    case LWS_CALLBACK_HTTP_WRITEABLE:
        if (s && s->stream)
            return stream_writable(app, s);
        if (rest_writable(wsi) < 0)
            return -1;
        return lws_callback_http_dummy(wsi, reason, user, in, len);
    case LWS_CALLBACK_HTTP_FILE_COMPLETION:
        http_guard_file_done(wsi);
        return lws_callback_http_dummy(wsi, reason, user, in, len);
    case LWS_CALLBACK_WSI_DESTROY:
        stream_gone(wsi);
        rest_session_free(app, wsi);
        return 0;
    default:
        return lws_callback_http_dummy(wsi, reason, user, in, len);
    }
}

static const struct lws_protocols protocols[] = {
    {"http", http_callback, 0, 0, 0, NULL, 0},
    {"herald", ws_callback, sizeof(struct client), RX_BUFFER_BYTES, 0, NULL, HERALD_WRITE_BATCH},
    {NULL, NULL, 0, 0, 0, NULL, 0},
};

/* Receiving, lws inflates what clients compress; sending, Herald writes its own compressed
 * frames (frame_deflated), so lws's per-connection compressor is never used. */
static const struct lws_extension extensions[] = {
    {"permessage-deflate", lws_extension_callback_pm_deflate,
     "permessage-deflate; client_max_window_bits"},
    {NULL, NULL, NULL},
};

/* Browsers send no Sec-WebSocket-Protocol: make "herald" the protocol they get. */
static const struct lws_protocol_vhost_options pvo_default = {NULL, NULL, "default", "1"};
static const struct lws_protocol_vhost_options pvo = {NULL, &pvo_default, "herald", ""};

/* The API routes go to the "http" protocol's callback; with HERALD_STATIC_DIR set, every
 * other path is a file under it. */
static void build_mounts(struct server *srv)
{
    static const char *const api[] = {"/healthz", "/readyz", "/metrics", "/v1"};
    struct lws_http_mount *m = srv->mounts;
    size_t n = 0;
    for (; n < sizeof api / sizeof api[0]; n++) {
        m[n].mountpoint = api[n];
        m[n].mountpoint_len = (unsigned char)strlen(api[n]);
        m[n].origin = "http";
        m[n].origin_protocol = LWSMPRO_CALLBACK;
        m[n].mount_next = &m[n + 1];
    }
    if (srv->app->cfg->static_dir[0]) {
        /* a callback mount, not LWSMPRO_FILE: see static_files.c */
        m[n].mountpoint = "/";
        m[n].mountpoint_len = 1;
        m[n].origin = "http";
        m[n].origin_protocol = LWSMPRO_CALLBACK;
        n++;
    }
    m[n - 1].mount_next = NULL;
}

/* lws's own log lines become JSON lines like ours. The line lws writes for every refused
 * handshake is left out: refusals are counted and logged by http_guard.c. */
static void lws_log_to_json(int level, const char *line)
{
    char msg[512];
    if (strstr(line, "User code denied connection"))
        return;
    size_t n = strlen(line);
    while (n && (line[n - 1] == '\n' || line[n - 1] == '\r'))
        n--;
    snprintf(msg, sizeof msg, "%.*s", (int)n, line);
    log_emit(level == LLL_ERR ? LOG_ERROR : LOG_WARN, "lws", "%s", msg);
}

struct server *server_start(struct herald *app)
{
    struct server *srv = calloc(1, sizeof *srv);
    if (!srv)
        return NULL;
    srv->app = app;
    srv->loops[0] = app->loop;
    build_mounts(srv);
    lws_set_log_level(LLL_ERR | LLL_WARN, lws_log_to_json);

    struct lws_context_creation_info info;
    memset(&info, 0, sizeof info);
    const char *host = app->cfg->listen_host;
    info.port = app->cfg->listen_port;
    info.iface = host[0] && strcmp(host, "0.0.0.0") != 0 ? host : NULL;
    info.protocols = protocols;
    info.pvo = &pvo;
    info.mounts = srv->mounts;
    info.user = app;
    info.foreign_loops = srv->loops;
    /* No LWS_SERVER_OPTION_VALIDATE_UTF8: lws would close the connection, while Herald
     * answers a bad frame with an error and keeps it open (the JSON parser checks UTF-8). */
    info.options = LWS_SERVER_OPTION_LIBUV | LWS_SERVER_OPTION_UV_NO_SIGSEGV_SIGFPE_SPIN;
    /* workers of one supervisor share the port through their own sockets (listener.c); a
     * lone process lets lws listen, exclusively, so a second instance started on the same
     * port by mistake fails instead of sharing */
    if (app->cfg->worker)
        info.port = CONTEXT_PORT_NO_LISTEN_SERVER;
    /* lws 4.1 otherwise retries a failed bind in the background and looks started */
    info.options |= LWS_SERVER_OPTION_FAIL_UPON_UNABLE_TO_BIND;
    if (strchr(host, '.') || strcmp(host, "0.0.0.0") == 0)
        info.options |= LWS_SERVER_OPTION_DISABLE_IPV6;
    info.timeout_secs = 20;
    /* after an answer, lws closes an HTTP keep-alive connection idle this long */
    info.keepalive_timeout = (int)(app->cfg->http_idle_timeout_ms / 1000);
    /* the whole request head (request line, headers, ?token=) lws keeps while parsing:
     * room for a JWT of several KiB; the memory is held only while a head is parsed */
    info.max_http_header_data = HTTP_HEAD_MAX;
    if (app->cfg->tls_cert[0]) {
        info.options |= LWS_SERVER_OPTION_DO_SSL_GLOBAL_INIT;
        info.ssl_cert_filepath = app->cfg->tls_cert;
        info.ssl_private_key_filepath = app->cfg->tls_key[0] ? app->cfg->tls_key : NULL;
        info.alpn = "http/1.1"; /* no HTTP/2: frames are written raw on HTTP/1.1 */
    }
    if (app->cfg->deflate)
        info.extensions = extensions;
    info.pcontext = &app->lws; /* lws clears it when the context is wholly destroyed */

    srv->ctx = lws_create_context(&info);
    if (!srv->ctx) {
        log_error("listen_failed", "cannot start the server on %s", app->cfg->listen);
        free(srv);
        return NULL;
    }
    app->lws = srv->ctx;
    /* lws 4.1 returns a context even when its vhost failed (the bind, say) */
    struct lws_vhost *vh = lws_get_vhost_by_name(srv->ctx, "default");
    if (!vh)
        log_error("listen_failed", "cannot start the server on %s", app->cfg->listen);
    if (app->cfg->worker && vh)
        srv->listener = listener_start(app, vh);
    if (!vh || (app->cfg->worker && !srv->listener)) {
        free(srv); /* the caller exits: the half-made context cannot be torn down cleanly */
        return NULL;
    }
    return srv;
}

void server_stop_listening(struct server *srv)
{
    listener_stop(srv->listener);
    srv->listener = NULL;
}

void server_stop(struct server *srv)
{
    if (!srv)
        return;
    server_stop_listening(srv);
    lws_context_destroy(srv->ctx);
    free(srv);
}
