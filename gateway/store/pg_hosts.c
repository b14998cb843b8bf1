#include "pg_hosts.h"
#include "resolve.h"

#include <string.h>

/* Splits a comma-separated list into at most max fields of size len each; returns how many
 * fields there are, or -1 when there are too many or one is too long. An empty or NULL list
 * is one empty field. */
static int split(const char *list, char *out, size_t len, int max)
{
    int n = 0;
    const char *p = list ? list : "";
    for (;;) {
        const char *comma = strchr(p, ',');
        size_t k = comma ? (size_t)(comma - p) : strlen(p);
        if (n == max || k >= len)
            return -1;
        memcpy(out + (size_t)n * len, p, k);
        out[(size_t)n * len + k] = '\0';
        n++;
        if (!comma)
            return n;
        p = comma + 1;
    }
}

/* Fills the host table from the host, port and hostaddr lists; false when they do not line up
 * (libpq allows one port for every host, or one per host; the same for hostaddr). */
static bool fill_hosts(struct pg_hosts *ph, const char *host, const char *port,
                       const char *hostaddr)
{
    char hosts[PG_HOSTS_MAX][256], ports[PG_HOSTS_MAX][16], addrs[PG_HOSTS_MAX][64];
    int nh = split(host, &hosts[0][0], sizeof hosts[0], PG_HOSTS_MAX);
    int np = split(port, &ports[0][0], sizeof ports[0], PG_HOSTS_MAX);
    int na = split(hostaddr, &addrs[0][0], sizeof addrs[0], PG_HOSTS_MAX);
    if (nh < 0 || np < 0 || na < 0 || (np != 1 && np != nh) || (na != 1 && na != nh))
        return false;
    for (int i = 0; i < nh; i++) {
        struct pg_host *h = &ph->hosts[i];
        memcpy(h->host, hosts[i], sizeof h->host); /* same sizes: split() ended each field */
        memcpy(h->port, ports[np == 1 ? 0 : i], sizeof h->port);
        memcpy(h->hostaddr, addrs[na == 1 ? 0 : i], sizeof h->hostaddr);
        h->lookup = h->host[0] && !h->hostaddr[0] && h->host[0] != '/' && h->host[0] != '@' &&
                    !resolve_is_numeric(h->host);
    }
    ph->n = nh;
    return true;
}

void pg_hosts_parse(struct pg_hosts *ph, const char *url)
{
    memset(ph, 0, sizeof *ph);
    PQconninfoOption *opts = PQconninfoParse(url, NULL);
    if (!opts)
        return;
    const char *host = NULL, *port = NULL, *hostaddr = NULL;
    int n = 0;
    for (PQconninfoOption *o = opts; o->keyword; o++) {
        if (!o->val || !o->val[0])
            continue;
        if (strcmp(o->keyword, "host") == 0)
            host = o->val;
        else if (strcmp(o->keyword, "port") == 0)
            port = o->val;
        else if (strcmp(o->keyword, "hostaddr") == 0)
            hostaddr = o->val;
        else if (n == PG_PARAMS_MAX)
            goto unusable;
        else {
            ph->keywords[n] = o->keyword;
            ph->values[n++] = o->val;
        }
    }
    if (!fill_hosts(ph, host, port, hostaddr))
        goto unusable;
    ph->slot = n;
    ph->keywords[n] = "host";
    ph->keywords[n + 1] = "port";
    ph->keywords[n + 2] = "hostaddr";
    ph->opts = opts;
    return;
unusable:
    PQconninfoFree(opts);
    memset(ph, 0, sizeof *ph);
}

void pg_hosts_free(struct pg_hosts *ph)
{
    PQconninfoFree(ph->opts);
    memset(ph, 0, sizeof *ph);
}

/* An empty value makes libpq use its default (or the environment's PGHOST, PGPORT). */
void pg_hosts_params(struct pg_hosts *ph, int i, const char *addr)
{
    const struct pg_host *h = &ph->hosts[i];
    ph->values[ph->slot] = h->host;
    ph->values[ph->slot + 1] = h->port;
    ph->values[ph->slot + 2] = addr ? addr : h->hostaddr;
}
