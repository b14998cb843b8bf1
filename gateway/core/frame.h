/* A WebSocket text frame built once per message and shared, by reference count, by every
 * subscriber's send queue: no copy per subscriber. Server frames are unmasked, so the same bytes
 * are valid on every connection. Its compressed twin (permessage-deflate) is built once too,
 * on demand, and shared the same way by the connections that negotiated it. */
#ifndef HERALD_FRAME_H
#define HERALD_FRAME_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct frame {
    uint64_t seq;           /* the message's sequence number; 0 for raw messages and replies */
    struct frame *deflated; /* the compressed twin once built; holds one reference */
    uint32_t refs;
    uint32_t len;       /* header + payload */
    uint8_t hdr;        /* header bytes: 2, 4 or 10 */
    bool deflate_tried; /* frame_deflated ran: deflated is the answer, even if NULL */
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

/* A WebSocket ping (never compressed). Its payload is not empty: lws 4.1 drops an empty
 * pong before the protocol callback (roles/ws/ops-ws.c:591), and a pong echoes the ping. */
#define FRAME_PING_PAYLOAD "herald"
struct frame *frame_ping(void);

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

/* Payloads shorter than this are not worth compressing (the reply ops, small events). */
#define FRAME_DEFLATE_MIN 64

/* The same message as a compressed frame for a connection that negotiated
 * permessage-deflate: RSV1 set, the payload a raw DEFLATE block flushed to a byte boundary
 * without its 00 00 ff ff tail (RFC 7692 7.2.1). Each message is compressed on its own, with
 * no reference to earlier ones, so one twin is valid on every such connection whatever
 * context takeover it agreed to. Built on the first call and kept with f. NULL, meaning
 * "send f", when the payload is short, does not shrink, or memory runs out. */
struct frame *frame_deflated(struct frame *f);

/* Frees the compressor frame_deflated keeps (at exit). */
void frame_deflate_end(void);

#endif
