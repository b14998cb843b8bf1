/* A WebSocket text frame built once per message and shared, by reference count, by every
 * subscriber's send queue (DESIGN invariant 2). Server frames are unmasked, so the same bytes
 * are valid on every connection. */
#ifndef HERALD_FRAME_H
#define HERALD_FRAME_H

#include <stddef.h>
#include <stdint.h>

struct frame {
    uint64_t seq; /* the message's sequence number; 0 for raw messages and replies */
    uint32_t refs;
    uint32_t len; /* header + payload */
    uint8_t hdr;  /* header bytes: 2, 4 or 10 */
    uint8_t data[];
};

/* Bytes of the header of an unmasked final text frame with this payload length. */
size_t frame_header_len(size_t payload_len);

/* Writes that header into out (frame_header_len bytes); returns its length. */
size_t frame_write_header(uint8_t *out, size_t payload_len);

/* Largest close frame: 2 header bytes, the code and at most 123 bytes of reason. */
#define FRAME_CLOSE_MAX 127

/* Writes a close frame with code and reason (cut to 123 bytes) into out, which holds
 * FRAME_CLOSE_MAX bytes; returns its length. */
size_t frame_write_close(uint8_t *out, uint16_t code, const char *reason);

/* A frame with one reference, its header written and room for payload_len bytes that the
 * caller fills through frame_payload(). NULL when out of memory or too large. */
struct frame *frame_new(size_t payload_len);

/* A frame holding a copy of payload. */
struct frame *frame_from(const void *payload, size_t len);

static inline uint8_t *frame_payload(struct frame *f)
{
    return f->data + f->hdr;
}

static inline struct frame *frame_ref(struct frame *f)
{
    f->refs++;
    return f;
}

void frame_unref(struct frame *f);

#endif
