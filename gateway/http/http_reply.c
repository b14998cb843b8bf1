#include "http_reply.h"
#include "json_text.h"

#include <libwebsockets.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int http_respond(struct lws *wsi, unsigned status, const char *content_type, const char *body,
                 size_t len)
{
    uint8_t head[LWS_PRE + 512];
    uint8_t *start = head + LWS_PRE, *p = start, *end = head + sizeof head - 1;
    if (lws_add_http_common_headers(wsi, status, content_type, len, &p, end) ||
        lws_add_http_header_by_name(
            wsi, (const uint8_t *)"cache-control:", (const uint8_t *)"no-store", 8, &p, end) ||
        lws_add_http_header_by_name(wsi, (const uint8_t *)"x-content-type-options:",
                                    (const uint8_t *)"nosniff", 7, &p, end))
        return -1;
    if (status == HTTP_STATUS_SERVICE_UNAVAILABLE &&
        lws_add_http_header_by_name(wsi, (const uint8_t *)"retry-after:", (const uint8_t *)"1", 1,
                                    &p, end))
        return -1;
    if (lws_finalize_write_http_header(wsi, start, &p, end))
        return -1;
    /* lws wants LWS_PRE bytes of headroom in front of what it writes */
    uint8_t *buf = malloc(LWS_PRE + len + 1);
    if (!buf)
        return -1;
    memcpy(buf + LWS_PRE, body, len);
    int r = lws_write(wsi, buf + LWS_PRE, len, LWS_WRITE_HTTP_FINAL);
    free(buf);
    return r < 0 ? -1 : 0;
}

size_t http_error_body(char *out, size_t cap, enum errcode code, const char *message)
{
    char esc[512];
    json_escape(message, strlen(message), esc, sizeof esc);
    int n = snprintf(out, cap, "{\"error\":{\"code\":\"%s\",\"message\":\"%s\"}}\n",
                     errcode_name(code), esc);
    return n > 0 && (size_t)n < cap ? (size_t)n : 0;
}

static const char *reason_phrase(unsigned status)
{
    switch (status) {
    case 200:
        return "OK";
    case 201:
        return "Created";
    case 204:
        return "No Content";
    case 400:
        return "Bad Request";
    case 401:
        return "Unauthorized";
    case 403:
        return "Forbidden";
    case 404:
        return "Not Found";
    case 405:
        return "Method Not Allowed";
    case 408:
        return "Request Timeout";
    case 409:
        return "Conflict";
    case 410:
        return "Gone";
    case 411:
        return "Length Required";
    case 413:
        return "Payload Too Large";
    case 426:
        return "Upgrade Required";
    case 429:
        return "Too Many Requests";
    case 503:
        return "Service Unavailable";
    default:
        return "Error";
    }
}

size_t http_json_head(char *out, size_t cap, unsigned status, size_t body_len, bool close,
                      const char *extra)
{
    bool retry = status == 503 || status == 429;
    char length[64] = ""; /* a 204 has neither (RFC 9110 8.6) */
    if (status != 204)
        snprintf(length, sizeof length, "content-type: application/json\r\ncontent-length: %zu\r\n",
                 body_len);
    int n = snprintf(out, cap,
                     "HTTP/1.1 %u %s\r\n%scache-control: no-store\r\nx-content-type-options: "
                     "nosniff\r\n%s%s%s\r\n",
                     status, reason_phrase(status), length, retry ? "retry-after: 1\r\n" : "",
                     close ? "connection: close\r\n" : "", extra ? extra : "");
    return n > 0 && (size_t)n < cap ? (size_t)n : 0;
}

int http_respond_error(struct lws *wsi, unsigned status, enum errcode code, const char *message)
{
    char body[768];
    size_t n = http_error_body(body, sizeof body, code, message);
    return http_respond(wsi, status, "application/json", body, n);
}
