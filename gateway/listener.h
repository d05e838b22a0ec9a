/*
 * listener: listening sockets, opened by the main thread before any loop runs (so a bad
 * address fails start-up with a clear message, and port 0 can be resolved once and shared by
 * every worker's SO_REUSEPORT socket).
 */
#ifndef GW_LISTENER_H
#define GW_LISTENER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/*
 * Open a non-blocking TCP listening socket on HOST:PORT (HOST numeric or a name resolved with
 * getaddrinfo, which may block: start-up only). REUSEPORT sets SO_REUSEPORT so several workers
 * can each own one socket on the same port. TCP_NODELAY is set on the listener; Linux passes it
 * on to accepted sockets. On success returns the fd and the bound port in *BOUND_PORT; on
 * failure -1 and a message in ERRBUF naming the address and the reason.
 */
int listener_open(const char *host, uint16_t port, bool reuseport, uint16_t *bound_port,
                  char *errbuf, size_t errlen);

#endif
