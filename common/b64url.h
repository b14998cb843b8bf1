/* Strict unpadded base64url (RFC 7515 section 2), as JWTs and JWKs carry their parts. */
#ifndef HERALD_B64URL_H
#define HERALD_B64URL_H

#include <stddef.h>

/* Only the URL-safe alphabet, no `=`, and the unused low bits of the last character must be
 * zero, so each byte string has exactly one encoding. Returns the decoded length or -1.
 * out (NULL: only check) holds n / 4 * 3 + 2 bytes. */
long b64url_decode(const char *s, size_t n, unsigned char *out);

#endif
