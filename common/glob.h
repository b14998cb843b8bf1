/* Channel patterns for JWT claims (PROTOCOL: 6. Authentication and authorization). */
#ifndef HERALD_GLOB_H
#define HERALD_GLOB_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>

/* True when s[0..slen) matches pattern (NUL-terminated): `*` matches any run of bytes
 * (including none and including `:`), `?` exactly one byte, every other byte itself.
 * There is no escape character. Runs in O(strlen(pattern) * slen) at worst, never more. */
bool glob_match(const char *pattern, const char *s, size_t slen);

/* True when any string of the jansson array `patterns` matches s[0..slen). NULL, a
 * non-array, non-string elements and strings holding a NUL byte never match. */
bool glob_match_any(const json_t *patterns, const char *s, size_t slen);

#endif
