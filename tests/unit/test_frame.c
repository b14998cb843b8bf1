#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>
#include <stdlib.h>
#include <stdio.h>
#include <string.h>
#include <zlib.h>

#include "frame.h"

static void header_lengths_follow_rfc6455(void **state)
{
    assert_int_equal(frame_header_len(0), 2);
    assert_int_equal(frame_header_len(125), 2);
    assert_int_equal(frame_header_len(126), 4);
    assert_int_equal(frame_header_len(65535), 4);
    assert_int_equal(frame_header_len(65536), 10);
}

static void headers_encode_fin_text_and_length(void **state)
{
    uint8_t h[10];
    assert_int_equal(frame_write_header(h, 5), 2);
    assert_int_equal(h[0], 0x81);
    assert_int_equal(h[1], 5);

    assert_int_equal(frame_write_header(h, 300), 4);
    assert_int_equal(h[1], 126);
    assert_int_equal(h[2], 0x01);
    assert_int_equal(h[3], 0x2c);

    assert_int_equal(frame_write_header(h, 0x01020304), 10);
    assert_int_equal(h[1], 127);
    const uint8_t be[8] = {0, 0, 0, 0, 1, 2, 3, 4};
    assert_memory_equal(h + 2, be, 8);
}

static void a_frame_holds_header_and_payload(void **state)
{
    struct frame *f = frame_from("hello", 5);
    assert_non_null(f);
    assert_int_equal(f->len, 7);
    assert_int_equal(f->hdr, 2);
    assert_memory_equal(frame_payload(f), "hello", 5);
    assert_int_equal(f->data[1], 5);
    frame_unref(f);
}

static void close_frames_carry_code_and_reason(void **state)
{
    uint8_t out[FRAME_CLOSE_MAX];
    size_t n = frame_write_close(out, 4008, "slow consumer");
    assert_int_equal(n, 4 + 13);
    assert_int_equal(out[0], 0x88);
    assert_int_equal(out[1], 2 + 13);
    assert_int_equal((out[2] << 8) | out[3], 4008);
    assert_memory_equal(out + 4, "slow consumer", 13);
    char long_reason[300];
    memset(long_reason, 'r', sizeof long_reason - 1);
    long_reason[sizeof long_reason - 1] = '\0';
    n = frame_write_close(out, 1001, long_reason);
    assert_int_equal(n, FRAME_CLOSE_MAX); /* a control frame payload is at most 125 bytes */
    assert_int_equal(out[1], 125);
}

static void references_are_counted(void **state)
{
    struct frame *f = frame_new(200);
    assert_int_equal(f->refs, 1);
    assert_ptr_equal(frame_ref(f), f);
    assert_int_equal(f->refs, 2);
    frame_unref(f);
    assert_int_equal(f->refs, 1);
    frame_unref(f); /* freed: LeakSanitizer and valgrind check the rest */
}

/* Inflates a permessage-deflate payload as a client does: append 00 00 ff ff, raw inflate
 * with the stream z (kept across messages under context takeover). */
static size_t inflate_message(z_stream *z, const uint8_t *in, size_t len, uint8_t *out, size_t room)
{
    uint8_t *buf = malloc(len + 4);
    memcpy(buf, in, len);
    memcpy(buf + len, "\x00\x00\xff\xff", 4);
    z->next_in = buf;
    z->avail_in = (uInt)(len + 4);
    z->next_out = out;
    z->avail_out = (uInt)room;
    int rc = inflate(z, Z_SYNC_FLUSH);
    assert_true(rc == Z_OK || rc == Z_BUF_ERROR);
    assert_int_equal(z->avail_in, 0);
    free(buf);
    return room - z->avail_out;
}

static struct frame *json_frame(const char *word, int repeat)
{
    char text[4096];
    size_t n = (size_t)snprintf(text, sizeof text, "{\"op\":\"message\",\"data\":\"");
    for (int i = 0; i < repeat; i++)
        n += (size_t)snprintf(text + n, sizeof text - n, "%s ", word);
    n += (size_t)snprintf(text + n, sizeof text - n, "\"}");
    return frame_from(text, n);
}

static void a_deflated_twin_inflates_to_the_same_message(void **state)
{
    z_stream z = {0};
    assert_int_equal(inflateInit2(&z, -MAX_WBITS), Z_OK);
    struct frame *a = json_frame("progress", 100), *b = json_frame("status", 80);
    /* each twin decodes alone and also after another one on the same stream, as a client
     * with context takeover reads them */
    for (int round = 0; round < 2; round++) {
        struct frame *f = round ? b : a;
        struct frame *d = frame_deflated(f);
        assert_non_null(d);
        assert_int_equal(d->data[0], 0xc1); /* FIN, RSV1, text */
        assert_true(d->len < f->len / 3);
        assert_int_equal(d->seq, f->seq);
        uint8_t out[4096];
        size_t n = inflate_message(&z, frame_payload(d), d->len - d->hdr, out, sizeof out);
        assert_int_equal(n, f->len - f->hdr);
        assert_memory_equal(out, frame_payload(f), n);
    }
    inflateEnd(&z);
    frame_unref(a);
    frame_unref(b);
}

static void the_twin_is_built_once_and_lives_while_anyone_holds_it(void **state)
{
    struct frame *f = json_frame("again", 60);
    struct frame *d = frame_deflated(f);
    assert_non_null(d);
    assert_ptr_equal(frame_deflated(f), d);
    frame_ref(d);   /* a send queue holding the twin */
    frame_unref(f); /* the message is gone; the queue's twin stays valid */
    assert_int_equal(d->refs, 1);
    assert_int_equal(d->data[0], 0xc1);
    frame_unref(d);
}

static void short_or_incompressible_payloads_are_sent_plain(void **state)
{
    struct frame *small = frame_from("{\"op\":\"pong\"}", 13);
    assert_null(frame_deflated(small));
    assert_true(small->deflate_tried);
    frame_unref(small);
    uint8_t noise[600];
    uint32_t x = 2463534242u;
    for (size_t i = 0; i < sizeof noise; i++) { /* xorshift: no repeats to find */
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        noise[i] = (uint8_t)x;
    }
    struct frame *random = frame_from(noise, sizeof noise);
    assert_null(frame_deflated(random));
    frame_unref(random);
    frame_deflate_end();
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(header_lengths_follow_rfc6455),
        cmocka_unit_test(headers_encode_fin_text_and_length),
        cmocka_unit_test(a_frame_holds_header_and_payload),
        cmocka_unit_test(close_frames_carry_code_and_reason),
        cmocka_unit_test(references_are_counted),
        cmocka_unit_test(a_deflated_twin_inflates_to_the_same_message),
        cmocka_unit_test(the_twin_is_built_once_and_lives_while_anyone_holds_it),
        cmocka_unit_test(short_or_incompressible_payloads_are_sent_plain),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
