/* Counters of one gateway process, rendered by /metrics in Prometheus text format. */
#ifndef HERALD_METRICS_H
#define HERALD_METRICS_H

#include "errcode.h"

#include <stdint.h>

struct metrics {
    /* gauges */
    int64_t connections;
    int64_t subscriptions;
    int64_t held_bytes;   /* frames held across gaps, all channels */
    int64_t recent_bytes; /* recent caches, all channels */
    /* counters */
    uint64_t connections_total;
    uint64_t rejected_connections;
    uint64_t redis_messages;
    uint64_t invalid_payloads;
    uint64_t duplicates_dropped;
    uint64_t frames_out;
    uint64_t bytes_out;
    uint64_t writes;
    uint64_t client_frames_in;
    uint64_t slow_consumer_closes;
    uint64_t redis_reconnects;
    uint64_t gaps_skipped;
    uint64_t hold_overflows;       /* frames past HERALD_HOLD_BYTES, left to PostgreSQL */
    uint64_t unverified_envelopes; /* sequenced envelopes without a valid signature */
    uint64_t replay_pauses;        /* resumes that waited for their client's queue */
    uint64_t resumes_recovered;
    uint64_t resumes_failed;
    uint64_t auth_failures;
    uint64_t rate_limit_closes;
    uint64_t client_errors[ERR_COUNT];
};

#endif
