/* Presence on the wire (PROTOCOL: Presence), the pure part: the join and leave events the
 * instances send each other over a channel's Redis channel, and the member list built from
 * what Redis holds. No I/O; channels/presence.c does the rest.
 *
 * An event is the frame clients get, exactly:
 *     {"op":"join","channel":"room:1","member":{"sub":"alice","info":{"name":"Alice"}}}
 *     {"op":"leave","channel":"room:1","member":{"sub":"alice"}}
 * When the process has the envelope key (with PostgreSQL), the Redis payload is signed as a
 * sequenced envelope is (envelope_sig.h), with PRESENCE_SIG_DOMAIN where an envelope has its
 * epoch: no epoch is that word, so a signed event cannot pass for a message or the reverse. */
#ifndef HERALD_PRESENCE_EVENT_H
#define HERALD_PRESENCE_EVENT_H

#include <stdbool.h>
#include <stddef.h>

#define PRESENCE_SIG_DOMAIN "presence"

enum presence_kind { PRESENCE_NONE, PRESENCE_JOIN, PRESENCE_LEAVE };

/* What payload[0..len) claims to be, by its first bytes ({"op":"join", or {"op":"leave",):
 * PRESENCE_NONE for anything else, a message. */
enum presence_kind presence_event_kind(const char *payload, size_t len);

/* The event text, malloc'ed with `spare` more bytes (room to sign it in place); *len its
 * length. info[0..ilen) is JSON text (ilen 0: none; a leave carries none). NULL when sub is
 * empty, not UTF-8 or holds a NUL, or memory ran out. */
char *presence_event_new(enum presence_kind kind, const char *ch, size_t clen, const char *sub,
                         size_t slen, const char *info, size_t ilen, size_t spare, size_t *len);

/* True when payload[0..len) is a well-formed event of channel ch[0..clen): an object with
 * op join or leave, channel ch, and member {"sub": a non-empty string[, "info": any]}, nothing
 * else. */
bool presence_event_valid(const char *ch, size_t clen, const char *payload, size_t len);

/* One field and value of a channel's presence hash in Redis: field "<instance>\0<sub>" and
 * the member's info (JSON text; empty: none), or field "<instance>\0" and the number of that
 * instance's anonymous connections. */
struct presence_entry {
    const char *key, *val;
    size_t klen, vlen;
};

/* "count":N,"members":[{"sub":S,"info":I},...] for entries e[0..n) (reordered): members by
 * sub, each once (a user on several instances shows one info), info null when it has none
 * or it is not JSON; count = the members plus the anonymous connections. Entries that are
 * malformed (no instance, a sub that is not UTF-8 or holds a NUL, a bad count) are left out and
 * counted in *skipped. malloc'ed, *len its length; NULL when memory ran out. */
char *presence_list_text(struct presence_entry *e, size_t n, size_t *len, size_t *skipped);

#endif
