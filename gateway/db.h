/* PostgreSQL without blocking the loop: a small pool of non-blocking libpq connections
 * watched with uv_poll, a FIFO of queries, reconnect with backoff, and a deadline per
 * query so that a dead server fails requests instead of hanging them. */
#ifndef HERALD_DB_H
#define HERALD_DB_H

#include <libpq-fe.h>
#include <stdbool.h>
#include <stdint.h>

struct herald;
struct db;

/* err is NULL when the query succeeded, and res is its result (owned by the db: valid
 * during the call). On failure err says why; res is then PostgreSQL's error result when
 * the server refused the statement (nothing of it happened), or NULL when PostgreSQL is
 * unreachable or the query timed out (its outcome is unknown). */
typedef void (*db_done)(void *arg, const PGresult *res, const char *err);

struct db *db_new(struct herald *app);
void db_start(struct db *db);
/* Fails every pending query and closes the connections; the loop must run afterwards. */
void db_free(struct db *db);

/* True while at least one connection is up. */
bool db_up(const struct db *db);

/* Queues a parameterised query (params are copied). sql must be static text: it is
 * prepared once per connection and run by name afterwards. done is always called, later,
 * exactly once. Returns -1 (and does not call done) when PostgreSQL is down or the queue is
 * full. */
int db_query(struct db *db, const char *sql, int nparams, const char *const *params, db_done done,
             void *arg);

/* Queries sent to PostgreSQL since start (for metrics and the resume-storm test). */
uint64_t db_queries_sent(const struct db *db);

#endif
