#include "cli.h"
#include "channel.h"
#include "migrate.h"
#include "shard.h"

#include <hiredis/hiredis.h>
#include <libpq-fe.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int cli_migrate(const struct herald_config *cfg)
{
    char err[1024];
    if (!cfg->database_url[0]) {
        fprintf(stderr, "herald migrate: HERALD_DATABASE_URL is not set\n");
        return 2;
    }
    int n = migrate_run(cfg->database_url, err, sizeof err);
    if (n < 0) {
        fprintf(stderr, "herald migrate: %s\n", err);
        return 1;
    }
    printf("{\"applied\":%d}\n", n);
    return 0;
}

/* A synchronous connection to the server of u: its own, the master its sentinels name (the
 * first sentinel that answers), or the first cluster seed that answers. NULL when none could
 * be reached. */
static redisContext *connect_server(const struct redis_url *u)
{
    struct timeval tv = {5, 0};
    if (u->cluster) {
        for (int i = 0; i < u->nhosts; i++) {
            redisContext *c = redisConnectWithTimeout(u->hosts[i].host, u->hosts[i].port, tv);
            if (c && !c->err)
                return c;
            redisFree(c);
        }
        fprintf(stderr, "herald publish: no Redis Cluster node answered\n");
        return NULL;
    }
    if (!u->master_name[0])
        return redisConnectWithTimeout(u->host, u->port, tv);
    for (int i = 0; i < u->nhosts; i++) {
        redisContext *sc = redisConnectWithTimeout(u->hosts[i].host, u->hosts[i].port, tv);
        redisReply *r =
            sc && !sc->err ? redisCommand(sc, "SENTINEL get-master-addr-by-name %s", u->master_name)
                           : NULL;
        char host[256] = "";
        int port = 0;
        if (r && r->type == REDIS_REPLY_ARRAY && r->elements == 2 &&
            r->element[0]->type == REDIS_REPLY_STRING &&
            r->element[1]->type == REDIS_REPLY_STRING) {
            snprintf(host, sizeof host, "%s", r->element[0]->str);
            port = atoi(r->element[1]->str);
        }
        freeReplyObject(r);
        redisFree(sc);
        if (host[0] && port > 0 && port < 65536)
            return redisConnectWithTimeout(host, port, tv);
    }
    fprintf(stderr, "herald publish: no sentinel named master %s\n", u->master_name);
    return NULL;
}

static bool authenticate(redisContext *rc, const struct redis_url *u)
{
    if (!u->password[0])
        return true;
    redisReply *r = u->user[0] ? redisCommand(rc, "AUTH %s %s", u->user, u->password)
                               : redisCommand(rc, "AUTH %s", u->password);
    bool ok = r && r->type != REDIS_REPLY_ERROR;
    freeReplyObject(r);
    return ok;
}

/* PUBLISH (SPUBLISH with HERALD_REDIS_PUBSUB=sharded) over a short-lived synchronous
 * connection to the channel's Redis server, with AUTH and the channel prefix. In a cluster a
 * MOVED or ASK answer is followed once. */
static int redis_publish(const struct herald_config *cfg, const char *channel, const char *envelope)
{
    const struct redis_url *u = &cfg->redis[shard_of(channel, strlen(channel), cfg->nredis)];
    const char *verb = cfg->redis_pubsub_sharded ? "SPUBLISH" : "PUBLISH";
    redisContext *rc = connect_server(u);
    redisReply *r = NULL;
    bool asking = false;
    for (int redirects = 0;; redirects++) {
        if (!rc || rc->err) {
            fprintf(stderr, "herald publish: Redis: %s\n", rc ? rc->errstr : "out of memory");
            redisFree(rc);
            return -1;
        }
        bool ok = authenticate(rc, u);
        if (ok && asking)
            freeReplyObject(redisCommand(rc, "ASKING"));
        r = ok ? redisCommand(rc, "%s %s%s %s", verb, cfg->redis_prefix, channel, envelope) : NULL;
        bool moved = r && r->type == REDIS_REPLY_ERROR && strncmp(r->str, "MOVED ", 6) == 0;
        bool ask = r && r->type == REDIS_REPLY_ERROR && strncmp(r->str, "ASK ", 4) == 0;
        const char *addr = (moved || ask) ? strrchr(r->str, ' ') : NULL;
        const char *colon = addr ? strrchr(addr, ':') : NULL;
        if (!colon || redirects > 0 || colon - addr - 1 >= 256)
            break;
        char host[256];
        snprintf(host, sizeof host, "%.*s", (int)(colon - addr - 1), addr + 1);
        int port = atoi(colon + 1);
        freeReplyObject(r);
        r = NULL;
        redisFree(rc);
        rc = redisConnectWithTimeout(host, port, (struct timeval){5, 0});
        asking = ask;
    }
    bool ok = r && r->type == REDIS_REPLY_INTEGER;
    if (!ok)
        fprintf(stderr, "herald publish: Redis %s failed: %s\n", verb,
                r && r->str     ? r->str
                : rc->errstr[0] ? rc->errstr
                                : "AUTH refused");
    freeReplyObject(r);
    redisFree(rc);
    return ok ? 0 : -1;
}

int cli_publish(const struct herald_config *cfg, const char *channel, const char *data,
                const char *key)
{
    if (!channel_name_valid(channel, strlen(channel))) {
        fprintf(stderr, "herald publish: invalid channel name '%s'\n", channel);
        return 2;
    }
    if (!cfg->database_url[0]) {
        fprintf(stderr, "herald publish: HERALD_DATABASE_URL is not set\n");
        return 2;
    }
    PGconn *pg = PQconnectdb(cfg->database_url);
    if (PQstatus(pg) != CONNECTION_OK) {
        fprintf(stderr, "herald publish: %s", PQerrorMessage(pg));
        PQfinish(pg);
        return 1;
    }
    const char *params[] = {channel, data, key};
    PGresult *r = PQexecParams(pg,
                               "SELECT seq, herald_sign(epoch, envelope), epoch, duplicate "
                               "FROM herald_publish($1, $2::json, $3)",
                               3, NULL, params, NULL, NULL, 0);
    int status = 1;
    if (PQresultStatus(r) != PGRES_TUPLES_OK || PQntuples(r) != 1) {
        fprintf(stderr, "herald publish: %s", PQresultErrorMessage(r));
    } else {
        bool duplicate = PQgetvalue(r, 0, 3)[0] == 't';
        /* step 2, after the COMMIT of step 1; a retry publishes nothing new */
        if (duplicate || redis_publish(cfg, channel, PQgetvalue(r, 0, 1)) == 0) {
            printf("{\"channel\":\"%s\",\"seq\":%s,\"epoch\":\"%s\",\"duplicate\":%s}\n", channel,
                   PQgetvalue(r, 0, 0), PQgetvalue(r, 0, 2), duplicate ? "true" : "false");
            status = 0;
        }
    }
    PQclear(r);
    PQfinish(pg);
    return status;
}
