/*
 * bench_ws.c: the smallest WebSocket client that herald-bench needs (RFC 6455).
 * No I/O here: the caller owns the sockets and buffers; these functions only build and parse.
 */
#define _GNU_SOURCE
#include <stdio.h>
#include <string.h>

#include "herald_bench.h"

/* The RFC 6455 sample key and its accept value: a fixed key is fine for a load generator. */
#define WS_KEY    "dGhlIHNhbXBsZSBub25jZQ=="
#define WS_ACCEPT "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="

/* Split ws://host[:port][/path] into parts; returns 0, or -1 when it is not a ws:// URL. */
int ws_url_parse(const char *url, struct ws_url *out)
{
    const char *p = url;
    if (strncmp(p, "ws://", 5) != 0)
        return -1;
    p += 5;
    size_t hostlen = strcspn(p, ":/");
    if (hostlen == 0 || hostlen >= sizeof(out->host))
        return -1;
    memcpy(out->host, p, hostlen);
    out->host[hostlen] = '\0';
    p += hostlen;
    snprintf(out->port, sizeof(out->port), "80");
    if (*p == ':') {
        size_t portlen = strcspn(++p, "/");
        if (portlen == 0 || portlen >= sizeof(out->port))
            return -1;
        memcpy(out->port, p, portlen);
        out->port[portlen] = '\0';
        p += portlen;
    }
    int n = snprintf(out->path, sizeof(out->path), "%s", *p ? p : "/");
    return n > 0 && (size_t)n < sizeof(out->path) ? 0 : -1;
}

/* Write the HTTP upgrade request into buf; returns its length, or -1 if it does not fit. */
int ws_handshake_request(const struct ws_url *u, const char *protocol, int deflate, char *buf,
                         size_t cap)
{
    char proto_hdr[300] = "";
    if (protocol && *protocol)
        snprintf(proto_hdr, sizeof(proto_hdr), "Sec-WebSocket-Protocol: %s\r\n", protocol);
    int n = snprintf(buf, cap,
                     "GET %s HTTP/1.1\r\n"
                     "Host: %s:%s\r\n"
                     "Upgrade: websocket\r\n"
                     "Connection: Upgrade\r\n"
                     "Sec-WebSocket-Key: " WS_KEY "\r\n"
                     "Sec-WebSocket-Version: 13\r\n"
                     "%s%s\r\n",
                     u->path, u->host, u->port, proto_hdr,
                     deflate ? "Sec-WebSocket-Extensions: permessage-deflate\r\n" : "");
    return n > 0 && (size_t)n < cap ? n : -1;
}

/*
 * Check a (possibly partial) upgrade response.
 * Returns the header length (bytes to consume) once complete and valid, 0 if incomplete,
 * -1 if it is not "101" with the expected accept value.
 */
long ws_handshake_response(const char *buf, size_t len)
{
    const char *end = memmem(buf, len, "\r\n\r\n", 4);
    if (!end)
        return 0;
    size_t hlen = (size_t)(end - buf) + 4;
    if (hlen < 12 || memcmp(buf, "HTTP/1.1 101", 12) != 0)
        return -1;
    if (!memmem(buf, hlen, WS_ACCEPT, strlen(WS_ACCEPT)))
        return -1;
    return (long)hlen;
}

/*
 * Build one masked client frame (FIN set) into out, which must hold len + 14 bytes.
 * Returns the frame length.
 */
size_t ws_frame_encode(int opcode, const void *payload, size_t len, uint32_t mask, uint8_t *out)
{
    size_t h = 0;
    out[h++] = (uint8_t)(0x80 | (opcode & 0x0f));
    if (len < 126) {
        out[h++] = (uint8_t)(0x80 | len);
    } else if (len <= 0xffff) {
        out[h++] = 0x80 | 126;
        out[h++] = (uint8_t)(len >> 8);
        out[h++] = (uint8_t)len;
    } else {
        out[h++] = 0x80 | 127;
        for (int i = 7; i >= 0; i--)
            out[h++] = (uint8_t)((uint64_t)len >> (8 * i));
    }
    uint8_t key[4] = {(uint8_t)(mask >> 24), (uint8_t)(mask >> 16), (uint8_t)(mask >> 8),
                      (uint8_t)mask};
    memcpy(out + h, key, 4);
    h += 4;
    const uint8_t *src = payload;
    for (size_t i = 0; i < len; i++)
        out[h + i] = src[i] ^ key[i & 3];
    return h + len;
}

/*
 * Parse one server frame at the start of buf (unmasked, 7/16/64-bit lengths).
 * On WS_PARSE_OK fills f and sets *used to the frame's total size.
 * A masked server frame, reserved bits or a length over 2^62 is a protocol error.
 */
int ws_frame_parse(const uint8_t *buf, size_t len, struct ws_frame *f, size_t *used)
{
    if (len < 2)
        return WS_PARSE_MORE;
    if ((buf[0] & 0x30) || (buf[1] & 0x80))
        return WS_PARSE_ERROR;
    uint64_t plen = buf[1] & 0x7f;
    size_t h = 2;
    if (plen == 126) {
        if (len < 4)
            return WS_PARSE_MORE;
        plen = ((uint64_t)buf[2] << 8) | buf[3];
        h = 4;
    } else if (plen == 127) {
        if (len < 10)
            return WS_PARSE_MORE;
        plen = 0;
        for (int i = 0; i < 8; i++)
            plen = (plen << 8) | buf[2 + i];
        h = 10;
        if (plen >> 62)
            return WS_PARSE_ERROR;
    }
    if (len - h < plen)
        return WS_PARSE_MORE;
    f->fin = (buf[0] & 0x80) != 0;
    f->opcode = buf[0] & 0x0f;
    f->compressed = (buf[0] & 0x40) != 0;
    f->payload = buf + h;
    f->len = (size_t)plen;
    *used = h + (size_t)plen;
    return WS_PARSE_OK;
}
