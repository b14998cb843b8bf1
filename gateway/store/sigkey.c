#include "sigkey.h"
#include "envelope_sig.h"
#include "herald.h"
#include "history.h"
#include "log.h"

#include <stdbool.h>
#include <stdlib.h>

#define RETRY_MS 5000

struct sigkey {
    struct herald *app;
    struct envelope_key key;
    bool known;
    bool in_flight;
    bool warned;
    uint64_t retry_ms; /* when the key is asked for again after a failure */
    struct history_key_request read;
};

struct sigkey *sigkey_new(struct herald *app)
{
    struct sigkey *k = calloc(1, sizeof *k);
    if (k)
        k->app = app;
    return k;
}

void sigkey_free(struct sigkey *k)
{
    if (!k)
        return;
    if (k->known)
        envelope_key_clear(&k->key);
    free(k);
}

static void on_key(void *arg, const unsigned char *key, size_t len, const char *err)
{
    struct sigkey *k = arg;
    k->in_flight = false;
    if (!key || envelope_key_init(&k->key, key, len) < 0) {
        if (!k->warned)
            log_warn("envelope_key",
                     "cannot read the envelope key (%s): sequenced messages come from "
                     "PostgreSQL only until it can (run herald migrate)",
                     err ? err : "bad key");
        k->warned = true;
        k->retry_ms = herald_now_ms(k->app) + RETRY_MS;
        return;
    }
    k->known = true;
    log_info("envelope_key", "envelope key read: sequenced messages from Redis are verified");
}

void sigkey_want(struct sigkey *k, uint64_t now)
{
    if (k->known || k->in_flight || now < k->retry_ms)
        return;
    k->in_flight = true;
    history_read_key(k->app, &k->read, on_key, k);
}

const struct envelope_key *sigkey_get(const struct sigkey *k)
{
    return k && k->known ? &k->key : NULL;
}
