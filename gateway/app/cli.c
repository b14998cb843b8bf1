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

/* A synchronous connection to the server of u: its own, or the master its sentinels name
 * (the first sentinel that answers). NULL when none could be reached. */
static redisContext *connect_server(const struct redis_url *u)
{
    struct timeval tv = {5, 0};
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

/* PUBLISH over a short-lived synchronous connection to the channel's Redis server, with
 * AUTH and the channel prefix. */
static int redis_publish(const struct herald_config *cfg, const char *channel, const char *envelope)
{
    const struct redis_url *u = &cfg->redis[shard_of(channel, strlen(channel), cfg->nredis)];
    redisContext *rc = connect_server(u);
    if (!rc || rc->err) {
        fprintf(stderr, "herald publish: Redis: %s\n", rc ? rc->errstr : "out of memory");
        redisFree(rc);
        return -1;
    }
    redisReply *r = NULL;
    if (u->password[0])
        r = u->user[0] ? redisCommand(rc, "AUTH %s %s", u->user, u->password)
                       : redisCommand(rc, "AUTH %s", u->password);
    int ok = !u->password[0] || (r && r->type != REDIS_REPLY_ERROR);
    freeReplyObject(r);
    r = ok ? redisCommand(rc, "PUBLISH %s%s %s", cfg->redis_prefix, channel, envelope) : NULL;
    ok = r && r->type == REDIS_REPLY_INTEGER;
    if (!ok)
        fprintf(stderr, "herald publish: Redis PUBLISH failed: %s\n",
                r && r->str ? r->str : rc->errstr);
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
