/* What the channel core needs from the connections above it, handed down as a table the top
 * level fills (app/main.c), the way libuv hands read_cb to a stream: the core never includes
 * a connection's header and calls upward only through these pointers. */
#ifndef HERALD_SINK_H
#define HERALD_SINK_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct channel;
struct frame;

/* One subscription seen from the connection: `pos` is its index in the channel's member
 * array, so either side removes the pair in O(1). */
struct sub_ref {
    struct channel *ch;
    uint32_t pos;
};

/* A connection's side of its subscriptions. The connection embeds it (and gets back to
 * itself with container_of) and sets `sink` before its first subscribe: how the core reaches
 * this kind of connection (a WebSocket client, an HTTP stream). Only the channel core
 * (registry.c) writes the rest. */
struct subscriber {
    const struct hub_sink *sink;
    struct sub_ref *refs;
    uint16_t n, cap;
};

/* A subscribe that asks for history: every message with seq > since (of this epoch, when
 * given), or, when last > 0, the last `last` messages (at most HERALD_REPLAY_MAX). */
struct resume {
    uint64_t since;
    const char *epoch; /* NULL or "" when the client did not say */
    uint64_t last;
    bool strict; /* refuse, rather than go live unrecovered, when it cannot be served */
    /* the subscriber takes one page and leaves (an HTTP read): however far back since is,
     * the replay stops when its queue is full, so HERALD_REPLAY_MAX does not bound it */
    bool paged;
    bool oldest; /* since 0 means the oldest message kept, not seq 1 (Durable Streams' -1) */
};

/* What a `subscribed` reply says. */
struct hub_answer {
    uint64_t seq;      /* the last seq the client has now seen on the channel */
    const char *epoch; /* NULL when the channel has no history */
    bool resumed;      /* the client asked with `since` */
    bool recovered;
    uint64_t replayed;
    const char *code; /* why a resume was not recovered */
    /* a strict resume that could not be served: the subscriber gets no message of the
     * channel and must call hub_drop_refused, from the loop, to take it out */
    bool refused;
};

struct hub_sink {
    /* Queues a shared frame for the subscriber (it takes its own reference). A subscriber
     * whose queue is full closes itself; the core goes on with the others. */
    void (*deliver)(struct subscriber *s, struct frame *f);
    /* Whether a replay may queue a frame of len bytes now without crowding live messages. */
    bool (*has_room)(const struct subscriber *s, size_t len);
    /* Asks for hub_client_drained once the subscriber's queue has drained. */
    void (*notify_drained)(struct subscriber *s);
    /* The subscribe that carried id_json (NULL: none) is answered. */
    void (*answered)(struct subscriber *s, const char *channel, const struct hub_answer *a,
                     const char *id_json);
};

#endif
