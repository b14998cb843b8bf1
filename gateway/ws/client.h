/* One WebSocket connection: its subscriptions, its send queue and its receive buffer. lws
 * allocates it (zeroed) as the per-session data of the "herald" protocol. */
#ifndef HERALD_CLIENT_H
#define HERALD_CLIENT_H

#include "errcode.h"
#include "outq.h"
#include "sink.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct lws;
struct herald;
struct principal;
struct ipcount;
struct owed;
struct pconn;
struct client;

/* A place in one of the process's doubly linked lists of clients (O(1) removal). */
struct client_link {
    struct client *prev, *next;
};

struct client {
    struct lws *wsi;
    struct herald *app;
    struct outq q;
    struct client_link dirty_link; /* in herald.dirty while it has output to flush */
    struct client_link all_link;   /* in herald.clients from ESTABLISHED to destroy */
    struct subscriber sub;         /* its channels: written by the channel core only (hub.h) */
    uint16_t close_code;           /* nonzero: close with it once the queue is flushed */
    bool dirty;                    /* in the dirty list */
    bool close_sent;               /* our close frame is out: waiting for the peer's answer */
    bool await_writable;           /* the socket was full: lws calls WRITEABLE when it drains */
    bool rx_too_large;             /* the message being received is over the limit: drop the rest */
    bool rx_binary;
    bool deflate;           /* permessage-deflate agreed in the handshake: send compressed twins */
    bool drain_wanted;      /* a paused resume waits for the queue to drain (hub_client_drained) */
    bool drop_refused;      /* a strict resume was refused: leave it on the next flush */
    char *rx;               /* fragments of a message that came in several pieces */
    struct owed *owed;      /* replies owed (publish, presence): protocol.c's */
    struct pconn *presence; /* its places on presence channels (presence.h) */
    struct principal *auth; /* the token's claims; NULL with auth off */
    struct ipcount *ip;     /* this connection's share of its address's count */
    double rl_tokens;       /* inbound token bucket (HERALD_RATE_LIMIT / _BURST) */
    uint64_t rl_at_ms;
    uint32_t rl_strikes; /* messages refused in a row */
    uint64_t heard_ms;   /* when the client last sent a frame (a message or a pong) */
    uint64_t ping_ms;    /* when the unanswered ping went out; 0: none */
    size_t rx_len;
};

/* Leaves every channel and drops the queue; the connection is going away (the protocol's
 * state, protocol_client_gone, goes first). */
void client_destroy(struct client *c);

/* The client that embeds s. */
static inline struct client *client_of(struct subscriber *s)
{
    return (struct client *)(void *)((char *)s - offsetof(struct client, sub));
}

/* The client's side of the channel core's hub_sink (sink.h), given a client's `sub`. */

/* Queues a shared frame. A client whose queue would pass HERALD_CLIENT_QUEUE_BYTES loses its
 * queue and is closed with 4008 (it resumes by `since`). */
void client_deliver(struct subscriber *s, struct frame *f);

/* True when a frame of len bytes may be queued now by a replay: the queue is empty (any
 * message fits an empty queue), or it stays under half of HERALD_CLIENT_QUEUE_BYTES, so
 * that live messages keep room behind it. */
bool client_has_room(const struct subscriber *s, size_t len);

/* Asks for hub_client_drained once the queue is down to a quarter of its limit. */
void client_notify_drained(struct subscriber *s);

/* Sends the JSON object fmt makes (without its closing brace), then ,"id":id_json when
 * id_json is not NULL, then the brace. Every reply to a client is made this way. */
/* A `refresh` was accepted: c now acts with p (taken over, not copied) and closes when p's
 * token expires. c->auth must be set. */
void client_replace_principal(struct client *c, struct principal *p);

/* Queues text[0..len) as one message (any size the queue takes). */
void client_send_text(struct client *c, const char *text, size_t len);

void client_reply(struct client *c, const char *id_json, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

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

/* The drain: closes up to n clients that are not closing yet with 1001 ("server draining"),
 * each after what is queued for it. Returns how many it closed (fewer when fewer are left). */
size_t client_drain(struct herald *app, size_t n);

/* LWS_CALLBACK_RECEIVE_PONG: the client is alive. */
void client_on_pong(struct client *c);

/* Liveness (HERALD_PING_INTERVAL, HERALD_PONG_TIMEOUT): once a second, a WebSocket ping goes
 * to each client that has sent nothing for the interval, and a client that has answered
 * nothing for the timeout after its ping is hung up on (herald_ping_timeouts_total). Started
 * after the server, stopped before shutdown. */
void client_liveness_start(struct herald *app);
void client_liveness_stop(struct herald *app);

/* LWS_CALLBACK_TIMER: the token's expiry; closes with 4001 once it has passed. */
void client_on_timer(struct client *c);

/* LWS_CALLBACK_RECEIVE: gathers fragments and hands each whole text message within the
 * limits to `handle` (the protocol), which the caller names; refusals are answered here. */
typedef void (*client_message_cb)(struct client *c, const char *msg, size_t len);
void client_on_receive(struct client *c, const void *in, size_t len, bool first, bool final,
                       bool binary, client_message_cb handle);

#endif
