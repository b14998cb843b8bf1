/* The error codes of the wire contract (PROTOCOL: 3. error codes), shared by the WebSocket
 * and HTTP sides and by the metrics that count them. */
#ifndef HERALD_ERRCODE_H
#define HERALD_ERRCODE_H

enum errcode {
    ERR_BAD_REQUEST,
    ERR_UNAUTHORIZED,
    ERR_FORBIDDEN,
    ERR_NOT_FOUND,
    ERR_TOO_LARGE,
    ERR_RATE_LIMITED,
    ERR_HISTORY_EXPIRED,
    ERR_HISTORY_RESET,
    ERR_HISTORY_UNAVAILABLE,
    ERR_UNAVAILABLE,
    ERR_INTERNAL,
    ERR_PRESENCE_FULL,
    ERR_COUNT
};

/* "bad_request", "unauthorized", ... */
const char *errcode_name(enum errcode code);

/* The code of a name; ERR_INTERNAL for a name that is none. */
enum errcode errcode_from_name(const char *name);

#endif
