/* Settings: every one is an environment variable HERALD_X and a flag --x; flags win. */
#ifndef HERALD_CONFIG_H
#define HERALD_CONFIG_H

#include "cidr.h"
#include "log.h"
#include "redis_url.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>

struct herald_config {
    char listen[128];
    char listen_host[64];
    int listen_port;
    char redis_url_text[4096];
    struct redis_url redis[REDIS_URL_MAX]; /* channels spread over them: shard.h */
    int nredis;
    char redis_prefix[64];
    char redis_pubsub[16];     /* HERALD_REDIS_PUBSUB: "classic" or "sharded" */
    bool redis_pubsub_sharded; /* sharded: SSUBSCRIBE/SPUBLISH on a cluster's slot owners */
    char static_dir[512];
    char instance_id[128];
    long max_connections;
    long max_subscriptions;
    long max_frame_bytes;
    long client_queue_bytes;
    long drain_seconds;
    long heartbeat_ms;
    long ready_any_shard; /* /readyz: one live Redis server is enough */
    char log_level_text[16];
    enum log_level log_level;
    char database_url[1024];      /* empty: no history */
    char database_read_url[1024]; /* empty: every read on the primary */
    long db_pool;
    long db_connect_timeout_ms;
    long db_query_timeout_ms;
    long history_ttl_ms;
    long history_max;
    long replay_max;
    long recent_bytes;
    long prune_interval_ms;
    long max_publish_bytes;
    long page_bytes;
    long hold_bytes;
    long recent_total_bytes;
    long body_buffer_bytes;
    long body_timeout_ms;
    long ping_interval_ms;
    long stream_heartbeat_ms;
    long longpoll_timeout_ms;
    long ds_sse_lifetime_ms;
    long pong_timeout_ms;
    long http_idle_timeout_ms;
    long db_queue_max;
    long publish_queue_max;
    char presence[2048]; /* channel globs with presence; empty: none */
    long presence_ttl_ms;
    long presence_linger_ms;
    long presence_max_members;
    long presence_info_bytes;
    char jwt_secret[4097];
    long jwt_leeway;
    char jwt_public_key[512]; /* a PEM file's path */
    char jwks_url[2048];
    long jwks_refresh_ms;
    char jwks_ca_file[512];
    char jwt_issuer[256];
    char jwt_audience[256];
    char api_key[512];
    char allowed_origins[2048];
    char cors_origins[2048];
    char trusted_proxies_text[2048];
    struct cidr_list trusted_proxies;
    char ip_limit_exempt_text[2048];
    struct cidr_list ip_limit_exempt;
    long max_connections_per_ip;
    long rate_limit;
    long rate_burst;
    long max_json_depth;
    char tls_cert[512];
    char tls_key[512];
    long migrate_on_start;
    long deflate;
    long workers;
    int worker; /* set by the supervisor: 1..workers in a worker process, 0 when alone */
};

/* Bytes a sequenced envelope and its WebSocket frame add to a message's data at most: the
 * envelope's members with a 200-byte channel and 20-digit numbers, and a 10-byte frame
 * header. HERALD_CLIENT_QUEUE_BYTES must hold the largest message with this much to spare. */
#define CONFIG_ENVELOPE_OVERHEAD 1024

enum config_result { CONFIG_OK = 0, CONFIG_EXIT = 1, CONFIG_ERROR = -1 };

/* Fills cfg from defaults, then the environment, then argv. CONFIG_EXIT means --help or
 * --version was printed to out; CONFIG_ERROR leaves a message in err. */
enum config_result config_load(struct herald_config *cfg, int argc, char **argv, FILE *out,
                               char *err, size_t errlen);

/* Parses "250ms", "90s", "30m", "24h", "7d" (a bare number is seconds) into milliseconds.
 * Returns 0 or -1. */
int config_parse_duration(const char *s, long *out_ms);

/* Parses "123", "64k", "1M", "2G" (binary units). Returns 0 or -1. */
int config_parse_size(const char *s, long *out);

/* Parses "host:port" (host may be empty or "*" for all interfaces). Returns 0 or -1. */
int config_parse_listen(const char *s, char *host, size_t hostlen, int *port);

#endif
