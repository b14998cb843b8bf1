#include "rest.h"
#include "auth.h"
#include "channel.h"
#include "herald.h"
#include "history.h"
#include "publish.h"
#include "http_api.h"
#include "log.h"
#include "query.h"

#include <jansson.h>
#include <libwebsockets.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define IDEMPOTENCY_KEY_MAX 200

/* A request waiting for PostgreSQL. The session may close first: it then sets session to
 * NULL and the answer is dropped when it comes. */
struct rest_call {
    struct http_session *session;
    struct lws *wsi;
    char channel[CHANNEL_NAME_MAX + 1];
    struct query_history q;
    char key[IDEMPOTENCY_KEY_MAX + 1];
};

/* Stores a whole response and asks for a WRITEABLE callback to send it. */
static void prepare(struct lws *wsi, struct http_session *s, unsigned status, const char *body,
                    size_t len)
{
    char head[256];
    size_t h = http_json_head(head, sizeof head, status, len, false);
    free(s->response);
    s->response = malloc(LWS_PRE + h + len);
    if (!s->response)
        return;
    memcpy(s->response + LWS_PRE, head, h);
    memcpy(s->response + LWS_PRE + h, body, len);
    s->response_len = h + len;
    if (!s->wait_body)
        lws_callback_on_writable(wsi);
}

static void prepare_error(struct lws *wsi, struct http_session *s, unsigned status,
                          enum errcode code, const char *message)
{
    struct herald *app = lws_context_user(lws_get_context(wsi));
    app->metrics.client_errors[code]++;
    char body[768];
    prepare(wsi, s, status, body, http_error_body(body, sizeof body, code, message));
}

int rest_writable(struct lws *wsi, struct http_session *s)
{
    if (!s->response)
        return 0;
    int r = lws_write(wsi, (unsigned char *)s->response + LWS_PRE, s->response_len, LWS_WRITE_RAW);
    free(s->response);
    s->response = NULL;
    if (r < 0)
        return -1;
    return lws_http_transaction_completed(wsi) ? -1 : 0;
}

void rest_session_end(struct http_session *s)
{
    if (s->call)
        s->call->session = NULL;
    s->call = NULL;
    free(s->body);
    free(s->response);
    s->body = s->response = NULL;
}

static struct rest_call *call_new(struct lws *wsi, struct http_session *s, const char *channel)
{
    struct rest_call *c = calloc(1, sizeof *c);
    if (!c)
        return NULL;
    c->session = s;
    c->wsi = wsi;
    snprintf(c->channel, sizeof c->channel, "%s", channel);
    s->call = c;
    return c;
}

/* The session the answer is for, or NULL when it closed meanwhile (c is freed then). */
static struct http_session *call_end(struct rest_call *c)
{
    struct http_session *s = c->session;
    if (s)
        s->call = NULL;
    return s;
}

/* A page of catch-up: all or nothing, like a WebSocket resume. */
static void on_page(void *arg, const struct history_page *page, const char *err)
{
    struct rest_call *c = arg;
    struct http_session *s = call_end(c);
    if (!s) {
        free(c);
        return;
    }
    if (!page) {
        prepare_error(c->wsi, s, 503, ERR_HISTORY_UNAVAILABLE, "the history is unavailable");
        free(c);
        return;
    }
    uint64_t since = c->q.since;
    const char *code = NULL;
    if (since > page->head)
        code = "history_reset";
    else if (since < page->head && (!page->first_kept || page->first_kept > since + 1))
        code = "history_expired";
    char *out = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&out, &len);
    if (f) {
        fprintf(f, "{\"channel\":\"%s\",\"seq\":%llu", c->channel, (unsigned long long)page->head);
        if (page->exists)
            fprintf(f, ",\"epoch\":\"%s\"", page->epoch);
        if (code) {
            fprintf(f, ",\"recovered\":false,\"code\":\"%s\",\"more\":false,\"messages\":[]}\n",
                    code);
        } else {
            bool more = page->n == c->q.limit && page->rows[page->n - 1].seq < page->head;
            fprintf(f, ",\"recovered\":true,\"more\":%s,\"messages\":[", more ? "true" : "false");
            for (size_t i = 0; i < page->n; i++) {
                if (i)
                    fputc(',', f);
                fwrite(page->rows[i].envelope, 1, page->rows[i].len, f);
            }
            fputs("]}\n", f);
        }
        fclose(f);
    }
    if (out)
        prepare(c->wsi, s, 200, out, len);
    else
        prepare_error(c->wsi, s, 503, ERR_INTERNAL, "out of memory");
    free(out);
    free(c);
}

static void on_published(void *arg, uint64_t seq, const char *epoch, bool duplicate,
                         const char *err)
{
    struct rest_call *c = arg;
    struct http_session *s = call_end(c);
    if (s && err) {
        bool bad = strstr(err, "invalid") != NULL;
        prepare_error(c->wsi, s, bad ? 400 : 503, bad ? ERR_BAD_REQUEST : ERR_HISTORY_UNAVAILABLE,
                      bad ? "the message was refused" : "the history is unavailable");
    } else if (s) {
        char body[320];
        int n = snprintf(body, sizeof body, "{\"channel\":\"%s\",\"seq\":%llu,\"epoch\":\"%s\"}\n",
                         c->channel, (unsigned long long)seq, epoch);
        prepare(c->wsi, s, 201, body, (size_t)n);
    }
    (void)duplicate;
    free(c);
}

/* lws keeps URL arguments decoded, one per fragment; they are encoded again so that the
 * strict parser sees exactly what a client could have sent. */
static int read_query(struct lws *wsi, struct query_history *q, char *err, size_t errlen)
{
    char raw[QUERY_LEN_MAX], frag[256];
    size_t n = 0;
    for (int i = 0; lws_hdr_copy_fragment(wsi, frag, sizeof frag, WSI_TOKEN_HTTP_URI_ARGS, i) > 0;
         i++) {
        for (const char *p = frag; *p && n + 4 < sizeof raw; p++) {
            unsigned char ch = (unsigned char)*p;
            bool plain = (ch >= '0' && ch <= '9') || (ch >= 'a' && ch <= 'z') ||
                         (ch >= 'A' && ch <= 'Z') || (ch == '=' && p == strchr(frag, '='));
            n += (size_t)snprintf(raw + n, sizeof raw - n, plain ? "%c" : "%%%02X", ch);
        }
        if (n + 2 < sizeof raw)
            raw[n++] = '&';
    }
    return query_parse_history(raw, n ? n - 1 : 0, q, err, errlen);
}

/* /v1/channels/{C}/messages -> C, validated. */
static bool route_channel(const char *uri, char *out)
{
    static const char prefix[] = "/v1/channels/", suffix[] = "/messages";
    size_t len = strlen(uri);
    if (strncmp(uri, prefix, sizeof prefix - 1) != 0 || len < sizeof prefix + sizeof suffix - 2 ||
        strcmp(uri + len - (sizeof suffix - 1), suffix) != 0)
        return false;
    size_t n = len - (sizeof prefix - 1) - (sizeof suffix - 1);
    if (!channel_name_valid(uri + sizeof prefix - 1, n))
        return false;
    memcpy(out, uri + sizeof prefix - 1, n);
    out[n] = '\0';
    return true;
}

/* Credentials (a JWT or the API key) when auth is on: 401 without valid ones, 403 outside
 * the token's channels (GET) or publish (POST) patterns. */
static bool authorized(struct herald *app, struct lws *wsi, struct http_session *s,
                       const char *channel, bool post)
{
    if (!auth_api_required(app))
        return true;
    char why[160];
    struct principal p;
    if (auth_identify(app, wsi, true, &p, why, sizeof why) != AUTH_OK) {
        app->metrics.auth_failures++;
        prepare_error(wsi, s, 401, ERR_UNAUTHORIZED, why);
        return false;
    }
    size_t len = strlen(channel);
    bool ok = post ? auth_may_publish(&p, channel, len) : auth_may_read(&p, channel, len);
    auth_release(&p);
    if (!ok)
        prepare_error(wsi, s, 403, ERR_FORBIDDEN,
                      post ? "the token does not allow publishing here"
                           : "the token does not allow this channel");
    return ok;
}

int rest_begin(struct herald *app, struct lws *wsi, struct http_session *s, const char *uri)
{
    char channel[CHANNEL_NAME_MAX + 1], err[160];
    bool post = lws_hdr_total_length(wsi, WSI_TOKEN_POST_URI) > 0;
    s->wait_body = post;
    if (!route_channel(uri, channel)) {
        prepare_error(wsi, s, strncmp(uri, "/v1/channels/", 13) == 0 ? 400 : 404,
                      strncmp(uri, "/v1/channels/", 13) == 0 ? ERR_BAD_REQUEST : ERR_NOT_FOUND,
                      "routes: /v1/channels/{channel}/messages (channel: 1-200 bytes of "
                      "A-Z a-z 0-9 _ - . : @ =)");
        return 0;
    }
    if (!authorized(app, wsi, s, channel, post))
        return 0;
    if (!app->db) {
        prepare_error(wsi, s, 503, ERR_HISTORY_UNAVAILABLE,
                      "HERALD_DATABASE_URL is not set: no history");
        return 0;
    }
    struct rest_call *c = call_new(wsi, s, channel);
    if (!c)
        return -1;
    if (post) {
        int klen = lws_hdr_custom_length(wsi, "idempotency-key:", 16);
        if (klen > IDEMPOTENCY_KEY_MAX) {
            call_end(c);
            free(c);
            prepare_error(wsi, s, 400, ERR_BAD_REQUEST, "Idempotency-Key is too long");
            return 0;
        }
        if (klen > 0)
            lws_hdr_custom_copy(wsi, c->key, sizeof c->key, "idempotency-key:", 16);
        return 0; /* the body comes next */
    }
    if (read_query(wsi, &c->q, err, sizeof err) < 0) {
        call_end(c);
        free(c);
        prepare_error(wsi, s, 400, ERR_BAD_REQUEST, err);
        return 0;
    }
    if (history_fetch(app, channel, c->q.since, c->q.limit, on_page, c) < 0) {
        call_end(c);
        free(c);
        prepare_error(wsi, s, 503, ERR_HISTORY_UNAVAILABLE, "the history is unavailable");
    }
    return 0;
}

int rest_body(struct herald *app, struct lws *wsi, struct http_session *s, const void *in,
              size_t len)
{
    if (s->body_too_large || s->body_len + len > (size_t)app->cfg->max_publish_bytes) {
        s->body_too_large = true;
        return 0;
    }
    char *b = realloc(s->body, s->body_len + len + 1);
    if (!b)
        return -1;
    memcpy(b + s->body_len, in, len);
    s->body = b;
    s->body_len += len;
    s->body[s->body_len] = '\0';
    return 0;
}

int rest_body_done(struct herald *app, struct lws *wsi, struct http_session *s)
{
    struct rest_call *c = s->call;
    s->wait_body = false;
    if (!c) {
        if (s->response)
            lws_callback_on_writable(wsi); /* refused before the body came */
        return 0;
    }
    json_error_t jerr;
    json_t *data = s->body_too_large
                       ? NULL
                       : json_loadb(s->body ? s->body : "", s->body_len, JSON_DECODE_ANY, &jerr);
    const char *why = s->body_too_large ? "the body is larger than HERALD_MAX_PUBLISH_BYTES"
                      : !data           ? "the body must be JSON (the message's data)"
                                        : NULL;
    json_decref(data);
    if (why) {
        call_end(c);
        free(c);
        prepare_error(wsi, s, s->body_too_large ? 413 : 400,
                      s->body_too_large ? ERR_TOO_LARGE : ERR_BAD_REQUEST, why);
        return 0;
    }
    if (publish_durable(app, c->channel, s->body, c->key[0] ? c->key : NULL, on_published, c) < 0) {
        call_end(c);
        free(c);
        prepare_error(wsi, s, 503, ERR_HISTORY_UNAVAILABLE, "the history is unavailable");
    }
    return 0;
}
