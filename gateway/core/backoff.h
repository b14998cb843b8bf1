/* Reconnect delays, shared by the Redis bus and the PostgreSQL pool: exponential from
 * min_ms, capped at max_ms, each drawn at random in the upper half of its step ("equal
 * jitter"), so that a fleet of instances that lost a server at the same moment does not
 * come back to it in lockstep, and an instance never retries sooner than half the step. */
#ifndef HERALD_BACKOFF_H
#define HERALD_BACKOFF_H

#include <stdint.h>

struct backoff {
    uint64_t min_ms, max_ms;
    unsigned attempts; /* failures since the last success */
    uint64_t rng;      /* xorshift64* state: jitter differs between instances, no more */
};

/* seed: anything that differs between processes and between the backoffs of one process
 * (backoff_seed gives one). */
void backoff_init(struct backoff *b, uint64_t min_ms, uint64_t max_ms, uint64_t seed);

/* A seed from the clock, the process id and salt (the address of what the backoff is for). */
uint64_t backoff_seed(uint64_t salt);

/* The delay before the next attempt, in ms; counts a failure. */
uint64_t backoff_next(struct backoff *b);

/* A connection succeeded: the next failure starts from min_ms again. */
void backoff_reset(struct backoff *b);

#endif
