/* request_parse() on any client message, with properties every accepted request must have:
 * a known op, a valid channel for the ops that take one, data for publish and info for
 * subscribe whose texts (found by json_member_span) parse to the same values, a sub of
 * 1-127 bytes, a non-empty token for refresh, and an id that is JSON text of bounded size.
 * No accepted message holds a NUL byte (JSON has none; jansson alone would take one). */
#include <assert.h>
#include <stdint.h>
#include <string.h>

#include "channel.h"
#include "request.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct request r;
    const char *why = NULL;
    int rc = request_parse((const char *)data, size, 16, &r, &why);
    if (rc == 0) {
        assert(!memchr(data, '\0', size));
        assert(r.op <= REQ_REFRESH);
        if (r.op != REQ_PING && r.op != REQ_REFRESH)
            assert(channel_name_valid(r.channel, r.channel_len));
        if (r.op == REQ_REFRESH)
            assert(r.token && r.token[0]);
        if (r.sub)
            assert(r.op == REQ_SUBSCRIBE && r.sub_len >= 1 && r.sub_len <= REQUEST_SUB_MAX);
        if (r.info_text) {
            json_t *info = json_loadb(r.info_text, r.info_len, JSON_DECODE_ANY, NULL);
            assert(r.op == REQ_SUBSCRIBE && info &&
                   json_equal(info, json_object_get(r.root, "info")));
            json_decref(info);
        }
        if (r.op == REQ_PUBLISH) {
            assert(r.data != NULL);
            json_t *again = json_loadb(r.data_text, r.data_len, JSON_DECODE_ANY, NULL);
            assert(again && json_equal(again, r.data));
            json_decref(again);
        }
        if (r.resume)
            assert(r.op == REQ_SUBSCRIBE);
    } else {
        assert(why && why[0]);
    }
    assert(strlen(r.id) <= REQUEST_ID_JSON_MAX);
    request_free(&r);
    return 0;
}
