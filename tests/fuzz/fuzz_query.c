/* query_parse_history() on any query string, and query_parse_u64() against a digit-string
 * comparison that needs no arithmetic. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "query.h"

static const char u64_max[] = "18446744073709551615";

/* What query_parse_u64(s, n, UINT64_MAX) must say, judged on the text alone. */
static int expect_u64(const char *s, size_t n)
{
    if (n == 0)
        return QUERY_EINVAL;
    for (size_t i = 0; i < n; i++)
        if (s[i] < '0' || s[i] > '9')
            return QUERY_EINVAL;
    while (n > 1 && s[0] == '0') {
        s++;
        n--;
    }
    if (n > 20 || (n == 20 && memcmp(s, u64_max, 20) > 0))
        return QUERY_ERANGE;
    return 0;
}

static void check_u64(const char *s, size_t n)
{
    uint64_t v = 0;
    int rc = query_parse_u64(s, n, UINT64_MAX, &v);
    if (rc != expect_u64(s, n))
        abort();
    if (rc == 0) {
        char text[24];
        int len = snprintf(text, sizeof text, "%llu", (unsigned long long)v);
        size_t skip = n - (size_t)len; /* leading zeros */
        if ((size_t)len > n || memcmp(s + skip, text, (size_t)len) != 0)
            abort();
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *s = (const char *)data;
    check_u64(s, size);
    struct query_history q;
    char err[160];
    err[0] = '\0';
    if (query_parse_history(s, size, &q, err, sizeof err) == 0) {
        if (q.limit < 1 || q.limit > QUERY_LIMIT_MAX || q.since > QUERY_SINCE_MAX)
            abort();
    } else if (err[0] == '\0') {
        abort();
    }
    return 0;
}
