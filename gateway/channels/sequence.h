/* Delivery of one process's channels: every message reaches each ready member once, and
 * sequenced messages in seq order with no gap and no duplicate (gaps are filled from
 * PostgreSQL), the newest kept in a bounded cache, and resumes (`subscribe` with `since`)
 * replayed from that cache or from PostgreSQL, paced by the subscriber's queue.
 *
 * It sits on the registry (channels, members, waiters) and history (store/); it reaches the
 * connections only through each subscriber's hub_sink. */
#ifndef HERALD_SEQUENCE_H
#define HERALD_SEQUENCE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct herald;
struct registry;
struct channel;
struct subscriber;
struct frame;
struct hub_sink;

struct seq;

struct seq *seq_new(struct herald *app, struct registry *reg);
void seq_free(struct seq *s);

/* Sends f to every ready member of ch that has not had its seq yet (a raw message has seq
 * 0 and goes to every ready member). */
void seq_deliver(struct channel *ch, struct frame *f);

/* A sequenced envelope from Redis (payload as received, seq already read from it):
 * delivered in order when authentic, held across a gap, or taken as a hint. */
void seq_on_live(struct seq *s, struct channel *ch, const char *payload, size_t len, uint64_t seq);

/* The furthest seq of the channel this process knows of (delivered, held, or announced). */
uint64_t seq_known_head(const struct channel *ch);

/* Redis confirmed the channel: learn the head, catch up, answer waiters. */
void seq_on_active(struct seq *s, struct channel *ch);

/* Answers the waiters that can be answered now and asks PostgreSQL for what the others
 * need (the channel's head, or a page of history). */
void seq_answer_waiters(struct seq *s, struct channel *ch);

/* The subscriber's queue drained: its paused replays on ch go on. */
void seq_drained(struct seq *s, struct channel *ch, struct subscriber *sub);

/* Periodic work: fill gaps held too long; with heads, compare every channel's head with
 * PostgreSQL (a PUBLISH may have been lost). */
void seq_tick(struct seq *s, uint64_t now, bool heads);

/* Forgets ch when nobody needs it any more: no members, Redis idle, no query in flight.
 * True when it is gone. */
bool seq_maybe_forget(struct seq *s, struct channel *ch);

/* Frees ch's held frames and recent cache and takes it off every list (before the registry
 * frees it). */
void seq_release(struct seq *s, struct channel *ch);

#endif
