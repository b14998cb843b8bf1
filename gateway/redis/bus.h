/* The Redis side of one process. For each Redis server of HERALD_REDIS_URL (a shard): a
 * subscriber connection that carries every channel of that server, a second connection for
 * commands (a subscribed hiredis context may send nothing else), reconnect with exponential
 * backoff and jitter, and a heartbeat the process publishes to itself so that liveness is
 * proven, not assumed. A channel lives on the server shard_of() names (shard.h). A server
 * given as redis-sentinel:// is wherever its sentinels say the master is (sentinel.h). A
 * redis-cluster:// URL is one server reached through any of its nodes in classic pub/sub mode,
 * or, with HERALD_REDIS_PUBSUB=sharded, each channel on the master of its slot (cluster.h). */
#ifndef HERALD_BUS_H
#define HERALD_BUS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "bus_events.h"
#include "redis_url.h"
#include "resp_conn.h"

struct herald;
struct bus;

/* ev is copied. */
struct bus *bus_new(struct herald *app, const struct bus_events *ev);

/* Starts connecting; the bus keeps itself connected from then on. */
void bus_start(struct bus *bus);

/* Closes both connections (no more events); the loop must run afterwards so libuv can
 * close their handles. */
void bus_free(struct bus *bus);

/* Sends SUBSCRIBE / UNSUBSCRIBE for a Herald channel name. -1: the bus is not up (the layer
 * above subscribes everything again on the `up` event). */
int bus_subscribe(struct bus *bus, const char *name, size_t len);
int bus_unsubscribe(struct bus *bus, const char *name, size_t len);

/* PUBLISHes payload on the Redis channel of a Herald channel (step 2 of a durable publish).
 * -1 when Redis is down: the message is in PostgreSQL, and every instance's head check
 * delivers it within seconds. */
int bus_publish(struct bus *bus, const char *name, const char *payload, size_t len);

/* Sends a command about key (keys[0..klen) as Redis will see it, prefix included) on the
 * command connection of the server that carries the Herald channel name[0..len): the
 * channel's shard, or, in cluster sharded mode, the master of the key's slot. fn (may be NULL)
 * gets the reply, or NULL when the connection ends first, exactly once and from the loop.
 * -1 when that server is down (fn will not run). */
int bus_command(struct bus *bus, const char *name, size_t len, const char *key, size_t klen,
                resp_reply_fn *fn, void *arg, int argc, const char **argv, const size_t *lens);

/* The shard (index into HERALD_REDIS_URL's list, or a cluster node's) that carries a channel;
 * -1 when none does (a cluster slot without a master). */
int bus_shard_of(const struct bus *bus, const char *name, size_t len);

/* True while every server's heartbeat came back within 3 intervals. */
bool bus_ready(const struct bus *bus);

/* True while at least one server's did (/readyz with HERALD_READY_ANY_SHARD). */
bool bus_any_ready(const struct bus *bus);

/* Per server, for /metrics: how many, whether one is ready, and its name: "host:port",
 * "sentinel/<master-name>" or "cluster/<first seed>" (stable across failovers), or a cluster
 * master's "host:port" in sharded mode (NULL: an entry no longer used). */
int bus_shards(const struct bus *bus);
bool bus_shard_ready(const struct bus *bus, int i);
const char *bus_shard_label(const struct bus *bus, int i);

/* Milliseconds since the last heartbeat came back from the server that is furthest behind
 * (since start if none has). */
uint64_t bus_heartbeat_age_ms(const struct bus *bus);

#endif
