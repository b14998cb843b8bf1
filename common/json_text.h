/* Small JSON text helpers for the places where building a jansson tree would be waste. */
#ifndef HERALD_JSON_TEXT_H
#define HERALD_JSON_TEXT_H

#include <stdbool.h>
#include <stddef.h>

/* Escapes s[0..n) for use inside a JSON string into out (NUL-terminated, at most cap-1 bytes,
 * never splitting an escape). Returns the number of bytes written. */
size_t json_escape(const char *s, size_t n, char *out, size_t cap);

/* True when s[0..n) nests arrays and objects deeper than max (strings are skipped). A
 * cheap pass before the parser, which has no depth limit of its own below 2048. */
bool json_too_deep(const char *s, size_t n, int max);

#endif
