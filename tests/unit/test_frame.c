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
        cmocka_unit_test(references_are_counted),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
