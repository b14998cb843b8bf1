#include "redis_url.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Copies s[0..n) into out, decoding %XX escapes (passwords often contain reserved bytes). */
static int copy_decoded(const char *s, size_t n, char *out, size_t cap)
{
    size_t o = 0;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (c == '%') {
            if (i + 2 >= n || !isxdigit((unsigned char)s[i + 1]) ||
                !isxdigit((unsigned char)s[i + 2]))
                return -1;
            char hex[3] = {s[i + 1], s[i + 2], 0};
            c = (char)strtol(hex, NULL, 16);
            i += 2;
        }
        if (o + 1 >= cap)
            return -1;
        out[o++] = c;
    }
    out[o] = '\0';
    return 0;
}

static int parse_number(const char *s, size_t n, int lo, int hi, int *out)
{
    if (n == 0 || n > 9)
        return -1;
    int v = 0;
    for (size_t i = 0; i < n; i++) {
        if (!isdigit((unsigned char)s[i]))
            return -1;
        v = v * 10 + (s[i] - '0');
    }
    if (v < lo || v > hi)
        return -1;
    *out = v;
    return 0;
}

int redis_url_parse(const char *url, struct redis_url *out, char *err, int errlen)
{
    memset(out, 0, sizeof *out);
    out->port = 6379;
    if (strncmp(url, "rediss://", 9) == 0) {
        snprintf(err, (size_t)errlen,
                 "rediss:// (TLS) is not supported: Debian's hiredis has no TLS; "
                 "reach Redis over a private network or a TLS tunnel (see docs/SECURITY.md)");
        return -1;
    }
    if (strncmp(url, "redis://", 8) != 0) {
        snprintf(err, (size_t)errlen, "redis URL must start with redis://");
        return -1;
    }
    const char *p = url + 8;
    const char *at = strrchr(p, '@');
    if (at) {
        const char *colon = memchr(p, ':', (size_t)(at - p));
        const char *user_end = colon ? colon : at;
        if (copy_decoded(p, (size_t)(user_end - p), out->user, sizeof out->user) ||
            (colon && copy_decoded(colon + 1, (size_t)(at - colon - 1), out->password,
                                   sizeof out->password))) {
            snprintf(err, (size_t)errlen, "redis URL has a bad user or password");
            return -1;
        }
        p = at + 1;
    }
    const char *slash = strchr(p, '/');
    const char *hostport_end = slash ? slash : p + strlen(p);
    const char *colon = memchr(p, ':', (size_t)(hostport_end - p));
    const char *host_end = colon ? colon : hostport_end;
    size_t hostlen = (size_t)(host_end - p);
    if (hostlen == 0 || hostlen >= sizeof out->host) {
        snprintf(err, (size_t)errlen, "redis URL has no host");
        return -1;
    }
    memcpy(out->host, p, hostlen);
    if (colon &&
        parse_number(colon + 1, (size_t)(hostport_end - colon - 1), 1, 65535, &out->port)) {
        snprintf(err, (size_t)errlen, "redis URL has a bad port");
        return -1;
    }
    if (slash && slash[1] && parse_number(slash + 1, strlen(slash + 1), 0, 1 << 20, &out->db)) {
        snprintf(err, (size_t)errlen, "redis URL has a bad database number");
        return -1;
    }
    return 0;
}

int redis_url_parse_list(const char *text, struct redis_url *out, int max, char *err, int errlen)
{
    int n = 0;
    const char *p = text;
    for (;;) {
        while (*p == ' ')
            p++;
        const char *end = strchr(p, ',');
        size_t len = end ? (size_t)(end - p) : strlen(p);
        while (len && p[len - 1] == ' ')
            len--;
        char one[1024];
        if (len == 0 || len >= sizeof one) {
            snprintf(err, (size_t)errlen, "Redis URL %d of the list is %s", n + 1,
                     len ? "too long" : "empty");
            return -1;
        }
        if (n == max) {
            snprintf(err, (size_t)errlen, "more than %d Redis URLs", max);
            return -1;
        }
        memcpy(one, p, len);
        one[len] = '\0';
        char why[200];
        if (redis_url_parse(one, &out[n], why, (int)sizeof why)) {
            snprintf(err, (size_t)errlen, "Redis URL %d of the list: %s", n + 1, why);
            return -1;
        }
        n++;
        if (!end)
            return n;
        p = end + 1;
    }
}
