/*
 * bench_pub.c: the publisher thread of herald-bench.
 * PUBLISHes stamped payloads to Redis at a fixed total rate, round-robin over the channels,
 * with hiredis' synchronous API: every 1 ms it appends the messages now due and reads their
 * replies in one go (pipelining), so one thread sustains far more than the gateway can fan out.
 */
#define _GNU_SOURCE
#include <hiredis/hiredis.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "herald_bench.h"

#define PUB_TICK_NS   1000000u /* pacing period */
#define PUB_MAX_BATCH 512u     /* messages per pipelined round trip */

/*
 * Write the payload of message n stamped t into buf, padded with 'x' to `bytes` bytes
 * when that is larger than the bare object. Returns its length.
 */
size_t publisher_payload(char *buf, size_t cap, uint64_t t, uint64_t n, uint32_t bytes)
{
    int head = snprintf(buf, cap, "{\"t\":%llu,\"n\":%llu,\"pad\":\"", (unsigned long long)t,
                        (unsigned long long)n);
    size_t len = (size_t)head;
    size_t pad = bytes > len + 2 ? bytes - len - 2 : 0;
    if (len + pad + 3 > cap)
        pad = cap - len - 3;
    memset(buf + len, 'x', pad);
    len += pad;
    memcpy(buf + len, "\"}", 3);
    return len + 2;
}

/* Build the Redis channel names prefix0 .. prefix(K-1). */
static char **channel_names(const char *prefix, uint32_t k)
{
    char **names = calloc(k, sizeof(*names));
    for (uint32_t i = 0; names && i < k; i++)
        if (asprintf(&names[i], "%s%u", prefix, i) < 0)
            names[i] = NULL;
    return names;
}

/* Free what channel_names built. */
static void free_names(char **names, uint32_t k)
{
    for (uint32_t i = 0; names && i < k; i++)
        free(names[i]);
    free(names);
}

/* Read `count` PUBLISH replies; counts those that reached no subscriber. Returns 0 or -1. */
static int read_replies(struct publisher *p, redisContext *c, unsigned count)
{
    for (unsigned i = 0; i < count; i++) {
        redisReply *r = NULL;
        if (redisGetReply(c, (void **)&r) != REDIS_OK || !r) {
            snprintf(p->error, sizeof(p->error), "redis: %.200s", c->errstr);
            return -1;
        }
        if (r->type == REDIS_REPLY_INTEGER && r->integer == 0)
            atomic_fetch_add(&p->no_receivers, 1);
        else if (r->type == REDIS_REPLY_ERROR)
            snprintf(p->error, sizeof(p->error), "redis: %.200s", r->str);
        freeReplyObject(r);
    }
    return p->error[0] ? -1 : 0;
}

/* Append every message due by `now` (at most one batch); returns how many were appended. */
static unsigned append_due(struct publisher *p, redisContext *c, char **names, char *buf,
                           size_t cap, uint64_t now, uint64_t *sent)
{
    /* message i is due at start + i / rate */
    uint64_t due = (uint64_t)(p->rate * (double)(now - p->start_ns) / 1e9) + 1;
    unsigned batch = 0;
    while (*sent < due && batch < PUB_MAX_BATCH) {
        size_t len = publisher_payload(buf, cap, now_ns(), *sent, p->payload_bytes);
        redisAppendCommand(c, "PUBLISH %s %b", names[*sent % p->channels], buf, len);
        (*sent)++;
        batch++;
    }
    return batch;
}

/* The pacing loop: runs from start_ns to end_ns, then reports its CPU and exits. */
static void publish_loop(struct publisher *p, redisContext *c, char **names)
{
    size_t cap = (size_t)p->payload_bytes + 128;
    char *buf = malloc(cap);
    uint64_t sent = 0, tick = p->start_ns;
    int warm_marked = 0;
    sleep_until_ns(p->start_ns);
    while (buf) {
        uint64_t now = now_ns();
        if (now >= p->end_ns || atomic_load(&p->stop))
            break;
        if (!warm_marked && now >= p->warm_end_ns) {
            atomic_store(&p->at_warm_end, sent);
            warm_marked = 1;
        }
        unsigned batch = append_due(p, c, names, buf, cap, now, &sent);
        if (read_replies(p, c, batch) != 0)
            break;
        atomic_store(&p->published, sent);
        uint64_t on_time = p->start_ns + (uint64_t)((double)sent * 1e9 / p->rate);
        uint64_t after = now_ns();
        if (after > on_time && after - on_time > p->max_lag_ns)
            p->max_lag_ns = after - on_time;
        tick += PUB_TICK_NS;
        if (tick < after)
            tick = after;
        sleep_until_ns(tick);
    }
    if (!warm_marked)
        atomic_store(&p->at_warm_end, sent);
    free(buf);
}

/* Thread entry: connect to Redis, publish until end_ns, set done. */
void *publisher_main(void *arg)
{
    struct publisher *p = arg;
    struct timeval tv = {.tv_sec = 5};
    redisContext *c = redisConnectWithTimeout(p->redis_host, p->redis_port, tv);
    char **names = channel_names(p->prefix, p->channels);
    if (!c || c->err)
        snprintf(p->error, sizeof(p->error), "redis connect %.100s:%d: %.100s", p->redis_host,
                 p->redis_port, c ? c->errstr : "out of memory");
    else if (!names)
        snprintf(p->error, sizeof(p->error), "out of memory");
    else if (p->rate > 0)
        publish_loop(p, c, names);
    free_names(names, p->channels);
    if (c)
        redisFree(c);
    p->cpu_seconds = thread_cpu_seconds();
    atomic_store(&p->done, 1);
    return NULL;
}
