/*
 * buf: growable byte buffers and write queues (see buf.h).
 *
 * An outq chunk holds small writes together (a reply head, a few body pieces) so that writev
 * sees few iovecs; a large piece gets a chunk of its own size.
 */
#include "buf.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define CHUNK_MIN 4096

int bytes_reserve(struct bytes *b, size_t extra)
{
    if (b->cap - b->len >= extra)
        return 0;
    size_t cap = b->cap ? b->cap : 256;
    while (cap - b->len < extra) {
        if (cap > (size_t)-1 / 2)
            return -1;
        cap *= 2;
    }
    char *d = realloc(b->data, cap);
    if (!d)
        return -1;
    b->data = d;
    b->cap = cap;
    return 0;
}

int bytes_add(struct bytes *b, const void *p, size_t n)
{
    if (n == 0)
        return 0;
    if (bytes_reserve(b, n) != 0)
        return -1;
    memcpy(b->data + b->len, p, n);
    b->len += n;
    return 0;
}

int bytes_addstr(struct bytes *b, const char *s)
{
    return bytes_add(b, s, strlen(s));
}

int bytes_printf(struct bytes *b, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(b->data ? b->data + b->len : NULL, b->data ? b->cap - b->len : 0, fmt, ap);
    va_end(ap);
    if (n < 0)
        return -1;
    if ((size_t)n < b->cap - b->len) {
        b->len += (size_t)n;
        return 0;
    }
    if (bytes_reserve(b, (size_t)n + 1) != 0)
        return -1;
    va_start(ap, fmt);
    vsnprintf(b->data + b->len, b->cap - b->len, fmt, ap);
    va_end(ap);
    b->len += (size_t)n;
    return 0;
}

int bytes_header(struct bytes *b, const char *name, const char *value)
{
    size_t n = strlen(name), v = strlen(value);
    if (bytes_reserve(b, n + v + 4) != 0)
        return -1;
    char *p = b->data + b->len;
    memcpy(p, name, n);
    p[n] = ':';
    p[n + 1] = ' ';
    memcpy(p + n + 2, value, v);
    p[n + 2 + v] = '\r';
    p[n + 3 + v] = '\n';
    b->len += n + v + 4;
    return 0;
}

int bytes_u64(struct bytes *b, unsigned long long v)
{
    char tmp[24];
    size_t i = sizeof(tmp);
    do {
        tmp[--i] = (char)('0' + v % 10);
        v /= 10;
    } while (v);
    return bytes_add(b, tmp + i, sizeof(tmp) - i);
}

void bytes_free(struct bytes *b)
{
    free(b->data);
    b->data = NULL;
    b->len = b->cap = 0;
}

struct outq_chunk {
    struct outq_chunk *next;
    size_t off, len, cap; /* bytes [off, len) are queued */
    char data[];
};

int outq_add(struct outq *q, const void *p, size_t n)
{
    if (n == 0)
        return 0;
    struct outq_chunk *t = q->tail;
    if (t && t->cap - t->len >= n) {
        memcpy(t->data + t->len, p, n);
        t->len += n;
        q->bytes += n;
        return 0;
    }
    size_t cap = n < CHUNK_MIN ? CHUNK_MIN : n;
    struct outq_chunk *c = malloc(sizeof(*c) + cap);
    if (!c)
        return -1;
    c->next = NULL;
    c->off = 0;
    c->len = n;
    c->cap = cap;
    memcpy(c->data, p, n);
    if (t)
        t->next = c;
    else
        q->head = c;
    q->tail = c;
    q->bytes += n;
    return 0;
}

int outq_addv(struct outq *q, const struct iovec *iov, int n)
{
    for (int i = 0; i < n; i++)
        if (outq_add(q, iov[i].iov_base, iov[i].iov_len) != 0)
            return -1;
    return 0;
}

int outq_iov(const struct outq *q, struct iovec *iov, int max)
{
    int n = 0;
    for (const struct outq_chunk *c = q->head; c && n < max; c = c->next) {
        iov[n].iov_base = (char *)c->data + c->off;
        iov[n].iov_len = c->len - c->off;
        n++;
    }
    return n;
}

void outq_consume(struct outq *q, size_t n)
{
    q->bytes -= n < q->bytes ? n : q->bytes;
    while (n > 0 && q->head) {
        struct outq_chunk *c = q->head;
        size_t avail = c->len - c->off;
        if (n < avail) {
            c->off += n;
            return;
        }
        n -= avail;
        q->head = c->next;
        if (!q->head)
            q->tail = NULL;
        free(c);
    }
}

void outq_clear(struct outq *q)
{
    struct outq_chunk *c = q->head;
    while (c) {
        struct outq_chunk *next = c->next;
        free(c);
        c = next;
    }
    q->head = q->tail = NULL;
    q->bytes = 0;
}

size_t iov_total(const struct iovec *iov, int n)
{
    size_t t = 0;
    for (int i = 0; i < n; i++)
        t += iov[i].iov_len;
    return t;
}

void iov_advance(struct iovec **iov, int *n, size_t written)
{
    while (*n > 0 && written >= (*iov)->iov_len) {
        written -= (*iov)->iov_len;
        (*iov)++;
        (*n)--;
    }
    if (*n > 0 && written > 0) {
        (*iov)->iov_base = (char *)(*iov)->iov_base + written;
        (*iov)->iov_len -= written;
    }
}
