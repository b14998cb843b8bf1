/* Its own header so that cluster.h, under bus.h, can take the table too. */
#ifndef HERALD_BUS_EVENTS_H
#define HERALD_BUS_EVENTS_H

#include <stddef.h>

/* What the bus reports to the layer above, which hands the table to bus_new (the bus never
 * includes that layer's headers). Every event runs from the loop, never inside a bus_*
 * call. Names are Herald channel names (no prefix). */
struct bus_events {
    void *arg; /* the first argument of every event */
    /* a server's connections are up (again): subscribe what should be */
    void (*up)(void *arg);
    /* server `shard` is gone, with every subscription it carried */
    void (*down)(void *arg, int shard);
    void (*subscribed)(void *arg, const char *name, size_t len);
    void (*unsubscribed)(void *arg, const char *name, size_t len);
    /* a message as Redis gave it (valid during the call) */
    void (*message)(void *arg, const char *name, size_t len, const char *payload, size_t plen);
};

#endif
