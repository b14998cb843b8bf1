/* Small JSON text helpers for the places where building a jansson tree would be waste. */
#ifndef HERALD_JSON_TEXT_H
#define HERALD_JSON_TEXT_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>

/* json_loadb for text from outside (clients, publishers, token and key issuers): the same,
 * except that text holding a NUL byte is refused. JSON has no raw NUL anywhere, but jansson
 * ends a number at one and reads on, so it takes [1<NUL>] and {"n":1<NUL>}, and the NUL would
 * then travel, as written, to every reader of the text. err may be NULL. */
json_t *json_text_load(const char *s, size_t n, size_t flags, json_error_t *err);

/* Escapes s[0..n) for use inside a JSON string into out (NUL-terminated, at most cap-1 bytes,
 * never splitting an escape). Returns the number of bytes written. */
size_t json_escape(const char *s, size_t n, char *out, size_t cap);

/* True when s[0..n) nests arrays and objects deeper than max (strings are skipped). A
 * cheap pass before the parser, which has no depth limit of its own below 2048. */
bool json_too_deep(const char *s, size_t n, int max);

/* Where a value sits in a JSON text: s[off..off+len). */
struct json_span {
    size_t off, len;
};

/* The spans below read texts that the parser has already accepted: they find the bytes of a
 * value as the sender wrote them, which re-encoding a parsed tree would not keep (jansson
 * writes 0.1 back as 0.10000000000000001). */

/* The value of member key of the object that starts at s[at] (after any whitespace).
 * Keys are compared after decoding their escapes. Returns 0, or -1 when there is no such
 * member or s[at] holds no object. */
int json_member_span(const char *s, size_t n, size_t at, const char *key, struct json_span *out);

/* The elements of the array that starts at s[at] (after any whitespace): fills out with at
 * most max spans and returns how many there are, or -1 when s[at] holds no array. */
long json_element_spans(const char *s, size_t n, size_t at, struct json_span *out, size_t max);

#endif
