/*
 * sio: plain and TLS socket I/O with one set of results (see sio.h).
 */
#include "sio.h"

#include <errno.h>
#include <limits.h>
#include <openssl/err.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#define TLS_RECORD 16384

static int tls_result(struct sio *s, int ret)
{
    int e = SSL_get_error(s->ssl, ret);
    switch (e) {
    case SSL_ERROR_WANT_READ:
        return SIO_WANT_READ;
    case SSL_ERROR_WANT_WRITE:
        return SIO_WANT_WRITE;
    case SSL_ERROR_ZERO_RETURN:
        return 0;
    case SSL_ERROR_SYSCALL:
        s->err = errno;
        if (ERR_peek_error() == 0 && (errno == 0 || ret == 0))
            return 0; /* EOF without close_notify */
        return SIO_ERROR;
    default:
        s->err = 0;
        return SIO_ERROR;
    }
}

ssize_t sio_read(struct sio *s, char *buf, size_t len)
{
    if (s->ssl) {
        size_t n = 0;
        ERR_clear_error();
        int r = SSL_read_ex(s->ssl, buf, len, &n);
        if (r == 1)
            return (ssize_t)n;
        return tls_result(s, r);
    }
    for (;;) {
        ssize_t n = read(s->fd, buf, len);
        if (n >= 0)
            return n;
        if (errno == EINTR)
            continue;
        if (errno == EAGAIN || errno == EWOULDBLOCK)
            return SIO_WANT_READ;
        s->err = errno;
        return SIO_ERROR;
    }
}

ssize_t sio_writev(struct sio *s, const struct iovec *iov, int n)
{
    if (n <= 0)
        return 0;
    if (s->ssl) {
        static _Thread_local char record[TLS_RECORD];
        const char *p = iov[0].iov_base;
        size_t len = iov[0].iov_len;
        if (n > 1 && len < TLS_RECORD) { /* gather small pieces into one record */
            len = 0;
            for (int i = 0; i < n && len < TLS_RECORD; i++) {
                size_t take = iov[i].iov_len < TLS_RECORD - len ? iov[i].iov_len : TLS_RECORD - len;
                memcpy(record + len, iov[i].iov_base, take);
                len += take;
            }
            p = record;
        }
        size_t w = 0;
        ERR_clear_error();
        int r = SSL_write_ex(s->ssl, p, len, &w);
        if (r == 1)
            return (ssize_t)w;
        return tls_result(s, r);
    }
    for (;;) {
        ssize_t w = writev(s->fd, iov, n > IOV_MAX ? IOV_MAX : n);
        if (w >= 0)
            return w;
        if (errno == EINTR)
            continue;
        if (errno == EAGAIN || errno == EWOULDBLOCK)
            return SIO_WANT_WRITE;
        s->err = errno;
        return SIO_ERROR;
    }
}

int sio_handshake(struct sio *s)
{
    ERR_clear_error();
    int r = SSL_do_handshake(s->ssl);
    if (r == 1)
        return 1;
    int res = tls_result(s, r);
    return res == 0 ? SIO_ERROR : res; /* EOF during a handshake is a failure */
}

bool sio_pending(const struct sio *s)
{
    return s->ssl && SSL_has_pending(s->ssl);
}

const char *sio_error_text(const struct sio *s, char *buf, size_t len)
{
    unsigned long e = ERR_peek_last_error();
    if (s->ssl && e) {
        ERR_error_string_n(e, buf, len);
        return buf;
    }
    snprintf(buf, len, "%s", s->err ? strerror(s->err) : "connection closed");
    return buf;
}
