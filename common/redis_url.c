#include "redis_url.h"

#include <ctype.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Copies s[0..n) into out, decoding %XX escapes (passwords often contain reserved bytes). */
static int copy_decoded(const char *s, size_t n, char *out, size_t cap)
{
    size_t o = 0;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (c == '%') {
            if (i + 2 >= n || !isxdigit((unsigned char)s[i + 1]) ||
                !isxdigit((unsigned char)s[i + 2]))
                return -1;
            char hex[3] = {s[i + 1], s[i + 2], 0};
            c = (char)strtol(hex, NULL, 16);
            i += 2;
        }
        if (o + 1 >= cap)
            return -1;
        out[o++] = c;
    }
    out[o] = '\0';
    return 0;
}

static int parse_number(const char *s, size_t n, int lo, int hi, int *out)
{
    if (n == 0 || n > 9)
        return -1;
    int v = 0;
    for (size_t i = 0; i < n; i++) {
        if (!isdigit((unsigned char)s[i]))
            return -1;
        v = v * 10 + (s[i] - '0');
    }
    if (v < lo || v > hi)
        return -1;
    *out = v;
    return 0;
}

/* host[:port] in s[0..n), the port defaulting to default_port; IPv6 addresses are not
 * bracketed in these URLs (hiredis takes them as they are). */
static int parse_hostport(const char *s, size_t n, struct redis_addr *out, int default_port)
{
    const char *colon = memchr(s, ':', n);
    size_t hostlen = colon ? (size_t)(colon - s) : n;
    if (hostlen == 0 || hostlen >= sizeof out->host)
        return -1;
    for (size_t i = 0; i < hostlen; i++)
        if (!isalnum((unsigned char)s[i]) && !strchr(".-_", s[i]))
            return -1;
    memcpy(out->host, s, hostlen);
    out->host[hostlen] = '\0';
    out->port = default_port;
    return colon ? parse_number(colon + 1, n - hostlen - 1, 1, 65535, &out->port) : 0;
}

/* A sentinel master name: printable, no space, slash or comma. */
static bool master_name_valid(const char *s, size_t n)
{
    if (n == 0)
        return false;
    for (size_t i = 0; i < n; i++)
        if (!isgraph((unsigned char)s[i]) || s[i] == '/' || s[i] == ',' || s[i] == '@')
            return false;
    return true;
}

/* The comma-separated host[:port] list in p[0..end), into out->hosts. */
static int parse_hosts(const char *p, const char *end, struct redis_url *out, int default_port,
                       const char *what, char *err, int errlen)
{
    for (const char *h = p; h < end;) {
        const char *comma = memchr(h, ',', (size_t)(end - h));
        const char *stop = comma ? comma : end;
        if (out->nhosts == REDIS_URL_HOSTS_MAX) {
            snprintf(err, (size_t)errlen, "more than %d %ss", REDIS_URL_HOSTS_MAX, what);
            return -1;
        }
        if (parse_hostport(h, (size_t)(stop - h), &out->hosts[out->nhosts], default_port)) {
            snprintf(err, (size_t)errlen, "%s %d has a bad host or port", what, out->nhosts + 1);
            return -1;
        }
        out->nhosts++;
        h = comma ? comma + 1 : end;
    }
    if (out->nhosts == 0) {
        snprintf(err, (size_t)errlen, "the URL names no %s", what);
        return -1;
    }
    /* host and port name the first one until the server is known (logs, metrics) */
    snprintf(out->host, sizeof out->host, "%s", out->hosts[0].host);
    out->port = out->hosts[0].port;
    return 0;
}

/* redis-cluster://: the seed nodes, then nothing or "/0" (a cluster has only database 0). */
static int parse_cluster(const char *p, struct redis_url *out, char *err, int errlen)
{
    const char *slash = strchr(p, '/');
    if (parse_hosts(p, slash ? slash : p + strlen(p), out, 6379, "cluster node", err, errlen))
        return -1;
    if (slash && slash[1] && strcmp(slash, "/0") != 0) {
        snprintf(err, (size_t)errlen, "a Redis Cluster has only database 0");
        return -1;
    }
    out->cluster = true;
    return 0;
}

/* redis-sentinel://: the sentinel list up to the first '/', then master-name[/db]. */
static int parse_sentinel(const char *p, struct redis_url *out, char *err, int errlen)
{
    const char *slash = strchr(p, '/');
    if (parse_hosts(p, slash ? slash : p + strlen(p), out, 26379, "sentinel", err, errlen))
        return -1;
    const char *name = slash ? slash + 1 : "";
    const char *name_end = strchr(name, '/');
    size_t namelen = name_end ? (size_t)(name_end - name) : strlen(name);
    if (!master_name_valid(name, namelen) || namelen >= sizeof out->master_name) {
        snprintf(err, (size_t)errlen,
                 "redis-sentinel URL needs a master name: "
                 "redis-sentinel://host:port[,host:port...]/master-name");
        return -1;
    }
    memcpy(out->master_name, name, namelen);
    if (name_end && name_end[1] &&
        parse_number(name_end + 1, strlen(name_end + 1), 0, 1 << 20, &out->db)) {
        snprintf(err, (size_t)errlen, "redis URL has a bad database number");
        return -1;
    }
    return 0;
}

int redis_url_parse(const char *url, struct redis_url *out, char *err, int errlen)
{
    memset(out, 0, sizeof *out);
    out->port = 6379;
    if (strncmp(url, "rediss://", 9) == 0) {
        snprintf(err, (size_t)errlen,
                 "rediss:// (TLS) is not supported: Debian's hiredis has no TLS; "
                 "reach Redis over a private network or a TLS tunnel (see docs/SECURITY.md)");
        return -1;
    }
    bool sentinel = strncmp(url, "redis-sentinel://", 17) == 0;
    bool cluster = strncmp(url, "redis-cluster://", 16) == 0;
    if (!sentinel && !cluster && strncmp(url, "redis://", 8) != 0) {
        snprintf(err, (size_t)errlen,
                 "redis URL must start with redis://, redis-sentinel:// or redis-cluster://");
        return -1;
    }
    const char *p = url + (sentinel ? 17 : cluster ? 16 : 8);
    const char *at = strrchr(p, '@');
    if (at) {
        const char *colon = memchr(p, ':', (size_t)(at - p));
        const char *user_end = colon ? colon : at;
        if (copy_decoded(p, (size_t)(user_end - p), out->user, sizeof out->user) ||
            (colon && copy_decoded(colon + 1, (size_t)(at - colon - 1), out->password,
                                   sizeof out->password))) {
            snprintf(err, (size_t)errlen, "redis URL has a bad user or password");
            return -1;
        }
        p = at + 1;
    }
    if (sentinel)
        return parse_sentinel(p, out, err, errlen);
    if (cluster)
        return parse_cluster(p, out, err, errlen);
    const char *slash = strchr(p, '/');
    const char *hostport_end = slash ? slash : p + strlen(p);
    struct redis_addr addr;
    if (parse_hostport(p, (size_t)(hostport_end - p), &addr, 6379)) {
        snprintf(err, (size_t)errlen, "redis URL has %s",
                 p == hostport_end || *p == ':' ? "no host" : "a bad host or port");
        return -1;
    }
    memcpy(out->host, addr.host, sizeof out->host);
    out->port = addr.port;
    if (slash && slash[1] && parse_number(slash + 1, strlen(slash + 1), 0, 1 << 20, &out->db)) {
        snprintf(err, (size_t)errlen, "redis URL has a bad database number");
        return -1;
    }
    return 0;
}

/* The end of the URL that starts at p: the next comma followed (after spaces) by a scheme
 * (letters, then "://"), or the end of the text. Commas inside a URL separate the hosts of a
 * redis-sentinel:// or redis-cluster:// URL. */
static const char *url_end(const char *p)
{
    for (const char *c = strchr(p, ','); c; c = strchr(c + 1, ',')) {
        const char *q = c + 1;
        while (*q == ' ')
            q++;
        size_t scheme = strspn(q, "abcdefghijklmnopqrstuvwxyz0123456789+.-");
        if (scheme > 0 && strncmp(q + scheme, "://", 3) == 0)
            return c;
    }
    return p + strlen(p);
}

int redis_url_parse_list(const char *text, struct redis_url *out, int max, char *err, int errlen)
{
    int n = 0;
    const char *p = text;
    for (;;) {
        while (*p == ' ')
            p++;
        const char *end = url_end(p);
        size_t len = (size_t)(end - p);
        while (len && p[len - 1] == ' ')
            len--;
        char one[1024];
        if (len == 0 || len >= sizeof one) {
            snprintf(err, (size_t)errlen, "Redis URL %d of the list is %s", n + 1,
                     len ? "too long" : "empty");
            return -1;
        }
        if (n == max) {
            snprintf(err, (size_t)errlen, "more than %d Redis URLs", max);
            return -1;
        }
        memcpy(one, p, len);
        one[len] = '\0';
        char why[200];
        if (redis_url_parse(one, &out[n], why, (int)sizeof why)) {
            snprintf(err, (size_t)errlen, "Redis URL %d of the list: %s", n + 1, why);
            return -1;
        }
        n++;
        if (!*end)
            return n;
        p = end + 1;
    }
}
