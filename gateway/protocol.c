#include "protocol.h"
#include "auth.h"
#include "channel.h"
#include "json_text.h"
#include "client.h"
#include "herald.h"
#include "history.h"
#include "hub.h"

#include <jansson.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct request {
    struct client *c;
    json_t *root;
    const char *id; /* the "id" as JSON text, or NULL */
};

/* Formats a reply, appending the id when there is one, and queues it. */
static void reply(struct client *c, const char *id_json, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void reply(struct client *c, const char *id_json, const char *fmt, ...)
{
    char buf[1024];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(buf, sizeof buf - PROTOCOL_ID_JSON_MAX - 8, fmt, ap);
    va_end(ap);
    if (n <= 0 || (size_t)n >= sizeof buf - PROTOCOL_ID_JSON_MAX - 8)
        return;
    if (id_json)
        n += snprintf(buf + n, sizeof buf - (size_t)n, ",\"id\":%s", id_json);
    buf[n++] = '}';
    client_send_text(c, buf, (size_t)n);
}

void reply_subscribed(struct client *c, const char *channel, const struct subscribed_reply *r,
                      const char *id_json)
{
    char epoch[HISTORY_EPOCH_MAX + 16] = "", tail[64] = "";
    if (r->epoch && r->epoch[0])
        snprintf(epoch, sizeof epoch, ",\"epoch\":\"%s\"", r->epoch);
    if (r->resumed && r->recovered)
        snprintf(tail, sizeof tail, ",\"replayed\":%llu", (unsigned long long)r->replayed);
    else if (r->resumed && r->code)
        snprintf(tail, sizeof tail, ",\"code\":\"%s\"", r->code);
    reply(c, id_json, "{\"op\":\"subscribed\",\"channel\":\"%s\",\"seq\":%llu%s,\"recovered\":%s%s",
          channel, (unsigned long long)r->seq, epoch, r->recovered ? "true" : "false", tail);
}

void reply_unsubscribed(struct client *c, const char *channel, const char *id_json)
{
    reply(c, id_json, "{\"op\":\"unsubscribed\",\"channel\":\"%s\"", channel);
}

/* The "channel" member, validated; NULL after sending bad_request. */
static const char *channel_arg(struct request *rq, size_t *len)
{
    json_t *ch = json_object_get(rq->root, "channel");
    if (!json_is_string(ch)) {
        client_send_error(rq->c, ERR_BAD_REQUEST, rq->id, "channel must be a string");
        return NULL;
    }
    *len = json_string_length(ch);
    if (!channel_name_valid(json_string_value(ch), *len)) {
        client_send_error(rq->c, ERR_BAD_REQUEST, rq->id,
                          "channel must be 1-200 bytes of A-Z a-z 0-9 _ - . : @ =");
        return NULL;
    }
    return json_string_value(ch);
}

/* "since" (a non-negative integer) and "epoch" (a string) of a resume; 0 when there is no
 * since, -1 after sending bad_request. */
static int resume_args(struct request *rq, struct resume *out)
{
    json_t *since = json_object_get(rq->root, "since");
    json_t *epoch = json_object_get(rq->root, "epoch");
    if (!since && !epoch)
        return 0;
    if (!json_is_integer(since) || json_integer_value(since) < 0) {
        client_send_error(rq->c, ERR_BAD_REQUEST, rq->id,
                          "since must be a non-negative integer (the last seq seen)");
        return -1;
    }
    if (epoch && !json_is_null(epoch) &&
        (!json_is_string(epoch) || json_string_length(epoch) >= HISTORY_EPOCH_MAX)) {
        client_send_error(rq->c, ERR_BAD_REQUEST, rq->id, "epoch must be a string");
        return -1;
    }
    out->since = (uint64_t)json_integer_value(since);
    out->epoch = json_is_string(epoch) ? json_string_value(epoch) : NULL;
    return 1;
}

static void op_subscribe(struct request *rq)
{
    size_t len;
    struct resume resume;
    const char *name = channel_arg(rq, &len);
    if (!name)
        return;
    int resuming = resume_args(rq, &resume);
    if (resuming < 0)
        return;
    struct client *c = rq->c;
    if (!auth_may_read(c->auth, name, len)) {
        client_send_error(c, ERR_FORBIDDEN, rq->id, "the token does not allow this channel");
        return;
    }
    if (c->nsubs >= c->app->cfg->max_subscriptions && !hub_is_member(c, name, len)) {
        char msg[96];
        snprintf(msg, sizeof msg, "subscription limit of %ld channels reached",
                 c->app->cfg->max_subscriptions);
        client_send_error(c, ERR_BAD_REQUEST, rq->id, msg);
        return;
    }
    if (hub_subscribe(c->app->hub, c, name, len, rq->id, resuming ? &resume : NULL) < 0)
        client_send_error(c, ERR_INTERNAL, rq->id, "out of memory");
}

static void op_unsubscribe(struct request *rq)
{
    size_t len;
    const char *name = channel_arg(rq, &len);
    if (!name)
        return;
    hub_unsubscribe(rq->c->app->hub, rq->c, name, len);
    reply_unsubscribed(rq->c, name, rq->id);
}

static void op_ping(struct request *rq)
{
    reply(rq->c, rq->id, "{\"op\":\"pong\"");
}

/* A publish whose reply is owed to a client. The client may close before PostgreSQL
 * answers: protocol_client_gone unhooks its pending publishes, and the answer is dropped. */
struct pending_publish {
    struct pending_publish *next;
    struct client *c;
    char id[PROTOCOL_ID_JSON_MAX + 1];
    char channel[CHANNEL_NAME_MAX + 1];
};

static void unhook(struct pending_publish *p)
{
    if (!p->c)
        return;
    struct pending_publish **pp = (struct pending_publish **)&p->c->publishes;
    while (*pp && *pp != p)
        pp = &(*pp)->next;
    if (*pp)
        *pp = p->next;
    p->c = NULL;
}

void protocol_client_gone(struct client *c)
{
    while (c->publishes)
        unhook(c->publishes);
}

static void on_published(void *arg, uint64_t seq, const char *epoch, bool duplicate,
                         const char *err)
{
    struct pending_publish *p = arg;
    struct client *c = p->c;
    const char *id = p->id[0] ? p->id : NULL;
    unhook(p);
    if (c && err)
        client_send_error(c, ERR_UNAVAILABLE, id, "the history could not store the message");
    else if (c)
        reply(c, id, "{\"op\":\"published\",\"channel\":\"%s\",\"seq\":%llu", p->channel,
              (unsigned long long)seq);
    (void)epoch;
    (void)duplicate;
    free(p);
}

/* Durable publish: the herald_publish SQL function, then PUBLISH after COMMIT. */
static void op_publish(struct request *rq)
{
    size_t len;
    const char *name = channel_arg(rq, &len);
    if (!name)
        return;
    struct client *c = rq->c;
    if (!auth_may_publish(c->auth, name, len)) {
        client_send_error(c, ERR_FORBIDDEN, rq->id, "the token does not allow publishing here");
        return;
    }
    json_t *data = json_object_get(rq->root, "data");
    if (!data) {
        client_send_error(c, ERR_BAD_REQUEST, rq->id, "publish needs data");
        return;
    }
    if (!c->app->db) {
        client_send_error(c, ERR_UNAVAILABLE, rq->id,
                          "publish needs the history: HERALD_DATABASE_URL is not set");
        return;
    }
    char *text = json_dumps(data, JSON_ENCODE_ANY | JSON_COMPACT);
    struct pending_publish *p = calloc(1, sizeof *p);
    if (!text || !p) {
        free(text);
        free(p);
        client_send_error(c, ERR_INTERNAL, rq->id, "out of memory");
        return;
    }
    p->c = c;
    snprintf(p->id, sizeof p->id, "%s", rq->id ? rq->id : "");
    snprintf(p->channel, sizeof p->channel, "%s", name);
    if (history_publish(c->app, name, text, NULL, on_published, p) < 0) {
        free(p);
        client_send_error(c, ERR_UNAVAILABLE, rq->id, "the history is unavailable");
    } else {
        p->next = c->publishes;
        c->publishes = p;
    }
    free(text);
}

static const struct {
    const char *name;
    void (*handle)(struct request *rq);
} ops[] = {
    {"subscribe", op_subscribe},
    {"unsubscribe", op_unsubscribe},
    {"ping", op_ping},
    {"publish", op_publish},
};

/* Validates "id" (string of at most 64 bytes, or integer) and renders it as JSON text. */
static int render_id(json_t *id, char *out, size_t cap)
{
    if (!id) {
        out[0] = '\0';
        return 0;
    }
    if (!(json_is_integer(id) || (json_is_string(id) && json_string_length(id) <= PROTOCOL_ID_MAX)))
        return -1;
    size_t n = json_dumpb(id, out, cap - 1, JSON_ENCODE_ANY | JSON_COMPACT);
    if (n == 0 || n >= cap)
        return -1;
    out[n] = '\0';
    return 0;
}

void protocol_handle(struct client *c, const char *msg, size_t len)
{
    json_error_t err;
    if (json_too_deep(msg, len, (int)c->app->cfg->max_json_depth)) {
        client_send_error(c, ERR_BAD_REQUEST, NULL, "message nests deeper than allowed");
        return;
    }
    json_t *root = json_loadb(msg, len, JSON_REJECT_DUPLICATES, &err);
    if (!json_is_object(root)) {
        client_send_error(c, ERR_BAD_REQUEST, NULL, "frame must be a JSON object");
        json_decref(root);
        return;
    }
    char id[PROTOCOL_ID_JSON_MAX + 1];
    if (render_id(json_object_get(root, "id"), id, sizeof id)) {
        client_send_error(c, ERR_BAD_REQUEST, NULL,
                          "id must be an integer or a string of at most 64 bytes");
        json_decref(root);
        return;
    }
    struct request rq = {c, root, id[0] ? id : NULL};
    const char *op = json_string_value(json_object_get(root, "op"));
    size_t i = 0;
    while (op && i < sizeof ops / sizeof ops[0] && strcmp(ops[i].name, op) != 0)
        i++;
    if (!op)
        client_send_error(c, ERR_BAD_REQUEST, rq.id, "op must be a string");
    else if (i == sizeof ops / sizeof ops[0])
        client_send_error(c, ERR_BAD_REQUEST, rq.id, "unknown op");
    else
        ops[i].handle(&rq);
    json_decref(root);
}
