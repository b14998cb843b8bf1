#include "resp_reader.h"

/* hiredis' own reply functions with createArray wrapped; filled from the first reader, whose
 * functions are hiredis' defaults (they are not exported). One table for the process: the
 * defaults are the same for every reader. */
static redisReplyObjectFunctions bounded;
static void *(*hiredis_array)(const redisReadTask *, int);

static void *bounded_array(const redisReadTask *task, int elements)
{
    if (elements > RESP_ARRAY_MAX)
        return NULL; /* the reader fails the read */
    return hiredis_array(task, elements);
}

void resp_reader_bound(redisReader *r)
{
    if (!r || !r->fn || r->fn == &bounded)
        return;
    if (!hiredis_array) {
        bounded = *r->fn;
        hiredis_array = bounded.createArray;
        bounded.createArray = bounded_array;
    }
    r->fn = &bounded;
}
