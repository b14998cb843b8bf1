#include "v1_route.h"

#include <string.h>

#define CHANNELS "/v1/channels/"

enum v1_route v1_route_parse(const char *path, char *channel)
{
    static const struct {
        const char *suffix;
        enum v1_route route;
    } tails[] = {{"/messages", V1_MESSAGES}, {"/presence", V1_PRESENCE}, {"/stream", V1_STREAM}};
    if (strcmp(path, "/v1/messages") == 0)
        return V1_BATCH;
    size_t len = strlen(path), pl = sizeof CHANNELS - 1;
    if (strncmp(path, CHANNELS, pl) != 0)
        return V1_NONE;
    enum v1_route route = V1_POSITION;
    size_t n = len - pl;
    for (size_t i = 0; i < sizeof tails / sizeof tails[0]; i++) {
        size_t sl = strlen(tails[i].suffix);
        if (n >= sl && strcmp(path + len - sl, tails[i].suffix) == 0) {
            route = tails[i].route;
            n -= sl;
            break;
        }
    }
    /* what is left is checked whole: a name has no '/', so more segments name no channel */
    if (!channel_name_valid(path + pl, n))
        return V1_BAD_CHANNEL;
    memcpy(channel, path + pl, n);
    channel[n] = '\0';
    return route;
}
