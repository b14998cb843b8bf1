/* LD_PRELOAD shim for test_dns.py: a slow resolver. getaddrinfo of a name ending in
 * ".slow.test" sleeps SLOWDNS_MS milliseconds (default 2000), then answers for 127.0.0.1;
 * every other name goes to the C library as usual. */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <netdb.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

typedef int (*getaddrinfo_fn)(const char *, const char *, const struct addrinfo *,
                              struct addrinfo **);

int getaddrinfo(const char *node, const char *service, const struct addrinfo *hints,
                struct addrinfo **res)
{
    static const char suffix[] = ".slow.test";
    getaddrinfo_fn real = (getaddrinfo_fn)dlsym(RTLD_NEXT, "getaddrinfo");
    size_t n = node ? strlen(node) : 0;
    if (n >= sizeof suffix - 1 && strcmp(node + n - (sizeof suffix - 1), suffix) == 0) {
        const char *ms = getenv("SLOWDNS_MS");
        long v = ms ? atol(ms) : 2000;
        struct timespec ts = {v / 1000, (v % 1000) * 1000000L};
        nanosleep(&ts, NULL);
        node = "127.0.0.1";
    }
    return real ? real(node, service, hints, res) : EAI_FAIL;
}
