#include "config.h"

#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

enum setting_type { SET_STRING, SET_NUMBER, SET_SIZE, SET_DURATION, SET_BOOL };

struct setting {
    const char *env; /* HERALD_X; the flag is --x */
    enum setting_type type;
    const char *def;
    size_t offset;
    size_t size; /* of the string field */
    long min, max;
    const char *help;
};

#define STR(env, field, def, help)                                                                 \
    {                                                                                              \
        env, SET_STRING, def, offsetof(struct herald_config, field),                               \
            sizeof(((struct herald_config *)0)->field), 0, 0, help                                 \
    }
#define NUM(env, field, def, lo, hi, help)                                                         \
    {                                                                                              \
        env, SET_NUMBER, def, offsetof(struct herald_config, field), 0, lo, hi, help               \
    }
#define SIZE(env, field, def, lo, hi, help)                                                        \
    {                                                                                              \
        env, SET_SIZE, def, offsetof(struct herald_config, field), 0, lo, hi, help                 \
    }
#define DURATION(env, field, def, lo, hi, help)                                                    \
    {                                                                                              \
        env, SET_DURATION, def, offsetof(struct herald_config, field), 0, lo, hi, help             \
    }
#define BOOL(env, field, def, help)                                                                \
    {                                                                                              \
        env, SET_BOOL, def, offsetof(struct herald_config, field), 0, 0, 1, help                   \
    }

static const struct setting settings[] = {
    STR("HERALD_LISTEN", listen, "0.0.0.0:8080", "address:port to listen on"),
    STR("HERALD_REDIS_URL", redis_url_text, "redis://127.0.0.1:6379/0",
        "redis://[user[:password]@]host[:port][/db], "
        "redis-sentinel://[user[:password]@]host[:port][,host[:port]...]/master-name[/db], or "
        "redis-cluster://[user[:password]@]host[:port][,host[:port]...]; "
        "or several redis:// and redis-sentinel:// separated by commas (channels are spread "
        "over them by a consistent hash; append new servers last)"),
    STR("HERALD_REDIS_PUBSUB", redis_pubsub, "classic",
        "classic (SUBSCRIBE/PUBLISH) or sharded (SSUBSCRIBE/SPUBLISH on each channel's slot "
        "owner; needs a redis-cluster:// URL)"),
    STR("HERALD_REDIS_PREFIX", redis_prefix, "", "prefix of every Redis channel name"),
    STR("HERALD_STATIC_DIR", static_dir, "", "serve the web demo from this folder at /"),
    STR("HERALD_INSTANCE_ID", instance_id, "", "name of this instance (default host-pid)"),
    NUM("HERALD_MAX_CONNECTIONS", max_connections, "100000", 1, 10000000,
        "WebSocket connections per process; more are refused with 503"),
    NUM("HERALD_MAX_SUBSCRIPTIONS", max_subscriptions, "256", 1, 16384,
        "channels one connection may subscribe to"),
    SIZE("HERALD_MAX_FRAME_BYTES", max_frame_bytes, "64k", 256, 16L << 20,
         "largest client message; larger ones get too_large"),
    SIZE("HERALD_CLIENT_QUEUE_BYTES", client_queue_bytes, "1M", 4096, 1L << 30,
         "outbound bytes queued per client before it is closed with 4008"),
    NUM("HERALD_DRAIN_SECONDS", drain_seconds, "10", 0, 3600,
        "on SIGTERM, seconds to flush and close clients before exiting"),
    NUM("HERALD_HEARTBEAT_MS", heartbeat_ms, "1000", 50, 60000,
        "Redis self-heartbeat interval; 3 missed beats mean the link is dead"),
    BOOL("HERALD_READY_ANY_SHARD", ready_any_shard, "0",
         "with several Redis servers, /readyz stays 200 while any one delivers (default: all)"),
    STR("HERALD_LOG_LEVEL", log_level_text, "info", "debug, info, warn or error"),
    STR("HERALD_DATABASE_URL", database_url, "",
        "PostgreSQL conninfo or URI for the history; empty: no history"),
    STR("HERALD_DATABASE_READ_URL", database_read_url, "",
        "a streaming standby of it: catch-up pages are read there when it has caught up"),
    NUM("HERALD_DB_POOL", db_pool, "4", 1, 64, "PostgreSQL connections per process"),
    DURATION("HERALD_DB_CONNECT_TIMEOUT", db_connect_timeout_ms, "5s", 1000, 3600L * 1000,
             "a PostgreSQL connect (lookup and login) not done in this time fails, and the next "
             "host of the URL is tried"),
    DURATION("HERALD_DB_QUERY_TIMEOUT", db_query_timeout_ms, "10s", 1000, 3600L * 1000,
             "a PostgreSQL query not answered in this time fails (outcome unknown), and its "
             "connection is dropped"),
    DURATION("HERALD_HISTORY_TTL", history_ttl_ms, "24h", 1000, 365L * 86400 * 1000,
             "messages older than this are pruned"),
    NUM("HERALD_HISTORY_MAX", history_max, "10000", 1, 1000000000,
        "messages kept per channel; older ones are pruned"),
    NUM("HERALD_REPLAY_MAX", replay_max, "10000", 1, 1000000,
        "most messages one resume replays; more means recovered:false"),
    SIZE("HERALD_MAX_PUBLISH_BYTES", max_publish_bytes, "512k", 16, 64L << 20,
         "largest message: data of a durable publish (413 beyond), a whole POST body, a raw "
         "Redis payload (dropped beyond)"),
    SIZE("HERALD_PAGE_BYTES", page_bytes, "1M", 4096, 1L << 30,
         "message bytes one history query returns (a REST page, a resume step); at least one "
         "message"),
    SIZE("HERALD_HOLD_BYTES", hold_bytes, "4M", 65536, 1L << 30,
         "bytes of sequenced messages held per channel across a gap; later ones are fetched "
         "from PostgreSQL"),
    SIZE("HERALD_RECENT_TOTAL_BYTES", recent_total_bytes, "256M", 0, 1L << 40,
         "recent-message cache of all channels together; the least recently active give way"),
    SIZE("HERALD_BODY_BUFFER_BYTES", body_buffer_bytes, "64M", 65536, 1L << 40,
         "POST body bytes a process buffers at once; beyond, 503"),
    DURATION("HERALD_BODY_TIMEOUT", body_timeout_ms, "30s", 1000, 3600L * 1000,
             "a POST body must have arrived this long after its headers"),
    DURATION("HERALD_PING_INTERVAL", ping_interval_ms, "25s", 0, 3600L * 1000,
             "a WebSocket ping goes to a client that has sent nothing for this long (0: never)"),
    DURATION("HERALD_PONG_TIMEOUT", pong_timeout_ms, "10s", 1000, 3600L * 1000,
             "a client that has answered nothing this long after a ping is hung up on"),
    DURATION("HERALD_STREAM_HEARTBEAT", stream_heartbeat_ms, "15s", 1000, 3600L * 1000,
             "an SSE stream that has sent nothing this long gets a comment line"),
    DURATION("HERALD_LONGPOLL_TIMEOUT", longpoll_timeout_ms, "25s", 0, 300L * 1000,
             "a long-poll with nothing to answer is held this long (a request's timeout= "
             "may ask for less or more, up to 300 s)"),
    DURATION("HERALD_DS_SSE_LIFETIME", ds_sse_lifetime_ms, "60s", 1000, 3600L * 1000,
             "a Durable Streams SSE response ends cleanly after this long; the client "
             "reconnects from its offset"),
    DURATION("HERALD_HTTP_IDLE_TIMEOUT", http_idle_timeout_ms, "5s", 1000, 3600L * 1000,
             "an HTTP keep-alive connection idle this long after an answer is closed"),
    NUM("HERALD_DB_QUEUE_MAX", db_queue_max, "20000", 1, 10000000,
        "PostgreSQL queries waiting for a connection; beyond, they fail at once"),
    NUM("HERALD_PUBLISH_QUEUE_MAX", publish_queue_max, "20000", 1, 10000000,
        "durable publishes waiting for a batch; beyond, they fail at once"),
    DURATION("HERALD_PRUNE_INTERVAL", prune_interval_ms, "60s", 1000, 86400L * 1000,
             "how often one instance prunes the history (TTL and MAX)"),
    SIZE("HERALD_RECENT_BYTES", recent_bytes, "256k", 0, 1L << 30,
         "recent messages kept per channel in memory, so most resumes need no query"),
    STR("HERALD_PRESENCE", presence, "",
        "comma-separated channel globs with presence (who is subscribed, join and leave "
        "events); empty: none"),
    DURATION("HERALD_PRESENCE_TTL", presence_ttl_ms, "30s", 1000, 3600L * 1000,
             "a presence entry lives this long in Redis unless its instance refreshes it (every "
             "third of it): how soon a crashed instance's members are gone"),
    DURATION("HERALD_PRESENCE_LINGER", presence_linger_ms, "3s", 0, 60L * 1000,
             "a member whose last connection went stays this long before it leaves, so a tab "
             "that reconnects makes no leave and join"),
    NUM("HERALD_PRESENCE_MAX_MEMBERS", presence_max_members, "1000", 1, 1000000,
        "members listed per channel; more are subscribed but not listed (presence_full)"),
    SIZE("HERALD_PRESENCE_INFO_BYTES", presence_info_bytes, "256", 0, 65536,
         "largest info a member shows (JSON text); larger is bad_request"),
    STR("HERALD_JWT_SECRET", jwt_secret, "",
        "HS256 secret: when set, WebSocket and /v1 need a JWT (never logged)"),
    NUM("HERALD_JWT_LEEWAY", jwt_leeway, "5", 0, 60, "seconds of clock skew allowed on exp"),
    STR("HERALD_JWT_PUBLIC_KEY", jwt_public_key, "",
        "PEM file of public keys (RSA 2048+ or EC P-256): RS256 and ES256 tokens are checked "
        "with them"),
    STR("HERALD_JWKS_URL", jwks_url, "",
        "http(s) URL of a JWK Set whose RS256 and ES256 keys tokens are checked with; fetched "
        "off the event loop at start, every HERALD_JWKS_REFRESH and on an unknown kid"),
    DURATION("HERALD_JWKS_REFRESH", jwks_refresh_ms, "10m", 10000, 86400L * 1000,
             "how often the JWK Set is fetched again"),
    STR("HERALD_JWKS_CA_FILE", jwks_ca_file, "",
        "CA certificates (PEM) for an https JWKS URL; empty: the system's"),
    STR("HERALD_JWT_ISSUER", jwt_issuer, "", "when set, a token's iss must be exactly this"),
    STR("HERALD_JWT_AUDIENCE", jwt_audience, "",
        "when set, a token's aud must name this (a string, or one of an array)"),
    STR("HERALD_API_KEY", api_key, "", "Bearer key with service access to all of /v1"),
    STR("HERALD_ALLOWED_ORIGINS", allowed_origins, "",
        "comma-separated Origins browsers may connect from; * for any"),
    STR("HERALD_CORS_ORIGINS", cors_origins, "",
        "comma-separated Origins whose pages may call /v1 (CORS); * for any; empty: none"),
    NUM("HERALD_MAX_CONNECTIONS_PER_IP", max_connections_per_ip, "1000", 1, 10000000,
        "WebSocket connections from one address; more are refused with 429"),
    STR("HERALD_TRUSTED_PROXIES", trusted_proxies_text, "",
        "comma-separated addresses or CIDRs of proxies whose X-Forwarded-For names the client"),
    STR("HERALD_IP_LIMIT_EXEMPT", ip_limit_exempt_text,
        "10.0.0.0/8,172.16.0.0/12,192.168.0.0/16,fc00::/7",
        "client addresses (CIDRs) HERALD_MAX_CONNECTIONS_PER_IP does not apply to (a balancer "
        "not named in HERALD_TRUSTED_PROXIES); empty: none"),
    NUM("HERALD_RATE_LIMIT", rate_limit, "50", 1, 1000000,
        "client messages per second per connection (token bucket)"),
    NUM("HERALD_RATE_BURST", rate_burst, "100", 1, 1000000,
        "bucket size; past it in a row refused messages close the connection with 4029"),
    NUM("HERALD_MAX_JSON_DEPTH", max_json_depth, "16", 1, 1000,
        "deepest nesting of arrays and objects in a client message"),
    STR("HERALD_TLS_CERT", tls_cert, "", "PEM certificate: serve HTTPS and WSS"),
    STR("HERALD_TLS_KEY", tls_key, "", "PEM private key of HERALD_TLS_CERT"),
    BOOL("HERALD_MIGRATE_ON_START", migrate_on_start, "0",
         "apply the schema migrations before serving (as `herald migrate`)"),
    BOOL("HERALD_DEFLATE", deflate, "0",
         "offer permessage-deflate (RFC 7692); each message is compressed once for all"),
    NUM("HERALD_WORKERS", workers, "1", 1, 64,
        "gateway processes sharing the port (SO_REUSEPORT) under a supervisor"),
};

#define NSETTINGS (sizeof settings / sizeof settings[0])

/* --redis-url from HERALD_REDIS_URL */
static void flag_name(const char *env, char *out, size_t cap)
{
    const char *p = env + strlen("HERALD_");
    size_t i = 0;
    for (; *p && i + 1 < cap; p++)
        out[i++] = *p == '_' ? '-' : (char)tolower((unsigned char)*p);
    out[i] = '\0';
}

int config_parse_size(const char *s, long *out)
{
    errno = 0;
    char *end;
    long long v = strtoll(s, &end, 10);
    if (end == s || errno || v < 0)
        return -1;
    long long mult = 1;
    switch (*end) {
    case '\0':
        break;
    case 'k':
    case 'K':
        mult = 1LL << 10;
        end++;
        break;
    case 'm':
    case 'M':
        mult = 1LL << 20;
        end++;
        break;
    case 'g':
    case 'G':
        mult = 1LL << 30;
        end++;
        break;
    default:
        return -1;
    }
    if ((*end == 'i' || *end == 'I') && mult > 1)
        end++;
    if ((*end == 'b' || *end == 'B') && mult > 1)
        end++;
    if (*end != '\0' || v > LONG_MAX / mult)
        return -1;
    *out = (long)(v * mult);
    return 0;
}

int config_parse_duration(const char *s, long *out_ms)
{
    errno = 0;
    char *end;
    long long v = strtoll(s, &end, 10);
    if (end == s || errno || v < 0)
        return -1;
    long long mult;
    if (strcmp(end, "ms") == 0)
        mult = 1;
    else if (*end == '\0' || strcmp(end, "s") == 0)
        mult = 1000;
    else if (strcmp(end, "m") == 0)
        mult = 60 * 1000;
    else if (strcmp(end, "h") == 0)
        mult = 3600 * 1000;
    else if (strcmp(end, "d") == 0)
        mult = 86400 * 1000;
    else
        return -1;
    if (v > LONG_MAX / mult)
        return -1;
    *out_ms = (long)(v * mult);
    return 0;
}

/* "1", "true", "yes", "on" and their opposites. */
static int parse_bool(const char *s, long *out)
{
    static const char *const yes[] = {"1", "true", "yes", "on"};
    static const char *const no[] = {"0", "false", "no", "off", ""};
    for (size_t i = 0; i < sizeof yes / sizeof yes[0]; i++)
        if (strcasecmp(s, yes[i]) == 0)
            return *out = 1, 0;
    for (size_t i = 0; i < sizeof no / sizeof no[0]; i++)
        if (strcasecmp(s, no[i]) == 0)
            return *out = 0, 0;
    return -1;
}

int config_parse_listen(const char *s, char *host, size_t hostlen, int *port)
{
    const char *colon = strrchr(s, ':');
    if (!colon)
        return -1;
    size_t n = (size_t)(colon - s);
    if (n >= hostlen)
        return -1;
    memcpy(host, s, n);
    host[n] = '\0';
    if (strcmp(host, "*") == 0)
        host[0] = '\0';
    char *end;
    errno = 0;
    long p = strtol(colon + 1, &end, 10);
    if (end == colon + 1 || *end || errno || p < 0 || p > 65535)
        return -1;
    *port = (int)p;
    return 0;
}

static int apply(struct herald_config *cfg, const struct setting *st, const char *value, char *err,
                 size_t errlen)
{
    char *field = (char *)cfg + st->offset;
    long v = 0;
    char *end;
    switch (st->type) {
    case SET_STRING:
        if (strlen(value) >= st->size) {
            snprintf(err, errlen, "%s: value too long", st->env);
            return -1;
        }
        strcpy(field, value);
        return 0;
    case SET_NUMBER:
        errno = 0;
        v = strtol(value, &end, 10);
        if (end == value || *end || errno)
            v = st->min - 1;
        break;
    case SET_SIZE:
        if (config_parse_size(value, &v))
            v = st->min - 1;
        break;
    case SET_DURATION:
        if (config_parse_duration(value, &v))
            v = st->min - 1;
        break;
    case SET_BOOL:
        if (parse_bool(value, &v))
            v = -1;
        break;
    }
    if (st->type == SET_BOOL && v < 0) {
        snprintf(err, errlen, "%s: '%s' is not true or false", st->env, value);
        return -1;
    }
    if (st->type == SET_DURATION && (v < st->min || v > st->max)) {
        snprintf(err, errlen, "%s: '%s' is not a duration from %lds to %ldd (like 90s, 30m, 24h)",
                 st->env, value, st->min / 1000, st->max / 86400000);
        return -1;
    }
    if (v < st->min || v > st->max) {
        snprintf(err, errlen, "%s: '%s' is not a number from %ld to %ld", st->env, value, st->min,
                 st->max);
        return -1;
    }
    *(long *)(void *)field = v;
    return 0;
}

static void print_help(FILE *out)
{
    fprintf(out,
            "herald %s: a WebSocket gateway that fans Redis events out to browsers\n\n"
            "usage: herald [--flag value]...\n\n"
            "Every setting is an environment variable and a flag; flags win.\n\n",
            HERALD_VERSION);
    for (size_t i = 0; i < NSETTINGS; i++) {
        char flag[64];
        flag_name(settings[i].env, flag, sizeof flag);
        fprintf(out, "  --%-20s %-26s %s (default: \"%s\")\n", flag, settings[i].env,
                settings[i].help, settings[i].def);
    }
    fprintf(out, "  --help                    this text\n  --version                 "
                 "print the version\n");
}

static const struct setting *find_flag(const char *name, size_t n)
{
    for (size_t i = 0; i < NSETTINGS; i++) {
        char flag[64];
        flag_name(settings[i].env, flag, sizeof flag);
        if (strlen(flag) == n && strncmp(flag, name, n) == 0)
            return &settings[i];
    }
    return NULL;
}

static int load_args(struct herald_config *cfg, int argc, char **argv, char *err, size_t errlen)
{
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (strncmp(a, "--", 2) != 0) {
            snprintf(err, errlen, "unexpected argument '%s' (see --help)", a);
            return -1;
        }
        a += 2;
        const char *eq = strchr(a, '=');
        size_t n = eq ? (size_t)(eq - a) : strlen(a);
        const struct setting *st = find_flag(a, n);
        if (!st) {
            snprintf(err, errlen, "unknown flag '%s' (see --help)", argv[i]);
            return -1;
        }
        const char *value;
        if (eq)
            value = eq + 1;
        else if (st->type == SET_BOOL && (i + 1 >= argc || strncmp(argv[i + 1], "--", 2) == 0))
            value = "1"; /* a boolean flag alone means true */
        else
            value = i + 1 < argc ? argv[++i] : NULL;
        if (!value) {
            snprintf(err, errlen, "flag '%s' needs a value", argv[i]);
            return -1;
        }
        if (apply(cfg, st, value, err, errlen))
            return -1;
    }
    return 0;
}

/* Derived fields: the parsed listen address, Redis URL and log level. */
static int finish(struct herald_config *cfg, char *err, size_t errlen)
{
    if (config_parse_listen(cfg->listen, cfg->listen_host, sizeof cfg->listen_host,
                            &cfg->listen_port)) {
        snprintf(err, errlen, "HERALD_LISTEN: '%s' is not host:port", cfg->listen);
        return -1;
    }
    cfg->nredis =
        redis_url_parse_list(cfg->redis_url_text, cfg->redis, REDIS_URL_MAX, err, (int)errlen);
    if (cfg->nredis < 0)
        return -1;
    if (strcmp(cfg->redis_pubsub, "classic") != 0 && strcmp(cfg->redis_pubsub, "sharded") != 0) {
        snprintf(err, errlen, "HERALD_REDIS_PUBSUB: '%s' is not classic or sharded",
                 cfg->redis_pubsub);
        return -1;
    }
    cfg->redis_pubsub_sharded = strcmp(cfg->redis_pubsub, "sharded") == 0;
    bool cluster = false;
    for (int i = 0; i < cfg->nredis; i++)
        cluster |= cfg->redis[i].cluster;
    if (cluster && cfg->nredis > 1) {
        snprintf(err, errlen,
                 "HERALD_REDIS_URL: a redis-cluster:// URL must be the only one "
                 "(the cluster spreads the channels itself)");
        return -1;
    }
    if (cfg->redis_pubsub_sharded && !cluster) {
        snprintf(err, errlen, "HERALD_REDIS_PUBSUB=sharded needs a redis-cluster:// URL");
        return -1;
    }
    if (cfg->presence[0] && cluster && !cfg->redis_pubsub_sharded) {
        snprintf(err, errlen,
                 "HERALD_PRESENCE with a redis-cluster:// URL needs HERALD_REDIS_PUBSUB=sharded "
                 "(presence keys live on the master of their channel's slot)");
        return -1;
    }
    if (cfg->database_read_url[0] && !cfg->database_url[0]) {
        snprintf(err, errlen, "HERALD_DATABASE_READ_URL needs HERALD_DATABASE_URL (the primary)");
        return -1;
    }
    char why[160];
    if (cidr_list_parse(cfg->trusted_proxies_text, &cfg->trusted_proxies, why, sizeof why)) {
        snprintf(err, errlen, "HERALD_TRUSTED_PROXIES: %s", why);
        return -1;
    }
    if (cidr_list_parse(cfg->ip_limit_exempt_text, &cfg->ip_limit_exempt, why, sizeof why)) {
        snprintf(err, errlen, "HERALD_IP_LIMIT_EXEMPT: %s", why);
        return -1;
    }
    if (log_level_parse(cfg->log_level_text, &cfg->log_level)) {
        snprintf(err, errlen, "HERALD_LOG_LEVEL: '%s' is not debug, info, warn or error",
                 cfg->log_level_text);
        return -1;
    }
    if (cfg->client_queue_bytes < cfg->max_publish_bytes + CONFIG_ENVELOPE_OVERHEAD) {
        snprintf(err, errlen,
                 "HERALD_CLIENT_QUEUE_BYTES (%ld) must be at least HERALD_MAX_PUBLISH_BYTES "
                 "(%ld) + %d, or the largest message could never be delivered",
                 cfg->client_queue_bytes, cfg->max_publish_bytes, CONFIG_ENVELOPE_OVERHEAD);
        return -1;
    }
    if (cfg->body_buffer_bytes < cfg->max_publish_bytes) {
        snprintf(err, errlen,
                 "HERALD_BODY_BUFFER_BYTES (%ld) must be at least HERALD_MAX_PUBLISH_BYTES "
                 "(%ld), or the largest request body could never be read",
                 cfg->body_buffer_bytes, cfg->max_publish_bytes);
        return -1;
    }
    if (!cfg->instance_id[0]) {
        char host[64] = "herald";
        gethostname(host, sizeof host - 1);
        snprintf(cfg->instance_id, sizeof cfg->instance_id, "%s-%ld", host, (long)getpid());
    }
    return 0;
}

enum config_result config_load(struct herald_config *cfg, int argc, char **argv, FILE *out,
                               char *err, size_t errlen)
{
    memset(cfg, 0, sizeof *cfg);
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
            print_help(out);
            return CONFIG_EXIT;
        }
        if (strcmp(argv[i], "--version") == 0) {
            fprintf(out, "herald %s\n", HERALD_VERSION);
            return CONFIG_EXIT;
        }
    }
    for (size_t i = 0; i < NSETTINGS; i++) {
        const char *env = getenv(settings[i].env);
        if (apply(cfg, &settings[i], settings[i].def, err, errlen) ||
            (env && apply(cfg, &settings[i], env, err, errlen)))
            return CONFIG_ERROR;
    }
    if (load_args(cfg, argc, argv, err, errlen) || finish(cfg, err, errlen))
        return CONFIG_ERROR;
    return CONFIG_OK;
}
