#include "backoff.h"

#include <uv.h>

void backoff_init(struct backoff *b, uint64_t min_ms, uint64_t max_ms, uint64_t seed)
{
    *b = (struct backoff){.min_ms = min_ms ? min_ms : 1,
                          .max_ms = max_ms < min_ms ? min_ms : max_ms,
                          .rng = seed ? seed : 0x9e3779b97f4a7c15ULL};
}

uint64_t backoff_seed(uint64_t salt)
{
    return uv_hrtime() ^ ((uint64_t)uv_os_getpid() << 32) ^ salt;
}

static uint64_t next_random(struct backoff *b)
{
    b->rng ^= b->rng >> 12;
    b->rng ^= b->rng << 25;
    b->rng ^= b->rng >> 27;
    return b->rng * 2685821657736338717ULL;
}

uint64_t backoff_next(struct backoff *b)
{
    uint64_t step = b->min_ms;
    for (unsigned i = 0; i < b->attempts && step < b->max_ms; i++)
        step *= 2;
    if (step > b->max_ms)
        step = b->max_ms;
    if (b->attempts < 64)
        b->attempts++;
    return step - step / 2 + next_random(b) % (step / 2 + 1);
}

void backoff_reset(struct backoff *b)
{
    b->attempts = 0;
}
