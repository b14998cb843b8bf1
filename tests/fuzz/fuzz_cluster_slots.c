/* cluster_slots_parse() on whatever reply hiredis' reader makes of arbitrary bytes (what a
 * node, or something posing as one, may answer to CLUSTER SLOTS): it never reads out of
 * bounds, allocates no more than the bounded reader allows, and an accepted map is
 * consistent. */
#include <hiredis/hiredis.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "cluster_slots.h"
#include "resp_reader.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    redisReader *rd = redisReaderCreate();
    if (!rd)
        return 0;
    resp_reader_bound(rd); /* as every reader of the gateway */
    redisReaderFeed(rd, (const char *)data, size);
    void *reply = NULL;
    if (redisReaderGetReply(rd, &reply) == REDIS_OK && reply) {
        static struct cluster_slots m;
        if (!cluster_slots_parse(reply, "10.0.0.9", &m)) {
            if (m.n < 1 || m.n > CLUSTER_MASTERS_MAX)
                abort();
            for (int j = 0; j < m.n; j++)
                if (!m.masters[j].host[0] || m.masters[j].port < 1 || m.masters[j].port > 65535)
                    abort();
            for (int s = 0; s < REDIS_CLUSTER_SLOTS; s++)
                if (m.owner[s] != CLUSTER_NO_OWNER && m.owner[s] >= m.n)
                    abort();
        }
        freeReplyObject(reply);
    }
    redisReaderFree(rd);
    return 0;
}
