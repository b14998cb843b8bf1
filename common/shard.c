#include "shard.h"

uint64_t shard_hash(const char *s, size_t len)
{
    uint64_t h = 14695981039346656037ULL;
    for (size_t i = 0; i < len; i++) {
        h ^= (unsigned char)s[i];
        h *= 1099511628211ULL;
    }
    return h;
}

/* Walks the buckets a key would jump to as n grows (a linear congruential step draws each
 * jump) and stops at the last one below n: expected O(log n) steps. */
static int jump(uint64_t key, int n)
{
    int64_t b = -1, j = 0;
    while (j < n) {
        b = j;
        key = key * 2862933555777941757ULL + 1;
        j = (int64_t)((double)(b + 1) * ((double)(1LL << 31) / (double)((key >> 33) + 1)));
    }
    return (int)b;
}

int shard_of(const char *name, size_t len, int n)
{
    return n <= 1 ? 0 : jump(shard_hash(name, len), n);
}
