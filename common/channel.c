#include "channel.h"

/* Every allowed byte is also safe to
 * print inside a JSON string unescaped, which the frame builders rely on. */
static bool allowed(unsigned char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' ||
           c == '-' || c == '.' || c == ':' || c == '@' || c == '=';
}

bool channel_name_valid(const char *name, size_t len)
{
    if (!name || len == 0 || len > CHANNEL_NAME_MAX)
        return false;
    for (size_t i = 0; i < len; i++)
        if (!allowed((unsigned char)name[i]))
            return false;
    return true;
}
