#include "protocol.h"
#include "auth.h"
#include "channel.h"
#include "request.h"
#include "client.h"
#include "herald.h"
#include "history.h"
#include "publish.h"
#include "hub.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void protocol_answered(struct subscriber *s, const char *channel, const struct hub_answer *r,
                       const char *id_json)
{
    struct client *c = client_of(s);
    char epoch[HISTORY_EPOCH_MAX + 16] = "", tail[64] = "";
    if (r->epoch && r->epoch[0])
        snprintf(epoch, sizeof epoch, ",\"epoch\":\"%s\"", r->epoch);
    if (r->refused) {
        /* strict: an error instead of going live; the channel is left on the next flush */
        enum errcode code = errcode_from_name(r->code);
        c->app->metrics.client_errors[code]++;
        c->drop_refused = true;
        client_reply(c, id_json,
                     "{\"op\":\"error\",\"code\":\"%s\",\"channel\":\"%s\",\"seq\":%llu%s,"
                     "\"message\":\"strict subscribe: the missed messages cannot be replayed; "
                     "load the state again and subscribe from its position\"",
                     errcode_name(code), channel, (unsigned long long)r->seq, epoch);
        return;
    }
    if (r->resumed && r->recovered)
        snprintf(tail, sizeof tail, ",\"replayed\":%llu", (unsigned long long)r->replayed);
    else if (r->resumed && r->code)
        snprintf(tail, sizeof tail, ",\"code\":\"%s\"", r->code);
    client_reply(c, id_json,
                 "{\"op\":\"subscribed\",\"channel\":\"%s\",\"seq\":%llu%s,\"recovered\":%s%s",
                 channel, (unsigned long long)r->seq, epoch, r->recovered ? "true" : "false", tail);
}

static void reply_unsubscribed(struct client *c, const char *channel, const char *id_json)
{
    client_reply(c, id_json, "{\"op\":\"unsubscribed\",\"channel\":\"%s\"", channel);
}

static void op_subscribe(struct client *c, const struct request *rq)
{
    const char *id = rq->id[0] ? rq->id : NULL;
    if (!auth_may_read(c->auth, rq->channel, rq->channel_len)) {
        client_send_error(c, ERR_FORBIDDEN, id, "the token does not allow this channel");
        return;
    }
    if (c->sub.n >= c->app->cfg->max_subscriptions &&
        !hub_is_member(&c->sub, rq->channel, rq->channel_len)) {
        char msg[96];
        snprintf(msg, sizeof msg, "subscription limit of %ld channels reached",
                 c->app->cfg->max_subscriptions);
        client_send_error(c, ERR_BAD_REQUEST, id, msg);
        return;
    }
    struct resume resume = {
        .since = rq->since, .epoch = rq->epoch, .last = rq->last, .strict = rq->strict};
    int rc = hub_subscribe(c->app->hub, &c->sub, rq->channel, rq->channel_len, id,
                           rq->resume ? &resume : NULL);
    if (rc == HUB_PENDING)
        client_send_error(c, ERR_BAD_REQUEST, id,
                          "a subscribe to this channel is already in progress");
    else if (rc < 0)
        client_send_error(c, ERR_INTERNAL, id, "out of memory");
}

static void op_unsubscribe(struct client *c, const struct request *rq)
{
    hub_unsubscribe(c->app->hub, &c->sub, rq->channel, rq->channel_len);
    reply_unsubscribed(c, rq->channel, rq->id[0] ? rq->id : NULL);
}

/* A publish whose reply is owed to a client. The client may close before PostgreSQL
 * answers: protocol_client_gone unhooks its pending publishes, and the answer is dropped. */
struct pending_publish {
    struct pending_publish *next;
    struct client *c;
    char id[REQUEST_ID_JSON_MAX + 1];
    char channel[CHANNEL_NAME_MAX + 1];
    struct publish_request publish;
};

static void unhook(struct pending_publish *p)
{
    if (!p->c)
        return;
    struct pending_publish **pp = &p->c->publishes;
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

static void on_published(void *arg, const struct publish_result *res)
{
    struct pending_publish *p = arg;
    struct client *c = p->c;
    const char *id = p->id[0] ? p->id : NULL;
    unhook(p);
    if (c && res->err)
        client_send_error(c, res->refused ? ERR_BAD_REQUEST : ERR_UNAVAILABLE, id,
                          res->refused ? "the history refused the message"
                                       : "the history could not store the message");
    else if (c)
        client_reply(c, id, "{\"op\":\"published\",\"channel\":\"%s\",\"seq\":%llu", p->channel,
                     (unsigned long long)res->seq);
    free(p);
}

/* Durable publish: the herald_publish SQL function, then PUBLISH after COMMIT. The reply
 * (published, or an error) always comes from on_published. */
static void op_publish(struct client *c, const struct request *rq)
{
    const char *id = rq->id[0] ? rq->id : NULL;
    if (!auth_may_publish(c->auth, rq->channel, rq->channel_len)) {
        client_send_error(c, ERR_FORBIDDEN, id, "the token does not allow publishing here");
        return;
    }
    if (!c->app->db) {
        client_send_error(c, ERR_UNAVAILABLE, id,
                          "publish needs the history: HERALD_DATABASE_URL is not set");
        return;
    }
    struct pending_publish *p = calloc(1, sizeof *p);
    if (!p) {
        client_send_error(c, ERR_INTERNAL, id, "out of memory");
        return;
    }
    p->c = c;
    snprintf(p->id, sizeof p->id, "%s", rq->id);
    snprintf(p->channel, sizeof p->channel, "%s", rq->channel);
    p->next = c->publishes;
    c->publishes = p;
    publish_durable(c->app, &p->publish, rq->channel, rq->data_text, rq->data_len, NULL,
                    on_published, p);
}

void protocol_handle(struct client *c, const char *msg, size_t len)
{
    struct request rq;
    const char *why = NULL;
    if (request_parse(msg, len, (int)c->app->cfg->max_json_depth, &rq, &why) < 0) {
        client_send_error(c, ERR_BAD_REQUEST, rq.id[0] ? rq.id : NULL, why);
    } else {
        switch (rq.op) {
        case REQ_SUBSCRIBE:
            op_subscribe(c, &rq);
            break;
        case REQ_UNSUBSCRIBE:
            op_unsubscribe(c, &rq);
            break;
        case REQ_PUBLISH:
            op_publish(c, &rq);
            break;
        case REQ_PING:
            client_reply(c, rq.id[0] ? rq.id : NULL, "{\"op\":\"pong\"");
            break;
        }
    }
    request_free(&rq);
}
