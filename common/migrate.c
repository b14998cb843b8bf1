#include "migrate.h"
#include "log.h"

#include <libpq-fe.h>
#include <stdio.h>
#include <stdlib.h>

/* Any fixed number works; it only has to be the same for every Herald process. */
#define MIGRATE_LOCK_KEY "7248656c6164"

/* Runs sql; a failure fills err and returns -1. */
static int exec(PGconn *pg, const char *sql, char *err, size_t errlen)
{
    PGresult *r = PQexec(pg, sql);
    ExecStatusType st = PQresultStatus(r);
    int ok = st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK;
    if (!ok)
        snprintf(err, errlen, "%s", PQresultErrorMessage(r));
    PQclear(r);
    return ok ? 0 : -1;
}

static int applied(PGconn *pg, int version, char *err, size_t errlen)
{
    char v[16];
    snprintf(v, sizeof v, "%d", version);
    const char *params[] = {v};
    PGresult *r = PQexecParams(pg, "SELECT 1 FROM herald_schema WHERE version = $1::int", 1, NULL,
                               params, NULL, NULL, 0);
    int result = PQresultStatus(r) != PGRES_TUPLES_OK ? -1 : PQntuples(r) > 0;
    if (result < 0)
        snprintf(err, errlen, "%s", PQresultErrorMessage(r));
    PQclear(r);
    return result;
}

/* Records an applied version (parameters, like every query of Herald's). */
static int record(PGconn *pg, const struct migration *m, char *err, size_t errlen)
{
    char v[16];
    snprintf(v, sizeof v, "%d", m->version);
    const char *params[] = {v, m->name};
    PGresult *r = PQexecParams(pg, "INSERT INTO herald_schema (version, name) VALUES ($1, $2)", 2,
                               NULL, params, NULL, NULL, 0);
    int ok = PQresultStatus(r) == PGRES_COMMAND_OK;
    if (!ok)
        snprintf(err, errlen, "%s", PQresultErrorMessage(r));
    PQclear(r);
    return ok ? 0 : -1;
}

static int apply_one(PGconn *pg, const struct migration *m, char *err, size_t errlen)
{
    if (exec(pg, "BEGIN", err, errlen) || exec(pg, m->sql, err, errlen) ||
        record(pg, m, err, errlen) || exec(pg, "COMMIT", err, errlen)) {
        char ignored[8];
        exec(pg, "ROLLBACK", ignored, sizeof ignored);
        return -1;
    }
    log_info("migrated", "applied schema version %d (%s)", m->version, m->name);
    return 0;
}

int migrate_run(const char *conninfo, char *err, size_t errlen)
{
    PGconn *pg = PQconnectdb(conninfo);
    if (PQstatus(pg) != CONNECTION_OK) {
        snprintf(err, errlen, "cannot connect to PostgreSQL: %s", PQerrorMessage(pg));
        PQfinish(pg);
        return -1;
    }
    int count = 0;
    if (exec(pg, "SET client_min_messages = warning", err, errlen) ||
        exec(pg, "SELECT pg_advisory_lock(x'" MIGRATE_LOCK_KEY "'::bigint)", err, errlen) ||
        exec(pg,
             "CREATE TABLE IF NOT EXISTS herald_schema (version int PRIMARY KEY, name text NOT "
             "NULL, applied_at timestamptz NOT NULL DEFAULT now())",
             err, errlen)) {
        count = -1;
    }
    for (size_t i = 0; count >= 0 && i < migration_count; i++) {
        int done = applied(pg, migrations[i].version, err, errlen);
        if (done < 0 || (!done && apply_one(pg, &migrations[i], err, errlen) < 0))
            count = -1;
        else if (!done)
            count++;
    }
    PQfinish(pg); /* ends the session, which releases the advisory lock */
    return count;
}
