/* HERALD_REDIS_URL: redis://[user[:password]@]host[:port][/db] */
#ifndef HERALD_REDIS_URL_H
#define HERALD_REDIS_URL_H

struct redis_url {
    char host[256];
    int port;
    char user[128];     /* empty: no ACL user (AUTH with password only) */
    char password[256]; /* empty: no AUTH */
    int db;
};

/* Parses url into out. Returns 0, or -1 with a reason in err (errlen bytes). */
int redis_url_parse(const char *url, struct redis_url *out, char *err, int errlen);

/* Most Redis servers HERALD_REDIS_URL may list. */
#define REDIS_URL_MAX 16

/* Parses a comma-separated list of URLs (spaces around commas allowed) into out[0..max).
 * Returns how many, or -1 with a reason in err. The order matters: see shard.h. */
int redis_url_parse_list(const char *text, struct redis_url *out, int max, char *err, int errlen);

#endif
