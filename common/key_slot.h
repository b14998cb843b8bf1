/* Redis Cluster's hash slot of a key or sharded channel name: CRC16 (XMODEM) of the name, or
 * of its hash tag (the text between the first '{' and the next '}' when not empty), modulo
 * 16384. */
#ifndef HERALD_KEY_SLOT_H
#define HERALD_KEY_SLOT_H

#include <stddef.h>

#define REDIS_CLUSTER_SLOTS 16384

unsigned redis_key_slot(const char *name, size_t len);

#endif
