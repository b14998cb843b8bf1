#define _GNU_SOURCE
#include "listener.h"
#include "herald.h"
#include "log.h"

#include <arpa/inet.h>
#include <errno.h>
#include <libwebsockets.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#define LISTEN_BACKLOG 4096

struct listener {
    uv_poll_t poll;
    int fd;
    struct lws_vhost *vh;
};

static void on_acceptable(uv_poll_t *h, int status, int events)
{
    struct listener *l = h->data;
    (void)events;
    if (status < 0)
        return;
    for (;;) {
        int fd = accept4(l->fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
            if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR && errno != ECONNABORTED)
                log_warn("accept_failed", "accept: %s", strerror(errno));
            if (errno == EINTR || errno == ECONNABORTED)
                continue;
            return; /* drained, or out of descriptors: the next readiness retries */
        }
        lws_adopt_socket_vhost(l->vh, fd); /* closes fd itself when it fails */
    }
}

/* A socket bound to host:port with SO_REUSEADDR and SO_REUSEPORT, listening. -1 on
 * failure, with errno set. */
static int bind_shared(const char *host, int port)
{
    struct sockaddr_storage ss;
    memset(&ss, 0, sizeof ss);
    socklen_t len;
    struct sockaddr_in *v4 = (struct sockaddr_in *)&ss;
    struct sockaddr_in6 *v6 = (struct sockaddr_in6 *)&ss;
    if (!host[0] || strcmp(host, "*") == 0 || strcmp(host, "0.0.0.0") == 0) {
        v4->sin_family = AF_INET;
        v4->sin_addr.s_addr = htonl(INADDR_ANY);
        v4->sin_port = htons((uint16_t)port);
        len = sizeof *v4;
    } else if (inet_pton(AF_INET, host, &v4->sin_addr) == 1) {
        v4->sin_family = AF_INET;
        v4->sin_port = htons((uint16_t)port);
        len = sizeof *v4;
    } else if (inet_pton(AF_INET6, host, &v6->sin6_addr) == 1) {
        v6->sin6_family = AF_INET6;
        v6->sin6_port = htons((uint16_t)port);
        len = sizeof *v6;
    } else {
        errno = EINVAL; /* workers need a numeric address */
        return -1;
    }
    int fd = socket(ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    int on = 1;
    if (fd < 0)
        return -1;
    if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &on, sizeof on) < 0 ||
        setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &on, sizeof on) < 0 ||
        bind(fd, (struct sockaddr *)&ss, len) < 0 || listen(fd, LISTEN_BACKLOG) < 0) {
        int e = errno;
        close(fd);
        errno = e;
        return -1;
    }
    return fd;
}

struct listener *listener_start(struct herald *app, struct lws_vhost *vh)
{
    struct listener *l = calloc(1, sizeof *l);
    if (!l)
        return NULL;
    l->vh = vh;
    l->fd = bind_shared(app->cfg->listen_host, app->cfg->listen_port);
    if (l->fd < 0) {
        log_error("listen_failed", "cannot listen on %s with SO_REUSEPORT: %s", app->cfg->listen,
                  strerror(errno));
        free(l);
        return NULL;
    }
    uv_poll_init_socket(app->loop, &l->poll, l->fd);
    l->poll.data = l;
    uv_poll_start(&l->poll, UV_READABLE, on_acceptable);
    return l;
}

static void closed(uv_handle_t *h)
{
    struct listener *l = h->data;
    close(l->fd);
    free(l);
}

void listener_stop(struct listener *l)
{
    if (!l)
        return;
    uv_poll_stop(&l->poll);
    uv_close((uv_handle_t *)&l->poll, closed);
}
