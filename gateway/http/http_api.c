#include "http_api.h"
#include "bus.h"
#include "db.h"
#include "retention.h"
#include "herald.h"
#include "hub.h"
#include "json_text.h"
#include "publish.h"
#include "http_reply.h"
#include "static_files.h"

#include <libwebsockets.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void metric(FILE *f, const char *name, const char *type, const char *help, double v)
{
    /* %.15g prints counters as integers and keeps seconds readable */
    fprintf(f, "# HELP %s %s\n# TYPE %s %s\n%s %.15g\n", name, help, name, type, name, v);
}

/* Prometheus text exposition of this process's counters. */
static void render_metrics(struct herald *app, FILE *f)
{
    const struct metrics *m = &app->metrics;
    fprintf(f,
            "# HELP herald_info Build and instance.\n# TYPE herald_info gauge\n"
            "herald_info{version=\"%s\",instance=\"%s\"} 1\n",
            HERALD_VERSION, app->cfg->instance_id);
    metric(f, "herald_uptime_seconds", "gauge", "Seconds since start.",
           (double)(herald_now_ms(app) - app->started_ms) / 1000.0);
    metric(f, "herald_connections", "gauge", "Open WebSocket connections.", (double)m->connections);
    metric(f, "herald_connections_total", "counter", "WebSocket connections accepted.",
           (double)m->connections_total);
    metric(f, "herald_rejected_connections_total", "counter",
           "WebSocket handshakes refused (limit or draining).", (double)m->rejected_connections);
    metric(f, "herald_subscriptions", "gauge", "Client subscriptions.", (double)m->subscriptions);
    metric(f, "herald_channels", "gauge", "Channels with local subscribers.",
           (double)hub_channel_count(app->hub));
    metric(f, "herald_redis_messages_total", "counter", "Messages received from Redis.",
           (double)m->redis_messages);
    metric(f, "herald_invalid_payloads_total", "counter",
           "Redis payloads dropped: not JSON or a broken envelope.", (double)m->invalid_payloads);
    metric(f, "herald_presence_channels", "gauge",
           "Presence channels (HERALD_PRESENCE) with a connection on this instance.",
           (double)m->presence_channels);
    metric(f, "herald_presence_members", "gauge",
           "Users this instance lists in Redis, over all presence channels.",
           (double)m->presence_members);
    metric(f, "herald_presence_joins_total", "counter", "Presence join events published.",
           (double)m->presence_joins);
    metric(f, "herald_presence_leaves_total", "counter", "Presence leave events published.",
           (double)m->presence_leaves);
    metric(f, "herald_presence_full_total", "counter",
           "Users left unlisted: the channel had HERALD_PRESENCE_MAX_MEMBERS members.",
           (double)m->presence_full);
    metric(f, "herald_presence_errors_total", "counter",
           "Presence scripts that failed or could not be sent, and malformed entries read.",
           (double)m->presence_errors);
    metric(f, "herald_jwt_keys", "gauge",
           "Public keys RS256 and ES256 tokens are checked with (PEM file and JWK Set).",
           (double)m->jwt_keys);
    metric(f, "herald_jwks_fetches_total", "counter", "JWK Set fetches that arrived whole.",
           (double)m->jwks_fetches);
    metric(f, "herald_jwks_fetch_failures_total", "counter",
           "JWK Set fetches that failed or brought a malformed set (the keys there were stay).",
           (double)m->jwks_fetch_failures);
    metric(f, "herald_duplicates_dropped_total", "counter",
           "Sequenced messages dropped as already delivered.", (double)m->duplicates_dropped);
    metric(f, "herald_frames_out_total", "counter", "Frames delivered to clients.",
           (double)m->frames_out);
    metric(f, "herald_bytes_out_total", "counter", "Bytes delivered to clients.",
           (double)m->bytes_out);
    metric(f, "herald_writes_total", "counter", "Socket writes (each carries a batch).",
           (double)m->writes);
    metric(f, "herald_client_frames_in_total", "counter", "Messages received from clients.",
           (double)m->client_frames_in);
    fprintf(f,
            "# HELP herald_http_streams Open HTTP streams: SSE responses, and long-polls and "
            "catch-up reads waiting.\n# TYPE herald_http_streams gauge\n"
            "herald_http_streams{kind=\"sse\"} %lld\nherald_http_streams{kind=\"poll\"} %lld\n",
            (long long)m->streams_sse, (long long)m->streams_poll);
    metric(f, "herald_http_streams_total", "counter", "HTTP streams admitted.",
           (double)m->streams_total);
    metric(f, "herald_http_stream_messages_total", "counter", "Messages queued to HTTP streams.",
           (double)m->stream_messages);
    metric(f, "herald_http_stream_slow_closes_total", "counter",
           "SSE streams closed for a queue past HERALD_CLIENT_QUEUE_BYTES.",
           (double)m->stream_slow_closes);
    metric(f, "herald_slow_consumer_closes_total", "counter",
           "Clients closed with 4008 for a full send queue.", (double)m->slow_consumer_closes);
    metric(f, "herald_redis_reconnects_total", "counter", "Redis reconnections.",
           (double)m->redis_reconnects);
    metric(f, "herald_redis_redirects_total", "counter",
           "SPUBLISH answered MOVED or ASK by a Redis Cluster node (a stale slot map).",
           (double)m->redis_redirects);
    metric(f, "herald_redis_up", "gauge",
           "1 while the heartbeat comes back from every Redis server.",
           bus_ready(app->bus) ? 1 : 0);
    metric(f, "herald_redis_heartbeat_age_seconds", "gauge",
           "Seconds since the last heartbeat came back from the Redis server furthest behind.",
           (double)bus_heartbeat_age_ms(app->bus) / 1000.0);
    fprintf(f, "# HELP herald_redis_shard_up 1 while this Redis server's heartbeat comes back.\n"
               "# TYPE herald_redis_shard_up gauge\n");
    for (int i = 0; i < bus_shards(app->bus); i++) {
        const char *label = bus_shard_label(app->bus, i);
        if (label) /* NULL: a cluster node no longer in the slot map */
            fprintf(f, "herald_redis_shard_up{shard=\"%d\",server=\"%s\"} %d\n", i, label,
                    bus_shard_ready(app->bus, i) ? 1 : 0);
    }
    metric(f, "herald_held_bytes", "gauge",
           "Bytes of sequenced messages held across gaps (HERALD_HOLD_BYTES per channel).",
           (double)m->held_bytes);
    metric(f, "herald_hold_overflows_total", "counter",
           "Sequenced messages past a channel's hold budget, fetched from PostgreSQL instead.",
           (double)m->hold_overflows);
    metric(f, "herald_recent_cache_bytes", "gauge",
           "Bytes of the recent-message caches of all channels (HERALD_RECENT_TOTAL_BYTES).",
           (double)m->recent_bytes);
    metric(f, "herald_unverified_envelopes_total", "counter",
           "Sequenced envelopes from Redis without a valid signature: never delivered.",
           (double)m->unverified_envelopes);
    metric(f, "herald_replay_pauses_total", "counter",
           "Times a resume waited for its client's queue to drain.", (double)m->replay_pauses);
    metric(f, "herald_http_body_bytes", "gauge",
           "POST body bytes held now (HERALD_BODY_BUFFER_BYTES).", (double)app->http_body_bytes);
    metric(f, "herald_db_queued", "gauge",
           "PostgreSQL queries waiting for a connection (HERALD_DB_QUEUE_MAX).",
           app->db ? (double)db_queued(app->db) : 0);
    metric(f, "herald_gaps_skipped_total", "counter",
           "Sequenced messages that could not be recovered (pruned or PostgreSQL down).",
           (double)m->gaps_skipped);
    metric(f, "herald_resumes_recovered_total", "counter", "Resumes answered recovered:true.",
           (double)m->resumes_recovered);
    metric(f, "herald_resumes_failed_total", "counter", "Resumes answered recovered:false.",
           (double)m->resumes_failed);
    metric(f, "herald_auth_failures_total", "counter",
           "Connections and requests refused for their credentials or Origin.",
           (double)m->auth_failures);
    metric(f, "herald_rate_limit_closes_total", "counter",
           "Connections closed with 4029 for ignoring rate_limited.", (double)m->rate_limit_closes);
    metric(f, "herald_pings_sent_total", "counter",
           "WebSocket pings sent to clients quiet for HERALD_PING_INTERVAL.",
           (double)m->pings_sent);
    metric(f, "herald_ping_timeouts_total", "counter",
           "Clients hung up on for answering no ping within HERALD_PONG_TIMEOUT.",
           (double)m->ping_timeouts);
    metric(f, "herald_db_up", "gauge", "1 while a PostgreSQL connection is up.",
           app->db && db_up(app->db) ? 1 : 0);
    metric(f, "herald_db_read_up", "gauge",
           "1 while a connection to the standby of HERALD_DATABASE_READ_URL is up.",
           app->db_read && db_up(app->db_read) ? 1 : 0);
    metric(f, "herald_history_divergences_total", "counter",
           "Channels whose delivered history PostgreSQL no longer has (a failover lost commits): "
           "given a new epoch, their clients told to reload.",
           (double)m->history_divergences);
    metric(f, "herald_history_standby_reads_total", "counter",
           "Catch-up pages the standby answered.", (double)m->standby_reads);
    metric(f, "herald_history_standby_fallbacks_total", "counter",
           "Catch-up pages asked of the primary because the standby lagged or failed.",
           (double)m->standby_fallbacks);
    metric(f, "herald_history_pruned_total", "counter",
           "Messages this instance pruned from the history.",
           (double)retention_pruned(app->retention));
    metric(f, "herald_db_queries_total", "counter", "Queries sent to PostgreSQL.",
           app->db ? (double)db_queries_sent(app->db) : 0);
    metric(f, "herald_durable_publishes_total", "counter",
           "Messages stored by durable publishes (REST and WebSocket), retries included.",
           (double)publisher_messages(app->publisher));
    metric(f, "herald_publish_batches_total", "counter",
           "herald_publish_batch statements committed or tried (group commit).",
           (double)publisher_batches(app->publisher));
    metric(f, "herald_publish_queued", "gauge",
           "Durable publishes waiting for the batches in flight to commit.",
           (double)publisher_queued(app->publisher));
    fprintf(f, "# HELP herald_client_errors_total Error replies (WebSocket and /v1), by code.\n"
               "# TYPE herald_client_errors_total counter\n");
    for (int i = 0; i < ERR_COUNT; i++)
        fprintf(f, "herald_client_errors_total{code=\"%s\"} %llu\n", errcode_name((enum errcode)i),
                (unsigned long long)m->client_errors[i]);
}

static int serve_metrics(struct herald *app, struct lws *wsi)
{
    char *text = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&text, &len);
    if (!f)
        return http_respond_error(wsi, 500, ERR_INTERNAL, "out of memory");
    render_metrics(app, f);
    fclose(f);
    int r = http_respond(wsi, 200, "text/plain; version=0.0.4", text, len);
    free(text);
    return r;
}

/* The instance name lets a page or an operator behind a load balancer see who answered. */
static int serve_healthz(struct herald *app, struct lws *wsi)
{
    char name[6 * sizeof app->cfg->instance_id + 1], body[sizeof name + 40];
    json_escape(app->cfg->instance_id, strlen(app->cfg->instance_id), name, sizeof name);
    int n = snprintf(body, sizeof body, "{\"ok\":true,\"instance\":\"%s\"}\n", name);
    return http_respond(wsi, 200, "application/json", body, (size_t)n);
}

static int serve_readyz(struct herald *app, struct lws *wsi)
{
    /* with HERALD_READY_ANY_SHARD one live Redis server is enough: when one of several is
     * down, every instance loses its channels alike, and all of them turning unready would
     * take the other servers' channels away too */
    bool redis = app->cfg->ready_any_shard ? bus_any_ready(app->bus) : bus_ready(app->bus);
    char body[160];
    int n = snprintf(body, sizeof body, "{\"ready\":%s,\"redis\":%s,\"draining\":%s}\n",
                     redis && !app->draining ? "true" : "false", redis ? "true" : "false",
                     app->draining ? "true" : "false");
    return http_respond(wsi, redis && !app->draining ? 200 : 503, "application/json", body,
                        (size_t)n);
}

int http_api_serve(struct herald *app, struct lws *wsi)
{
    char uri[256] = "";
    lws_hdr_copy(wsi, uri, sizeof uri, WSI_TOKEN_GET_URI);
    int r;
    if (!uri[0])
        r = http_respond_error(wsi, 405, ERR_BAD_REQUEST, "only GET is served here");
    else if (strcmp(uri, "/healthz") == 0)
        r = serve_healthz(app, wsi);
    else if (strcmp(uri, "/readyz") == 0)
        r = serve_readyz(app, wsi);
    else if (strcmp(uri, "/metrics") == 0)
        r = serve_metrics(app, wsi);
    else if (app->cfg->static_dir[0])
        return static_serve(app, wsi, uri);
    else
        r = http_respond_error(wsi, 404, ERR_NOT_FOUND, "no such route");
    if (r < 0)
        return -1;
    return lws_http_transaction_completed(wsi) ? -1 : 0;
}
