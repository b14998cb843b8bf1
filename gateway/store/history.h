/* The history reads of the gateway, all through the async pool (db.c): catch-up pages and
 * channel heads. Durable publish is publish.c. With HERALD_DATABASE_READ_URL, catch-up pages
 * are read from the standby when it has caught up with what the caller needs, and from the
 * primary otherwise.
 *
 * Like db.c, a read is a struct history_request the caller owns and leaves alone until its
 * callback has run; the callback runs exactly once, later, from the loop. */
#ifndef HERALD_HISTORY_H
#define HERALD_HISTORY_H

#include "channel.h"
#include "db.h"
#include "request.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct herald;

#define HISTORY_EPOCH_MAX REQUEST_EPOCH_MAX

struct history_row {
    uint64_t seq;
    const char *envelope; /* valid during the callback only */
    size_t len;
};

struct history_page {
    bool exists;   /* the channel has a counter (something was ever published) */
    uint64_t head; /* last_seq */
    char epoch[HISTORY_EPOCH_MAX];
    uint64_t first_kept; /* oldest stored seq; 0 when none is stored */
    size_t n;
    struct history_row *rows; /* seq > since, in order */
    bool cut;                 /* the row or byte limit cut the page: more rows follow */
};

/* page is NULL and err set when PostgreSQL failed or is down. */
typedef void (*history_page_cb)(void *arg, const struct history_page *page, const char *err);

struct history_head {
    const char *name;
    uint64_t head;
    const char *epoch;
    uint64_t first_kept;
    /* md5 (hex) of the envelope stored under the seq the caller gave for this channel, or
     * NULL when that row is not there (or no seq was given) */
    const char *digest;
};

/* heads has an entry for each named channel that has a counter; err set on failure. */
typedef void (*history_heads_cb)(void *arg, const struct history_head *heads, size_t n,
                                 const char *err);

/* err is NULL when the statement ran. */
typedef void (*history_done_cb)(void *arg, const char *err);

struct history_request {
    struct db_request q;
    history_page_cb page_cb;
    history_heads_cb heads_cb;
    history_done_cb done_cb;
    void *arg;
    /* a page read from the standby first: what to ask the primary when it lags */
    struct herald *app;
    bool on_standby;
    uint64_t since, min_head;
    char channel[CHANNEL_NAME_MAX + 1];
    char params[3][24]; /* since, limit, max_bytes */
};

/* Messages of channel with seq > since: at most limit of them and at most max_bytes of
 * envelopes (the first always comes, even alone over max_bytes), with the channel's
 * head, epoch and oldest kept seq. min_head is the head the caller knows the channel has
 * reached (0: none known): a standby whose head is below it, or below since, lags, and the
 * primary answers instead, as it does when the standby fails or does not know the channel. */
void history_fetch(struct herald *app, struct history_request *r, const char *channel,
                   uint64_t since, uint64_t min_head, long limit, size_t max_bytes,
                   history_page_cb cb, void *arg);

/* Head, epoch and oldest kept seq of each named channel that has a counter (at most
 * HISTORY_HEADS_MAX names), and the digest of its envelope at seqs[i] (seqs may be NULL:
 * no digest). */
#define HISTORY_HEADS_MAX 1000
void history_heads(struct herald *app, struct history_request *r, const char *const *names,
                   const uint64_t *seqs, size_t n, history_heads_cb cb, void *arg);

/* The channel's history was lost in part (a failover to a standby that missed commits):
 * gives the channel a new epoch, unless another instance did it first (its epoch is no
 * longer `epoch`). cb runs once, later, with err set on failure. */
void history_new_epoch(struct herald *app, struct history_request *r, const char *channel,
                       const char *epoch, history_done_cb cb, void *arg);

/* The envelope key (herald_keys, migration 004): key and len on success, err set
 * otherwise (PostgreSQL down, or a schema without the table). */
typedef void (*history_key_cb)(void *arg, const unsigned char *key, size_t len, const char *err);

struct history_key_request {
    struct db_request q;
    history_key_cb cb;
    void *arg;
};

void history_read_key(struct herald *app, struct history_key_request *r, history_key_cb cb,
                      void *arg);

#endif
