/* Counters of one gateway process, rendered by /metrics in Prometheus text format
 * (http/http_api.c). Each group names the modules that write it; nothing else does. */
#ifndef HERALD_METRICS_H
#define HERALD_METRICS_H

#include "errcode.h"

#include <stdint.h>

struct metrics {
    /* http/server.c */
    int64_t connections; /* gauge */
    uint64_t connections_total;
    /* http/http_guard.c */
    uint64_t rejected_connections;
    /* channels/hub.c */
    int64_t subscriptions; /* gauge */
    uint64_t redis_messages;
    uint64_t invalid_payloads;
    /* channels/sequence.c */
    int64_t held_bytes;   /* gauge: frames held across gaps, all channels */
    int64_t recent_bytes; /* gauge: recent caches, all channels */
    uint64_t duplicates_dropped;
    uint64_t gaps_skipped;
    uint64_t hold_overflows;       /* frames past HERALD_HOLD_BYTES, left to PostgreSQL */
    uint64_t unverified_envelopes; /* sequenced envelopes without a valid signature */
    uint64_t replay_pauses;        /* resumes that waited for their client's queue */
    uint64_t resumes_recovered;
    uint64_t resumes_failed;
    uint64_t history_divergences; /* channels PostgreSQL lost delivered history of: new epoch */
    /* channels/presence.c */
    int64_t presence_channels; /* gauge: presence channels with a connection here */
    int64_t presence_members;  /* gauge: users this instance lists in Redis */
    uint64_t presence_joins;   /* join events published */
    uint64_t presence_leaves;  /* leave events published */
    uint64_t presence_full;    /* users left unlisted: HERALD_PRESENCE_MAX_MEMBERS reached */
    uint64_t presence_errors;  /* scripts that failed or could not be sent, bad entries read */
    /* ws/keyring.c */
    int64_t jwt_keys;             /* gauge: public keys tokens are checked with */
    uint64_t jwks_fetches;        /* JWK Set fetches that arrived whole */
    uint64_t jwks_fetch_failures; /* fetches that failed or brought a malformed set */
    /* ws/client.c */
    uint64_t frames_out;
    uint64_t bytes_out;
    uint64_t writes;
    uint64_t client_frames_in;
    uint64_t slow_consumer_closes;
    uint64_t rate_limit_closes;
    uint64_t pings_sent;
    uint64_t ping_timeouts; /* clients hung up on: no answer to a ping */
    /* http/stream.c */
    int64_t streams_sse;         /* gauge: SSE responses open */
    int64_t streams_poll;        /* gauge: long-polls and catch-up reads waiting */
    uint64_t streams_total;      /* streams admitted */
    uint64_t stream_messages;    /* messages queued to streams */
    uint64_t stream_slow_closes; /* SSE streams closed for a full queue */
    /* redis/bus.c, redis/cluster.c */
    uint64_t redis_reconnects;
    uint64_t redis_redirects; /* SPUBLISH answered MOVED or ASK (a stale slot map) */
    /* store/history.c: catch-up pages with HERALD_DATABASE_READ_URL */
    uint64_t standby_reads;     /* answered by the standby */
    uint64_t standby_fallbacks; /* asked of the primary: the standby lagged or failed */
    /* ws/client.c and http/rest.c: refusals of their own requests */
    uint64_t auth_failures;
    /* ws/client.c, http/rest.c and http/http_guard.c: error answers, by code */
    uint64_t client_errors[ERR_COUNT];
};

#endif
