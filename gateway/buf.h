/*
 * buf: the two byte containers of the HTTP layer.
 *
 *   struct bytes  one growable contiguous buffer (a request body read whole, a head being
 *                 built, a response body kept for the audit hooks);
 *   struct outq   a queue of byte chunks waiting to be written to a socket, handed to writev
 *                 as an iovec array; bytes leave the queue only once the kernel took them.
 *
 * Pure memory management: no I/O, no logging. Functions that allocate return 0, or -1 when out
 * of memory (the container is then unchanged).
 */
#ifndef GW_BUF_H
#define GW_BUF_H

#include <stdarg.h>
#include <stddef.h>
#include <sys/uio.h>

struct bytes {
    char *data; /* owned; NULL while empty and never grown */
    size_t len, cap;
};

/* Room for EXTRA more bytes. */
int bytes_reserve(struct bytes *b, size_t extra);
int bytes_add(struct bytes *b, const void *p, size_t n);
int bytes_addstr(struct bytes *b, const char *s);
int bytes_printf(struct bytes *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* "NAME: VALUE\r\n" */
int bytes_header(struct bytes *b, const char *name, const char *value);
/* The decimal digits of V. */
int bytes_u64(struct bytes *b, unsigned long long v);
/* Give the memory back; B is empty afterwards. */
void bytes_free(struct bytes *b);

struct outq_chunk;
struct outq {
    struct outq_chunk *head, *tail;
    size_t bytes; /* queued, not yet written */
};

/* Append a copy of P[0..N). */
int outq_add(struct outq *q, const void *p, size_t n);
/* Append the iovecs, copied. */
int outq_addv(struct outq *q, const struct iovec *iov, int n);
/* Fill up to MAX iovecs with the queued bytes, oldest first; returns how many. */
int outq_iov(const struct outq *q, struct iovec *iov, int max);
/* N bytes were written: drop them from the front. */
void outq_consume(struct outq *q, size_t n);
void outq_clear(struct outq *q);

/* Sum of the iovecs' lengths. */
size_t iov_total(const struct iovec *iov, int n);
/* Drop N written bytes from the front of the iovec array *IOV (*N entries); the array is
 * adjusted in place. */
void iov_advance(struct iovec **iov, int *n, size_t written);

#endif
