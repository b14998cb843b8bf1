#include "query.h"
#include "hex.h"

#include <stdbool.h>
#include <stdio.h>
#include <string.h>

/* Longest since/limit value accepted after %-decoding: 20 digits plus leading zeros. */
#define VALUE_MAX 64

/* One pass, no strtoull: it would take spaces, signs and 0x; overflow is caught before it
 * happens, and a non-digit after an overflow still reports EINVAL. */
int query_parse_u64(const char *s, size_t len, uint64_t max, uint64_t *out)
{
    if (!s || len == 0)
        return QUERY_EINVAL;
    uint64_t v = 0;
    bool over = false;
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c < '0' || c > '9')
            return QUERY_EINVAL;
        unsigned d = c - '0';
        if (v > (UINT64_MAX - d) / 10)
            over = true;
        else
            v = v * 10 + d;
    }
    if (over || v > max)
        return QUERY_ERANGE;
    *out = v;
    return 0;
}

/* Decodes s[0..n) (%XX escapes, `+` as space) into out (cap bytes, not NUL-terminated).
 * Returns the decoded length, -1 for a bad escape, -2 when it does not fit. */
static long decode(const char *s, size_t n, char *out, size_t cap)
{
    size_t o = 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c == '%') {
            if (n - i < 3 || hex_digit((unsigned char)s[i + 1]) < 0 ||
                hex_digit((unsigned char)s[i + 2]) < 0)
                return -1;
            c = (unsigned char)(hex_digit((unsigned char)s[i + 1]) * 16 +
                                hex_digit((unsigned char)s[i + 2]));
            i += 2;
        } else if (c == '+') {
            c = ' ';
        }
        if (out) {
            if (o >= cap)
                return -2;
            out[o] = (char)c;
        }
        o++;
    }
    return (long)o;
}

/* Parses one decoded since/limit value into lo..hi; fills err on failure. */
static int parse_number(const char *name, const char *v, size_t n, uint64_t lo, uint64_t hi,
                        uint64_t *out, char *err, size_t errlen)
{
    if (n > VALUE_MAX) {
        snprintf(err, errlen, "query parameter %s is too long", name);
        return -1;
    }
    int rc = query_parse_u64(v, n, hi, out);
    if (rc == 0 && *out < lo)
        rc = QUERY_ERANGE;
    if (rc == QUERY_EINVAL) {
        snprintf(err, errlen, "query parameter %s must be a non-negative integer", name);
        return -1;
    }
    if (rc == QUERY_ERANGE) {
        snprintf(err, errlen, "query parameter %s must be %llu to %llu", name,
                 (unsigned long long)lo, (unsigned long long)hi);
        return -1;
    }
    return 0;
}

void query_history_begin(struct query_history_parser *p, struct query_history *out)
{
    p->out = out;
    p->seen = 0;
    out->since = 0;
    out->limit = QUERY_LIMIT_DEFAULT;
}

int query_history_pair(struct query_history_parser *p, const char *key, size_t klen,
                       const char *val, size_t vlen, char *err, size_t errlen)
{
    unsigned char id = klen == 5 && memcmp(key, "since", 5) == 0   ? 1
                       : klen == 5 && memcmp(key, "limit", 5) == 0 ? 2
                                                                   : 0;
    if (id == 0)
        return 0; /* other keys (token, ...) are not ours */
    const char *name = id == 1 ? "since" : "limit";
    if (p->seen & id) {
        snprintf(err, errlen, "query parameter %s is given more than once", name);
        return -1;
    }
    p->seen |= id;
    uint64_t v;
    if (id == 1) {
        if (parse_number(name, val, vlen, 0, QUERY_SINCE_MAX, &v, err, errlen))
            return -1;
        p->out->since = v;
    } else {
        if (parse_number(name, val, vlen, 1, QUERY_LIMIT_MAX, &v, err, errlen))
            return -1;
        p->out->limit = (uint32_t)v;
    }
    return 0;
}

/* Walks the &-separated pairs once, %-decoding our keys' names and values. */
int query_parse_history(const char *qs, size_t len, struct query_history *out, char *err,
                        size_t errlen)
{
    struct query_history_parser parser;
    query_history_begin(&parser, out);
    if (len > QUERY_LEN_MAX) {
        snprintf(err, errlen, "query string is longer than %d bytes", QUERY_LEN_MAX);
        return -1;
    }
    size_t start = 0;
    while (start <= len && qs) {
        const char *end = memchr(qs + start, '&', len - start);
        size_t seglen = end ? (size_t)(end - (qs + start)) : len - start;
        const char *seg = qs + start;
        start += seglen + 1;
        if (seglen == 0)
            continue; /* "a=1&&b=2", a trailing & */
        const char *eq = memchr(seg, '=', seglen);
        size_t klen = eq ? (size_t)(eq - seg) : seglen;
        const char *val = eq ? eq + 1 : seg + seglen;
        size_t vlen = seglen - klen - (eq ? 1 : 0);
        char key[8], value[VALUE_MAX + 1];
        long k = decode(seg, klen, key, sizeof key), v = decode(val, vlen, NULL, 0);
        if (k == -1 || v == -1) {
            snprintf(err, errlen, "query string has a bad %%-escape");
            return -1;
        }
        if (k == -2)
            continue; /* a key longer than ours */
        if (v > VALUE_MAX)
            v = VALUE_MAX + 1; /* too long for a number: parse_number says so */
        else
            decode(val, vlen, value, sizeof value);
        if (query_history_pair(&parser, key, (size_t)k, value, (size_t)v, err, errlen))
            return -1;
    }
    return 0;
}
