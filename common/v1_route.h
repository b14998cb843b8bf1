/* The /v1 routes by path (PROTOCOL: REST): which one a path names and, for the channel
 * routes, the channel. One reading of a path for server.c, rest.c and stream.c. */
#ifndef HERALD_V1_ROUTE_H
#define HERALD_V1_ROUTE_H

#include "channel.h"

enum v1_route {
    V1_NONE,        /* no /v1 route */
    V1_BAD_CHANNEL, /* /v1/channels/... naming no valid channel */
    V1_BATCH,       /* /v1/messages */
    V1_POSITION,    /* /v1/channels/{C} */
    V1_MESSAGES,    /* /v1/channels/{C}/messages */
    V1_PRESENCE,    /* /v1/channels/{C}/presence */
    V1_STREAM       /* /v1/channels/{C}/stream */
};

/* The route of path (without its query) and, for a channel route, C in channel
 * (NUL-terminated; CHANNEL_NAME_MAX + 1 bytes). */
enum v1_route v1_route_parse(const char *path, char *channel);

#endif
