/* The Redis envelope (PROTOCOL: 2. Messages): telling sequenced envelopes from raw payloads,
 * and wrapping raw payloads for delivery. */
#ifndef HERALD_ENVELOPE_H
#define HERALD_ENVELOPE_H

#include <stddef.h>
#include <stdint.h>

enum payload_kind {
    PAYLOAD_RAW,       /* any valid JSON that is not an envelope: wrapped, live only */
    PAYLOAD_SEQUENCED, /* {"op":"message","channel":C,"seq":N,"ts":T,"data":D}: forwarded */
    PAYLOAD_INVALID,   /* not JSON, or an envelope that breaks the rules: dropped, counted */
};

struct payload_info {
    enum payload_kind kind;
    uint64_t seq;      /* PAYLOAD_SEQUENCED only */
    int64_t ts;        /* PAYLOAD_SEQUENCED only */
    const char *error; /* PAYLOAD_INVALID only: why, for the log */
};

/* Classifies a payload that arrived on Herald channel `channel`. An object whose "op" is
 * "message" and that has a "seq" member is an envelope and must be a valid one. */
void envelope_classify(const char *channel, size_t chlen, const char *payload, size_t len,
                       struct payload_info *out);

/* Size of {"op":"message","channel":"<channel>","data":<raw>} */
size_t envelope_raw_size(size_t chlen, size_t rawlen);

/* Writes that wrapper into out, which holds envelope_raw_size() bytes; returns the size.
 * The channel must be valid (its bytes need no JSON escaping). */
size_t envelope_write_raw(char *out, const char *channel, size_t chlen, const char *raw,
                          size_t rawlen);

#endif
