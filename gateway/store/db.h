/* PostgreSQL without blocking the loop: a small pool of non-blocking libpq connections
 * watched with uv_poll, a FIFO of queries, reconnect with backoff, and a deadline per
 * query so that a dead server fails requests instead of hanging them.
 *
 * A query is a struct db_request the caller owns (embedded in its own state, the way
 * libuv's uv_write_t is) and leaves alone from db_query until `done` has run. `done` runs
 * exactly once and always later, from the loop, never inside db_query: a query that fails
 * at once (PostgreSQL down, HERALD_DB_QUEUE_MAX reached, out of memory) fails through the
 * same deferred path as one that fails on the wire. */
#ifndef HERALD_DB_H
#define HERALD_DB_H

#include "later.h"

#include <libpq-fe.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct herald;
struct db;

/* err is NULL when the query succeeded, and res is its result (owned by the db: valid
 * during the call). On failure err says why; res is then PostgreSQL's error result when
 * the server refused the statement (nothing of it happened), or NULL when PostgreSQL is
 * unreachable, the query timed out (its outcome is unknown) or it was never sent. */
typedef void (*db_done)(void *arg, const PGresult *res, const char *err);

/* Owned by the caller; its fields belong to db.c while the query is in flight. */
struct db_request {
    struct db_request *next;
    struct later later; /* a failure decided before sending, delivered on the loop */
    struct db *db;
    const char *sql;
    int nparams;
    char **params; /* one allocation: the pointers, then the copied strings */
    db_done done;
    void *arg;
    const char *fail; /* why it failed before it was sent */
};

/* A pool for url (HERALD_DATABASE_URL, or HERALD_DATABASE_READ_URL for a standby's); name
 * says which in the logs. url must outlive the pool. */
struct db *db_new(struct herald *app, const char *url, const char *name);
void db_start(struct db *db);
/* Fails every pending query and closes the connections; the loop must run afterwards. */
void db_free(struct db *db);

/* True while at least one connection is up. */
bool db_up(const struct db *db);

/* Worth a query: a connection is up, or the pool is still making its first connections (a
 * query then waits for them, as for a busy pool, and fails if they all fail). */
bool db_usable(const struct db *db);

/* Queues a parameterised query (params are copied). sql must be static text: it is
 * prepared once per connection and run by name afterwards. */
void db_query(struct db *db, struct db_request *r, const char *sql, int nparams,
              const char *const *params, db_done done, void *arg);

/* Fails r through the deferred path without sending anything (the caller could not build
 * its parameters, say). err must be static text. */
void db_fail(struct db *db, struct db_request *r, const char *err, db_done done, void *arg);

/* Queries sent to PostgreSQL since start (for metrics and the resume-storm test), and
 * queries waiting for a connection now. */
uint64_t db_queries_sent(const struct db *db);
size_t db_queued(const struct db *db);

#endif
