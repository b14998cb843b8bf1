/* The stream route's query (pairs split at '&' and '=') and position tokens on any bytes:
 * a refusal always says why; an accepted query is consistent (Durable Streams and Herald's
 * own parameters never mixed, epochs valid, bounds kept); an accepted position is written
 * back to a token that parses to the same seq and epoch. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "stream_query.h"

static void check_epoch(const char *e)
{
    size_t n = strlen(e);
    if (n >= REQUEST_EPOCH_MAX)
        abort();
    for (size_t i = 0; i < n; i++)
        if (!((e[i] >= 'a' && e[i] <= 'z') || (e[i] >= 'A' && e[i] <= 'Z') ||
              (e[i] >= '0' && e[i] <= '9') || e[i] == '-'))
            abort();
}

static void check_position(const char *s, size_t n)
{
    uint64_t seq = 0, again = 0;
    char epoch[REQUEST_EPOCH_MAX], epoch2[REQUEST_EPOCH_MAX], tok[STREAM_POSITION_MAX];
    if (stream_position_parse(s, n, &seq, epoch) != 0)
        return;
    check_epoch(epoch);
    if (epoch[0] == '\0' || seq > (uint64_t)INT64_MAX)
        abort();
    size_t len = stream_position_write(tok, epoch, seq);
    if (len == 0 || stream_position_parse(tok, len, &again, epoch2) != 0 || again != seq ||
        strcmp(epoch, epoch2) != 0)
        abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *s = (const char *)data;
    check_position(s, size);
    struct stream_query q;
    struct stream_query_parser p;
    char err[200];
    err[0] = '\0';
    stream_query_begin(&p, &q);
    int rc = 0;
    for (size_t at = 0; rc == 0 && at <= size;) {
        const char *amp = memchr(s + at, '&', size - at);
        size_t seg = amp ? (size_t)(amp - (s + at)) : size - at;
        const char *eq = memchr(s + at, '=', seg);
        size_t klen = eq ? (size_t)(eq - (s + at)) : seg;
        const char *val = eq ? eq + 1 : s + at + seg;
        size_t vlen = eq ? seg - klen - 1 : 0;
        rc = stream_query_pair(&p, s + at, klen, val, vlen, err, sizeof err);
        at += seg + 1;
    }
    if (rc == 0)
        rc = stream_query_end(&p, err, sizeof err);
    if (rc != 0) {
        if (err[0] == '\0')
            abort();
        return 0;
    }
    check_epoch(q.epoch);
    if (q.since > (uint64_t)INT64_MAX || q.timeout_s > STREAM_TIMEOUT_MAX)
        abort();
    if (!q.ds && q.live != STREAM_LIVE_NONE)
        abort();
    if (q.ds && (q.last || q.strict))
        abort();
    if (q.last && q.resume && !q.ds)
        abort();
    return 0;
}
