#include "envelope_sig.h"

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <string.h>

#define BLOCK 64 /* SHA-256 block size: HMAC pads the key to it */

static const char sig_head[] = ",\"sig\":\""; /* 8 bytes; then 64 hex digits and "} */
#define HEAD_LEN (sizeof sig_head - 1)
#define HEX_LEN  (2 * ENVELOPE_MAC_LEN)

_Static_assert(HEAD_LEN + HEX_LEN + 2 == ENVELOPE_SIG_SUFFIX_LEN, "sig suffix length");

struct part {
    const void *p;
    size_t n;
};

int envelope_key_init(struct envelope_key *k, const unsigned char *key, size_t len)
{
    unsigned char block[BLOCK] = {0}, pad[BLOCK];
    unsigned int hashed;
    const EVP_MD *md = EVP_sha256();
    int ok = 1;

    k->inner = EVP_MD_CTX_new();
    k->outer = EVP_MD_CTX_new();
    if (!k->inner || !k->outer)
        ok = 0;
    else if (len > BLOCK)
        ok = EVP_Digest(key, len, block, &hashed, md, NULL);
    else if (len > 0)
        memcpy(block, key, len);
    for (int i = 0; ok && i < BLOCK; i++)
        pad[i] = block[i] ^ 0x36;
    ok = ok && EVP_DigestInit_ex(k->inner, md, NULL) && EVP_DigestUpdate(k->inner, pad, BLOCK);
    for (int i = 0; ok && i < BLOCK; i++)
        pad[i] = block[i] ^ 0x5c;
    ok = ok && EVP_DigestInit_ex(k->outer, md, NULL) && EVP_DigestUpdate(k->outer, pad, BLOCK);
    OPENSSL_cleanse(block, sizeof block);
    OPENSSL_cleanse(pad, sizeof pad);
    if (!ok) {
        envelope_key_clear(k);
        return -1;
    }
    return 0;
}

void envelope_key_clear(struct envelope_key *k)
{
    EVP_MD_CTX_free(k->inner); /* frees (and cleanses) the state; NULL is fine */
    EVP_MD_CTX_free(k->outer);
    k->inner = k->outer = NULL;
}

/* HMAC over the concatenation of parts, from the precomputed states: two digest finishes. */
static bool mac_parts(const struct envelope_key *k, const struct part *parts, size_t nparts,
                      unsigned char out[ENVELOPE_MAC_LEN])
{
    if (!k->inner || !k->outer)
        return false;
    unsigned char inner[ENVELOPE_MAC_LEN];
    unsigned int n = 0, m = 0;
    EVP_MD_CTX *c = EVP_MD_CTX_new();
    bool ok = c && EVP_MD_CTX_copy_ex(c, k->inner);
    for (size_t i = 0; ok && i < nparts; i++)
        ok = EVP_DigestUpdate(c, parts[i].p, parts[i].n);
    ok = ok && EVP_DigestFinal_ex(c, inner, &n) && n == sizeof inner &&
         EVP_MD_CTX_copy_ex(c, k->outer) && EVP_DigestUpdate(c, inner, sizeof inner) &&
         EVP_DigestFinal_ex(c, out, &m) && m == ENVELOPE_MAC_LEN;
    EVP_MD_CTX_free(c);
    OPENSSL_cleanse(inner, sizeof inner);
    return ok;
}

bool envelope_key_mac(const struct envelope_key *k, const void *data, size_t len,
                      unsigned char out[ENVELOPE_MAC_LEN])
{
    struct part p = {data, len};
    return mac_parts(k, &p, 1, out);
}

/* Lowercase hex without a table lookup indexed by secret bits. */
static void to_hex(const unsigned char *mac, char *out)
{
    for (size_t i = 0; i < ENVELOPE_MAC_LEN; i++) {
        for (int half = 0; half < 2; half++) {
            int v = half ? mac[i] & 0xf : mac[i] >> 4;
            /* v < 10: '0' + v; else 'a' + v - 10. (unsigned)(9 - v) >> 8 is nonzero (all
             * ones in the low bits) exactly when v > 9. */
            out[2 * i + half] = (char)('0' + v + (((unsigned)(9 - v) >> 8) & ('a' - '0' - 10)));
        }
    }
}

static bool is_lower_hex(char c)
{
    return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f');
}

bool envelope_sig_present(const char *payload, size_t len)
{
    if (!payload || len <= ENVELOPE_SIG_SUFFIX_LEN)
        return false;
    const char *s = payload + len - ENVELOPE_SIG_SUFFIX_LEN;
    if (memcmp(s, sig_head, HEAD_LEN) != 0 || s[ENVELOPE_SIG_SUFFIX_LEN - 2] != '"' ||
        s[ENVELOPE_SIG_SUFFIX_LEN - 1] != '}')
        return false;
    for (size_t i = 0; i < HEX_LEN; i++)
        if (!is_lower_hex(s[HEAD_LEN + i]))
            return false;
    return true;
}

bool envelope_sig_verify(const struct envelope_key *k, const char *epoch, const char *payload,
                         size_t len)
{
    if (!epoch || !envelope_sig_present(payload, len))
        return false;
    size_t body = len - ENVELOPE_SIG_SUFFIX_LEN; /* the envelope minus its final '}' */
    struct part parts[] = {{epoch, strlen(epoch)}, {"\n", 1}, {payload, body}, {"}", 1}};
    unsigned char mac[ENVELOPE_MAC_LEN];
    char hex[HEX_LEN];
    if (!mac_parts(k, parts, sizeof parts / sizeof parts[0], mac))
        return false;
    to_hex(mac, hex);
    bool ok = CRYPTO_memcmp(hex, payload + body + HEAD_LEN, HEX_LEN) == 0;
    OPENSSL_cleanse(mac, sizeof mac);
    OPENSSL_cleanse(hex, sizeof hex);
    return ok;
}

size_t envelope_sig_sign(const struct envelope_key *k, const char *epoch, const char *envelope,
                         size_t len, char *out)
{
    if (!epoch || !envelope || len < 2 || envelope[len - 1] != '}')
        return 0;
    struct part parts[] = {{epoch, strlen(epoch)}, {"\n", 1}, {envelope, len}};
    unsigned char mac[ENVELOPE_MAC_LEN];
    if (!mac_parts(k, parts, sizeof parts / sizeof parts[0], mac))
        return 0;
    char *p = out;
    memmove(p, envelope, len - 1); /* out may be envelope itself */
    p += len - 1;
    memcpy(p, sig_head, HEAD_LEN);
    p += HEAD_LEN;
    to_hex(mac, p);
    p += HEX_LEN;
    *p++ = '"';
    *p++ = '}';
    OPENSSL_cleanse(mac, sizeof mac);
    return (size_t)(p - out);
}

size_t envelope_sig_strip(const char *payload, size_t len, char *out)
{
    if (!envelope_sig_present(payload, len))
        return 0;
    size_t n = len - ENVELOPE_SIG_SUFFIX_LEN;
    memmove(out, payload, n); /* out may be payload itself */
    out[n] = '}';
    return n + 1;
}

void envelope_md5_hex(const void *data, size_t len, char out[33])
{
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned n = 0;
    if (!EVP_Digest(data, len, md, &n, EVP_md5(), NULL) || n != 16) {
        out[0] = '\0'; /* matches no digest: the check then reports nothing */
        return;
    }
    static const char digits[] = "0123456789abcdef";
    for (unsigned i = 0; i < 16; i++) {
        out[2 * i] = digits[md[i] >> 4];
        out[2 * i + 1] = digits[md[i] & 15];
    }
    out[32] = '\0';
}
