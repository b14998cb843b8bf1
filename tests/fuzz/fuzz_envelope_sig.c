/* envelope_sig on any bytes from Redis: present/verify/strip never read outside the payload
 * (libFuzzer hands over a buffer of exactly `size` bytes, ASan guards both ends), a payload
 * that verifies has a well-formed sig, and sign -> verify -> strip round trips for any
 * envelope and epoch while one changed byte makes verify refuse. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "envelope_sig.h"

static struct envelope_key key; /* 0x00..0x1f, the key the seed corpus was signed with */
static const char fixed_epoch[] = "0123456789abcdef";

static void init_key(void)
{
    if (key.inner)
        return;
    unsigned char raw[ENVELOPE_KEY_LEN];
    for (size_t i = 0; i < sizeof raw; i++)
        raw[i] = (unsigned char)i;
    if (envelope_key_init(&key, raw, sizeof raw) != 0)
        abort();
}

/* The payload as it came: never a crash, verify implies present, strip only when present. */
static void check_as_received(const uint8_t *data, size_t size)
{
    const char *p = (const char *)data;
    bool present = envelope_sig_present(p, size);
    bool valid = envelope_sig_verify(&key, fixed_epoch, p, size);
    if (valid && !present)
        abort();
    char *copy = malloc(size ? size : 1);
    memcpy(copy, data, size);
    size_t n = envelope_sig_strip(copy, size, copy);
    if (present != (n != 0) || (n && (n != size - (ENVELOPE_SIG_SUFFIX_LEN - 1) ||
                                      copy[n - 1] != '}' || memcmp(copy, data, n - 1) != 0)))
        abort();
    free(copy);
}

/* {<data>} signed under an epoch taken from the first bytes: verifies, strips back, and any
 * single changed byte (of payload or epoch) is refused. */
static void check_round_trip(const uint8_t *data, size_t size)
{
    char epoch[17];
    size_t elen = size < 16 ? size : 16;
    memcpy(epoch, data, elen);
    epoch[elen] = '\0';
    elen = strlen(epoch); /* an embedded NUL makes it shorter */

    size_t envlen = size + 2;
    char *env = malloc(envlen);
    env[0] = '{';
    memcpy(env + 1, data, size);
    env[envlen - 1] = '}';
    size_t slen = ENVELOPE_SIG_SIGNED_LEN(envlen);
    char *out = malloc(slen);
    if (envelope_sig_sign(&key, epoch, env, envlen, out) != slen)
        abort();
    if (!envelope_sig_present(out, slen) || !envelope_sig_verify(&key, epoch, out, slen))
        abort();

    uint32_t h = 2166136261u; /* FNV-1a of the input picks the byte to change */
    for (size_t i = 0; i < size; i++)
        h = (h ^ data[i]) * 16777619u;
    size_t at = h % slen;
    out[at] ^= (char)(1u << (h >> 29));
    if (envelope_sig_verify(&key, epoch, out, slen))
        abort();
    out[at] ^= (char)(1u << (h >> 29));
    if (elen > 0) {
        epoch[h % elen] ^= 0x40;
        if (envelope_sig_verify(&key, epoch, out, slen)) /* a NUL there: a shorter epoch */
            abort();
        epoch[h % elen] ^= 0x40;
    }

    if (envelope_sig_strip(out, slen, out) != envlen || memcmp(out, env, envlen) != 0)
        abort();
    free(out);
    free(env);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    init_key();
    check_as_received(data, size);
    check_round_trip(data, size);
    return 0;
}
