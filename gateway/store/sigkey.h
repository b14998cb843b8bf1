/* The envelope key (table herald_keys, migration 004): read from PostgreSQL once it answers
 * and kept for the process's life. The channel core verifies the sequenced envelopes Redis
 * brings with it; the durable publish signs what it PUBLISHes with it (envelope_sig.h). */
#ifndef HERALD_SIGKEY_H
#define HERALD_SIGKEY_H

#include <stdint.h>

struct herald;
struct sigkey;
struct envelope_key;

struct sigkey *sigkey_new(struct herald *app);
/* After the db: a read in flight must have had its callback. */
void sigkey_free(struct sigkey *k);

/* Asks PostgreSQL for the key unless it is known, asked for already, or failed less than
 * 5 s before now (ms on the loop's clock). The answer comes later, from the loop. */
void sigkey_want(struct sigkey *k, uint64_t now);

/* The key, or NULL while it is unknown. */
const struct envelope_key *sigkey_get(const struct sigkey *k);

#endif
