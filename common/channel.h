/* Channel name rules shared by the gateway and the tools (PROTOCOL: 1. Channels). */
#ifndef HERALD_CHANNEL_H
#define HERALD_CHANNEL_H

#include <stdbool.h>
#include <stddef.h>

#define CHANNEL_NAME_MAX 200

/* True when name[0..len) is 1 to 200 bytes of A-Z a-z 0-9 _ - . : @ = */
bool channel_name_valid(const char *name, size_t len);

#endif
