#define _GNU_SOURCE /* memmem, strcasestr */
#include "fetch.h"

#include <errno.h>
#include <netdb.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>
#include <poll.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#define HEAD_MAX 16384 /* response head bytes */

static uint64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

struct url {
    bool tls;
    char host[256];
    char port[8];
    char path[1024];
};

static int parse_url(const char *s, struct url *u, struct fetch_result *r)
{
    const char *rest;
    if (strncmp(s, "http://", 7) == 0) {
        u->tls = false;
        rest = s + 7;
    } else if (strncmp(s, "https://", 8) == 0) {
        u->tls = true;
        rest = s + 8;
    } else {
        snprintf(r->error, sizeof r->error, "the URL must start with http:// or https://");
        return -1;
    }
    size_t hl = strcspn(rest, ":/");
    const char *after = rest + hl;
    if (hl == 0 || hl >= sizeof u->host) {
        snprintf(r->error, sizeof r->error, "the URL has no host, or too long a one");
        return -1;
    }
    memcpy(u->host, rest, hl);
    u->host[hl] = '\0';
    snprintf(u->port, sizeof u->port, "%s", u->tls ? "443" : "80");
    if (*after == ':') {
        size_t pl = strspn(after + 1, "0123456789");
        if (pl == 0 || pl > 5 || (after[1 + pl] && after[1 + pl] != '/')) {
            snprintf(r->error, sizeof r->error, "the URL's port is not a number");
            return -1;
        }
        memcpy(u->port, after + 1, pl);
        u->port[pl] = '\0';
        after += 1 + pl;
    }
    const char *path = *after ? after : "/";
    if (strlen(path) >= sizeof u->path || strpbrk(path, " \r\n")) {
        snprintf(r->error, sizeof r->error, "the URL's path is too long or has spaces");
        return -1;
    }
    snprintf(u->path, sizeof u->path, "%s", path);
    return 0;
}

/* A connected TCP socket with send and receive timeouts, or -1. */
static int dial(const struct url *u, int timeout_ms, struct fetch_result *r)
{
    struct addrinfo hints = {.ai_socktype = SOCK_STREAM}, *res = NULL;
    int rc = getaddrinfo(u->host, u->port, &hints, &res);
    if (rc != 0) {
        snprintf(r->error, sizeof r->error, "cannot resolve %.120s: %s", u->host, gai_strerror(rc));
        return -1;
    }
    struct timeval tv = {.tv_sec = timeout_ms / 1000, .tv_usec = (timeout_ms % 1000) * 1000};
    int fd = -1;
    for (struct addrinfo *a = res; a && fd < 0; a = a->ai_next) {
        fd = socket(a->ai_family, a->ai_socktype | SOCK_CLOEXEC, a->ai_protocol);
        if (fd < 0)
            continue;
        /* on Linux the send timeout bounds connect() too */
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
        setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
        if (connect(fd, a->ai_addr, a->ai_addrlen) != 0) {
            snprintf(r->error, sizeof r->error, "cannot connect to %.120s:%s: %s", u->host, u->port,
                     strerror(errno));
            close(fd);
            fd = -1;
        }
    }
    freeaddrinfo(res);
    return fd;
}

struct conn {
    int fd;
    SSL_CTX *ctx;
    SSL *ssl;
};

static int tls_start(struct conn *c, const struct url *u, const char *ca_file,
                     struct fetch_result *r)
{
    c->ctx = SSL_CTX_new(TLS_client_method());
    if (!c->ctx || SSL_CTX_set_min_proto_version(c->ctx, TLS1_2_VERSION) != 1 ||
        (ca_file ? SSL_CTX_load_verify_locations(c->ctx, ca_file, NULL)
                 : SSL_CTX_set_default_verify_paths(c->ctx)) != 1) {
        snprintf(r->error, sizeof r->error, "TLS set-up failed (CA file %s)",
                 ca_file ? ca_file : "of the system");
        return -1;
    }
    SSL_CTX_set_verify(c->ctx, SSL_VERIFY_PEER, NULL);
    c->ssl = SSL_new(c->ctx);
    if (!c->ssl || SSL_set_tlsext_host_name(c->ssl, u->host) != 1 ||
        SSL_set1_host(c->ssl, u->host) != 1 || SSL_set_fd(c->ssl, c->fd) != 1) {
        snprintf(r->error, sizeof r->error, "TLS set-up failed");
        return -1;
    }
    if (SSL_connect(c->ssl) != 1) {
        long v = SSL_get_verify_result(c->ssl);
        snprintf(r->error, sizeof r->error, "TLS handshake with %.80s failed: %.60s", u->host,
                 v != X509_V_OK ? X509_verify_cert_error_string(v) : "no certificate or no answer");
        return -1;
    }
    return 0;
}

static long conn_write(struct conn *c, const char *p, size_t n)
{
    return c->ssl ? SSL_write(c->ssl, p, (int)n) : (long)send(c->fd, p, n, MSG_NOSIGNAL);
}

static long conn_read(struct conn *c, char *p, size_t n)
{
    return c->ssl ? SSL_read(c->ssl, p, (int)n) : (long)recv(c->fd, p, n, 0);
}

/* Decodes a chunked body in place; its length, or -1. */
static long unchunk(char *b, size_t n)
{
    size_t in = 0, out = 0;
    for (;;) {
        char *end;
        errno = 0;
        unsigned long size = strtoul(b + in, &end, 16);
        char *eol = memchr(b + in, '\n', n - in);
        if (end == b + in || errno || !eol)
            return -1;
        in = (size_t)(eol - b) + 1;
        if (size == 0)
            return (long)out;
        if (size > n - in || n - in - size < 2)
            return -1;
        memmove(b + out, b + in, size);
        out += size;
        in += size + 2; /* the chunk's CRLF */
    }
}

/* Splits raw[0..n) into status and body (in place). */
static int parse_response(char *raw, size_t n, size_t max_body, struct fetch_result *r)
{
    char *sep = n >= 4 ? memmem(raw, n, "\r\n\r\n", 4) : NULL;
    if (!sep || sep - raw > HEAD_MAX || sscanf(raw, "HTTP/1.%*[01] %3d", &r->status) != 1) {
        snprintf(r->error, sizeof r->error, "not an HTTP response");
        return -1;
    }
    *sep = '\0';
    char *body = sep + 4;
    size_t blen = n - (size_t)(body - raw);
    bool chunked = false;
    long clen = -1;
    for (char *line = strstr(raw, "\r\n"); line; line = strstr(line + 2, "\r\n")) {
        char *h = line + 2;
        if (strncasecmp(h, "transfer-encoding:", 18) == 0 && strcasestr(h, "chunked"))
            chunked = true;
        else if (strncasecmp(h, "content-length:", 15) == 0)
            clen = strtol(h + 15, NULL, 10);
    }
    if (chunked) {
        long m = unchunk(body, blen);
        if (m < 0) {
            snprintf(r->error, sizeof r->error, "a broken chunked body");
            return -1;
        }
        blen = (size_t)m;
    } else if (clen >= 0) {
        if ((size_t)clen > blen) {
            snprintf(r->error, sizeof r->error, "the body ended early");
            return -1;
        }
        blen = (size_t)clen;
    }
    if (blen > max_body) {
        snprintf(r->error, sizeof r->error, "the body is over %zu bytes", max_body);
        return -1;
    }
    if (r->status != 200) {
        snprintf(r->error, sizeof r->error, "HTTP status %d", r->status);
        return -1;
    }
    r->body = malloc(blen + 1);
    if (!r->body) {
        snprintf(r->error, sizeof r->error, "out of memory");
        return -1;
    }
    memcpy(r->body, body, blen);
    r->body[blen] = '\0';
    r->len = blen;
    return 0;
}

int fetch_get(const char *url, const char *ca_file, int timeout_ms, size_t max_body,
              struct fetch_result *r)
{
    memset(r, 0, sizeof *r);
    struct url u;
    if (parse_url(url, &u, r) != 0)
        return -1;
    struct conn c = {.fd = dial(&u, timeout_ms, r)};
    if (c.fd < 0)
        return -1;
    int rc = -1;
    size_t cap = HEAD_MAX + max_body + 64 * 1024; /* chunk framing */
    char *raw = NULL, req[1536];
    size_t n = 0;
    if (u.tls && tls_start(&c, &u, ca_file, r) != 0)
        goto done;
    int qlen = snprintf(req, sizeof req,
                        "GET %s HTTP/1.1\r\nHost: %s\r\nAccept: application/json\r\n"
                        "User-Agent: herald\r\nConnection: close\r\n\r\n",
                        u.path, u.host);
    if (conn_write(&c, req, (size_t)qlen) != qlen) {
        snprintf(r->error, sizeof r->error, "sending the request failed");
        goto done;
    }
    if (!(raw = malloc(cap + 1)))
        goto done;
    long got;
    uint64_t deadline = now_ms() + 2 * (uint64_t)timeout_ms; /* a server that trickles */
    while (n < cap && (got = conn_read(&c, raw + n, cap - n)) > 0) {
        n += (size_t)got;
        if (now_ms() > deadline) {
            snprintf(r->error, sizeof r->error, "the response took over %d ms", 2 * timeout_ms);
            goto done;
        }
    }
    if (n == cap) {
        snprintf(r->error, sizeof r->error, "the response is over %zu bytes", cap);
        goto done;
    }
    raw[n] = '\0';
    rc = parse_response(raw, n, max_body, r);
done:
    free(raw);
    if (c.ssl) {
        SSL_shutdown(c.ssl);
        SSL_free(c.ssl);
    }
    SSL_CTX_free(c.ctx);
    close(c.fd);
    ERR_clear_error();
    return rc;
}
