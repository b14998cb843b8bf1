/* Runs a hiredis async context on a libuv loop. Unlike hiredis 0.14's own adapter, a poll
 * error is handed to hiredis (as readable and writable), so a refused connect or a reset
 * socket is noticed at once instead of hanging until a timeout. */
#ifndef HERALD_REDIS_UV_H
#define HERALD_REDIS_UV_H

#include <hiredis/async.h>
#include <uv.h>

/* Returns 0, or -1 when the context already has an adapter or memory ran out. The context's
 * reader is bounded too (resp_reader.h). */
int redis_uv_attach(redisAsyncContext *ac, uv_loop_t *loop);

#endif
