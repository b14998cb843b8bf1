/* How far an application has read a TCP socket's input, from the kernel's counters: kept
 * apart because it needs <linux/tcp.h>, which clashes with the <netinet/tcp.h> that
 * libwebsockets.h brings. */
#ifndef HERALD_SOCK_INPUT_H
#define HERALD_SOCK_INPUT_H

#include <stdint.h>

/* Bytes of fd's input read so far: received, less what still waits in the kernel (read
 * until the two agree, as input may arrive between the calls). 0, or -1 when the socket
 * cannot tell (not TCP, or no stable reading). */
int sock_input_consumed(int fd, uint64_t *out);

#endif
