#include "errcode.h"

#include <string.h>

static const char *const names[ERR_COUNT] = {
    "bad_request",         "unauthorized", "forbidden",       "not_found",
    "too_large",           "rate_limited", "history_expired", "history_reset",
    "history_unavailable", "unavailable",  "internal",        "presence_full",
};

const char *errcode_name(enum errcode code)
{
    return (unsigned)code < ERR_COUNT ? names[code] : "internal";
}

enum errcode errcode_from_name(const char *name)
{
    for (int i = 0; i < ERR_COUNT; i++)
        if (name && strcmp(errcode_name((enum errcode)i), name) == 0)
            return (enum errcode)i;
    return ERR_INTERNAL;
}
