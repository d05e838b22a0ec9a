/*
 * upconn: one upstream client connection (see upconn.h).
 *
 * States: CONNECTING (waiting for the socket to turn writable) -> TLS (handshake, TLS only)
 * -> READY (carries exchanges; idle between them). Reading stays on while READY, so a server
 * that closes an idle connection is noticed at once, and a response is read as it arrives.
 *
 * The response buffer (struct urbuf: the bytes and the head being parsed) exists only during
 * an exchange. Body bytes are handed to the owner straight from it.
 *
 * Freeing from a callback. An owner may free the connection from inside a callback (failed,
 * done). upconn_free then releases everything but the struct itself and sets DOOMED; the event
 * handler that made the call frees the struct when the callback returns, touching nothing
 * else.
 */
#include "upconn.h"

#include <errno.h>
#include <event2/event.h>
#include <event2/event_struct.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "sio.h"
#include "tls.h"
#include "util.h"

#define URB_INITIAL 8192
#define URB_MAX (64 * 1024 + 16384) /* largest response head, plus room for body bytes */
#define RESPONSE_MAX_HEAD (64 * 1024)
#define FEED 16384
#define HIGH_WATER (64 * 1024) /* streamed request body queued before the bot must wait */
#define LOW_WATER (16 * 1024)
#define MAX_IOV 64

enum ustate { U_CONNECTING, U_TLS, U_READY };

struct urbuf {
    size_t len, cap;
    struct http1_head head;
    char data[];
};

struct upconn {
    struct event_base *base;
    struct sio io;
    struct event rev, wev;
    enum ustate state;
    const struct upconn_cb *cb;
    void *arg;
    struct upx *x;
    struct http1_parser parser;
    struct urbuf *rb;
    size_t pos;
    unsigned nreq;
    bool rev_on, wev_on;
    bool head_done, read_paused;
    bool parsing;    /* a response is being parsed (the parser is initialised for it) */
    bool keep_alive; /* the response's head allows another exchange */
    bool in_event, doomed;
};

static void rev_set(struct upconn *u, bool on)
{
    if (on && !u->rev_on)
        event_add(&u->rev, NULL);
    else if (!on && u->rev_on)
        event_del(&u->rev);
    u->rev_on = on;
}

static void wev_set(struct upconn *u, bool on)
{
    if (on && !u->wev_on)
        event_add(&u->wev, NULL);
    else if (!on && u->wev_on)
        event_del(&u->wev);
    u->wev_on = on;
}

static void fail(struct upconn *u, enum gw_err err, const char *detail)
{
    rev_set(u, false);
    wev_set(u, false);
    u->cb->failed(u->arg, err, detail);
}

/* ---- writing ---- */

/* Gather what the exchange still has to write. */
static int pending_iov(const struct upx *x, struct iovec *iov, int max)
{
    int n = 0;
    size_t skip = x->iov_sent;
    for (int i = 0; i < x->niov && n < max; i++) {
        if (skip >= x->iov[i].iov_len) {
            skip -= x->iov[i].iov_len;
            continue;
        }
        iov[n].iov_base = (char *)x->iov[i].iov_base + skip;
        iov[n].iov_len = x->iov[i].iov_len - skip;
        skip = 0;
        n++;
    }
    return n + outq_iov(&x->body, iov + n, max - n);
}

static void consumed(struct upx *x, size_t w)
{
    x->sent += w;
    size_t in_iov = iov_total(x->iov, x->niov) - x->iov_sent;
    size_t a = w < in_iov ? w : in_iov;
    x->iov_sent += a;
    outq_consume(&x->body, w - a);
}

bool upx_full(struct upx *x)
{
    if (x->body.bytes <= HIGH_WATER)
        return false;
    x->waiting = true;
    return true;
}

/* From the loop only: the body queue has room again for a sender that was told to wait. */
static void report_drained(struct upconn *u)
{
    if (u->x && u->x->waiting && u->x->body.bytes < LOW_WATER) {
        u->x->waiting = false;
        if (u->cb->drained)
            u->cb->drained(u->arg);
    }
}

/* Write what can be written now. Returns false when the connection broke. */
static bool write_some(struct upconn *u)
{
    struct upx *x = u->x;
    if (!x || u->state != U_READY)
        return true;
    struct iovec iov[MAX_IOV];
    for (;;) {
        int n = pending_iov(x, iov, MAX_IOV);
        if (n == 0)
            break;
        ssize_t w = sio_writev(&u->io, iov, n);
        if (w > 0) {
            consumed(x, (size_t)w);
            continue;
        }
        if (w == SIO_WANT_WRITE) {
            wev_set(u, true);
            return true;
        }
        if (w == SIO_WANT_READ)
            return true;
        return false;
    }
    wev_set(u, false);
    return true;
}

/* ---- reading ---- */

static int body_cb(void *arg, const char *data, size_t len)
{
    struct upconn *u = arg;
    if (u->cb->body(u->arg, data, len) != 0) {
        u->read_paused = true;
        rev_set(u, false);
    }
    return u->doomed ? -1 : 0;
}

/* The exchange's response is complete. */
static void complete(struct upconn *u)
{
    bool keep = u->keep_alive;
    if (u->rb && u->rb->len > u->pos)
        keep = false; /* bytes after the response: the server is confused; do not reuse */
    if (u->rb && u->rb->cap > URB_INITIAL) { /* keep the small buffer for the next exchange */
        free(u->rb);
        u->rb = NULL;
    } else if (u->rb) {
        u->rb->len = 0;
    }
    u->pos = 0;
    u->parsing = false;
    u->x = NULL;
    u->head_done = false;
    u->read_paused = false;
    rev_set(u, true);
    wev_set(u, false);
    u->cb->done(u->arg, keep);
}

/* Parse what the buffer holds. */
static void process(struct upconn *u)
{
    while (u->x && !u->doomed && !u->read_paused) {
        struct urbuf *rb = u->rb;
        size_t avail = rb ? rb->len - u->pos : 0;
        if (!u->head_done) {
            if (avail == 0)
                return;
            enum http1_rc rc = http1_parse_head(&u->parser, rb->data + u->pos, avail);
            if (rc == HTTP1_AGAIN)
                return;
            if (rc == HTTP1_ERROR) {
                fail(u, GW_ERR_UPSTREAM_PROTOCOL,
                     u->parser.err == GW_ERR_HEADERS_TOO_LARGE ? "response head too large"
                     : u->parser.why                           ? u->parser.why
                                                               : "invalid response");
                return;
            }
            const char *hbuf = rb->data + u->pos;
            u->pos += rb->head.len;
            u->head_done = true;
            u->keep_alive = rb->head.keep_alive;
            u->cb->head(u->arg, &rb->head, hbuf);
            if (u->doomed)
                return;
            if (rb->head.body == HTTP1_BODY_NONE) {
                complete(u);
                return;
            }
            continue;
        }
        if (avail == 0)
            return;
        size_t feed = avail < FEED ? avail : FEED, used = 0;
        enum http1_rc rc = http1_parse_body(&u->parser, rb->data + u->pos, feed, &used, body_cb, u);
        if (u->doomed)
            return;
        if (rc == HTTP1_ERROR) {
            fail(u, GW_ERR_UPSTREAM_PROTOCOL, u->parser.why ? u->parser.why : "invalid response");
            return;
        }
        u->pos += rc == HTTP1_AGAIN ? feed : used;
        if (rc == HTTP1_DONE) {
            complete(u);
            return;
        }
    }
}

static void compact(struct upconn *u)
{
    struct urbuf *rb = u->rb;
    if (!rb || u->pos == 0)
        return;
    if (!u->head_done)
        return; /* the head being parsed keeps its offsets */
    memmove(rb->data, rb->data + u->pos, rb->len - u->pos);
    rb->len -= u->pos;
    u->pos = 0;
}

static void read_response(struct upconn *u)
{
    if (!u->rb) {
        u->rb = malloc(sizeof(*u->rb) + URB_INITIAL);
        if (!u->rb) {
            fail(u, GW_ERR_INTERNAL, "out of memory for the response");
            return;
        }
        u->rb->len = 0;
        u->rb->cap = URB_INITIAL;
        u->pos = 0;
    }
    if (!u->parsing) {
        u->parsing = true;
        http1_init(&u->parser, HTTP1_RESPONSE, &u->rb->head, RESPONSE_MAX_HEAD);
        if (u->x->head_request)
            http1_set_no_body(&u->parser);
    }
    compact(u);
    struct urbuf *rb = u->rb;
    if (rb->len == rb->cap) {
        if (rb->cap >= URB_MAX) {
            process(u);
            return;
        }
        size_t cap = rb->cap * 2 < URB_MAX ? rb->cap * 2 : URB_MAX;
        struct urbuf *n = realloc(rb, sizeof(*rb) + cap);
        if (!n) {
            fail(u, GW_ERR_INTERNAL, "out of memory for the response");
            return;
        }
        n->cap = cap;
        u->rb = rb = n;
        http1_rebind(&u->parser, &rb->head);
    }
    ssize_t n = sio_read(&u->io, rb->data + rb->len, rb->cap - rb->len);
    if (n > 0) {
        rb->len += (size_t)n;
        process(u);
        if (!u->doomed && u->x && !u->read_paused && sio_pending(&u->io))
            event_active(&u->rev, EV_READ, 0); /* TLS holds more: no socket event will say */
        return;
    }
    if (n == SIO_WANT_READ || n == SIO_WANT_WRITE) {
        if (n == SIO_WANT_WRITE)
            wev_set(u, true);
        return;
    }
    /* The server closed: the end of a close-delimited body, or a failure. */
    process(u);
    if (u->doomed || !u->x)
        return;
    if (u->head_done && http1_finish(&u->parser) == HTTP1_DONE) {
        u->keep_alive = false;
        complete(u);
        return;
    }
    char why[160];
    fail(u, GW_ERR_UPSTREAM_PROTOCOL,
         n == 0 ? "connection closed before a complete response"
                : sio_error_text(&u->io, why, sizeof(why)));
}

/* ---- connecting ---- */

static void became_ready(struct upconn *u)
{
    u->state = U_READY;
    rev_set(u, true);
    wev_set(u, false);
    u->cb->ready(u->arg);
    if (u->doomed)
        return;
    if (!write_some(u))
        fail(u, GW_ERR_UPSTREAM_PROTOCOL, "connection closed while sending the request");
    else
        report_drained(u);
}

static void handshake(struct upconn *u)
{
    int r = sio_handshake(&u->io);
    if (r == 1) {
        became_ready(u);
    } else if (r == SIO_WANT_READ) {
        wev_set(u, false);
        rev_set(u, true);
    } else if (r == SIO_WANT_WRITE) {
        wev_set(u, true);
    } else {
        char why[160], detail[220];
        const char *v = tls_verify_error(u->io.ssl);
        if (v)
            snprintf(detail, sizeof(detail), "TLS handshake failed: certificate verify failed: %s",
                     v);
        else
            snprintf(detail, sizeof(detail), "TLS handshake failed: %s",
                     sio_error_text(&u->io, why, sizeof(why)));
        fail(u, GW_ERR_UPSTREAM_TLS, detail);
    }
}

static void connect_done(struct upconn *u)
{
    int err = 0;
    socklen_t len = sizeof(err);
    if (getsockopt(u->io.fd, SOL_SOCKET, SO_ERROR, &err, &len) != 0)
        err = errno;
    if (err != 0) {
        char detail[160];
        snprintf(detail, sizeof(detail), "connect failed: %s", strerror(err));
        fail(u, GW_ERR_UPSTREAM_CONNECT, detail);
        return;
    }
    util_set_nodelay(u->io.fd);
    u->cb->connected(u->arg);
    if (u->doomed)
        return;
    if (u->io.ssl) {
        u->state = U_TLS;
        handshake(u);
    } else {
        became_ready(u);
    }
}

/* ---- events ---- */

static void finish_event(struct upconn *u)
{
    u->in_event = false;
    if (u->doomed)
        free(u);
}

static void on_write(evutil_socket_t fd, short what, void *arg)
{
    struct upconn *u = arg;
    u->in_event = true;
    if (u->state == U_CONNECTING) {
        connect_done(u);
    } else if (u->state == U_TLS) {
        handshake(u);
    } else if (!write_some(u)) {
        fail(u, GW_ERR_UPSTREAM_PROTOCOL, "connection closed while sending the request");
    } else {
        report_drained(u);
    }
    finish_event(u);
}

static void on_read(evutil_socket_t fd, short what, void *arg)
{
    struct upconn *u = arg;
    u->in_event = true;
    if (u->state == U_TLS) {
        handshake(u);
    } else if (u->state == U_READY && u->x) {
        read_response(u);
        if (!u->doomed && u->x && u->wev_on == false && u->state == U_READY) {
            /* TLS may have needed this read to make writing possible again. */
            if (!write_some(u))
                fail(u, GW_ERR_UPSTREAM_PROTOCOL, "connection closed while sending the request");
            else
                report_drained(u);
        }
    } else if (u->state == U_READY) {
        /* Idle: the server closed the connection, or sent bytes nobody asked for. */
        char b[512];
        ssize_t n = sio_read(&u->io, b, sizeof(b));
        if (n != SIO_WANT_READ && n != SIO_WANT_WRITE)
            fail(u, GW_ERR_UPSTREAM_PROTOCOL,
                 n > 0 ? "unexpected bytes on an idle connection" : "closed by the server");
    }
    finish_event(u);
}

/* ---- API ---- */

struct upconn *upconn_new(struct event_base *base, int fd, SSL *ssl, bool connecting,
                          const struct upconn_cb *cb, void *arg)
{
    struct upconn *u = calloc(1, sizeof(*u));
    if (!u) {
        if (ssl)
            SSL_free(ssl);
        close(fd);
        return NULL;
    }
    u->base = base;
    u->io.fd = fd;
    u->io.ssl = ssl;
    u->cb = cb;
    u->arg = arg;
    event_assign(&u->rev, base, fd, EV_READ | EV_PERSIST, on_read, u);
    event_assign(&u->wev, base, fd, EV_WRITE | EV_PERSIST, on_write, u);
    if (ssl) {
        SSL_set_mode(ssl, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER |
                              SSL_MODE_RELEASE_BUFFERS);
        SSL_set_connect_state(ssl);
    }
    if (connecting) {
        u->state = U_CONNECTING;
        wev_set(u, true);
    } else {
        /* Already connected (tests, socketpairs): go on from the loop, never from here. */
        u->state = U_CONNECTING;
        event_active(&u->wev, EV_WRITE, 0);
        u->wev_on = false;
    }
    return u;
}

void upconn_set_owner(struct upconn *u, const struct upconn_cb *cb, void *arg)
{
    u->cb = cb;
    u->arg = arg;
}

void upconn_start(struct upconn *u, struct upx *x)
{
    u->x = x;
    u->nreq++;
    u->head_done = false;
    u->read_paused = false;
    if (u->state != U_READY)
        return; /* written once ready */
    if (!write_some(u)) {
        /* Report from the loop: the connection broke before anything could be said. */
        rev_set(u, false);
        wev_set(u, true);
    }
}

void upconn_kick(struct upconn *u)
{
    if (u->state == U_READY && u->x && !u->wev_on && !write_some(u))
        wev_set(u, true); /* the failure shows on the next write attempt */
    if (u->state == U_READY && u->x && u->x->waiting && u->x->body.bytes < LOW_WATER && !u->wev_on)
        event_active(&u->wev, EV_WRITE, 0); /* written at once: say so from the loop */
}

void upconn_pause_read(struct upconn *u)
{
    u->read_paused = true;
    rev_set(u, false);
}

void upconn_resume_read(struct upconn *u)
{
    if (!u->read_paused)
        return;
    u->read_paused = false;
    rev_set(u, true);
    if (u->rb && u->rb->len > u->pos)
        event_active(&u->rev, EV_READ, 0); /* parse what is buffered */
}

bool upconn_tcp_up(const struct upconn *u)
{
    return u->state != U_CONNECTING;
}

bool upconn_ready(const struct upconn *u)
{
    return u->state == U_READY;
}

unsigned upconn_requests(const struct upconn *u)
{
    return u->nreq;
}

SSL *upconn_ssl(const struct upconn *u)
{
    return u->io.ssl;
}

void upconn_free(struct upconn *u)
{
    if (!u || u->doomed)
        return;
    event_del(&u->rev);
    event_del(&u->wev);
    if (u->io.ssl)
        SSL_free(u->io.ssl);
    u->io.ssl = NULL;
    if (u->io.fd >= 0)
        close(u->io.fd);
    u->io.fd = -1;
    free(u->rb);
    u->rb = NULL;
    u->x = NULL;
    u->doomed = true;
    if (!u->in_event)
        free(u);
}
