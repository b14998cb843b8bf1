#include "frame.h"

#include <stdlib.h>
#include <string.h>

#define WS_FIN_TEXT 0x81

size_t frame_header_len(size_t payload_len)
{
    if (payload_len < 126)
        return 2;
    if (payload_len <= 0xffff)
        return 4;
    return 10;
}

size_t frame_write_header(uint8_t *out, size_t payload_len)
{
    out[0] = WS_FIN_TEXT;
    if (payload_len < 126) {
        out[1] = (uint8_t)payload_len;
        return 2;
    }
    if (payload_len <= 0xffff) {
        out[1] = 126;
        out[2] = (uint8_t)(payload_len >> 8);
        out[3] = (uint8_t)payload_len;
        return 4;
    }
    out[1] = 127;
    for (int i = 0; i < 8; i++)
        out[2 + i] = (uint8_t)((uint64_t)payload_len >> (56 - 8 * i));
    return 10;
}

size_t frame_write_close(uint8_t *out, uint16_t code, const char *reason)
{
    size_t n = strlen(reason);
    if (n > FRAME_CLOSE_MAX - 4)
        n = FRAME_CLOSE_MAX - 4;
    out[0] = 0x88; /* FIN + close */
    out[1] = (uint8_t)(2 + n);
    out[2] = (uint8_t)(code >> 8);
    out[3] = (uint8_t)code;
    memcpy(out + 4, reason, n);
    return 4 + n;
}

struct frame *frame_new(size_t payload_len)
{
    size_t hdr = frame_header_len(payload_len);
    if (payload_len > UINT32_MAX - 16)
        return NULL;
    struct frame *f = malloc(sizeof *f + hdr + payload_len);
    if (!f)
        return NULL;
    f->seq = 0;
    f->refs = 1;
    f->hdr = (uint8_t)frame_write_header(f->data, payload_len);
    f->len = (uint32_t)(hdr + payload_len);
    return f;
}

struct frame *frame_from(const void *payload, size_t len)
{
    struct frame *f = frame_new(len);
    if (f)
        memcpy(frame_payload(f), payload, len);
    return f;
}

void frame_unref(struct frame *f)
{
    if (f && --f->refs == 0)
        free(f);
}
