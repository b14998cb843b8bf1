/*
 * bench-sig: native time of the per-message work that envelope signatures add (issue 12):
 * envelope_sig_sign, envelope_sig_verify, and envelope_classify of the same envelope unsigned
 * and signed (the signature is 74 more bytes to parse). callgrind counts SHA-256 as valgrind
 * runs it, without SHA-NI; this measures what the CPU does.
 *
 *   bench-sig [ITERATIONS]   (400000; run it pinned, e.g. taskset -c 0)
 */
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include "envelope.h"
#include "envelope_sig.h"

static double now_s(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

int main(int argc, char **argv)
{
    int iters = argc > 1 ? atoi(argv[1]) : 400000;
    if (iters <= 0)
        return 1;
    unsigned char key[ENVELOPE_KEY_LEN];
    for (int i = 0; i < ENVELOPE_KEY_LEN; i++)
        key[i] = (unsigned char)(i * 7 + 1);
    struct envelope_key k;
    if (envelope_key_init(&k, key, sizeof key) != 0)
        return 1;
    const char *epoch = "8c6b2bd4-2b3a-4b8e-9f61-0a1b2c3d4e5f";
    char env[512], sig[600], out[600];
    int n = snprintf(env, sizeof env,
                     "{\"op\":\"message\",\"channel\":\"seqbench\",\"seq\":123456,"
                     "\"ts\":1763800000000,\"data\":{\"n\":1234,\"p\":\"%070d\"}}",
                     0);
    size_t sn = envelope_sig_sign(&k, epoch, env, (size_t)n, sig);
    if (!sn || !envelope_sig_verify(&k, epoch, sig, sn)) {
        fprintf(stderr, "bench-sig: sign/verify round trip failed\n");
        return 1;
    }
    struct payload_info pi;
    volatile long sink = 0;
    double t0 = now_s();
    for (int i = 0; i < iters; i++)
        sink += (long)envelope_sig_sign(&k, epoch, env, (size_t)n, out);
    double t1 = now_s();
    for (int i = 0; i < iters; i++)
        sink += envelope_sig_verify(&k, epoch, sig, sn);
    double t2 = now_s();
    for (int i = 0; i < iters; i++) {
        envelope_classify("seqbench", 8, env, (size_t)n, &pi);
        sink += pi.kind;
    }
    double t3 = now_s();
    for (int i = 0; i < iters; i++) {
        envelope_classify("seqbench", 8, sig, sn, &pi);
        sink += pi.kind;
    }
    double t4 = now_s();
    envelope_key_clear(&k);
    printf("envelope %d bytes, signed %zu bytes, %d iterations\n", n, sn, iters);
    printf("sign %.0f ns, verify %.0f ns, classify unsigned %.0f ns, classify signed %.0f ns\n",
           (t1 - t0) / iters * 1e9, (t2 - t1) / iters * 1e9, (t3 - t2) / iters * 1e9,
           (t4 - t3) / iters * 1e9);
    return 0;
}
