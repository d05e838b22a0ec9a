/*
 * sio: reading and writing one non-blocking socket, in the clear or through an OpenSSL
 * session, with one set of results for both, so that the bots' connections (conn.c) and the
 * upstream connections (upconn.c) share one I/O path.
 *
 * Results: > 0 bytes moved; 0 the peer closed (reads); SIO_WANT_READ / SIO_WANT_WRITE: try
 * again when the socket is readable / writable (for TLS a read may need the socket writable
 * and the other way round); SIO_ERROR: the connection is unusable (errno or the TLS error
 * queue say why; sio_error_text renders it).
 *
 * Writes are optimistic: call sio_writev at once; arm EV_WRITE only on SIO_WANT_WRITE. Over
 * TLS the iovecs are gathered into one record of at most 16 KiB per call, and after a
 * SIO_WANT_* the same bytes must be offered again (they are, when they stay at the head of an
 * outq until written).
 */
#ifndef GW_SIO_H
#define GW_SIO_H

#include <openssl/ssl.h>
#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>
#include <sys/uio.h>

#define SIO_ERROR (-1)
#define SIO_WANT_READ (-2)
#define SIO_WANT_WRITE (-3)

struct sio {
    int fd;
    SSL *ssl; /* NULL: plain TCP */
    int err;  /* errno of the last SIO_ERROR (0 for TLS errors) */
};

ssize_t sio_read(struct sio *s, char *buf, size_t len);
ssize_t sio_writev(struct sio *s, const struct iovec *iov, int n);

/* Drive the TLS handshake: 1 done, SIO_WANT_*, or SIO_ERROR. */
int sio_handshake(struct sio *s);

/* Does TLS hold decrypted bytes (or a buffered record) that no socket event will announce?
 * A reader that stops before SIO_WANT_READ must come back for them. */
bool sio_pending(const struct sio *s);

/* A short description of the last SIO_ERROR into BUF (OpenSSL's reason, or strerror). */
const char *sio_error_text(const struct sio *s, char *buf, size_t len);

#endif
