/* HERALD_WORKERS > 1: a small supervisor process that forks N full gateway instances sharing
 * the listening port (SO_REUSEPORT: the kernel spreads new connections over them). Each
 * worker has its own loop, Redis subscription, PostgreSQL pool and instance name
 * (<instance>-w<i>). The supervisor restarts a worker that dies, passes SIGTERM/SIGINT on to
 * every worker so that each drains, and exits when they all have. */
#ifndef HERALD_SUPERVISOR_H
#define HERALD_SUPERVISOR_H

#include "config.h"

/* Runs cfg->workers copies of serve(cfg) in child processes (each with cfg->worker set
 * and its own instance_id); returns the supervisor's exit status: 0 after a clean drain of
 * every worker, 1 otherwise. */
int supervisor_run(struct herald_config *cfg, int (*serve)(struct herald_config *cfg));

#endif
