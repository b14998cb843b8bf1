#include "pg_array.h"

#include <string.h>

size_t pg_array_room(const char *s)
{
    return s ? 2 * strlen(s) + 3 : 5;
}

char *pg_array_put(char *out, const char *s, bool first)
{
    if (!first)
        *out++ = ',';
    if (!s) {
        memcpy(out, "NULL", 4);
        return out + 4;
    }
    *out++ = '"';
    for (; *s; s++) {
        if (*s == '"' || *s == '\\')
            *out++ = '\\';
        *out++ = *s;
    }
    *out++ = '"';
    return out;
}
