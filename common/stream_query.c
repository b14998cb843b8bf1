#include "stream_query.h"
#include "query.h"

#include <stdio.h>
#include <string.h>

enum key {
    K_SINCE = 1 << 0,
    K_EPOCH = 1 << 1,
    K_LAST = 1 << 2,
    K_STRICT = 1 << 3,
    K_TIMEOUT = 1 << 4,
    K_OFFSET = 1 << 5,
    K_LIVE = 1 << 6,
    K_CURSOR = 1 << 7,
};

static const struct {
    const char *name;
    enum key key;
} keys[] = {{"since", K_SINCE},     {"epoch", K_EPOCH},   {"last", K_LAST}, {"strict", K_STRICT},
            {"timeout", K_TIMEOUT}, {"offset", K_OFFSET}, {"live", K_LIVE}, {"cursor", K_CURSOR}};

void stream_query_begin(struct stream_query_parser *p, struct stream_query *out)
{
    *out = (struct stream_query){0};
    p->out = out;
    p->seen = 0;
}

static bool is(const char *v, size_t n, const char *word)
{
    return n == strlen(word) && memcmp(v, word, n) == 0;
}

static bool epoch_valid(const char *s, size_t n)
{
    if (n == 0 || n >= REQUEST_EPOCH_MAX)
        return false;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '-'))
            return false;
    }
    return true;
}

int stream_position_parse(const char *s, size_t len, uint64_t *seq, char *epoch)
{
    const char *us = NULL;
    for (size_t i = len; i > 0; i--)
        if (s[i - 1] == '_') {
            us = s + i - 1;
            break;
        }
    if (!us)
        return -1;
    size_t elen = (size_t)(us - s), dlen = len - elen - 1;
    if (!epoch_valid(s, elen) || dlen == 0 || dlen > 20 ||
        query_parse_u64(us + 1, dlen, QUERY_SINCE_MAX, seq) != 0)
        return -1;
    memcpy(epoch, s, elen);
    epoch[elen] = '\0';
    return 0;
}

size_t stream_position_write(char *out, const char *epoch, uint64_t seq)
{
    int n = snprintf(out, STREAM_POSITION_MAX, "%s_%020llu", epoch, (unsigned long long)seq);
    return n > 0 && n < STREAM_POSITION_MAX ? (size_t)n : 0;
}

static int number(const char *name, const char *v, size_t n, uint64_t max, uint64_t *out, char *err,
                  size_t errlen)
{
    if (query_parse_u64(v, n, max, out) == 0)
        return 0;
    snprintf(err, errlen, "query parameter %s must be a number from 0 to %llu", name,
             (unsigned long long)max);
    return -1;
}

int stream_query_pair(struct stream_query_parser *p, const char *key, size_t klen, const char *val,
                      size_t vlen, char *err, size_t errlen)
{
    enum key k = 0;
    const char *name = NULL;
    for (size_t i = 0; i < sizeof keys / sizeof keys[0]; i++)
        if (is(key, klen, keys[i].name)) {
            k = keys[i].key;
            name = keys[i].name;
        }
    if (!k)
        return 0; /* token, a cache buster: not ours */
    if (p->seen & k) {
        snprintf(err, errlen, "query parameter %s is given more than once", name);
        return -1;
    }
    p->seen |= k;
    struct stream_query *q = p->out;
    uint64_t v;
    switch (k) {
    case K_SINCE:
        q->resume = true;
        return number(name, val, vlen, QUERY_SINCE_MAX, &q->since, err, errlen);
    case K_EPOCH:
        if (!epoch_valid(val, vlen)) {
            snprintf(err, errlen, "query parameter epoch must be 1 to %d bytes of A-Z a-z 0-9 -",
                     REQUEST_EPOCH_MAX - 1);
            return -1;
        }
        memcpy(q->epoch, val, vlen);
        q->epoch[vlen] = '\0';
        return 0;
    case K_LAST:
        if (number(name, val, vlen, QUERY_SINCE_MAX, &q->last, err, errlen) < 0)
            return -1;
        if (q->last == 0) {
            snprintf(err, errlen, "query parameter last must be at least 1");
            return -1;
        }
        return 0;
    case K_STRICT:
        if (!is(val, vlen, "1") && !is(val, vlen, "true") && !is(val, vlen, "0") &&
            !is(val, vlen, "false")) {
            snprintf(err, errlen, "query parameter strict must be 1, true, 0 or false");
            return -1;
        }
        q->strict = is(val, vlen, "1") || is(val, vlen, "true");
        return 0;
    case K_TIMEOUT:
        if (number(name, val, vlen, STREAM_TIMEOUT_MAX, &v, err, errlen) < 0)
            return -1;
        q->has_timeout = true;
        q->timeout_s = (uint32_t)v;
        return 0;
    case K_OFFSET:
        q->ds = true;
        if (is(val, vlen, "-1")) { /* the beginning: the oldest message kept */
            q->resume = true;
            q->oldest = true;
            q->since = 0;
        } else if (!is(val, vlen, "now")) { /* now: from the end, nothing replayed */
            if (stream_position_parse(val, vlen, &q->since, q->epoch) < 0) {
                snprintf(err, errlen,
                         "query parameter offset must be -1, now or an offset this server gave");
                return -1;
            }
            q->resume = true;
        }
        return 0;
    case K_LIVE:
        if (is(val, vlen, "sse"))
            q->live = STREAM_LIVE_SSE;
        else if (is(val, vlen, "long-poll"))
            q->live = STREAM_LIVE_POLL;
        else {
            snprintf(err, errlen, "query parameter live must be sse or long-poll");
            return -1;
        }
        return 0;
    case K_CURSOR: /* a CDN's cache key in Durable Streams: nothing to do without a CDN */
        return 0;
    }
    return 0;
}

int stream_query_end(struct stream_query_parser *p, char *err, size_t errlen)
{
    unsigned s = p->seen;
    const char *why = NULL;
    if ((s & K_OFFSET) && (s & (K_SINCE | K_EPOCH | K_LAST | K_STRICT)))
        why = "offset (Durable Streams) cannot be combined with since, epoch, last or strict";
    else if ((s & K_LIVE) && !(s & K_OFFSET))
        why = "live needs offset (Durable Streams); Herald's own stream picks SSE by Accept";
    else if ((s & K_LAST) && (s & (K_SINCE | K_EPOCH)))
        why = "last cannot be combined with since or epoch";
    else if ((s & K_EPOCH) && !(s & K_SINCE))
        why = "epoch needs since";
    if (why)
        snprintf(err, errlen, "%s", why);
    return why ? -1 : 0;
}
