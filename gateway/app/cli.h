/* The command-line tools inside the herald binary: `herald migrate` and
 * `herald publish CHANNEL JSON`. They block (they are not the serving loop). */
#ifndef HERALD_CLI_H
#define HERALD_CLI_H

#include "config.h"

/* Applies the schema migrations; returns the process exit code. */
int cli_migrate(const struct herald_config *cfg);

/* Publishes data durably on channel (SQL function, then PUBLISH after COMMIT) and prints
 * {"channel":..,"seq":..,"epoch":..}; key may be NULL. Returns the process exit code. */
int cli_publish(const struct herald_config *cfg, const char *channel, const char *data,
                const char *key);

#endif
