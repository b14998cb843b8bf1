#include "envelope.h"
#include "json_text.h"

#include <jansson.h>
#include <stdbool.h>
#include <string.h>

static const char raw_head[] = "{\"op\":\"message\",\"channel\":\"";
static const char raw_mid[] = "\",\"data\":";

static int check_envelope(json_t *obj, const char *channel, size_t chlen, struct payload_info *out)
{
    json_t *ch = json_object_get(obj, "channel");
    json_t *seq = json_object_get(obj, "seq");
    json_t *ts = json_object_get(obj, "ts");

    if (!json_is_string(ch) || json_string_length(ch) != chlen ||
        memcmp(json_string_value(ch), channel, chlen) != 0) {
        out->error = "envelope channel does not match the Redis channel";
        return -1;
    }
    if (!json_is_integer(seq) || json_integer_value(seq) < 1) {
        out->error = "envelope seq is not a positive integer";
        return -1;
    }
    if (!json_is_integer(ts) || json_integer_value(ts) < 0) {
        out->error = "envelope ts is not a non-negative integer";
        return -1;
    }
    if (!json_object_get(obj, "data")) {
        out->error = "envelope has no data";
        return -1;
    }
    out->seq = (uint64_t)json_integer_value(seq);
    out->ts = (int64_t)json_integer_value(ts);
    return 0;
}

void envelope_classify(const char *channel, size_t chlen, const char *payload, size_t len,
                       struct payload_info *out)
{
    memset(out, 0, sizeof *out);
    json_error_t err;
    json_t *root = json_text_load(payload, len, JSON_DECODE_ANY, &err);
    if (!root) {
        out->kind = PAYLOAD_INVALID;
        out->error = "payload is not valid JSON";
        return;
    }
    json_t *op = json_is_object(root) ? json_object_get(root, "op") : NULL;
    bool is_envelope = json_is_string(op) && strcmp(json_string_value(op), "message") == 0 &&
                       json_object_get(root, "seq") != NULL;
    if (!is_envelope)
        out->kind = PAYLOAD_RAW;
    else if (check_envelope(root, channel, chlen, out) == 0)
        out->kind = PAYLOAD_SEQUENCED;
    else
        out->kind = PAYLOAD_INVALID;
    json_decref(root);
}

size_t envelope_raw_size(size_t chlen, size_t rawlen)
{
    return sizeof raw_head - 1 + chlen + sizeof raw_mid - 1 + rawlen + 1;
}

size_t envelope_write_raw(char *out, const char *channel, size_t chlen, const char *raw,
                          size_t rawlen)
{
    char *p = out;
    memcpy(p, raw_head, sizeof raw_head - 1);
    p += sizeof raw_head - 1;
    memcpy(p, channel, chlen);
    p += chlen;
    memcpy(p, raw_mid, sizeof raw_mid - 1);
    p += sizeof raw_mid - 1;
    memcpy(p, raw, rawlen);
    p += rawlen;
    *p++ = '}';
    return (size_t)(p - out);
}
