/* HERALD_DATABASE_URL as a list of hosts to try one at a time.
 *
 * libpq takes a list of hosts (`postgresql://a:5432,b:5432/db?target_session_attrs=read-write`)
 * and tries them in order, but only its blocking connect bounds each attempt by
 * connect_timeout: PQconnectPoll, which Herald drives from its loop, waits on a host that
 * accepted the TCP connection and then stopped answering (a frozen primary, a cut network) for
 * as long as TCP does, and never reaches the next host. So the pool connects to one host per
 * attempt, bounds the attempt with its own timer, and moves on to the next host itself.
 *
 * A host given by name is looked up off the loop (resolve.h) and passed as hostaddr; host stays
 * set for TLS verification and the password file. Every other parameter of the URL is passed
 * unchanged, target_session_attrs included: libpq refuses a standby on its own. */
#ifndef HERALD_PG_HOSTS_H
#define HERALD_PG_HOSTS_H

#include <libpq-fe.h>
#include <stdbool.h>

#define PG_HOSTS_MAX  16 /* hosts in one URL */
#define PG_PARAMS_MAX 64 /* other connection parameters */

struct pg_host {
    char host[256];    /* a name, an address, or a socket directory */
    char port[16];     /* "": the default */
    char hostaddr[64]; /* given in the URL for this host; "": none */
    bool lookup;       /* a name to look up before connecting */
};

struct pg_hosts {
    struct pg_host hosts[PG_HOSTS_MAX];
    int n; /* 0: connect from the URL as it is (libpq reports what is wrong with it) */
    /* PQconnectStartParams arrays: the URL's other parameters, then host, port and hostaddr
     * (filled per attempt by pg_hosts_params), then the terminating NULL */
    const char *keywords[PG_PARAMS_MAX + 4], *values[PG_PARAMS_MAX + 4];
    int slot;               /* index of "host"; port and hostaddr follow */
    PQconninfoOption *opts; /* owns the strings of values */
};

/* Splits url into its hosts. Leaves n at 0 when the URL does not parse or its lists do not
 * line up (several ports for a different number of hosts), so that libpq's own error reaches
 * the log at the first connect. */
void pg_hosts_parse(struct pg_hosts *ph, const char *url);
void pg_hosts_free(struct pg_hosts *ph);

/* Points the parameter arrays at host i, connecting to addr when not NULL (the looked-up
 * address of a name). Valid until the next call. */
void pg_hosts_params(struct pg_hosts *ph, int i, const char *addr);

#endif
