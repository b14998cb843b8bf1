#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>
#include <stdlib.h>
#include <string.h>

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

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(header_lengths_follow_rfc6455),
        cmocka_unit_test(headers_encode_fin_text_and_length),
        cmocka_unit_test(a_frame_holds_header_and_payload),
        cmocka_unit_test(close_frames_carry_code_and_reason),
        cmocka_unit_test(references_are_counted),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
