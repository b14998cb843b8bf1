/* A Redis Cluster's slot map from its CLUSTER SLOTS reply, checked for shape: pure, so that
 * it is unit-tested and fuzzed on replies built from raw bytes. */
#ifndef HERALD_CLUSTER_SLOTS_H
#define HERALD_CLUSTER_SLOTS_H

#include "key_slot.h"
#include "redis_url.h"

#include <hiredis/hiredis.h>
#include <stdint.h>

#define CLUSTER_MASTERS_MAX 64
#define CLUSTER_NO_OWNER    0xff

struct cluster_slots {
    struct redis_addr masters[CLUSTER_MASTERS_MAX]; /* in order of first appearance */
    int n;
    uint8_t owner[REDIS_CLUSTER_SLOTS]; /* index into masters, or CLUSTER_NO_OWNER */
};

/* Reads r, CLUSTER SLOTS' answer ([[start, end, [host, port, ...], replicas...], ...]), into
 * m. asked names the node that answered (an empty host means it). NULL, or why the answer
 * was refused as a whole: an error or not an array, a range outside 0-16383 or ending before
 * it starts, a host that is not a plain host name or address (or "?": unknown), a port
 * outside 1-65535, more than CLUSTER_MASTERS_MAX masters, or no slot served at all. */
const char *cluster_slots_parse(const redisReply *r, const char *asked, struct cluster_slots *m);

#endif
