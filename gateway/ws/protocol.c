#include "protocol.h"
#include "auth.h"
#include "channel.h"
#include "request.h"
#include "client.h"
#include "herald.h"
#include "history.h"
#include "presence.h"
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
        presence_leave(c->app->presence, &c->presence, channel, strlen(channel));
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
    /* present from now on (a presence_full error, if any, comes after the reply) */
    presence_confirm(c->app->presence, &c->presence, channel, strlen(channel));
}

static void reply_unsubscribed(struct client *c, const char *channel, const char *id_json)
{
    client_reply(c, id_json, "{\"op\":\"unsubscribed\",\"channel\":\"%s\"", channel);
}

void protocol_presence_full(void *conn, const char *channel, size_t len)
{
    struct client *c = conn;
    c->app->metrics.client_errors[ERR_PRESENCE_FULL]++;
    client_reply(c, NULL,
                 "{\"op\":\"error\",\"code\":\"%s\",\"channel\":\"%.*s\",\"message\":"
                 "\"the channel has HERALD_PRESENCE_MAX_MEMBERS members: subscribed, not listed\"",
                 errcode_name(ERR_PRESENCE_FULL), (int)len, channel);
}

/* Who the connection is on a presence channel and what it shows: the token's sub and info
 * claim, or with auth off (or a token without info) what the subscribe gives (NULL:
 * anonymous, no info). False, with the error sent, when the subscribe claims a sub the token
 * does not have or the info is over HERALD_PRESENCE_INFO_BYTES. */
static bool presence_identity(struct client *c, const struct request *rq, const char *id,
                              const char **sub, size_t *slen, const char **info, size_t *ilen)
{
    *sub = rq->sub;
    *slen = rq->sub_len;
    *info = rq->info_text;
    *ilen = rq->info_len;
    if (c->auth && c->auth->has_claims) {
        const char *mine = c->auth->claims.sub;
        if (rq->sub && (rq->sub_len != strlen(mine) || memcmp(rq->sub, mine, rq->sub_len))) {
            client_send_error(c, ERR_FORBIDDEN, id, "sub must be the token's sub");
            return false;
        }
        *sub = mine;
        *slen = strlen(mine);
        if (c->auth->claims.info) {
            *info = c->auth->claims.info;
            *ilen = strlen(*info);
        }
    }
    if (*ilen > (size_t)c->app->cfg->presence_info_bytes) {
        char msg[96];
        snprintf(msg, sizeof msg, "info is larger than %ld bytes (HERALD_PRESENCE_INFO_BYTES)",
                 c->app->cfg->presence_info_bytes);
        client_send_error(c, ERR_BAD_REQUEST, id, msg);
        return false;
    }
    return true;
}

static void op_subscribe(struct client *c, const struct request *rq)
{
    const char *id = rq->id[0] ? rq->id : NULL;
    if (!auth_may_read(c->auth, rq->channel, rq->channel_len)) {
        client_send_error(c, ERR_FORBIDDEN, id, "the token does not allow this channel");
        return;
    }
    bool present = presence_enabled(c->app->presence, rq->channel, rq->channel_len);
    const char *sub = NULL, *info = NULL;
    size_t slen = 0, ilen = 0;
    if (present && !presence_identity(c, rq, id, &sub, &slen, &info, &ilen))
        return;
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
    /* joined first: the answer (presence_confirm) may come from inside hub_subscribe */
    if (present && presence_join(c->app->presence, &c->presence, c, rq->channel, rq->channel_len,
                                 sub, slen, info, ilen) < 0) {
        client_send_error(c, ERR_INTERNAL, id, "out of memory");
        return;
    }
    bool was_member = hub_is_member(&c->sub, rq->channel, rq->channel_len);
    int rc = hub_subscribe(c->app->hub, &c->sub, rq->channel, rq->channel_len, id,
                           rq->resume ? &resume : NULL);
    if (present && rc != 0 && !was_member)
        presence_leave(c->app->presence, &c->presence, rq->channel, rq->channel_len);
    if (rc == HUB_PENDING)
        client_send_error(c, ERR_BAD_REQUEST, id,
                          "a subscribe to this channel is already in progress");
    else if (rc < 0)
        client_send_error(c, ERR_INTERNAL, id, "out of memory");
}

static void op_unsubscribe(struct client *c, const struct request *rq)
{
    presence_leave(c->app->presence, &c->presence, rq->channel, rq->channel_len);
    hub_unsubscribe(c->app->hub, &c->sub, rq->channel, rq->channel_len);
    reply_unsubscribed(c, rq->channel, rq->id[0] ? rq->id : NULL);
}

/* A reply owed to a client (a publish waiting for PostgreSQL, a presence query waiting for
 * Redis). The client may close first: protocol_client_gone unhooks what it is owed, and the
 * answer is dropped. */
struct owed {
    struct owed *next;
    struct client *c;
    char id[REQUEST_ID_JSON_MAX + 1];
    char channel[CHANNEL_NAME_MAX + 1];
    struct publish_request publish; /* a publish's */
};

static struct owed *owe(struct client *c, const struct request *rq)
{
    struct owed *p = calloc(1, sizeof *p);
    if (!p) {
        client_send_error(c, ERR_INTERNAL, rq->id[0] ? rq->id : NULL, "out of memory");
        return NULL;
    }
    p->c = c;
    snprintf(p->id, sizeof p->id, "%s", rq->id);
    snprintf(p->channel, sizeof p->channel, "%s", rq->channel);
    p->next = c->owed;
    c->owed = p;
    return p;
}

static void unhook(struct owed *p)
{
    if (!p->c)
        return;
    struct owed **pp = &p->c->owed;
    while (*pp && *pp != p)
        pp = &(*pp)->next;
    if (*pp)
        *pp = p->next;
    p->c = NULL;
}

void protocol_client_gone(struct client *c)
{
    while (c->owed)
        unhook(c->owed);
}

static void on_published(void *arg, const struct publish_result *res)
{
    struct owed *p = arg;
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
    struct owed *p = owe(c, rq);
    if (!p)
        return;
    publish_durable(c->app, &p->publish, rq->channel, rq->data_text, rq->data_len, NULL,
                    on_published, p);
}

static void on_presence(void *arg, const char *list, size_t len)
{
    struct owed *p = arg;
    struct client *c = p->c;
    const char *id = p->id[0] ? p->id : NULL;
    unhook(p);
    if (c && !list) {
        client_send_error(c, ERR_UNAVAILABLE, id, "presence could not be read from Redis");
    } else if (c) {
        size_t cap = len + strlen(p->channel) + sizeof p->id + 64;
        char *text = malloc(cap);
        int n = text ? snprintf(text, cap, "{\"op\":\"presence\",\"channel\":\"%s\",%.*s%s%s}",
                                p->channel, (int)len, list, id ? ",\"id\":" : "", id ? id : "")
                     : 0;
        if (n > 0)
            client_send_text(c, text, (size_t)n);
        else /* the op is answered whatever happens */
            client_send_error(c, ERR_INTERNAL, id, "out of memory");
        free(text);
    }
    free(p);
}

/* Who is on a channel: for those who may subscribe to it, whether they are or not. */
static void op_presence(struct client *c, const struct request *rq)
{
    const char *id = rq->id[0] ? rq->id : NULL;
    if (!auth_may_read(c->auth, rq->channel, rq->channel_len)) {
        client_send_error(c, ERR_FORBIDDEN, id, "the token does not allow this channel");
        return;
    }
    if (!presence_enabled(c->app->presence, rq->channel, rq->channel_len)) {
        client_send_error(c, ERR_NOT_FOUND, id, "presence is not enabled on this channel");
        return;
    }
    struct owed *p = owe(c, rq);
    if (p && presence_query(c->app->presence, rq->channel, rq->channel_len, on_presence, p) < 0) {
        unhook(p);
        free(p);
        client_send_error(c, ERR_INTERNAL, id, "out of memory");
    }
}

/* Ends the subscriptions the connection's (new) token no longer allows, each with an
 * unsubscribed notice saying why. */
static void drop_forbidden(struct client *c)
{
    char name[CHANNEL_NAME_MAX + 1];
    for (int i = (int)c->sub.n - 1; i >= 0; i--) {
        if (i >= c->sub.n)
            continue;
        snprintf(name, sizeof name, "%s", hub_channel_name(&c->sub, (uint16_t)i));
        size_t len = strlen(name);
        if (auth_may_read(c->auth, name, len))
            continue;
        presence_leave(c->app->presence, &c->presence, name, len);
        hub_unsubscribe(c->app->hub, &c->sub, name, len);
        c->app->metrics.client_errors[ERR_FORBIDDEN]++;
        client_reply(c, NULL,
                     "{\"op\":\"unsubscribed\",\"channel\":\"%s\",\"code\":\"%s\",\"message\":"
                     "\"the refreshed token does not allow this channel\"",
                     name, errcode_name(ERR_FORBIDDEN));
    }
}

/* A new token for the same user, in place: the connection keeps its subscriptions (those
 * the new token still allows) and closes when the new token expires. */
static void op_refresh(struct client *c, const struct request *rq)
{
    const char *id = rq->id[0] ? rq->id : NULL;
    if (!c->auth) {
        client_send_error(c, ERR_BAD_REQUEST, id, "auth is off: there is no token to refresh");
        return;
    }
    char why[160];
    struct principal p;
    if (auth_verify(c->app, rq->token, &p, why, sizeof why) != AUTH_OK) {
        c->app->metrics.auth_failures++;
        client_send_error(c, ERR_UNAUTHORIZED, id, why);
        return;
    }
    if (strcmp(p.claims.sub, c->auth->claims.sub) != 0) {
        auth_release(&p);
        c->app->metrics.auth_failures++;
        client_send_error(c, ERR_FORBIDDEN, id, "a refresh must keep the token's sub");
        return;
    }
    client_replace_principal(c, &p);
    drop_forbidden(c);
    client_reply(c, id, "{\"op\":\"refreshed\",\"exp\":%lld", (long long)c->auth->claims.exp);
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
        case REQ_PRESENCE:
            op_presence(c, &rq);
            break;
        case REQ_REFRESH:
            op_refresh(c, &rq);
            break;
        case REQ_PING:
            client_reply(c, rq.id[0] ? rq.id : NULL, "{\"op\":\"pong\"");
            break;
        }
    }
    request_free(&rq);
}
