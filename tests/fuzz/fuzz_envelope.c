/* envelope_classify() on any bytes from Redis, for a fixed channel; a raw payload must wrap
 * into JSON that parses again, and no payload holding a NUL byte is taken. */
#include <jansson.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "envelope.h"

static const char channel[] = "bot:status:42";

/* The wrapper of a raw payload is itself valid JSON (unless the payload sat at jansson's
 * depth limit, which the wrapper's one extra level then exceeds). */
static void check_raw(const uint8_t *data, size_t size)
{
    size_t chlen = sizeof channel - 1;
    size_t n = envelope_raw_size(chlen, size);
    char *out = malloc(n);
    if (envelope_write_raw(out, channel, chlen, (const char *)data, size) != n)
        abort();
    json_error_t err;
    json_t *wrapped = json_loadb(out, n, 0, &err);
    if (!wrapped && json_error_code(&err) != json_error_stack_overflow)
        abort();
    if (wrapped && !json_object_get(wrapped, "data"))
        abort();
    json_decref(wrapped);
    free(out);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct payload_info info;
    envelope_classify(channel, sizeof channel - 1, (const char *)data, size, &info);
    if (info.kind != PAYLOAD_INVALID && memchr(data, '\0', size))
        abort();
    switch (info.kind) {
    case PAYLOAD_RAW:
        check_raw(data, size);
        break;
    case PAYLOAD_SEQUENCED:
        if (info.seq < 1 || info.ts < 0)
            abort();
        break;
    case PAYLOAD_INVALID:
        if (!info.error)
            abort();
        break;
    default:
        abort();
    }
    return 0;
}
