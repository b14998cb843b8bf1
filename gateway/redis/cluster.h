/* A Redis Cluster in sharded pub/sub mode (HERALD_REDIS_PUBSUB=sharded): each channel lives on
 * the master that owns its hash slot (key_slot.h), where the bus SSUBSCRIBEs and SPUBLISHes it,
 * so pub/sub traffic is spread over the masters instead of broadcast to every node.
 *
 * The slot map comes from CLUSTER SLOTS, asked of one known node at a time (the URL's seeds,
 * then the masters already known), at start, every few seconds, and at once when a node fails
 * or answers MOVED, ASK or a sharded unsubscribe nobody asked for. Each master in the map has
 * a subscriber and a command connection (resp_conn.h) and proves itself with a heartbeat on a
 * channel in its own slots. A master that loses slots in a new map is taken down (`down`
 * reported with the old map, so the layer above forgets exactly what it carried) and
 * subscribed again from scratch.
 *
 * The functions mirror bus.h, which hands them its calls when the URL is redis-cluster:// and
 * the mode is sharded; events go to the bus' table, from the loop. A "shard" is an index into
 * the node table, stable while the node stays a master. */
#ifndef HERALD_CLUSTER_H
#define HERALD_CLUSTER_H

#include "bus_events.h"
#include "redis_url.h"
#include "resp_conn.h"

#include <stdbool.h>
#include <stdint.h>

struct herald;

struct cluster;

/* beat: the full Redis name of this instance's heartbeat channel, to which each node adds a
 * hash tag of its own. ev is not copied: it must outlive the cluster. */
struct cluster *cluster_new(struct herald *app, const struct redis_url *url,
                            const struct bus_events *ev, const char *beat);
void cluster_start(struct cluster *cl);
/* No events after this; the loop must run so libuv can close the handles. */
void cluster_free(struct cluster *cl);

/* full: the Redis channel name (with HERALD_REDIS_PREFIX); name: the Herald one. */
int cluster_subscribe(struct cluster *cl, const char *full, size_t flen);
int cluster_unsubscribe(struct cluster *cl, const char *full, size_t flen);
int cluster_publish(struct cluster *cl, const char *full, size_t flen, const char *payload,
                    size_t len);
/* A command on the command connection of the master of key's slot. A MOVED or ASK is
 * followed once, to the node it names, and the map is asked for again; fn has the last reply
 * (an error like any other), once, never inside this call. -1 when that master is not up.
 * SPUBLISH (cluster_publish) goes the same way. */
int cluster_command(struct cluster *cl, const char *key, size_t klen, resp_reply_fn *fn, void *arg,
                    int argc, const char **argv, const size_t *lens);
/* -1 when no master owns the slot now */
int cluster_shard_of(const struct cluster *cl, const char *full, size_t flen);

bool cluster_ready(const struct cluster *cl);
bool cluster_any_ready(const struct cluster *cl);
int cluster_nodes(const struct cluster *cl);
bool cluster_node_ready(const struct cluster *cl, int i);
/* NULL for an unused entry of the table */
const char *cluster_node_label(const struct cluster *cl, int i);
uint64_t cluster_heartbeat_age_ms(const struct cluster *cl);

#endif
