#include "redis_uv.h"
#include "resp_reader.h"

#include <stdlib.h>

struct redis_uv {
    redisAsyncContext *ac;
    uv_poll_t poll;
    int events;
};

static void on_poll(uv_poll_t *handle, int status, int events)
{
    struct redis_uv *ru = handle->data;
    /* On error libuv stops the handle; hiredis finds the socket error itself (getsockopt on
     * connect, read() afterwards) and calls the connect or disconnect callback. */
    if (status < 0) {
        events = UV_READABLE | UV_WRITABLE;
        ru->events = 0; /* libuv stopped the handle: the next update must start it again */
    }
    if (ru->ac && (events & UV_READABLE))
        redisAsyncHandleRead(ru->ac);
    if (ru->ac && (events & UV_WRITABLE))
        redisAsyncHandleWrite(ru->ac);
}

/* libuv 1.44 takes the socket out of epoll and back on every uv_poll_start, so it is called
 * only when the events change. */
static void update(struct redis_uv *ru, int add, int del)
{
    int events = (ru->events | add) & ~del;
    if (events == ru->events)
        return;
    ru->events = events;
    if (ru->events)
        uv_poll_start(&ru->poll, ru->events, on_poll);
    else
        uv_poll_stop(&ru->poll);
}

static void add_read(void *p)
{
    update(p, UV_READABLE, 0);
}

static void del_read(void *p)
{
    update(p, 0, UV_READABLE);
}

static void add_write(void *p)
{
    update(p, UV_WRITABLE, 0);
}

static void del_write(void *p)
{
    update(p, 0, UV_WRITABLE);
}

static void on_closed(uv_handle_t *handle)
{
    free(handle->data);
}

/* hiredis is freeing the context: no more events may reach it. */
static void cleanup(void *p)
{
    struct redis_uv *ru = p;
    ru->ac = NULL;
    uv_close((uv_handle_t *)&ru->poll, on_closed);
}

int redis_uv_attach(redisAsyncContext *ac, uv_loop_t *loop)
{
    if (ac->ev.data)
        return -1;
    struct redis_uv *ru = calloc(1, sizeof *ru);
    if (!ru)
        return -1;
    if (uv_poll_init_socket(loop, &ru->poll, ac->c.fd) != 0) {
        free(ru);
        return -1;
    }
    ru->ac = ac;
    ru->poll.data = ru;
    resp_reader_bound(ac->c.reader);
    ac->ev.addRead = add_read;
    ac->ev.delRead = del_read;
    ac->ev.addWrite = add_write;
    ac->ev.delWrite = del_write;
    ac->ev.cleanup = cleanup;
    ac->ev.data = ru;
    return 0;
}
