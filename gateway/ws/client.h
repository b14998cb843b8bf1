/* One WebSocket connection: its subscriptions, its send queue and its receive buffer. lws
 * allocates it (zeroed) as the per-session data of the "herald" protocol. */
#ifndef HERALD_CLIENT_H
#define HERALD_CLIENT_H

#include "errcode.h"
#include "outq.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct lws;
struct herald;
struct channel;
struct principal;
struct ipcount;

/* A client's side of a subscription; `pos` is its index in the channel's member array, so
 * either side can remove the pair in O(1). */
struct sub_ref {
    struct channel *ch;
    uint32_t pos;
};

struct client {
    struct lws *wsi;
    struct herald *app;
    struct outq q;
    struct client *dirty_prev, *dirty_next; /* in herald.dirty while it has output to flush */
    struct sub_ref *subs;
    uint16_t nsubs, subcap;
    uint16_t close_code; /* nonzero: close with it once the queue is flushed */
    bool dirty;          /* in the dirty list */
    bool close_sent;     /* our close frame is out: waiting for the peer's answer */
    bool await_writable; /* the socket was full: lws calls WRITEABLE when it drains */
    bool rx_too_large;   /* the message being received is over the limit: drop the rest */
    bool rx_binary;
    bool deflate;           /* permessage-deflate agreed in the handshake: send compressed twins */
    bool drain_wanted;      /* a paused resume waits for the queue to drain (hub_client_drained) */
    char *rx;               /* fragments of a message that came in several pieces */
    void *publishes;        /* publishes waiting for PostgreSQL (protocol.c) */
    struct principal *auth; /* the token's claims; NULL with auth off */
    struct ipcount *ip;     /* this connection's share of its address's count */
    double rl_tokens;       /* inbound token bucket (HERALD_RATE_LIMIT / _BURST) */
    uint64_t rl_at_ms;
    uint32_t rl_strikes; /* messages refused in a row */
    size_t rx_len;
};

void client_init(struct client *c, struct lws *wsi, struct herald *app);

/* Leaves every channel and drops the queue; the connection is going away. */
void client_destroy(struct client *c);

/* Queues a shared frame. A client whose queue would pass HERALD_CLIENT_QUEUE_BYTES loses its
 * queue and is closed with 4008 (it resumes by `since`). */
void client_send(struct client *c, struct frame *f);

/* True when a frame of len bytes may be queued now by a replay: the queue is empty (any
 * message fits an empty queue), or it stays under half of HERALD_CLIENT_QUEUE_BYTES, so
 * that live messages keep room behind it. */
bool client_has_room(const struct client *c, size_t len);

/* Asks for hub_client_drained once the queue is down to a quarter of its limit. */
void client_notify_drained(struct client *c);

/* Queues a frame built for this client only (replies, errors). */
void client_send_text(struct client *c, const char *text, size_t len);

/* Sends {"op":"error","code":..,"message":..[,"id":..]} and counts it. */
void client_send_error(struct client *c, enum errcode code, const char *id_json,
                       const char *message);

/* Closes after what is queued has been written (1001 on drain) or at once, dropping the
 * queue (4008); reason is sent in the close frame. */
void client_close(struct client *c, uint16_t code, bool drop_queue);

/* LWS_CALLBACK_SERVER_WRITEABLE: writes queued frames in one batch. -1: close now. */
int client_on_writable(struct client *c);

/* Writes the queued frames of every client that got output during this loop turn, one
 * write each, without waiting for a POLLOUT round trip; a client whose socket is full waits
 * for its WRITEABLE callback instead. Runs from the loop's check and prepare phases. */
void client_flush_dirty(struct herald *app);

/* LWS_CALLBACK_ESTABLISHED: counts the address, checks the Origin and the token (a refusal
 * closes with 1008 or 4001) and arms the close at the token's exp. */
void client_on_established(struct client *c, struct lws *wsi, struct herald *app);

/* LWS_CALLBACK_TIMER: the token's expiry; closes with 4001 once it has passed. */
void client_on_timer(struct client *c);

/* LWS_CALLBACK_RECEIVE: gathers fragments and hands whole messages to the protocol. */
void client_on_receive(struct client *c, const void *in, size_t len, bool first, bool final,
                       bool binary);

#endif
