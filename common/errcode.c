#include "errcode.h"

static const char *const names[ERR_COUNT] = {
    "bad_request",         "unauthorized", "forbidden",       "not_found",
    "too_large",           "rate_limited", "history_expired", "history_reset",
    "history_unavailable", "unavailable",  "internal",
};

const char *errcode_name(enum errcode code)
{
    return (unsigned)code < ERR_COUNT ? names[code] : "internal";
}
