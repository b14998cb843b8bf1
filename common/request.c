#include "request.h"
#include "channel.h"
#include "json_text.h"

#include <string.h>

static const struct {
    const char *name;
    enum request_op op;
    bool channel;
} ops[] = {
    {"subscribe", REQ_SUBSCRIBE, true}, {"unsubscribe", REQ_UNSUBSCRIBE, true},
    {"publish", REQ_PUBLISH, true},     {"ping", REQ_PING, false},
    {"presence", REQ_PRESENCE, true},   {"refresh", REQ_REFRESH, false},
};

/* The id as JSON text; -1 when it is neither an integer nor a short string. */
static int read_id(json_t *id, char *out, size_t cap)
{
    out[0] = '\0';
    if (!id)
        return 0;
    if (!(json_is_integer(id) || (json_is_string(id) && json_string_length(id) <= REQUEST_ID_MAX)))
        return -1;
    size_t n = json_dumpb(id, out, cap - 1, JSON_ENCODE_ANY | JSON_COMPACT);
    if (n == 0 || n >= cap)
        return -1;
    out[n] = '\0';
    return 0;
}

static int read_channel(struct request *r, const char **why)
{
    json_t *ch = json_object_get(r->root, "channel");
    if (!json_is_string(ch)) {
        *why = "channel must be a string";
        return -1;
    }
    r->channel = json_string_value(ch);
    r->channel_len = json_string_length(ch);
    if (!channel_name_valid(r->channel, r->channel_len)) {
        *why = "channel must be 1-200 bytes of A-Z a-z 0-9 _ - . : @ =";
        return -1;
    }
    return 0;
}

static int read_resume(struct request *r, const char **why)
{
    json_t *strict = json_object_get(r->root, "strict");
    if (strict && !json_is_boolean(strict)) {
        *why = "strict must be true or false";
        return -1;
    }
    r->strict = json_is_true(strict);
    if (r->strict && !json_object_get(r->root, "since") && !json_object_get(r->root, "last")) {
        *why = "strict needs since (or last): it is about a resume";
        return -1;
    }
    json_t *since = json_object_get(r->root, "since");
    json_t *epoch = json_object_get(r->root, "epoch");
    json_t *last = json_object_get(r->root, "last");
    if (last) {
        if (since || epoch) {
            *why = "last cannot be combined with since or epoch";
            return -1;
        }
        if (!json_is_integer(last) || json_integer_value(last) < 1) {
            *why = "last must be a positive integer (how many of the latest messages)";
            return -1;
        }
        r->resume = true;
        r->last = (uint64_t)json_integer_value(last);
        return 0;
    }
    if (!since && !epoch)
        return 0;
    if (!json_is_integer(since) || json_integer_value(since) < 0) {
        *why = "since must be a non-negative integer (the last seq seen)";
        return -1;
    }
    if (epoch && !json_is_null(epoch) &&
        (!json_is_string(epoch) || json_string_length(epoch) >= REQUEST_EPOCH_MAX)) {
        *why = "epoch must be a string";
        return -1;
    }
    r->resume = true;
    r->since = (uint64_t)json_integer_value(since);
    r->epoch = json_is_string(epoch) ? json_string_value(epoch) : NULL;
    return 0;
}

/* sub and info (presence.h): a sub is a string of 1 to REQUEST_SUB_MAX bytes; info is any
 * JSON value, kept as written. */
static int read_member(struct request *r, const char *msg, size_t len, const char **why)
{
    json_t *sub = json_object_get(r->root, "sub");
    if (sub) {
        if (!json_is_string(sub) || json_string_length(sub) == 0 ||
            json_string_length(sub) > REQUEST_SUB_MAX) {
            *why = "sub must be a string of 1-127 bytes";
            return -1;
        }
        r->sub = json_string_value(sub);
        r->sub_len = json_string_length(sub);
    }
    struct json_span sp;
    if (json_object_get(r->root, "info")) {
        if (json_member_span(msg, len, 0, "info", &sp) < 0) {
            *why = "info must be a JSON value";
            return -1;
        }
        r->info_text = msg + sp.off;
        r->info_len = sp.len;
    }
    return 0;
}

int request_parse(const char *msg, size_t len, int max_depth, struct request *out, const char **why)
{
    memset(out, 0, sizeof *out);
    if (json_too_deep(msg, len, max_depth)) {
        *why = "message nests deeper than allowed";
        return -1;
    }
    json_error_t err;
    out->root = json_text_load(msg, len, JSON_REJECT_DUPLICATES, &err);
    if (!json_is_object(out->root)) {
        *why = "frame must be a JSON object";
        return -1;
    }
    if (read_id(json_object_get(out->root, "id"), out->id, sizeof out->id) < 0) {
        *why = "id must be an integer or a string of at most 64 bytes";
        return -1;
    }
    const char *op = json_string_value(json_object_get(out->root, "op"));
    if (!op) {
        *why = "op must be a string";
        return -1;
    }
    size_t i = 0;
    while (i < sizeof ops / sizeof ops[0] && strcmp(ops[i].name, op) != 0)
        i++;
    if (i == sizeof ops / sizeof ops[0]) {
        *why = "unknown op";
        return -1;
    }
    out->op = ops[i].op;
    if (ops[i].channel && read_channel(out, why) < 0)
        return -1;
    if (out->op == REQ_SUBSCRIBE &&
        (read_resume(out, why) < 0 || read_member(out, msg, len, why) < 0))
        return -1;
    if (out->op == REQ_REFRESH) {
        json_t *token = json_object_get(out->root, "token");
        if (!json_is_string(token) || json_string_length(token) == 0 ||
            strlen(json_string_value(token)) != json_string_length(token)) {
            *why = "refresh needs token (the new JWT)";
            return -1;
        }
        out->token = json_string_value(token);
    }
    if (out->op == REQ_PUBLISH) {
        struct json_span sp;
        if (!(out->data = json_object_get(out->root, "data")) ||
            json_member_span(msg, len, 0, "data", &sp) < 0) {
            *why = "publish needs data";
            return -1;
        }
        out->data_text = msg + sp.off;
        out->data_len = sp.len;
    }
    return 0;
}

void request_free(struct request *r)
{
    json_decref(r->root);
    r->root = NULL;
}
