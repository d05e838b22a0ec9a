/*
 * listener: see listener.h.
 */
#include "listener.h"

#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "util.h"

int listener_open(const char *host, uint16_t port, bool reuseport, uint16_t *bound_port,
                  char *errbuf, size_t errlen)
{
    struct addrinfo hints, *res = NULL;
    char portstr[8];
    memset(&hints, 0, sizeof(hints));
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_PASSIVE;
    snprintf(portstr, sizeof(portstr), "%u", port);
    int rc = getaddrinfo(host, portstr, &hints, &res);
    if (rc != 0 || !res) {
        snprintf(errbuf, errlen, "cannot resolve listen address %s: %s", host, gai_strerror(rc));
        return -1;
    }
    int fd = socket(res->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        snprintf(errbuf, errlen, "socket() for %s:%u: %s", host, port, strerror(errno));
        freeaddrinfo(res);
        return -1;
    }
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    if (reuseport && setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one)) != 0) {
        snprintf(errbuf, errlen, "SO_REUSEPORT on %s:%u: %s", host, port, strerror(errno));
        goto fail;
    }
    util_set_nodelay(fd);
    if (bind(fd, res->ai_addr, res->ai_addrlen) != 0) {
        snprintf(errbuf, errlen, "cannot listen on %s:%u: %s", host, port, strerror(errno));
        goto fail;
    }
    if (listen(fd, 1024) != 0) {
        snprintf(errbuf, errlen, "listen() on %s:%u: %s", host, port, strerror(errno));
        goto fail;
    }
    struct sockaddr_storage ss;
    socklen_t sl = sizeof(ss);
    getsockname(fd, (struct sockaddr *)&ss, &sl);
    *bound_port = ss.ss_family == AF_INET6 ? ntohs(((struct sockaddr_in6 *)&ss)->sin6_port)
                                           : ntohs(((struct sockaddr_in *)&ss)->sin_port);
    freeaddrinfo(res);
    return fd;
fail:
    close(fd);
    freeaddrinfo(res);
    return -1;
}
