/* HERALD_REDIS_URL: redis://[user[:password]@]host[:port][/db];
 * redis-sentinel://[user[:password]@]host[:port][,host[:port]...]/master-name[/db]: the
 * sentinels to ask where the master named master-name is (user and password are the
 * master's; the sentinels are asked without AUTH); or
 * redis-cluster://[user[:password]@]host[:port][,host[:port]...]: nodes of a Redis Cluster
 * to learn the slot map from (the others are found through them; a cluster has no db). */
#ifndef HERALD_REDIS_URL_H
#define HERALD_REDIS_URL_H

#include <stdbool.h>

#define REDIS_URL_HOSTS_MAX 16

struct redis_addr {
    char host[256];
    int port;
};

struct redis_url {
    char host[256]; /* redis://: the server; redis-sentinel://: the first sentinel */
    int port;
    char user[128];     /* empty: no ACL user (AUTH with password only) */
    char password[256]; /* empty: no AUTH */
    int db;
    char master_name[128]; /* "": not redis-sentinel:// */
    bool cluster;          /* redis-cluster:// */
    /* redis-sentinel://: the sentinels; redis-cluster://: the seed nodes; else unused */
    struct redis_addr hosts[REDIS_URL_HOSTS_MAX];
    int nhosts;
};

/* Parses url into out. Returns 0, or -1 with a reason in err (errlen bytes). */
int redis_url_parse(const char *url, struct redis_url *out, char *err, int errlen);

/* Most Redis servers HERALD_REDIS_URL may list. */
#define REDIS_URL_MAX 16

/* Parses a comma-separated list of URLs (spaces around commas allowed) into out[0..max); a
 * comma not followed by a URL scheme separates the hosts of a redis-sentinel:// or
 * redis-cluster:// URL.
 * Returns how many, or -1 with a reason in err. The order matters: see shard.h. */
int redis_url_parse_list(const char *text, struct redis_url *out, int max, char *err, int errlen);

#endif
