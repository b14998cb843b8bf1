#include "rest.h"
#include "auth.h"
#include "channel.h"
#include "herald.h"
#include "history.h"
#include "publish.h"
#include "http_api.h"
#include "log.h"
#include "json_text.h"
#include "query.h"
#include "request.h"

#include <jansson.h>
#include <libwebsockets.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define IDEMPOTENCY_KEY_MAX 200
#define BATCH_MESSAGES_MAX  1000 /* messages in one POST /v1/messages */
#define MSG_REFUSED         "the message was refused"
#define MSG_UNAVAILABLE     "the history is unavailable"

struct batch;

/* A request on its way to PostgreSQL. The session may close first: it then sets session to
 * NULL and the answer is dropped when it comes (or frees the call, if nothing was sent). */
struct rest_call {
    struct http_session *session;
    struct lws *wsi;
    bool sent; /* handed to PostgreSQL: its answer frees the call */
    char channel[CHANNEL_NAME_MAX + 1];
    struct query_history q;
    char key[IDEMPOTENCY_KEY_MAX + 1];
    bool is_batch;        /* POST /v1/messages */
    struct principal who; /* its caller, when auth is on: checked per channel in the body */
    bool has_who;
    struct batch *batch; /* its messages, once the body was read */
};

/* One message of POST /v1/messages, then its outcome. */
struct batch_entry {
    struct rest_call *call;
    const char *channel; /* inside batch->root */
    uint64_t seq;
    char epoch[REQUEST_EPOCH_MAX];
    enum { QUEUED, STORED, REFUSED, UNAVAILABLE } outcome;
};

struct batch {
    json_t *root; /* the parsed body */
    size_t n, pending;
    struct batch_entry entries[];
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

static void call_free(struct rest_call *c)
{
    if (c->has_who)
        auth_release(&c->who);
    if (c->batch)
        json_decref(c->batch->root);
    free(c->batch);
    free(c);
}

void rest_session_end(struct http_session *s)
{
    if (s->call && s->call->sent)
        s->call->session = NULL;
    else if (s->call)
        call_free(s->call); /* its body never came */
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
        call_free(c);
        return;
    }
    if (!page) {
        prepare_error(c->wsi, s, 503, ERR_HISTORY_UNAVAILABLE, MSG_UNAVAILABLE);
        call_free(c);
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
    call_free(c);
}

/* PostgreSQL refused the message itself (herald_publish_batch raises "herald: invalid ..."):
 * retrying will not help, unlike an outage. */
static bool refused(const char *err)
{
    return strstr(err, "invalid") != NULL;
}

static void on_published(void *arg, uint64_t seq, const char *epoch, bool duplicate,
                         const char *err)
{
    struct rest_call *c = arg;
    struct http_session *s = call_end(c);
    if (s && err) {
        bool bad = refused(err);
        prepare_error(c->wsi, s, bad ? 400 : 503, bad ? ERR_BAD_REQUEST : ERR_HISTORY_UNAVAILABLE,
                      bad ? MSG_REFUSED : MSG_UNAVAILABLE);
    } else if (s) {
        char body[320];
        int n = snprintf(body, sizeof body, "{\"channel\":\"%s\",\"seq\":%llu,\"epoch\":\"%s\"}\n",
                         c->channel, (unsigned long long)seq, epoch);
        prepare(c->wsi, s, 201, body, (size_t)n);
    }
    (void)duplicate;
    call_free(c);
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

/* The caller's credentials (a JWT or the API key): false, with 401 prepared, without valid
 * ones. On true, who is to be released with auth_release. */
static bool identify(struct herald *app, struct lws *wsi, struct http_session *s,
                     struct principal *who)
{
    char why[160];
    if (auth_identify(app, wsi, true, who, why, sizeof why) == AUTH_OK)
        return true;
    app->metrics.auth_failures++;
    prepare_error(wsi, s, 401, ERR_UNAUTHORIZED, why);
    return false;
}

/* When auth is on: 401 without credentials, 403 outside the token's channels (GET) or
 * publish (POST) patterns. */
static bool authorized(struct herald *app, struct lws *wsi, struct http_session *s,
                       const char *channel, bool post)
{
    if (!auth_api_required(app))
        return true;
    struct principal p;
    if (!identify(app, wsi, s, &p))
        return false;
    size_t len = strlen(channel);
    bool ok = post ? auth_may_publish(&p, channel, len) : auth_may_read(&p, channel, len);
    auth_release(&p);
    if (!ok)
        prepare_error(wsi, s, 403, ERR_FORBIDDEN,
                      post ? "the token does not allow publishing here"
                           : "the token does not allow this channel");
    return ok;
}

static void call_drop(struct rest_call *c)
{
    call_end(c);
    call_free(c);
}

/* POST /v1/messages: the caller is identified now, its channels are checked once the body
 * has come. */
static int begin_batch(struct herald *app, struct lws *wsi, struct http_session *s)
{
    struct principal who;
    bool has_who = auth_api_required(app);
    if (has_who && !identify(app, wsi, s, &who))
        return 0;
    struct rest_call *c = app->db ? call_new(wsi, s, "") : NULL;
    if (!c) {
        if (has_who)
            auth_release(&who);
        if (app->db)
            return -1;
        prepare_error(wsi, s, 503, ERR_HISTORY_UNAVAILABLE,
                      "HERALD_DATABASE_URL is not set: no history");
        return 0;
    }
    c->is_batch = true;
    c->who = who;
    c->has_who = has_who;
    return 0;
}

int rest_begin(struct herald *app, struct lws *wsi, struct http_session *s, const char *uri)
{
    char channel[CHANNEL_NAME_MAX + 1], err[160];
    bool post = lws_hdr_total_length(wsi, WSI_TOKEN_POST_URI) > 0;
    s->wait_body = post;
    if (post && strcmp(uri, "/v1/messages") == 0)
        return begin_batch(app, wsi, s);
    if (!route_channel(uri, channel)) {
        bool bad = strncmp(uri, "/v1/channels/", 13) == 0;
        prepare_error(wsi, s, bad ? 400 : 404, bad ? ERR_BAD_REQUEST : ERR_NOT_FOUND,
                      "routes: GET and POST /v1/channels/{channel}/messages (channel: 1-200 "
                      "bytes of A-Z a-z 0-9 _ - . : @ =), POST /v1/messages");
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
            call_drop(c);
            prepare_error(wsi, s, 400, ERR_BAD_REQUEST, "Idempotency-Key is too long");
            return 0;
        }
        if (klen > 0)
            lws_hdr_custom_copy(wsi, c->key, sizeof c->key, "idempotency-key:", 16);
        return 0; /* the body comes next */
    }
    if (read_query(wsi, &c->q, err, sizeof err) < 0) {
        call_drop(c);
        prepare_error(wsi, s, 400, ERR_BAD_REQUEST, err);
        return 0;
    }
    c->sent = true;
    if (history_fetch(app, channel, c->q.since, c->q.limit, on_page, c) < 0) {
        call_drop(c);
        prepare_error(wsi, s, 503, ERR_HISTORY_UNAVAILABLE, MSG_UNAVAILABLE);
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

/* Checks a whole POST /v1/messages body before anything is queued, so that one bad message
 * refuses them all. Returns the parsed body, or NULL with the answer's status, code and
 * reason. */
static json_t *batch_parse(const struct rest_call *c, const char *body, size_t len,
                           unsigned *status, enum errcode *code, char *why, size_t cap)
{
    json_t *root = json_loadb(body, len, JSON_REJECT_DUPLICATES, NULL);
    json_t *msgs = json_object_get(root, "messages");
    size_t n = json_array_size(msgs);
    *status = 400;
    *code = ERR_BAD_REQUEST;
    if (json_object_size(root) != 1 || n == 0 || n > BATCH_MESSAGES_MAX) {
        snprintf(why, cap, "the body must be {\"messages\":[...]} with 1 to %d messages",
                 BATCH_MESSAGES_MAX);
        json_decref(root);
        return NULL;
    }
    for (size_t i = 0; i < n; i++) {
        json_t *m = json_array_get(msgs, i), *ch = json_object_get(m, "channel");
        json_t *key = json_object_get(m, "idempotency_key");
        size_t klen = json_string_length(key);
        const char *bad = !json_is_object(m) ? "is not an object"
                          : !json_is_string(ch) ||
                                  !channel_name_valid(json_string_value(ch), json_string_length(ch))
                              ? "needs a valid channel (1-200 bytes of A-Z a-z 0-9 _ - . : @ =)"
                          : !json_object_get(m, "data") ? "needs data"
                          : key && (!json_is_string(key) || klen == 0 || klen > IDEMPOTENCY_KEY_MAX)
                              ? "has an idempotency_key that is not a string of 1 to 200 bytes"
                          : json_object_size(m) != 2u + (key != NULL)
                              ? "has members other than channel, data and idempotency_key"
                              : NULL;
        if (!bad && c->has_who &&
            !auth_may_publish(&c->who, json_string_value(ch), json_string_length(ch))) {
            *status = 403;
            *code = ERR_FORBIDDEN;
            bad = "is on a channel the token does not allow publishing on";
        }
        if (bad) {
            snprintf(why, cap, "messages[%zu] %s", i, bad);
            json_decref(root);
            return NULL;
        }
    }
    return root;
}

/* Every message of the batch has its outcome: 201 when all are stored, else 503 (or 400
 * when PostgreSQL refused them all) with the error and every message's outcome, so that
 * the caller can retry (with idempotency keys, a retry of the whole batch is safe). */
static void batch_answer(struct rest_call *c)
{
    struct batch *b = c->batch;
    struct http_session *s = call_end(c);
    size_t failed = 0, unavailable = 0;
    for (size_t i = 0; i < b->n; i++) {
        failed += b->entries[i].outcome != STORED;
        unavailable += b->entries[i].outcome == UNAVAILABLE;
    }
    enum errcode code = unavailable ? ERR_HISTORY_UNAVAILABLE : ERR_BAD_REQUEST;
    char *out = NULL;
    size_t len = 0;
    FILE *f = s ? open_memstream(&out, &len) : NULL;
    if (f) {
        fputc('{', f);
        if (failed)
            fprintf(f,
                    "\"error\":{\"code\":\"%s\",\"message\":\"%zu of %zu messages were not "
                    "stored\"},",
                    errcode_name(code), failed, b->n);
        fputs("\"results\":[", f);
        for (size_t i = 0; i < b->n; i++) {
            const struct batch_entry *e = &b->entries[i];
            fprintf(f, "%s{\"channel\":\"%s\",", i ? "," : "", e->channel);
            if (e->outcome != STORED)
                fprintf(
                    f, "\"error\":{\"code\":\"%s\",\"message\":\"%s\"}}",
                    errcode_name(e->outcome == REFUSED ? ERR_BAD_REQUEST : ERR_HISTORY_UNAVAILABLE),
                    e->outcome == REFUSED ? MSG_REFUSED : MSG_UNAVAILABLE);
            else
                fprintf(f, "\"seq\":%llu,\"epoch\":\"%s\"}", (unsigned long long)e->seq, e->epoch);
        }
        fputs("]}\n", f);
        fclose(f);
    }
    if (out) {
        struct herald *app = lws_context_user(lws_get_context(c->wsi));
        if (failed)
            app->metrics.client_errors[code]++;
        prepare(c->wsi, s, !failed ? 201 : unavailable ? 503 : 400, out, len);
    } else if (s) {
        prepare_error(c->wsi, s, 503, ERR_INTERNAL, "out of memory");
    }
    free(out);
    call_free(c);
}

static void on_entry_published(void *arg, uint64_t seq, const char *epoch, bool duplicate,
                               const char *err)
{
    struct batch_entry *e = arg;
    struct batch *b = e->call->batch;
    e->seq = seq;
    e->outcome = !err ? STORED : refused(err) ? REFUSED : UNAVAILABLE;
    if (!err)
        snprintf(e->epoch, sizeof e->epoch, "%s", epoch);
    (void)duplicate;
    if (--b->pending == 0)
        batch_answer(e->call);
}

/* Queues every message of a checked batch, each with its data as the caller wrote it. */
static int batch_start(struct herald *app, struct rest_call *c, json_t *root, const char *body,
                       size_t len)
{
    json_t *msgs = json_object_get(root, "messages");
    size_t n = json_array_size(msgs);
    struct batch *b = calloc(1, sizeof *b + n * sizeof b->entries[0]);
    struct json_span *el = malloc(n * sizeof *el);
    struct json_span all;
    if (!b || !el || json_member_span(body, len, 0, "messages", &all) < 0 ||
        json_element_spans(body, len, all.off, el, n) != (long)n) {
        free(b);
        free(el);
        json_decref(root);
        return -1;
    }
    *b = (struct batch){.root = root, .n = n, .pending = n};
    c->batch = b;
    c->sent = true;
    for (size_t i = 0; i < n; i++) {
        json_t *m = json_array_get(msgs, i);
        struct batch_entry *e = &b->entries[i];
        struct json_span data;
        *e = (struct batch_entry){.call = c,
                                  .channel = json_string_value(json_object_get(m, "channel"))};
        const char *key = json_string_value(json_object_get(m, "idempotency_key"));
        if (json_member_span(body, len, el[i].off, "data", &data) < 0 ||
            publish_durable(app, e->channel, body + data.off, data.len, key, on_entry_published,
                            e) < 0) {
            e->outcome = UNAVAILABLE;
            b->pending--;
        }
    }
    free(el);
    if (b->pending == 0)
        batch_answer(c);
    return 0;
}

static void batch_body_done(struct herald *app, struct lws *wsi, struct http_session *s,
                            struct rest_call *c)
{
    unsigned status = 413;
    enum errcode code = ERR_TOO_LARGE;
    char why[160] = "the body is larger than HERALD_MAX_PUBLISH_BYTES";
    json_t *root = s->body_too_large ? NULL
                                     : batch_parse(c, s->body ? s->body : "", s->body_len, &status,
                                                   &code, why, sizeof why);
    if (!root) {
        call_drop(c);
        prepare_error(wsi, s, status, code, why);
    } else if (batch_start(app, c, root, s->body, s->body_len) < 0) {
        call_drop(c);
        prepare_error(wsi, s, 503, ERR_INTERNAL, "out of memory");
    }
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
    if (c->is_batch) {
        batch_body_done(app, wsi, s, c);
        return 0;
    }
    json_t *data = s->body_too_large
                       ? NULL
                       : json_loadb(s->body ? s->body : "", s->body_len, JSON_DECODE_ANY, NULL);
    const char *why = s->body_too_large ? "the body is larger than HERALD_MAX_PUBLISH_BYTES"
                      : !data           ? "the body must be JSON (the message's data)"
                                        : NULL;
    json_decref(data);
    if (why) {
        call_drop(c);
        prepare_error(wsi, s, s->body_too_large ? 413 : 400,
                      s->body_too_large ? ERR_TOO_LARGE : ERR_BAD_REQUEST, why);
        return 0;
    }
    c->sent = true;
    if (publish_durable(app, c->channel, s->body, s->body_len, c->key[0] ? c->key : NULL,
                        on_published, c) < 0) {
        call_drop(c);
        prepare_error(wsi, s, 503, ERR_HISTORY_UNAVAILABLE, MSG_UNAVAILABLE);
    }
    return 0;
}
