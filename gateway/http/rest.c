#include "rest.h"
#include "auth.h"
#include "channel.h"
#include "herald.h"
#include "history.h"
#include "hub.h"
#include "http_reply.h"
#include "http_framing.h"
#include "http_guard.h"
#include "json_text.h"
#include "presence.h"
#include "publish.h"
#include "query.h"

#include <jansson.h>
#include <libwebsockets.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <uv.h>

#define BATCH_MESSAGES_MAX 1000                /* messages in one POST /v1/messages */
#define QUERY_ARG_MAX      (HTTP_HEAD_MAX + 1) /* any argument of a head lws kept fits */
/* An idempotency key is stored under its caller's name, so that a co-publisher cannot take
 * a key first: "s/" for the API key, "u<len>:<sub>/" for a token, nothing with auth off. */
#define KEY_SPACE_MAX   (JWT_AUTH_SUB_MAX + 8)
#define STORED_KEY_MAX  (KEY_SPACE_MAX + IDEMPOTENCY_KEY_MAX)
#define MSG_REFUSED     "the message was refused"
#define MSG_UNAVAILABLE "the history is unavailable"
#define MSG_ROUTES                                                                                 \
    "routes: GET /v1/channels/{channel}, GET and POST /v1/channels/{channel}/messages, GET "       \
    "/v1/channels/{channel}/presence, GET /v1/channels/{channel}/stream (channel: 1-200 bytes of " \
    "A-Z a-z 0-9 _ - . : @ =), POST /v1/messages"

struct rest_batch;

/* A request on its way to PostgreSQL. The connection may close first: its session then
 * sets session to NULL, and the answer is dropped when it comes. */
struct rest_call {
    struct http_session *session;
    struct lws *wsi;
    struct herald *app;
    bool in_flight; /* handed to PostgreSQL: its answer frees the call */
    char channel[CHANNEL_NAME_MAX + 1];
    struct query_history q;
    char space[KEY_SPACE_MAX + 1]; /* the caller's idempotency key space */
    char key[STORED_KEY_MAX + 1];  /* a single publish's key, in that space; "" for none */
    bool is_batch;                 /* POST /v1/messages */
    struct principal who; /* its caller, when auth is on: checked per channel in the body */
    bool has_who;
    struct history_request read;
    struct publish_request publish;
    struct rest_batch *batch; /* its messages, once the body was read */
};

/* One message of POST /v1/messages, then its outcome. */
struct rest_batch_entry {
    struct rest_call *call;
    const char *channel; /* inside batch->root */
    uint64_t seq;
    char epoch[REQUEST_EPOCH_MAX];
    enum { QUEUED, STORED, REFUSED, UNAVAILABLE } outcome;
    struct publish_request publish;
};

struct rest_batch {
    json_t *root; /* the parsed body */
    size_t n, pending;
    struct rest_batch_entry entries[];
};

/* ------------------------------------------------------------------------------------------
 * The session: one request at a time, one answer each */

static void release_body(struct herald *app, struct http_session *s)
{
    free(s->body);
    s->body = NULL;
    s->body_len = 0;
    app->http_body_bytes -= s->reserved;
    s->reserved = 0;
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

/* The sessions reading a body, swept once a second for HERALD_BODY_TIMEOUT: lws re-arms its
 * own timeout with every piece of body, and nothing calls Herald while a body stalls. */
#define BODY_SWEEP_MS 1000

struct rest {
    struct herald *app;
    uv_timer_t sweep;
    struct http_session *bodies;
};

static void set_phase(struct herald *app, struct http_session *s, enum rest_phase phase)
{
    struct rest *r = app->rest;
    if (!r) { /* shutting down: lws ends the last connections after rest_free */
        s->phase = phase;
        return;
    }
    if (s->phase == REST_BODY && phase != REST_BODY) {
        if (s->body_prev)
            s->body_prev->body_next = s->body_next;
        else
            r->bodies = s->body_next;
        if (s->body_next)
            s->body_next->body_prev = s->body_prev;
        s->body_prev = s->body_next = NULL;
    } else if (s->phase != REST_BODY && phase == REST_BODY) {
        s->body_prev = NULL;
        s->body_next = r->bodies;
        if (r->bodies)
            r->bodies->body_prev = s;
        r->bodies = s;
    }
    s->phase = phase;
}

static void on_sweep(uv_timer_t *t)
{
    struct rest *r = t->data;
    uint64_t now = herald_now_ms(r->app);
    for (struct http_session *s = r->bodies, *next; s; s = next) {
        next = s->body_next; /* the kill below frees s */
        if (now - s->started_ms <= (uint64_t)r->app->cfg->body_timeout_ms)
            continue;
        if (!s->too_large) /* its 413 is out already */
            http_guard_refuse(r->app, s->wsi, 408, ERR_BAD_REQUEST,
                              "the body did not arrive within HERALD_BODY_TIMEOUT");
        lws_set_timeout(s->wsi, PENDING_TIMEOUT_USER_OK, LWS_TO_KILL_SYNC);
    }
}

struct rest *rest_new(struct herald *app)
{
    struct rest *r = calloc(1, sizeof *r);
    if (!r)
        return NULL;
    r->app = app;
    uv_timer_init(app->loop, &r->sweep);
    r->sweep.data = r;
    uv_timer_start(&r->sweep, on_sweep, BODY_SWEEP_MS, BODY_SWEEP_MS);
    return r;
}

static void sweep_closed(uv_handle_t *h)
{
    free(h->data);
}

void rest_free(struct rest *r)
{
    if (!r)
        return;
    uv_timer_stop(&r->sweep);
    uv_close((uv_handle_t *)&r->sweep, sweep_closed);
}

/* Back to no request: what the request held goes (a call in flight is orphaned: its
 * answer is dropped when it comes). */
static void session_reset(struct herald *app, struct http_session *s)
{
    if (s->call && s->call->in_flight)
        s->call->session = NULL;
    else if (s->call)
        call_free(s->call);
    s->call = NULL;
    release_body(app, s);
    free(s->response);
    s->response = NULL;
    s->response_len = 0;
    s->extra[0] = '\0';
    set_phase(app, s, REST_IDLE);
    s->refused = false;
    s->too_large = false;
}

void rest_session_free(struct herald *app, struct lws *wsi)
{
    struct http_session *s = http_session_get(wsi);
    if (!s)
        return;
    session_reset(app, s);
    free(s);
    lws_set_opaque_user_data(wsi, NULL);
}

/* Input where none belongs (see rest.h): the connection closes after the answer. */
static void stray(struct http_session *s)
{
    s->stray = true;
}

/* Room for an answer's body of len bytes, with headroom for lws and the head in front;
 * NULL when out of memory. */
#define HEAD_ROOM (256 + CORS_LINES_MAX + sizeof((struct http_session *)0)->extra)

static char *answer_room(struct http_session *s, size_t len)
{
    free(s->response);
    s->response = malloc(LWS_PRE + HEAD_ROOM + len);
    s->response_len = 0;
    if (!s->response)
        return NULL;
    s->response_len = len;
    return s->response + LWS_PRE + HEAD_ROOM;
}

/* Writes the prepared answer (if any) whole, saying `connection: close` when hang_up.
 * Returns whether the connection must close after it. */
static bool write_answer(struct lws *wsi, struct http_session *s, bool hang_up)
{
    if (!s->response)
        return true;
    char head[HEAD_ROOM], extra[sizeof s->cors + sizeof s->extra];
    snprintf(extra, sizeof extra, "%s%s", s->cors, s->extra);
    size_t h = http_json_head(head, sizeof head, s->status, s->response_len, hang_up,
                              extra[0] ? extra : NULL);
    char *start = s->response + LWS_PRE + HEAD_ROOM - h;
    memcpy(start, head, h);
    return lws_write(wsi, (unsigned char *)start, h + s->response_len, LWS_WRITE_RAW) < 0 ||
           hang_up;
}

/* Writes the answer now, whole: what the socket does not take, lws keeps and sends as it
 * drains (then completes the transaction). The connection has read nothing since the
 * request was whole, so a following request is parsed only now, after the answer; a
 * stray one (see rest.h) closes it. */
static void write_now(struct herald *app, struct lws *wsi, struct http_session *s)
{
    bool hang_up = write_answer(wsi, s, s->stray);
    session_reset(app, s);
    s->stray = false;
    if (hang_up || lws_http_transaction_completed(wsi)) {
        /* closed from the connection's next WRITEABLE, once lws has sent what it kept */
        s->hang_up = true;
        lws_rx_flow_control(wsi, 1);
        lws_callback_on_writable(wsi);
        return;
    }
    lws_rx_flow_control(wsi, 1); /* s may be gone: lws bound the connection again */
}

int rest_writable(struct lws *wsi)
{
    struct http_session *s = http_session_get(wsi);
    return s && s->hang_up ? -1 : 0;
}

/* The body is in place: send it with status. While a refused request's body is still
 * arriving it waits for the body's end. */
static void answer_send(struct herald *app, struct lws *wsi, struct http_session *s,
                        unsigned status)
{
    s->status = status;
    if (s->phase == REST_BODY) {
        s->refused = true;
        return;
    }
    write_now(app, wsi, s);
}

static void answer(struct herald *app, struct lws *wsi, struct http_session *s, unsigned status,
                   const char *body, size_t len)
{
    char *room = answer_room(s, len);
    if (room)
        memcpy(room, body, len);
    answer_send(app, wsi, s, status);
}

static void answer_error(struct herald *app, struct lws *wsi, struct http_session *s,
                         unsigned status, enum errcode code, const char *message)
{
    app->metrics.client_errors[code]++;
    char body[768];
    answer(app, wsi, s, status, body, http_error_body(body, sizeof body, code, message));
}

void rest_answer(struct herald *app, struct lws *wsi, struct http_session *s, unsigned status,
                 const char *extra, const char *body, size_t len)
{
    snprintf(s->extra, sizeof s->extra, "%s", extra ? extra : "");
    answer(app, wsi, s, status, body, len);
}

void rest_answer_error(struct herald *app, struct lws *wsi, struct http_session *s, unsigned status,
                       enum errcode code, const char *message)
{
    answer_error(app, wsi, s, status, code, message);
}

/* The session the answer is for, or NULL when the connection closed meanwhile. */
static struct http_session *call_end(struct rest_call *c)
{
    struct http_session *s = c->session;
    if (s)
        s->call = NULL;
    return s;
}

static struct rest_call *call_new(struct herald *app, struct lws *wsi, struct http_session *s,
                                  const char *channel)
{
    struct rest_call *c = calloc(1, sizeof *c);
    if (!c)
        return NULL;
    c->session = s;
    c->wsi = wsi;
    c->app = app;
    snprintf(c->channel, sizeof c->channel, "%s", channel);
    s->call = c;
    return c;
}

/* ------------------------------------------------------------------------------------------
 * GET /v1/channels/{C}/messages */

/* The page as JSON, in one allocation with LWS_PRE bytes of headroom: the rows are copied
 * once, from libpq's result into the answer. */
static void answer_page(struct lws *wsi, struct http_session *s, const struct rest_call *c,
                        const struct history_page *page)
{
    uint64_t since = c->q.since;
    const char *code = NULL;
    if (since > page->head)
        code = "history_reset";
    else if (since < page->head && (!page->first_kept || page->first_kept > since + 1))
        code = "history_expired";
    char start[256], end[96];
    int n = snprintf(start, sizeof start, "{\"channel\":\"%s\",\"seq\":%llu%s%s%s", c->channel,
                     (unsigned long long)page->head, page->exists ? ",\"epoch\":\"" : "",
                     page->exists ? page->epoch : "", page->exists ? "\"" : "");
    int m = code
                ? snprintf(end, sizeof end,
                           ",\"recovered\":false,\"code\":\"%s\",\"more\":false,\"messages\":[]}\n",
                           code)
                : snprintf(end, sizeof end, ",\"recovered\":true,\"more\":%s,\"messages\":[",
                           page->cut ? "true" : "false");
    size_t size = (size_t)n + (size_t)m + 3;
    for (size_t i = 0; !code && i < page->n; i++)
        size += page->rows[i].len + 1;
    char *body = answer_room(s, size);
    if (!body) {
        answer_send(c->app, wsi, s, 503);
        return;
    }
    size_t len = 0;
    memcpy(body, start, (size_t)n);
    len += (size_t)n;
    memcpy(body + len, end, (size_t)m);
    len += (size_t)m;
    for (size_t i = 0; !code && i < page->n; i++) {
        if (i)
            body[len++] = ',';
        memcpy(body + len, page->rows[i].envelope, page->rows[i].len);
        len += page->rows[i].len;
    }
    if (!code) {
        memcpy(body + len, "]}\n", 3);
        len += 3;
    }
    s->response_len = len;
    answer_send(c->app, wsi, s, 200);
}

/* A page of catch-up: all or nothing, like a WebSocket resume. */
static void on_page(void *arg, const struct history_page *page, const char *err)
{
    struct rest_call *c = arg;
    struct http_session *s = call_end(c);
    if (s && !page)
        answer_error(c->app, c->wsi, s, 503, ERR_HISTORY_UNAVAILABLE, MSG_UNAVAILABLE);
    else if (s)
        answer_page(c->wsi, s, c, page);
    (void)err;
    call_free(c);
}

static int history_pair(void *arg, const char *key, size_t klen, const char *val, size_t vlen,
                        char *err, size_t errlen)
{
    return query_history_pair(arg, key, klen, val, vlen, err, errlen);
}

static int read_query(struct lws *wsi, struct query_history *q, char *err, size_t errlen)
{
    struct query_history_parser parser;
    query_history_begin(&parser, q);
    return rest_query_pairs(wsi, history_pair, &parser, err, errlen);
}

/* lws keeps the query string split at '&' and %-decoded, one fragment per pair; each is
 * read whole, whatever its length, and empty ones are skipped. */
int rest_query_pairs(struct lws *wsi, rest_pair_cb pair, void *arg, char *err, size_t errlen)
{
    char *frag = malloc(QUERY_ARG_MAX);
    if (!frag) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    int rc = 0, n;
    for (int i = 0; rc == 0 && (n = lws_hdr_copy_fragment(wsi, frag, QUERY_ARG_MAX,
                                                          WSI_TOKEN_HTTP_URI_ARGS, i)) >= 0;
         i++) {
        const char *eq = memchr(frag, '=', (size_t)n);
        size_t klen = eq ? (size_t)(eq - frag) : (size_t)n;
        if (n > 0)
            rc = pair(arg, frag, klen, eq ? eq + 1 : frag + n, eq ? (size_t)n - klen - 1 : 0, err,
                      errlen);
    }
    free(frag);
    return rc;
}

/* ------------------------------------------------------------------------------------------
 * GET /v1/channels/{C}: the position only */

static void on_position(void *arg, const struct history_head *heads, size_t n, const char *err)
{
    struct rest_call *c = arg;
    struct http_session *s = call_end(c);
    if (s && err) {
        answer_error(c->app, c->wsi, s, 503, ERR_HISTORY_UNAVAILABLE, MSG_UNAVAILABLE);
    } else if (s) {
        /* no counter yet (nothing was ever published): seq 0, no epoch */
        char epoch[HISTORY_EPOCH_MAX + 2] = "null", body[CHANNEL_NAME_MAX + 128];
        if (n)
            snprintf(epoch, sizeof epoch, "\"%s\"", heads[0].epoch);
        int len = snprintf(body, sizeof body, "{\"channel\":\"%s\",\"seq\":%llu,\"epoch\":%s}\n",
                           c->channel, (unsigned long long)(n ? heads[0].head : 0), epoch);
        answer(c->app, c->wsi, s, 200, body, (size_t)len);
    }
    call_free(c);
}

/* ------------------------------------------------------------------------------------------
 * GET /v1/channels/{C}/presence */

static void on_presence(void *arg, const char *list, size_t len)
{
    struct rest_call *c = arg;
    struct http_session *s = call_end(c);
    if (s && !list) {
        answer_error(c->app, c->wsi, s, 503, ERR_UNAVAILABLE,
                     "presence could not be read from Redis");
    } else if (s) {
        size_t cap = len + CHANNEL_NAME_MAX + 32;
        char *body = malloc(cap);
        int n = body
                    ? snprintf(body, cap, "{\"channel\":\"%s\",%.*s}\n", c->channel, (int)len, list)
                    : 0;
        if (body)
            answer(c->app, c->wsi, s, 200, body, (size_t)n);
        else
            answer_error(c->app, c->wsi, s, 503, ERR_UNAVAILABLE, "out of memory");
        free(body);
    }
    call_free(c);
}

/* ------------------------------------------------------------------------------------------
 * Routes and credentials */

/* The caller's credentials (a JWT or the API key): false, with 401 answered, without valid
 * ones. On true, who is to be released with auth_release. */
static bool identify(struct herald *app, struct lws *wsi, struct http_session *s,
                     struct principal *who)
{
    char why[160];
    if (auth_identify(app, wsi, true, who, why, sizeof why) == AUTH_OK)
        return true;
    app->metrics.auth_failures++;
    answer_error(app, wsi, s, 401, ERR_UNAUTHORIZED, why);
    return false;
}

/* The caller's idempotency key space (see KEY_SPACE_MAX). */
static void key_space(const struct principal *who, bool has_who, char *out, size_t cap)
{
    if (!has_who)
        out[0] = '\0';
    else if (who->service)
        snprintf(out, cap, "s/");
    else
        snprintf(out, cap, "u%zu:%s/", strlen(who->claims.sub), who->claims.sub);
}

/* Who may do this: with auth off everyone; else 401 without credentials and 403 outside
 * the token's channels (GET) or publish (POST) patterns. On true, c->space is filled and,
 * for a batch (channel NULL), c->who kept for the per-message checks. */
/* Whether who may read (GET) or publish on (POST) channel; 403 answered when not. */
static bool allowed(struct herald *app, struct lws *wsi, struct http_session *s,
                    const struct principal *who, const char *channel, bool post)
{
    size_t len = strlen(channel);
    if (post ? auth_may_publish(who, channel, len) : auth_may_read(who, channel, len))
        return true;
    answer_error(app, wsi, s, 403, ERR_FORBIDDEN,
                 post ? "the token does not allow publishing here"
                      : "the token does not allow this channel");
    return false;
}

static bool authorized(struct herald *app, struct lws *wsi, struct http_session *s,
                       struct rest_call *c, const char *channel, bool post)
{
    if (!auth_api_required(app))
        return true;
    struct principal p;
    if (!identify(app, wsi, s, &p))
        return false;
    key_space(&p, true, c->space, sizeof c->space);
    if (!channel) {
        c->who = p;
        c->has_who = true;
        return true;
    }
    bool ok = allowed(app, wsi, s, &p, channel, post);
    auth_release(&p);
    return ok;
}

/* The Idempotency-Key header, checked, into c->key under the caller's space. */
static bool read_key(struct herald *app, struct lws *wsi, struct http_session *s,
                     struct rest_call *c)
{
    int klen = lws_hdr_custom_length(wsi, "idempotency-key:", 16);
    if (klen < 0)
        return true; /* none */
    char key[IDEMPOTENCY_KEY_MAX + 1];
    if (klen > IDEMPOTENCY_KEY_MAX ||
        lws_hdr_custom_copy(wsi, key, sizeof key, "idempotency-key:", 16) != klen ||
        !idempotency_key_valid(key, (size_t)klen)) {
        answer_error(app, wsi, s, 400, ERR_BAD_REQUEST,
                     "Idempotency-Key must be 1 to 200 visible ASCII characters");
        return false;
    }
    snprintf(c->key, sizeof c->key, "%s%s", c->space, key);
    return true;
}

/* Holds the declared body's bytes against HERALD_BODY_BUFFER_BYTES. */
static bool reserve_body(struct herald *app, struct http_session *s, uint64_t declared)
{
    if ((uint64_t)app->http_body_bytes + declared > (uint64_t)app->cfg->body_buffer_bytes)
        return false;
    s->reserved = (size_t)declared;
    app->http_body_bytes += s->reserved;
    return true;
}

int rest_stray_request(struct lws *wsi)
{
    struct http_session *s = http_session_get(wsi);
    if (!s || s->phase == REST_IDLE)
        return 0;
    stray(s);
    return 1;
}

/* The connection's session for a new request, made when it has none; NULL when out of
 * memory. */
static struct http_session *open_session(struct herald *app, struct lws *wsi, bool post)
{
    struct http_session *s = http_session_make(wsi);
    if (!s)
        return NULL;
    s->started_ms = herald_now_ms(app);
    if (!post) /* the request is whole: read nothing more until it is answered */
        lws_rx_flow_control(wsi, 0);
    /* lws delivers a POST's body (even an empty one) after this: it is read either way */
    s->wsi = wsi;
    cors_lines(app, wsi, s->cors, sizeof s->cors);
    return s;
}

struct http_session *rest_open(struct herald *app, struct lws *wsi)
{
    struct http_session *s = open_session(app, wsi, false);
    if (s)
        set_phase(app, s, REST_WAIT);
    return s;
}

bool rest_may_read(struct herald *app, struct lws *wsi, struct http_session *s, const char *channel,
                   struct principal *who, bool *has_who)
{
    *has_who = false;
    if (!auth_api_required(app))
        return true;
    if (!identify(app, wsi, s, who))
        return false;
    if (!allowed(app, wsi, s, who, channel, false)) {
        auth_release(who);
        return false;
    }
    *has_who = true;
    return true;
}

/* A POST whose Content-Length is over HERALD_MAX_PUBLISH_BYTES (found by http_guard.c) is
 * answered 413 at once, on its head, so that a client that reads while it writes can
 * stop; its body is then read to its end and thrown away, and only then is the connection
 * closed (rest_body_done). Closed with body bytes unread, the socket would send a reset, and
 * a client that reads only once its body is written, as most do, would lose the answer: this
 * is nginx's lingering close. HERALD_BODY_TIMEOUT bounds the wait, as for any body. */
static void answer_too_large(struct herald *app, struct lws *wsi, struct http_session *s)
{
    char body[256];
    size_t len = http_error_body(body, sizeof body, ERR_TOO_LARGE,
                                 "the body is larger than HERALD_MAX_PUBLISH_BYTES");
    char *room = answer_room(s, len);
    app->metrics.client_errors[ERR_TOO_LARGE]++;
    if (room) {
        memcpy(room, body, len);
        s->status = 413;
        write_answer(wsi, s, true);
    }
    free(s->response);
    s->response = NULL; /* the body's end then finds no answer to write: it hangs up */
    s->response_len = 0;
    s->refused = true;
}

int rest_begin(struct herald *app, struct lws *wsi, enum v1_route route, const char *channel)
{
    char err[160];
    bool post = lws_hdr_total_length(wsi, WSI_TOKEN_POST_URI) > 0;
    bool batch = route == V1_BATCH;
    struct http_session *s = open_session(app, wsi, post);
    if (!s)
        return -1;
    set_phase(app, s, post ? REST_BODY : REST_IDLE);
    if (s->too_large) {
        answer_too_large(app, wsi, s);
        return 0;
    }
    bool served = post ? batch || route == V1_MESSAGES
                       : route == V1_POSITION || route == V1_MESSAGES || route == V1_PRESENCE;
    if (!served) {
        bool bad = route == V1_BAD_CHANNEL;
        answer_error(app, wsi, s, bad ? 400 : 404, bad ? ERR_BAD_REQUEST : ERR_NOT_FOUND,
                     MSG_ROUTES);
        return 0;
    }
    struct rest_call *c = call_new(app, wsi, s, batch ? "" : channel);
    if (!c)
        return -1;
    c->is_batch = batch;
    if (!authorized(app, wsi, s, c, batch ? NULL : channel, post))
        return 0;
    if (!post && route == V1_MESSAGES && read_query(wsi, &c->q, err, sizeof err) < 0) {
        answer_error(app, wsi, s, 400, ERR_BAD_REQUEST, err);
        return 0;
    }
    if (route == V1_PRESENCE) { /* Redis only: no database needed */
        if (!presence_enabled(app->presence, channel, strlen(channel))) {
            answer_error(app, wsi, s, 404, ERR_NOT_FOUND,
                         "presence is not enabled on this channel");
            return 0;
        }
        if (presence_query(app->presence, channel, strlen(channel), on_presence, c) < 0) {
            answer_error(app, wsi, s, 503, ERR_UNAVAILABLE, "out of memory");
            return 0;
        }
        set_phase(app, s, REST_WAIT); /* the answer comes from the loop, never before this */
        c->in_flight = true;
        return 0;
    }
    if (!app->db) {
        answer_error(app, wsi, s, 503, ERR_HISTORY_UNAVAILABLE,
                     "HERALD_DATABASE_URL is not set: no history");
        return 0;
    }
    if (post) {
        if (!batch && !read_key(app, wsi, s, c))
            return 0;
        if (!reserve_body(app, s, http_guard_body_length(wsi)))
            answer_error(app, wsi, s, 503, ERR_UNAVAILABLE,
                         "too many request bodies in flight (HERALD_BODY_BUFFER_BYTES)");
        return 0; /* the body comes next */
    }
    set_phase(app, s, REST_WAIT);
    c->in_flight = true;
    if (route == V1_POSITION) {
        const char *names[] = {c->channel};
        history_heads(app, &c->read, names, NULL, 1, on_position, c);
        return 0;
    }
    history_fetch(app, &c->read, channel, c->q.since,
                  hub_known_head(app->hub, channel, strlen(channel)), c->q.limit,
                  (size_t)app->cfg->page_bytes, on_page, c);
    return 0;
}

/* ------------------------------------------------------------------------------------------
 * POST bodies */

int rest_body(struct herald *app, struct lws *wsi, struct http_session *s, const void *in,
              size_t len)
{
    if (s->phase != REST_BODY) {
        stray(s);
        return 0;
    }
    if (s->refused || len == 0)
        return 0; /* thrown away */
    if (!s->body && !(s->body = malloc(s->reserved + 1)))
        return -1;
    if (s->body_len + len > s->reserved) /* lws never gives more than Content-Length */
        return -1;
    memcpy(s->body + s->body_len, in, len);
    s->body_len += len;
    s->body[s->body_len] = '\0';
    return 0;
}

/* What became of one publish, for an answer. */
static unsigned publish_status(const struct publish_result *res, enum errcode *code,
                               const char **message)
{
    *code = res->refused ? ERR_BAD_REQUEST : ERR_HISTORY_UNAVAILABLE;
    *message = res->refused ? MSG_REFUSED : MSG_UNAVAILABLE;
    return res->refused ? 400 : 503;
}

static void on_published(void *arg, const struct publish_result *res)
{
    struct rest_call *c = arg;
    struct http_session *s = call_end(c);
    if (s && res->err) {
        enum errcode code;
        const char *message;
        unsigned status = publish_status(res, &code, &message);
        answer_error(c->app, c->wsi, s, status, code, message);
    } else if (s) {
        char body[320];
        int n = snprintf(body, sizeof body, "{\"channel\":\"%s\",\"seq\":%llu,\"epoch\":\"%s\"}\n",
                         c->channel, (unsigned long long)res->seq, res->epoch);
        answer(c->app, c->wsi, s, 201, body, (size_t)n);
    }
    call_free(c);
}

/* Checks a whole POST /v1/messages body before anything is queued, so that one bad message
 * refuses them all. Returns the parsed body, or NULL with the answer's status, code and
 * reason. */
static json_t *batch_parse(const struct rest_call *c, const char *body, size_t len,
                           unsigned *status, enum errcode *code, char *why, size_t cap)
{
    json_t *root = json_text_load(body, len, JSON_REJECT_DUPLICATES, NULL);
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
        const char *bad =
            !json_is_object(m) ? "is not an object"
            : !json_is_string(ch) ||
                    !channel_name_valid(json_string_value(ch), json_string_length(ch))
                ? "needs a valid channel (1-200 bytes of A-Z a-z 0-9 _ - . : @ =)"
            : !json_object_get(m, "data") ? "needs data"
            : key && (!json_is_string(key) ||
                      !idempotency_key_valid(json_string_value(key), json_string_length(key)))
                ? "has an idempotency_key that is not 1 to 200 visible ASCII "
                  "characters"
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
    struct rest_batch *b = c->batch;
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
            const struct rest_batch_entry *e = &b->entries[i];
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
        if (failed)
            c->app->metrics.client_errors[code]++;
        answer(c->app, c->wsi, s, !failed ? 201 : unavailable ? 503 : 400, out, len);
    } else if (s) {
        answer_error(c->app, c->wsi, s, 503, ERR_INTERNAL, "out of memory");
    }
    free(out);
    call_free(c);
}

static void on_entry_published(void *arg, const struct publish_result *res)
{
    struct rest_batch_entry *e = arg;
    struct rest_batch *b = e->call->batch;
    e->seq = res->seq;
    e->outcome = !res->err ? STORED : res->refused ? REFUSED : UNAVAILABLE;
    if (!res->err)
        snprintf(e->epoch, sizeof e->epoch, "%s", res->epoch);
    if (--b->pending == 0)
        batch_answer(e->call);
}

/* Queues every message of a checked batch, each with its data as the caller wrote it.
 * Callbacks never run inside publish_durable, so pending counts every queued message
 * before the first answer can come. */
static int batch_start(struct herald *app, struct rest_call *c, json_t *root, const char *body,
                       size_t len)
{
    json_t *msgs = json_object_get(root, "messages");
    size_t n = json_array_size(msgs);
    struct rest_batch *b = calloc(1, sizeof *b + n * sizeof b->entries[0]);
    struct json_span *el = malloc(n * sizeof *el);
    struct json_span all;
    if (!b || !el || json_member_span(body, len, 0, "messages", &all) < 0 ||
        json_element_spans(body, len, all.off, el, n) != (long)n) {
        free(b);
        free(el);
        json_decref(root);
        return -1;
    }
    b->root = root;
    b->n = b->pending = n;
    c->batch = b;
    c->in_flight = true;
    for (size_t i = 0; i < n; i++) {
        json_t *m = json_array_get(msgs, i);
        struct rest_batch_entry *e = &b->entries[i];
        e->call = c;
        e->channel = json_string_value(json_object_get(m, "channel"));
        const char *key = json_string_value(json_object_get(m, "idempotency_key"));
        char stored[STORED_KEY_MAX + 1];
        if (key)
            snprintf(stored, sizeof stored, "%s%s", c->space, key);
        struct json_span data;
        if (json_member_span(body, len, el[i].off, "data", &data) < 0)
            data = (struct json_span){0, 0}; /* cannot happen: the body parsed */
        publish_durable(app, &e->publish, e->channel, body + data.off, data.len,
                        key ? stored : NULL, on_entry_published, e);
    }
    free(el);
    return 0;
}

static void batch_body_done(struct herald *app, struct lws *wsi, struct http_session *s,
                            struct rest_call *c)
{
    unsigned status = 400;
    enum errcode code = ERR_BAD_REQUEST;
    char why[160] = "the data nests deeper than HERALD_MAX_JSON_DEPTH allows";
    /* each data sits three levels down: {"messages":[{"data":...}]} */
    json_t *root = json_too_deep(s->body, s->body_len, (int)app->cfg->max_json_depth + 3)
                       ? NULL
                       : batch_parse(c, s->body, s->body_len, &status, &code, why, sizeof why);
    if (!root)
        answer_error(app, wsi, s, status, code, why);
    else if (batch_start(app, c, root, s->body, s->body_len) < 0)
        answer_error(app, wsi, s, 503, ERR_INTERNAL, "out of memory");
    else
        set_phase(app, s, REST_WAIT);
}

static void single_body_done(struct herald *app, struct lws *wsi, struct http_session *s,
                             struct rest_call *c)
{
    const char *why = NULL;
    if (json_too_deep(s->body, s->body_len, (int)app->cfg->max_json_depth)) {
        why = "the data nests deeper than HERALD_MAX_JSON_DEPTH allows";
    } else {
        json_t *data = json_text_load(s->body, s->body_len, JSON_DECODE_ANY, NULL);
        if (!data)
            why = "the body must be JSON (the message's data)";
        json_decref(data);
    }
    if (why) {
        answer_error(app, wsi, s, 400, ERR_BAD_REQUEST, why);
        return;
    }
    set_phase(app, s, REST_WAIT);
    c->in_flight = true;
    publish_durable(app, &c->publish, c->channel, s->body, s->body_len, c->key[0] ? c->key : NULL,
                    on_published, c);
}

int rest_body_done(struct herald *app, struct lws *wsi, struct http_session *s)
{
    if (s->phase != REST_BODY) {
        stray(s);
        return 0;
    }
    lws_rx_flow_control(wsi, 0); /* the request is whole: read nothing more until answered */
    http_guard_request_whole(wsi);
    if (!s->refused && !s->body && !(s->body = calloc(1, 1)))
        return -1;
    if (!s->refused && s->call && s->call->is_batch)
        batch_body_done(app, wsi, s, s->call);
    else if (!s->refused && s->call)
        single_body_done(app, wsi, s, s->call);
    release_body(app, s);        /* publish_durable copied what it needs */
    if (s->phase == REST_BODY) { /* refused, before or just now */
        set_phase(app, s, REST_REPLY);
        write_now(app, wsi, s);
    }
    return 0;
}
