/* The history schema: versioned SQL files (common/sql/NNN_name.sql) built into the binary
 * and applied in order by `herald migrate` or at start with HERALD_MIGRATE_ON_START. */
#ifndef HERALD_MIGRATE_H
#define HERALD_MIGRATE_H

#include <stddef.h>

struct migration {
    int version;
    const char *name;
    const char *sql;
};

extern const struct migration migrations[];
extern const size_t migration_count;

/* Connects with conninfo (blocking: a command-line step, not the serving loop), takes an
 * advisory lock so that replicas starting together apply each version once, and applies
 * every missing version in its own transaction. Returns the number applied, or -1 with a
 * message in err. */
int migrate_run(const char *conninfo, char *err, size_t errlen);

#endif
