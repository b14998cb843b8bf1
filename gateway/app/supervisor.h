/* HERALD_WORKERS > 1: a small supervisor process that forks N full gateway instances sharing
 * the listening port (SO_REUSEPORT: the kernel spreads new connections over them). Each
 * worker has its own loop, Redis subscription, PostgreSQL pool and instance name
 * (<instance>-w<i>). They share only the connection counts per address (iplimit.h), set up
 * before the fork. The supervisor restarts a worker that dies, passes SIGTERM/SIGINT on to
 * every worker so that each drains, and exits when they all have. */
#ifndef HERALD_SUPERVISOR_H
#define HERALD_SUPERVISOR_H

#include "config.h"

struct iplimit;

/* One gateway process, counting its connections per address in ips. */
typedef int (*serve_fn)(struct herald_config *cfg, struct iplimit *ips);

/* Runs cfg->workers copies of serve(cfg, ips) in child processes (each with cfg->worker set,
 * its own instance_id and its own column of the per-address table ips, which they share);
 * returns the supervisor's exit status: 0 after a clean drain of every worker, 1 otherwise. */
int supervisor_run(struct herald_config *cfg, serve_fn serve);

#endif
