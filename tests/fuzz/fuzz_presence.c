/* Presence's wire texts on arbitrary bytes (presence_event.h): a member list built from
 * whatever a channel's Redis hash holds (split here at '\n' into field, value, field, ...)
 * is always valid JSON, with each sub once and in order, and a count no smaller than the
 * members; an event check never reads out of bounds; an event built from any sub and an
 * info that is JSON as Herald reads it (json_text_load) passes the check. */
#include <jansson.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "json_text.h"
#include "presence_event.h"

#define MAX_ENTRIES 64

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *s = (const char *)data;
    presence_event_valid("c", 1, s, size);

    const char *part[2 * MAX_ENTRIES];
    size_t plen[2 * MAX_ENTRIES], n = 0, at = 0;
    while (at <= size && n < 2 * MAX_ENTRIES) {
        const char *nl = memchr(s + at, '\n', size - at);
        size_t len = nl ? (size_t)(nl - (s + at)) : size - at;
        part[n] = s + at;
        plen[n++] = len;
        at += len + 1;
        if (!nl)
            break;
    }
    struct presence_entry e[MAX_ENTRIES];
    size_t m = 0;
    for (size_t i = 0; i + 1 < n; i += 2)
        e[m++] = (struct presence_entry){part[i], part[i + 1], plen[i], plen[i + 1]};
    size_t len, skipped;
    char *text = presence_list_text(e, m, &len, &skipped);
    if (!text)
        return 0;
    if (strlen(text) != len)
        abort();
    char *obj = malloc(len + 3);
    obj[0] = '{';
    memcpy(obj + 1, text, len);
    obj[len + 1] = '}';
    json_t *root = json_loadb(obj, len + 2, JSON_REJECT_DUPLICATES, NULL);
    if (!root)
        abort();
    json_t *members = json_object_get(root, "members");
    json_int_t count = json_integer_value(json_object_get(root, "count"));
    if (!json_is_array(members) || count < (json_int_t)json_array_size(members) || skipped > m)
        abort();
    const char *prev = NULL;
    size_t prevlen = 0;
    for (size_t i = 0; i < json_array_size(members); i++) {
        json_t *sub = json_object_get(json_array_get(members, i), "sub");
        const char *cur = json_string_value(sub);
        size_t cl = json_string_length(sub);
        if (!cur || !cl)
            abort();
        if (prev) {
            int c = memcmp(prev, cur, prevlen < cl ? prevlen : cl);
            if (c > 0 || (c == 0 && prevlen >= cl))
                abort(); /* out of order or twice */
        }
        prev = cur;
        prevlen = cl;
    }
    json_decref(root);
    free(obj);
    free(text);

    /* the first part as a sub, the second as info when it is JSON */
    if (n >= 2) {
        json_t *info = json_text_load(part[1], plen[1], JSON_DECODE_ANY, NULL);
        size_t elen;
        char *ev = presence_event_new(PRESENCE_JOIN, "room:1", 6, part[0], plen[0],
                                      info ? part[1] : NULL, info ? plen[1] : 0, 0, &elen);
        if (ev && info && !presence_event_valid("room:1", 6, ev, elen))
            abort();
        free(ev);
        json_decref(info);
    }
    return 0;
}
