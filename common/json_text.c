#include "json_text.h"

#include <jansson.h>
#include <stdio.h>
#include <string.h>

bool json_too_deep(const char *s, size_t n, int max)
{
    int depth = 0;
    bool in_string = false;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (in_string) {
            if (c == '\\')
                i++;
            else if (c == '"')
                in_string = false;
        } else if (c == '"') {
            in_string = true;
        } else if (c == '[' || c == '{') {
            if (++depth > max)
                return true;
        } else if (c == ']' || c == '}') {
            depth--;
        }
    }
    return false;
}

size_t json_escape(const char *s, size_t n, char *out, size_t cap)
{
    size_t o = 0;
    if (cap == 0)
        return 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        char tmp[8];
        size_t k;
        if (c == '"' || c == '\\') {
            tmp[0] = '\\';
            tmp[1] = (char)c;
            k = 2;
        } else if (c == '\n') {
            tmp[0] = '\\';
            tmp[1] = 'n';
            k = 2;
        } else if (c < 0x20 || c == 0x7f) {
            k = (size_t)snprintf(tmp, sizeof tmp, "\\u%04x", c);
        } else {
            tmp[0] = (char)c;
            k = 1;
        }
        if (o + k >= cap)
            break;
        for (size_t j = 0; j < k; j++)
            out[o++] = tmp[j];
    }
    out[o] = '\0';
    return o;
}

static size_t skip_space(const char *s, size_t n, size_t i)
{
    while (i < n && (s[i] == ' ' || s[i] == '\t' || s[i] == '\n' || s[i] == '\r'))
        i++;
    return i;
}

/* The end of the value that starts at s[i] (valid JSON, so no check is needed). */
static size_t value_end(const char *s, size_t n, size_t i)
{
    int depth = 0;
    bool in_string = false;
    for (; i < n; i++) {
        char c = s[i];
        if (in_string) {
            if (c == '\\') {
                i++;
            } else if (c == '"') {
                in_string = false;
                if (depth == 0)
                    return i + 1;
            }
        } else if (c == '"') {
            in_string = true;
        } else if (c == '[' || c == '{') {
            depth++;
        } else if (c == ']' || c == '}') {
            if (depth == 0)
                return i; /* a scalar that ends the container */
            if (--depth == 0)
                return i + 1;
        } else if (depth == 0 && (c == ',' || c == ' ' || c == '\t' || c == '\n' || c == '\r')) {
            return i; /* the end of a number, true, false or null */
        }
    }
    return n;
}

json_t *json_text_load(const char *s, size_t n, size_t flags, json_error_t *err)
{
    const char *nul = n ? memchr(s, '\0', n) : NULL; /* an empty text may come as NULL */
    if (!nul)
        return json_loadb(s, n, flags, err);
    if (err) {
        memset(err, 0, sizeof *err);
        err->position = (int)(nul - s);
        snprintf(err->text, sizeof err->text, "a NUL byte at offset %zu", (size_t)(nul - s));
    }
    return NULL;
}

/* The JSON string s[0..n) (quotes included) decodes to key. */
static bool key_is(const char *s, size_t n, const char *key)
{
    size_t klen = strlen(key);
    if (!memchr(s, '\\', n))
        return n == klen + 2 && memcmp(s + 1, key, klen) == 0;
    json_t *k = json_loadb(s, n, JSON_DECODE_ANY | JSON_ALLOW_NUL, NULL);
    bool same = k && json_string_length(k) == klen && memcmp(json_string_value(k), key, klen) == 0;
    json_decref(k);
    return same;
}

int json_member_span(const char *s, size_t n, size_t at, const char *key, struct json_span *out)
{
    size_t i = skip_space(s, n, at);
    if (i >= n || s[i] != '{')
        return -1;
    for (i = skip_space(s, n, i + 1); i < n && s[i] == '"';) {
        size_t kend = value_end(s, n, i);
        size_t v = skip_space(s, n, skip_space(s, n, kend) + 1); /* past the colon */
        size_t vend = value_end(s, n, v);
        if (key_is(s + i, kend - i, key)) {
            *out = (struct json_span){v, vend - v};
            return 0;
        }
        i = skip_space(s, n, vend);
        if (i < n && s[i] == ',')
            i = skip_space(s, n, i + 1);
    }
    return -1;
}

long json_element_spans(const char *s, size_t n, size_t at, struct json_span *out, size_t max)
{
    size_t i = skip_space(s, n, at);
    if (i >= n || s[i] != '[')
        return -1;
    long count = 0;
    for (i = skip_space(s, n, i + 1); i < n && s[i] != ']';) {
        size_t end = value_end(s, n, i);
        if ((size_t)count < max)
            out[count] = (struct json_span){i, end - i};
        count++;
        i = skip_space(s, n, end);
        if (i < n && s[i] == ',')
            i = skip_space(s, n, i + 1);
    }
    return count;
}
