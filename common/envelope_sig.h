/* Authenticated sequenced envelopes (SECURITY-REVIEW M4; spec issue12 section 5).
 *
 * Redis is not trusted with sequence numbers: whoever can PUBLISH on Redis could otherwise
 * forge {"op":"message","channel":C,"seq":N,"ts":T,"data":D} and blackhole or replace a
 * channel's stream. PostgreSQL holds a secret key (table herald_keys, migration
 * 004_envelope_key.sql: one row, 32 random bytes), and every sequenced envelope that travels
 * over Redis carries an HMAC-SHA256 as its last member, "sig":
 *
 *   envelope (the bytes stored in herald_messages, the bytes clients get):
 *       {"op":"message","channel":"room:1","seq":1,"ts":1700000000000,"data":{"text":"hi"}}
 *   signed Redis payload: the envelope without its final '}', then ,"sig":"<64 hex>"}
 *       {"op":"message","channel":"room:1","seq":1,"ts":1700000000000,"data":{"text":"hi"},
 *        "sig":"<64 lowercase hex digits>"}
 *   sig = lowercase hex of HMAC-SHA256(key, epoch + "\n" + envelope)
 *
 * where epoch is the channel's epoch (herald_channels.epoch, returned by herald_publish and
 * herald_publish_batch). Binding the epoch means a signed envelope of one life of a channel
 * cannot be replayed into the next. The SQL function herald_sign(epoch, envelope) returns the
 * same bytes as envelope_sig_sign() (tests/integration/test_envelope_sig.py checks both
 * against Python's hmac module).
 *
 * Use: read the key once (SELECT key FROM herald_keys), envelope_key_init() it, then per
 * Redis payload: envelope_sig_verify() (deliver only when true), and envelope_sig_strip() to
 * get the envelope back. The key costs one setup; a message costs two SHA-256 finishes
 * (about 0.3 us for a 150-byte payload). Every function here is pure (no I/O, no globals);
 * verifying and signing only read the key (they copy its precomputed states), so one key
 * serves every connection of a process. */
#ifndef HERALD_ENVELOPE_SIG_H
#define HERALD_ENVELOPE_SIG_H

#include <stdbool.h>
#include <stddef.h>

#define ENVELOPE_MAC_LEN 32 /* HMAC-SHA256 output, bytes */
#define ENVELOPE_KEY_LEN 32 /* what herald_keys.key holds (envelope_key_init takes any length) */
/* ,"sig":" + 64 hex + "} */
#define ENVELOPE_SIG_SUFFIX_LEN 74
/* Size of the signed payload of an envelope of len bytes (its final '}' gives way). */
#define ENVELOPE_SIG_SIGNED_LEN(len) ((len) + ENVELOPE_SIG_SUFFIX_LEN - 1)

struct evp_md_ctx_st; /* OpenSSL's EVP_MD_CTX */

/* HMAC-SHA256 with the key already absorbed: SHA-256 states after (key ^ ipad) and after
 * (key ^ opad). Treat as opaque. Zero-initialised or cleared, it holds nothing. */
struct envelope_key {
    struct evp_md_ctx_st *inner;
    struct evp_md_ctx_st *outer;
};

/* Prepares k for key[0..len) (any length; keys longer than 64 bytes are hashed first, as
 * HMAC says). 0 on success, -1 when OpenSSL fails (out of memory): k then holds nothing. */
int envelope_key_init(struct envelope_key *k, const unsigned char *key, size_t len);

/* Frees what k holds; k can be initialised again. Safe on a cleared or zeroed key. */
void envelope_key_clear(struct envelope_key *k);

/* HMAC-SHA256(key, data[0..len)) into out. False only when OpenSSL fails. */
bool envelope_key_mac(const struct envelope_key *k, const void *data, size_t len,
                      unsigned char out[ENVELOPE_MAC_LEN]);

/* True when payload[0..len) ends with a well-formed sig member (,"sig":" + 64 lowercase hex
 * digits + "}) after at least one byte of envelope. Says nothing about the MAC. */
bool envelope_sig_present(const char *payload, size_t len);

/* True when payload[0..len) ends with a well-formed sig member whose MAC matches
 * HMAC-SHA256(key, epoch + "\n" + envelope), envelope being the payload without the member
 * (payload[0..len-74) + "}"). Nothing is copied; the MACs are compared in constant time.
 * epoch is NUL-terminated. */
bool envelope_sig_verify(const struct envelope_key *k, const char *epoch, const char *payload,
                         size_t len);

/* Writes the signed payload of envelope[0..len) (which must end with '}' and be at least 2
 * bytes) into out, which holds ENVELOPE_SIG_SIGNED_LEN(len) bytes (no NUL is added; out may
 * be envelope itself when that buffer is large enough). Returns ENVELOPE_SIG_SIGNED_LEN(len),
 * or 0 (nothing written) when the envelope does not end with '}' or OpenSSL fails. */
size_t envelope_sig_sign(const struct envelope_key *k, const char *epoch, const char *envelope,
                         size_t len, char *out);

/* Writes the envelope of a payload whose sig is present into out (len - 73 bytes, no NUL
 * added; out may be payload itself) and returns its length, len - 73. Returns 0 and writes
 * nothing when envelope_sig_present(payload, len) is false. */
size_t envelope_sig_strip(const char *payload, size_t len, char *out);

/* md5 of an envelope in lowercase hex, as PostgreSQL's md5(envelope) gives it: how the head
 * check compares the message it delivered with the row stored under that seq. */
void envelope_md5_hex(const void *data, size_t len, char out[33]);

#endif
