#include "resolve.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct resolve {
    uv_getaddrinfo_t req;
    resolve_cb cb; /* NULL once cancelled */
    void *arg;
};

bool resolve_is_numeric(const char *host)
{
    unsigned char buf[16];
    return uv_inet_pton(AF_INET, host, buf) == 0 || uv_inet_pton(AF_INET6, host, buf) == 0;
}

/* The first IPv4 address, else the first IPv6 one (a name that has both, like localhost,
 * is most often served on IPv4). */
static void pick(const struct addrinfo *res, char *addr, size_t cap)
{
    for (const struct addrinfo *a = res; a; a = a->ai_next)
        if (a->ai_family == AF_INET) {
            uv_ip4_name((const struct sockaddr_in *)a->ai_addr, addr, cap);
            return;
        }
    for (const struct addrinfo *a = res; a; a = a->ai_next)
        if (a->ai_family == AF_INET6) {
            uv_ip6_name((const struct sockaddr_in6 *)a->ai_addr, addr, cap);
            return;
        }
}

/* Always called, cancelled or not: the request is freed here. */
static void on_getaddrinfo(uv_getaddrinfo_t *req, int status, struct addrinfo *res)
{
    struct resolve *r = req->data;
    char addr[64] = "", err[160];
    if (status == 0)
        pick(res, addr, sizeof addr);
    if (r->cb && addr[0]) {
        r->cb(r->arg, addr, NULL);
    } else if (r->cb) {
        snprintf(err, sizeof err, "cannot resolve the host name: %s",
                 status ? uv_strerror(status) : "no address");
        r->cb(r->arg, NULL, err);
    }
    uv_freeaddrinfo(res);
    free(r);
}

struct resolve *resolve_start(uv_loop_t *loop, const char *host, resolve_cb cb, void *arg)
{
    struct resolve *r = calloc(1, sizeof *r);
    if (!r)
        return NULL;
    *r = (struct resolve){.cb = cb, .arg = arg};
    r->req.data = r;
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM};
    if (uv_getaddrinfo(loop, &r->req, on_getaddrinfo, host, NULL, &hints) != 0) {
        free(r);
        return NULL;
    }
    return r;
}

void resolve_cancel(struct resolve *r)
{
    r->cb = NULL;
    uv_cancel((uv_req_t *)&r->req); /* a lookup already running still ends in the callback */
}
