/* The history reads of the gateway, all through the async pool (db.c): catch-up pages and
 * channel heads. Durable publish is publish.c. */
#ifndef HERALD_HISTORY_H
#define HERALD_HISTORY_H

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
};

/* page is NULL and err set when PostgreSQL failed or is down. */
typedef void (*history_page_cb)(void *arg, const struct history_page *page, const char *err);

/* Messages of channel with seq > since, at most limit, with the channel's head and epoch.
 * -1: PostgreSQL is down (cb is not called). */
int history_fetch(struct herald *app, const char *channel, uint64_t since, long limit,
                  history_page_cb cb, void *arg);

struct history_head {
    const char *name;
    uint64_t head;
    const char *epoch;
};

typedef void (*history_heads_cb)(void *arg, const struct history_head *heads, size_t n,
                                 const char *err);

/* last_seq and epoch of each named channel that has a counter. -1: PostgreSQL is down. */
int history_heads(struct herald *app, const char *const *names, size_t n, history_heads_cb cb,
                  void *arg);

#endif
