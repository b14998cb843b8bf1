/* A blocking HTTP GET (http:// or https://), for libuv's worker threads only: the JWK Set of
 * HERALD_JWKS_URL is fetched with it from uv_queue_work, never on the loop. HTTP/1.1 with
 * Connection: close; a chunked or Content-Length body; TLS with the peer's certificate and
 * host name checked against the system's CAs (or ca_file). Every step is bounded in time
 * (timeout_ms each for connect, the TLS handshake and every read, twice that for the whole
 * response) and the body in size. */
#ifndef HERALD_FETCH_H
#define HERALD_FETCH_H

#include <stddef.h>

struct fetch_result {
    int status; /* the HTTP status, 0 when none came */
    char *body; /* malloc'ed, NUL-terminated; NULL on failure */
    size_t len;
    char error[256]; /* why it failed (status 0 or body NULL) */
};

/* GETs url; 0 with r->status and r->body (status 200 only), or -1 with r->error. Free
 * r->body afterwards. ca_file: NULL for the system's CAs. */
int fetch_get(const char *url, const char *ca_file, int timeout_ms, size_t max_body,
              struct fetch_result *r);

#endif
