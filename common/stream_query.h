/* The query of GET /v1/channels/{C}/stream (PROTOCOL: 4. HTTP API, "Live tail over HTTP")
 * and its position tokens, parsed strictly: Herald's own parameters (since, epoch, last,
 * strict, timeout) and the Durable Streams read parameters (offset, live, cursor). The two
 * sets do not mix. */
#ifndef HERALD_STREAM_QUERY_H
#define HERALD_STREAM_QUERY_H

#include "request.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* A position token: "<epoch>_<seq as 20 digits>" (an SSE event's id, a Durable Streams
 * offset). Fixed width, so that tokens of one epoch sort as their seqs do. */
#define STREAM_POSITION_MAX (REQUEST_EPOCH_MAX + 21)

#define STREAM_TIMEOUT_MAX 300 /* seconds a long-poll may ask to be held */

enum stream_live { STREAM_LIVE_NONE, STREAM_LIVE_SSE, STREAM_LIVE_POLL };

struct stream_query {
    bool ds;               /* offset= was given: the Durable Streams read protocol */
    enum stream_live live; /* ds: live=sse or live=long-poll; none for a catch-up read */
    bool resume;           /* since (or an offset token, or -1): replay what came after it */
    bool oldest;           /* offset=-1: from the oldest message kept */
    uint64_t since;
    char epoch[REQUEST_EPOCH_MAX]; /* "" when not given */
    uint64_t last;                 /* last=N: the last N messages, then live */
    bool strict;                   /* a resume that cannot be served is refused (409) */
    bool has_timeout;
    uint32_t timeout_s;
};

struct stream_query_parser {
    struct stream_query *out;
    unsigned seen; /* a bit per key */
};

void stream_query_begin(struct stream_query_parser *p, struct stream_query *out);

/* One decoded key=value pair. Unknown keys (token, a cache buster) are ignored; a key given
 * twice or a bad value is refused: -1 with a reason fit for a 400 answer in err. */
int stream_query_pair(struct stream_query_parser *p, const char *key, size_t klen, const char *val,
                      size_t vlen, char *err, size_t errlen);

/* After the last pair: the combinations that make no sense (offset with since, last with
 * since, live without offset). 0, or -1 with a reason in err. */
int stream_query_end(struct stream_query_parser *p, char *err, size_t errlen);

/* Parses a position token into its seq and epoch (epoch: REQUEST_EPOCH_MAX bytes). The epoch
 * is 1 to 39 bytes of A-Z a-z 0-9 and -, the seq 1 to 20 digits within a PostgreSQL bigint.
 * Returns 0 or -1. */
int stream_position_parse(const char *s, size_t len, uint64_t *seq, char *epoch);

/* Writes the token of (epoch, seq) into out (STREAM_POSITION_MAX bytes); its length. */
size_t stream_position_write(char *out, const char *epoch, uint64_t seq);

#endif
