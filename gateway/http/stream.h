/* GET /v1/channels/{C}/stream: a channel's live tail over plain HTTP, for clients that cannot
 * keep a WebSocket (PROTOCOL: "Live tail over HTTP").
 *
 * Three ways to read it, all one kind of subscriber of the channel core (its hub_sink is this
 * module's):
 * - SSE (Accept: text/event-stream): each sequenced message an event whose id is its
 *   position, so that a browser's EventSource resumes by itself with Last-Event-ID; raw
 *   messages without an id; comment heartbeats; a history reset is a `reset` event;
 * - long-poll (any other Accept): answered at once when messages follow the position, else
 *   held until one arrives or the timeout (an empty page with the position);
 * - the Durable Streams read protocol in JSON mode (offset=, live=sse|long-poll): a subset,
 *   with offsets `<epoch>_<seq>`.
 *
 * A stream is admitted like a WebSocket (draining, HERALD_MAX_CONNECTIONS, the per-address
 * limit), authorised like a /v1 read, bounded by HERALD_CLIENT_QUEUE_BYTES (an SSE stream
 * past it is closed and resumes by its id), ended at its token's expiry and by the drain.
 * Its answer is never written inside the call that caused it: always from the loop. */
#ifndef HERALD_STREAM_H
#define HERALD_STREAM_H

#include <stdbool.h>
#include <stddef.h>

struct herald;
struct lws;
struct http_session;
struct streams;

/* The process's streams: the sweep (deadlines, heartbeats, expiry) every 250 ms.
 * streams_free closes its timer (the loop must run afterwards). */
struct streams *streams_new(struct herald *app);
void streams_free(struct streams *ss);

/* LWS_CALLBACK_HTTP on a GET of /v1/channels/{channel}/stream (V1_STREAM, channel valid).
 * Returns what the callback returns. */
int stream_begin(struct herald *app, struct lws *wsi, const char *channel);

/* Writes what SSE streams queued during this loop turn, one write each, without a POLLOUT
 * round trip (like client_flush_dirty); a stream whose socket is full waits for WRITEABLE.
 * Runs from the loop's check and prepare phases. */
void stream_flush_dirty(struct herald *app);

/* LWS_CALLBACK_HTTP_WRITEABLE of a streaming connection: -1 closes it. */
int stream_writable(struct herald *app, struct http_session *s);

/* The connection is gone (LWS_CALLBACK_WSI_DESTROY, before its session is freed): its
 * stream, if any, leaves its channel. */
void stream_gone(struct lws *wsi);

/* The drain: ends up to n streams (an SSE stream after what is queued, a long-poll with what
 * it has). Returns how many it ended. */
size_t stream_drain(struct herald *app, size_t n);

/* Open streams (SSE and held long-polls). */
size_t stream_count(const struct herald *app);

#endif
