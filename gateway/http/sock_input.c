#include "sock_input.h"

#include <linux/sockios.h>
#include <linux/tcp.h>
#include <netinet/in.h>
#include <sys/ioctl.h>
#include <sys/socket.h>

int sock_input_consumed(int fd, uint64_t *out)
{
    for (int attempt = 0; fd >= 0 && attempt < 8; attempt++) {
        struct tcp_info before, after;
        socklen_t lb = sizeof before, la = sizeof after;
        int waiting;
        if (getsockopt(fd, IPPROTO_TCP, TCP_INFO, &before, &lb) < 0 ||
            ioctl(fd, SIOCINQ, &waiting) < 0 ||
            getsockopt(fd, IPPROTO_TCP, TCP_INFO, &after, &la) < 0 || lb < sizeof before ||
            la < sizeof after)
            return -1;
        if (before.tcpi_bytes_received == after.tcpi_bytes_received) {
            *out = after.tcpi_bytes_received - (uint64_t)waiting;
            return 0;
        }
    }
    return -1;
}
