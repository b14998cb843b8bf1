#include "query.h"

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

/* 0..15 for a hex digit, -1 otherwise. */
static int hexval(unsigned char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

/* Decodes s[0..n) (%XX escapes, `+` as space) into out (cap bytes, not NUL-terminated).
 * Returns the decoded length, -1 for a bad escape, -2 when it does not fit. */
static long decode(const char *s, size_t n, char *out, size_t cap)
{
    size_t o = 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c == '%') {
            if (n - i < 3 || hexval((unsigned char)s[i + 1]) < 0 ||
                hexval((unsigned char)s[i + 2]) < 0)
                return -1;
            c = (unsigned char)(hexval((unsigned char)s[i + 1]) * 16 +
                                hexval((unsigned char)s[i + 2]));
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

/* Which of our keys k[0..n) names once decoded: 1 since, 2 limit, 0 another, -1 bad escape. */
static int key_id(const char *k, size_t n)
{
    char buf[8];
    if (decode(k, n, NULL, 0) == -1)
        return -1;
    long len = decode(k, n, buf, sizeof buf);
    if (len == 5 && memcmp(buf, "since", 5) == 0)
        return 1;
    if (len == 5 && memcmp(buf, "limit", 5) == 0)
        return 2;
    return 0;
}

/* Parses one since/limit value (%-decoded first) into lo..hi; fills err on failure. */
static int parse_value(const char *name, const char *v, size_t n, uint64_t lo, uint64_t hi,
                       uint64_t *out, char *err, size_t errlen)
{
    char buf[VALUE_MAX];
    long len = decode(v, n, buf, sizeof buf);
    if (len == -1) {
        snprintf(err, errlen, "query parameter %s has a bad %%-escape", name);
        return -1;
    }
    if (len == -2) {
        snprintf(err, errlen, "query parameter %s is too long", name);
        return -1;
    }
    int rc = query_parse_u64(buf, (size_t)len, hi, out);
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

/* Walks the &-separated pairs once; defaults first, so a query with neither key is fine. */
int query_parse_history(const char *qs, size_t len, struct query_history *out, char *err,
                        size_t errlen)
{
    out->since = 0;
    out->limit = QUERY_LIMIT_DEFAULT;
    if (len > QUERY_LEN_MAX) {
        snprintf(err, errlen, "query string is longer than %d bytes", QUERY_LEN_MAX);
        return -1;
    }
    bool seen[3] = {false, false, false};
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
        int id = key_id(seg, klen);
        if (id < 0 || (id == 0 && decode(val, vlen, NULL, 0) < 0)) {
            snprintf(err, errlen, "query string has a bad %%-escape");
            return -1;
        }
        if (id == 0)
            continue;
        const char *name = id == 1 ? "since" : "limit";
        if (seen[id]) {
            snprintf(err, errlen, "query parameter %s is given more than once", name);
            return -1;
        }
        seen[id] = true;
        uint64_t v;
        if (id == 1) {
            if (parse_value(name, val, vlen, 0, QUERY_SINCE_MAX, &v, err, errlen))
                return -1;
            out->since = v;
        } else {
            if (parse_value(name, val, vlen, 1, QUERY_LIMIT_MAX, &v, err, errlen))
                return -1;
            out->limit = (uint32_t)v;
        }
    }
    return 0;
}
