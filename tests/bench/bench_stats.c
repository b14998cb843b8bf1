/*
 * bench_stats.c: clocks, the latency histogram and CPU/memory readings for herald-bench.
 */
#define _GNU_SOURCE
#include <stdio.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#include "herald_bench.h"

#define HIST_LINEAR (1u << HIST_SUB_BITS)
#define HIST_HALF   (HIST_LINEAR / 2)

/* CLOCK_MONOTONIC in ns: system-wide, so the publisher's stamp compares with the receiver's. */
uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* Sleep until the absolute CLOCK_MONOTONIC time t (ns); returns at once if t has passed. */
void sleep_until_ns(uint64_t t)
{
    struct timespec ts = {.tv_sec = (time_t)(t / 1000000000u), .tv_nsec = (long)(t % 1000000000u)};
    while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL) != 0) {
    }
}

/* Bucket of v: exact below 2^SUB_BITS, then HIST_HALF linear sub-buckets per power of two. */
static unsigned hist_index(uint64_t v)
{
    if (v < HIST_LINEAR)
        return (unsigned)v;
    unsigned msb = 63u - (unsigned)__builtin_clzll(v);
    unsigned shift = msb - (HIST_SUB_BITS - 1);
    uint64_t top = v >> shift;
    return HIST_LINEAR + (shift - 1) * HIST_HALF + (unsigned)(top - HIST_HALF);
}

/* A representative value (the middle) of bucket idx. */
static uint64_t hist_value(unsigned idx)
{
    if (idx < HIST_LINEAR)
        return idx;
    unsigned shift = (idx - HIST_LINEAR) / HIST_HALF + 1;
    uint64_t top = (idx - HIST_LINEAR) % HIST_HALF + HIST_HALF;
    return (top << shift) + ((1ull << shift) >> 1);
}

/* Record one value (ns). */
void hist_add(struct hist *h, uint64_t v)
{
    h->buckets[hist_index(v)]++;
    h->count++;
    if (v > h->max)
        h->max = v;
}

/* The q-quantile (0 < q <= 1), never above the exact maximum; 0 for an empty histogram. */
uint64_t hist_percentile(const struct hist *h, double q)
{
    if (h->count == 0)
        return 0;
    uint64_t rank = (uint64_t)(q * (double)h->count + 0.999999);
    if (rank < 1)
        rank = 1;
    uint64_t seen = 0;
    for (unsigned i = 0; i < HIST_BUCKETS; i++) {
        seen += h->buckets[i];
        if (seen >= rank) {
            uint64_t v = hist_value(i);
            return v < h->max ? v : h->max;
        }
    }
    return h->max;
}

/* VmRSS of process pid in KiB, or -1 if it cannot be read. */
long proc_rss_kib(int pid)
{
    char path[64], line[256];
    snprintf(path, sizeof(path), "/proc/%d/status", pid);
    FILE *f = fopen(path, "r");
    if (!f)
        return -1;
    long kib = -1;
    while (fgets(line, sizeof(line), f))
        if (sscanf(line, "VmRSS: %ld kB", &kib) == 1)
            break;
    fclose(f);
    return kib;
}

/* User + system CPU seconds consumed so far by process pid, or -1. */
double proc_cpu_seconds(int pid)
{
    char path[64], buf[1024];
    snprintf(path, sizeof(path), "/proc/%d/stat", pid);
    FILE *f = fopen(path, "r");
    if (!f)
        return -1;
    size_t n = fread(buf, 1, sizeof(buf) - 1, f);
    fclose(f);
    buf[n] = '\0';
    const char *p = strrchr(buf, ')'); /* the command name may contain spaces */
    unsigned long ut, st;
    if (!p || sscanf(p + 2, "%*s %*s %*s %*s %*s %*s %*s %*s %*s %*s %*s %lu %lu", &ut, &st) != 2)
        return -1;
    return (double)(ut + st) / (double)sysconf(_SC_CLK_TCK);
}

/* User + system seconds from getrusage(who). */
static double rusage_seconds(int who)
{
    struct rusage ru;
    if (getrusage(who, &ru) != 0)
        return -1;
    return (double)(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) +
           (double)(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1e6;
}

/* CPU seconds of the calling thread (getrusage RUSAGE_THREAD). */
double thread_cpu_seconds(void)
{
    return rusage_seconds(RUSAGE_THREAD);
}

/* CPU seconds of this whole process, all threads (getrusage RUSAGE_SELF). */
double process_cpu_seconds(void)
{
    return rusage_seconds(RUSAGE_SELF);
}
