#include "presence_event.h"
#include "json_text.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define JOIN_PREFIX  "{\"op\":\"join\","
#define LEAVE_PREFIX "{\"op\":\"leave\","

enum presence_kind presence_event_kind(const char *payload, size_t len)
{
    if (len >= sizeof JOIN_PREFIX - 1 && memcmp(payload, JOIN_PREFIX, sizeof JOIN_PREFIX - 1) == 0)
        return PRESENCE_JOIN;
    if (len >= sizeof LEAVE_PREFIX - 1 &&
        memcmp(payload, LEAVE_PREFIX, sizeof LEAVE_PREFIX - 1) == 0)
        return PRESENCE_LEAVE;
    return PRESENCE_NONE;
}

/* s[0..n) as a JSON string, quotes included, malloc'ed; NULL when it is not UTF-8. */
static char *json_string_text(const char *s, size_t n, size_t *len)
{
    json_t *j = json_stringn(s, n);
    if (!j)
        return NULL;
    char *out = json_dumps(j, JSON_ENCODE_ANY | JSON_COMPACT);
    json_decref(j);
    if (out)
        *len = strlen(out);
    return out;
}

char *presence_event_new(enum presence_kind kind, const char *ch, size_t clen, const char *sub,
                         size_t slen, const char *info, size_t ilen, size_t spare, size_t *len)
{
    size_t qlen;
    /* no sub has a NUL: jansson's parser, which reads every event, refuses \u0000 */
    char *q = slen && kind != PRESENCE_NONE && !memchr(sub, '\0', slen)
                  ? json_string_text(sub, slen, &qlen)
                  : NULL;
    if (!q)
        return NULL;
    bool join = kind == PRESENCE_JOIN;
    if (!join)
        ilen = 0;
    /* channel names need no escaping (channel.h) */
    size_t cap = 64 + clen + qlen + ilen + spare;
    char *out = malloc(cap);
    if (out) {
        int n = snprintf(out, cap, "%s\"channel\":\"%.*s\",\"member\":{\"sub\":%s%s%.*s}}",
                         join ? JOIN_PREFIX : LEAVE_PREFIX, (int)clen, ch, q,
                         ilen ? ",\"info\":" : "", (int)ilen, ilen ? info : "");
        *len = (size_t)n;
    }
    free(q);
    return out;
}

bool presence_event_valid(const char *ch, size_t clen, const char *payload, size_t len)
{
    if (presence_event_kind(payload, len) == PRESENCE_NONE)
        return false;
    json_t *root = json_text_load(payload, len, JSON_REJECT_DUPLICATES, NULL);
    json_t *chan = json_object_get(root, "channel");
    json_t *member = json_object_get(root, "member");
    json_t *sub = json_object_get(member, "sub");
    bool ok = json_object_size(root) == 3 && json_is_string(chan) &&
              json_string_length(chan) == clen && memcmp(json_string_value(chan), ch, clen) == 0 &&
              json_is_object(member) && json_is_string(sub) && json_string_length(sub) > 0 &&
              json_object_size(member) == 1 + (json_object_get(member, "info") != NULL);
    json_decref(root);
    return ok;
}

/* The sub of an entry: what follows the first NUL of its field; NULL when there is none. */
static const char *entry_sub(const struct presence_entry *e, size_t *slen)
{
    const char *nul = memchr(e->key, '\0', e->klen);
    if (!nul || nul == e->key)
        return NULL;
    *slen = e->klen - (size_t)(nul + 1 - e->key);
    return nul + 1;
}

static int by_sub(const void *a, const void *b)
{
    size_t la = 0, lb = 0;
    const char *sa = entry_sub(a, &la), *sb = entry_sub(b, &lb);
    if (!sa || !sb)
        return (sa != NULL) - (sb != NULL);
    int c = memcmp(sa, sb, la < lb ? la : lb);
    return c ? c : (la > lb) - (la < lb);
}

/* A count as Redis holds it: 1 to 9 digits. */
static long parse_count(const char *s, size_t n)
{
    if (n == 0 || n > 9)
        return -1;
    long v = 0;
    for (size_t i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9')
            return -1;
        v = v * 10 + (s[i] - '0');
    }
    return v;
}

static bool is_json(const char *s, size_t n)
{
    json_t *j = json_text_load(s, n, JSON_DECODE_ANY | JSON_REJECT_DUPLICATES, NULL);
    json_decref(j);
    return j != NULL;
}

char *presence_list_text(struct presence_entry *e, size_t n, size_t *len, size_t *skipped)
{
    *skipped = 0;
    if (n)
        qsort(e, n, sizeof *e, by_sub);
    size_t cap = 64;
    for (size_t i = 0; i < n; i++)
        cap += 6 * e[i].klen + e[i].vlen + 32; /* json_escape: at most 6 bytes per byte */
    char *out = malloc(cap), *p;
    if (!out)
        return NULL;
    p = out + 48; /* "count":N, goes in front once N is known */
    p += sprintf(p, "\"members\":[");
    long count = 0;
    const char *prev = NULL;
    size_t prevlen = 0;
    for (size_t i = 0; i < n; i++) {
        size_t slen;
        const char *sub = entry_sub(&e[i], &slen);
        if (!sub) {
            (*skipped)++;
            continue;
        }
        if (slen == 0) { /* an instance's anonymous connections */
            long c = parse_count(e[i].val, e[i].vlen);
            if (c < 0)
                (*skipped)++;
            else
                count += c;
            continue;
        }
        if (prev && prevlen == slen && memcmp(prev, sub, slen) == 0)
            continue;
        json_t *valid = memchr(sub, '\0', slen) ? NULL : json_stringn(sub, slen);
        if (!valid) {
            (*skipped)++;
            continue;
        }
        json_decref(valid);
        prev = sub;
        prevlen = slen;
        count++;
        if (p[-1] != '[')
            *p++ = ',';
        p += sprintf(p, "{\"sub\":\"");
        p += json_escape(sub, slen, p, (size_t)(out + cap - p));
        p += sprintf(p, "\",\"info\":");
        if (is_json(e[i].val, e[i].vlen)) {
            memcpy(p, e[i].val, e[i].vlen);
            p += e[i].vlen;
        } else {
            p += sprintf(p, "null");
        }
        *p++ = '}';
    }
    *p++ = ']';
    char head[48];
    int h = snprintf(head, sizeof head, "\"count\":%ld,", count);
    char *start = out + 48 - h;
    memcpy(start, head, (size_t)h);
    *len = (size_t)(p - start);
    memmove(out, start, *len);
    out[*len] = '\0';
    return out;
}
