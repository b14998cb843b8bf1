#include "http_framing.h"

#include <string.h>
#include <strings.h>

int http_content_length(const char *s, uint64_t *out)
{
    size_t n = strlen(s);
    if (n == 0 || n > 19) /* 19 digits always fit in 63 bits */
        return -1;
    uint64_t v = 0;
    for (size_t i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9')
            return -1;
        v = v * 10 + (uint64_t)(s[i] - '0');
    }
    *out = v;
    return 0;
}

static int refuse(struct http_refusal *out, unsigned status, enum errcode code, const char *why)
{
    *out = (struct http_refusal){status, code, why};
    return -1;
}

int http_framing_check(const struct http_head *in, uint64_t *body, struct http_refusal *out)
{
    uint64_t len = 0;
    *body = 0;
    if (in->method == HTTP_OTHER)
        return refuse(out, 405, ERR_BAD_REQUEST, "method not allowed: GET and POST only");
    bool post = in->method == HTTP_POST;
    if (post && !in->takes_body)
        return refuse(out, 405, ERR_BAD_REQUEST, "POST is only for /v1 routes");
    if (in->transfer_encoding)
        return post ? refuse(out, 411, ERR_BAD_REQUEST,
                             "Transfer-Encoding is not supported: send Content-Length")
                    : refuse(out, 400, ERR_BAD_REQUEST, "a GET request has no body");
    if (in->content_length && http_content_length(in->content_length, &len) < 0)
        return refuse(out, 400, ERR_BAD_REQUEST, "Content-Length must be one decimal number");
    if (!post && len > 0)
        return refuse(out, 400, ERR_BAD_REQUEST, "a GET request has no body");
    if (post && !in->content_length)
        return refuse(out, 411, ERR_BAD_REQUEST, "a POST needs Content-Length");
    if (post && len > in->max_body)
        return refuse(out, 413, ERR_TOO_LARGE, "the body is larger than HERALD_MAX_PUBLISH_BYTES");
    *body = len;
    return 0;
}

bool idempotency_key_valid(const char *s, size_t len)
{
    if (len == 0 || len > IDEMPOTENCY_KEY_MAX)
        return false;
    for (size_t i = 0; i < len; i++)
        if ((unsigned char)s[i] < 0x21 || (unsigned char)s[i] > 0x7e)
            return false;
    return true;
}

bool http_subprotocols_ok(const char *list)
{
    if (!list || !*list)
        return true;
    bool herald = false;
    for (const char *p = list; *p;) {
        while (*p == ' ' || *p == '\t' || *p == ',')
            p++;
        const char *end = p;
        while (*end && *end != ',' && *end != ' ' && *end != '\t')
            end++;
        size_t n = (size_t)(end - p);
        if (n == 4 && memcmp(p, "http", 4) == 0)
            return false;
        if (n == 6 && memcmp(p, "herald", 6) == 0)
            herald = true;
        p = end;
    }
    return herald;
}

bool http_origin_listed(const char *list, const char *origin)
{
    size_t olen = strlen(origin);
    for (const char *p = list; *p;) {
        while (*p == ' ' || *p == ',')
            p++;
        const char *end = p;
        while (*end && *end != ',')
            end++;
        size_t n = (size_t)(end - p);
        while (n && p[n - 1] == ' ')
            n--;
        if ((n == 1 && *p == '*') || (n && n == olen && strncasecmp(p, origin, n) == 0))
            return true;
        p = end;
    }
    return false;
}
