/* One client message, parsed and checked (PROTOCOL: 3. WebSocket): the pure part of the
 * WebSocket protocol, kept apart from dispatch so that it can be unit-tested and fuzzed. */
#ifndef HERALD_REQUEST_H
#define HERALD_REQUEST_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define REQUEST_ID_MAX      64                       /* bytes of a string id */
#define REQUEST_ID_JSON_MAX (REQUEST_ID_MAX * 6 + 3) /* an id as JSON text, escaped */
#define REQUEST_EPOCH_MAX   40                       /* bytes of an epoch, with the NUL */

enum request_op {
    REQ_SUBSCRIBE,
    REQ_UNSUBSCRIBE,
    REQ_PUBLISH,
    REQ_PING,
    REQ_PRESENCE,
    REQ_REFRESH
};

#define REQUEST_SUB_MAX 127 /* bytes of a subscribe's sub (as the token's sub claim) */

struct request {
    enum request_op op;
    char id[REQUEST_ID_JSON_MAX + 1]; /* the id as JSON text to echo; "" when none */
    const char *channel;              /* subscribe, unsubscribe, publish */
    size_t channel_len;
    bool resume; /* subscribe with since or last */
    uint64_t since;
    uint64_t last;     /* subscribe with last: the last N messages; 0 when not given */
    bool strict;       /* subscribe: refuse a resume that cannot be served */
    const char *epoch; /* NULL when not given */
    /* subscribe: who the connection is on a presence channel when auth is off, and what it
     * shows there (the JSON text as the client wrote it); NULL when not given */
    const char *sub;
    size_t sub_len;
    const char *info_text;
    size_t info_len;
    const char *token; /* refresh: the new JWT (NUL-terminated) */
    json_t *data;      /* publish */
    /* publish: data as the client wrote it, inside msg (what is stored and delivered) */
    const char *data_text;
    size_t data_len;
    json_t *root; /* owns the strings above */
};

/* Parses msg[0..len): a JSON object nested at most max_depth deep, with a known "op", a
 * valid "id" (integer, or string of at most 64 bytes) when present, a valid channel for the
 * ops that take one, since/epoch/last/strict and sub/info for subscribe and data for publish.
 * Returns 0, or -1 with a reason in *why; out->id is filled as soon as the id was read, so errors
 * can echo it. request_free is due either way. */
int request_parse(const char *msg, size_t len, int max_depth, struct request *out,
                  const char **why);

void request_free(struct request *r);

#endif
