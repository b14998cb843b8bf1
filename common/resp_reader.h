/* A bound on what a Redis reply can make hiredis allocate before any of it has arrived.
 * hiredis 0.14's reader allocates a multi-bulk's element table as soon as it reads the
 * count: "*2000000000\r\n", from a server or anything posing as one (a fake sentinel, a
 * cluster node's answer), asks for 16 GB at once. A bounded reader refuses an array of more
 * than RESP_ARRAY_MAX elements: the read fails and the connection is closed. (Bulk strings
 * are buffered as their bytes arrive: the callers bound those by the bytes they feed.) */
#ifndef HERALD_RESP_READER_H
#define HERALD_RESP_READER_H

#include <hiredis/hiredis.h>

#define RESP_ARRAY_MAX (1 << 20) /* CLUSTER SLOTS of a full cluster is about 16,000 */

/* Makes r (from redisReaderCreate, or a hiredis context's) refuse larger arrays; hiredis
 * reports the refusal as "Out of memory". */
void resp_reader_bound(redisReader *r);

#endif
