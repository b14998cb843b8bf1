#include "key_slot.h"

#include <string.h>

/* CRC16-CCITT (XMODEM): polynomial 0x1021, initial value 0, no reflection, as Redis. */
static unsigned crc16(const char *s, size_t n)
{
    unsigned crc = 0;
    for (size_t i = 0; i < n; i++) {
        crc ^= (unsigned)(unsigned char)s[i] << 8;
        for (int b = 0; b < 8; b++)
            crc = crc & 0x8000 ? (crc << 1) ^ 0x1021 : crc << 1;
        crc &= 0xffff;
    }
    return crc;
}

unsigned redis_key_slot(const char *name, size_t len)
{
    const char *open = memchr(name, '{', len);
    if (open) {
        size_t rest = len - (size_t)(open - name) - 1;
        const char *close = memchr(open + 1, '}', rest);
        if (close && close > open + 1)
            return crc16(open + 1, (size_t)(close - open - 1)) % REDIS_CLUSTER_SLOTS;
    }
    return crc16(name, len) % REDIS_CLUSTER_SLOTS;
}
