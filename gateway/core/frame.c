#include "frame.h"

#include <stdlib.h>
#include <string.h>
#include <zlib.h>

#define WS_FIN_TEXT 0x81
#define WS_RSV1     0x40 /* "this message is compressed" under permessage-deflate */

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
    f->deflated = NULL;
    f->deflate_tried = false;
    f->refs = 1;
    f->hdr = (uint8_t)frame_write_header(f->data, payload_len);
    f->len = (uint32_t)(hdr + payload_len);
    return f;
}

struct frame *frame_ping(void)
{
    struct frame *f = frame_from(FRAME_PING_PAYLOAD, sizeof FRAME_PING_PAYLOAD - 1);
    if (f) {
        f->data[0] = 0x89; /* FIN, opcode 9 */
        f->deflate_tried = true;
    }
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
    if (f && --f->refs == 0) {
        frame_unref(f->deflated);
        free(f);
    }
}

/* One compressor for the whole process, reset for every message: building a twin never
 * depends on the previous one. */
static z_stream deflater;
static bool deflater_ready;

static bool deflater_init(void)
{
    if (!deflater_ready)
        deflater_ready = deflateInit2(&deflater, Z_DEFAULT_COMPRESSION, Z_DEFLATED, -MAX_WBITS, 8,
                                      Z_DEFAULT_STRATEGY) == Z_OK;
    return deflater_ready;
}

void frame_deflate_end(void)
{
    if (deflater_ready)
        deflateEnd(&deflater);
    deflater_ready = false;
}

static struct frame *deflate_frame(struct frame *f)
{
    size_t in_len = f->len - f->hdr;
    if (in_len < FRAME_DEFLATE_MIN || !deflater_init())
        return NULL;
    /* worth it only when the whole frame shrinks: the output never needs more room */
    size_t room = in_len;
    uint8_t *out = malloc(room);
    if (!out)
        return NULL;
    deflateReset(&deflater);
    deflater.next_in = frame_payload(f);
    deflater.avail_in = (uInt)in_len;
    deflater.next_out = out;
    deflater.avail_out = (uInt)room;
    int rc = deflate(&deflater, Z_SYNC_FLUSH);
    size_t n = room - deflater.avail_out;
    struct frame *z = NULL;
    /* a full output buffer may hide more pending output: then it did not shrink enough */
    if (rc == Z_OK && deflater.avail_in == 0 && deflater.avail_out > 0 && n >= 4 &&
        memcmp(out + n - 4, "\x00\x00\xff\xff", 4) == 0 && frame_header_len(n - 4) + n - 4 < f->len)
        z = frame_from(out, n - 4);
    free(out);
    if (z) {
        z->data[0] |= WS_RSV1;
        z->seq = f->seq;
    }
    return z;
}

struct frame *frame_deflated(struct frame *f)
{
    if (!f->deflate_tried) {
        f->deflate_tried = true;
        f->deflated = deflate_frame(f);
    }
    return f->deflated;
}
