/* glob_match() against a plain O(n*m) dynamic-programming matcher, and channel_name_valid():
 * the input is pattern, a NUL byte, then the subject (all pattern if there is no NUL). */
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "channel.h"
#include "glob.h"

#define ORACLE_MAX 512

/* The reference: row[j] says whether the pattern so far matches s[0..j). */
static bool oracle(const char *p, size_t plen, const char *s, size_t slen)
{
    bool row[ORACLE_MAX + 1], next[ORACLE_MAX + 1];
    row[0] = true;
    for (size_t j = 1; j <= slen; j++)
        row[j] = false;
    for (size_t i = 0; i < plen; i++) {
        next[0] = p[i] == '*' && row[0];
        for (size_t j = 1; j <= slen; j++) {
            if (p[i] == '*')
                next[j] = row[j] || next[j - 1];
            else
                next[j] = row[j - 1] && (p[i] == '?' || p[i] == s[j - 1]);
        }
        memcpy(row, next, sizeof row);
    }
    return row[slen];
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *in = (const char *)data;
    const char *nul = memchr(in, '\0', size);
    size_t plen = nul ? (size_t)(nul - in) : size;
    char *pattern = malloc(plen + 1);
    memcpy(pattern, in, plen);
    pattern[plen] = '\0';
    const char *s = nul ? nul + 1 : in + size;
    size_t slen = nul ? size - plen - 1 : 0;

    bool valid = channel_name_valid(s, slen);
    if (valid && (slen == 0 || slen > CHANNEL_NAME_MAX))
        abort();
    bool got = glob_match(pattern, s, slen);
    if (plen <= ORACLE_MAX && slen <= ORACLE_MAX && got != oracle(pattern, plen, s, slen))
        abort();
    if (slen && !glob_match("*", s, slen))
        abort();
    free(pattern);
    return 0;
}
