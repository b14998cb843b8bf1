/* PostgreSQL array literals ({"a","b",NULL}) for text[] and json[] query parameters: one
 * parameter carries a whole list, so a batch or a set of channels is one round trip. */
#ifndef HERALD_PG_ARRAY_H
#define HERALD_PG_ARRAY_H

#include <stdbool.h>
#include <stddef.h>

/* Bytes pg_array_put may write for s (NULL: the element NULL), its separator included. */
size_t pg_array_room(const char *s);

/* Appends s to a literal being built at out (after its "{"): a comma unless first, then s
 * in double quotes with " and \ escaped, or NULL when s is NULL. Returns the new end; the
 * caller closes with "}" and a NUL. */
char *pg_array_put(char *out, const char *s, bool first);

#endif
