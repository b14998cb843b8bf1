#include "glob.h"

#include <string.h>

/* Two pointers with one remembered star: on a mismatch we only retry from the last `*`,
 * one byte further into s. An earlier star never needs revisiting (the later star can
 * absorb anything the earlier one would have), so there is no exponential backtracking. */
bool glob_match(const char *pattern, const char *s, size_t slen)
{
    size_t p = 0, i = 0;
    size_t star = 0, mark = 0;
    bool have_star = false;

    while (i < slen) {
        char c = pattern[p];
        if (c == '*') {
            have_star = true;
            star = ++p;
            mark = i;
        } else if (c != '\0' && (c == '?' || c == s[i])) {
            p++;
            i++;
        } else if (have_star) {
            p = star;
            i = ++mark;
        } else {
            return false;
        }
    }
    while (pattern[p] == '*')
        p++;
    return pattern[p] == '\0';
}

/* Patterns with a NUL inside would be cut short by json_string_value(): skip them. */
bool glob_match_any(const json_t *patterns, const char *s, size_t slen)
{
    if (!json_is_array(patterns))
        return false;
    for (size_t k = 0; k < json_array_size(patterns); k++) {
        const json_t *pat = json_array_get(patterns, k);
        if (!json_is_string(pat))
            continue;
        const char *text = json_string_value(pat);
        if (strlen(text) != json_string_length(pat))
            continue;
        if (glob_match(text, s, slen))
            return true;
    }
    return false;
}
