/* Strict parsing of REST query strings (PROTOCOL: 4. HTTP API):
 * GET /v1/channels/{C}/messages?since=S&limit=L */
#ifndef HERALD_QUERY_H
#define HERALD_QUERY_H

#include <stddef.h>
#include <stdint.h>

#define QUERY_LIMIT_DEFAULT 100
#define QUERY_LIMIT_MAX     1000
#define QUERY_SINCE_MAX     ((uint64_t)INT64_MAX) /* seq is a PostgreSQL bigint */
#define QUERY_LEN_MAX       4096

#define QUERY_EINVAL -1 /* not a plain run of decimal digits */
#define QUERY_ERANGE -2 /* digits, but above max (or beyond 64 bits) */

struct query_history {
    uint64_t since; /* default 0 */
    uint32_t limit; /* default QUERY_LIMIT_DEFAULT, 1..QUERY_LIMIT_MAX */
};

/* Parses s[0..len) as a decimal number no greater than max: digits only (no sign, spaces,
 * or `+`; leading zeros are fine), not empty. Returns 0, QUERY_EINVAL or QUERY_ERANGE. */
int query_parse_u64(const char *s, size_t len, uint64_t max, uint64_t *out);

/* Parses a raw query string (the part after `?`, `?` itself not included) into out.
 * Keys other than since and limit are ignored; since or limit given twice, a value that is
 * not a number in range, or a bad %XX escape anywhere is refused. Returns 0, or -1 with a
 * reason fit for a 400 reply in err (errlen bytes). */
int query_parse_history(const char *qs, size_t len, struct query_history *out, char *err,
                        size_t errlen);

/* The same, one decoded key=value pair at a time (a server that has already split and
 * %-decoded the query string): query_history_begin sets the defaults, query_history_pair
 * takes each pair in order and returns 0, or -1 with a reason in err. */
struct query_history_parser {
    struct query_history *out;
    unsigned char seen; /* bit 1: since, bit 2: limit */
};
void query_history_begin(struct query_history_parser *p, struct query_history *out);
int query_history_pair(struct query_history_parser *p, const char *key, size_t klen,
                       const char *val, size_t vlen, char *err, size_t errlen);

#endif
