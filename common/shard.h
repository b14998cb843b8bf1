/* Which Redis server carries a channel when HERALD_REDIS_URL lists several.
 *
 * shard = jump_consistent_hash(fnv1a_64(channel name), number of servers)
 *
 * The name is the Herald channel name (without HERALD_REDIS_PREFIX). Jump consistent hash
 * (Lamping and Veach, 2014) needs no table and moves only 1/(n+1) of the channels when an
 * (n+1)th server is appended to the list; servers must therefore keep their order in the
 * list, and new ones go at the end. Every publish path of Herald (the gateway, `herald
 * publish`) uses this function, and docs/OPERATIONS.md gives it for producers in other
 * languages. */
#ifndef HERALD_SHARD_H
#define HERALD_SHARD_H

#include <stddef.h>
#include <stdint.h>

/* FNV-1a, 64 bits, over s[0..len). */
uint64_t shard_hash(const char *s, size_t len);

/* The server index (0..n-1) of channel name[0..len) among n servers. */
int shard_of(const char *name, size_t len, int n);

#endif
