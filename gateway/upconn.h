/*
 * upconn: one client connection to the upstream, the gateway's own: a non-blocking connect,
 * OpenSSL driven directly (SSL_ERROR_WANT_* mapped to events), requests written
 * optimistically, responses parsed in place by http1.c (Content-Length, chunked,
 * close-delimited) and handed on as they arrive.
 *
 * A connection carries one exchange at a time (struct upx, owned by the caller). It reports to
 * one owner at a time through struct upconn_cb: the pool while it is idle, the call while it
 * carries a request. Callbacks run only from the connection's own events, never inside an
 * upconn_* call.
 *
 * The exchange's request bytes leave struct upx only as the kernel takes them (iov_sent, the
 * body queue), so after a failure with x->sent == 0 the same upx can be started again on a
 * fresh connection: that is how "retry only if not a byte was written" is implemented.
 */
#ifndef GW_UPCONN_H
#define GW_UPCONN_H

#include <openssl/ssl.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/uio.h>

#include "buf.h"
#include "errors.h"
#include "http1.h"

struct event_base;
struct upconn;

/* One request going out. Owned by the caller; the connection borrows it between upconn_start
 * and the exchange's end (done/failed) or upconn_free. */
struct upx {
    const struct iovec *iov; /* head, and the whole body when it is known: borrowed */
    int niov;
    size_t iov_sent;   /* bytes of iov written */
    struct outq body;  /* streamed body bytes not yet written */
    bool body_end;     /* no more body bytes will come (always true without streaming) */
    bool head_request; /* HEAD: the response has no body */
    bool waiting;      /* the body's sender was told to wait: report drained */
    uint64_t sent;     /* request bytes the kernel took; > 0 forbids a retry */
};

struct upconn_cb {
    void (*connected)(void *arg); /* TCP is up (a TLS handshake follows) */
    void (*ready)(void *arg);     /* ready to carry requests (handshake done) */
    /* The response head (HBUF valid during the call). */
    void (*head)(void *arg, const struct http1_head *h, const char *hbuf);
    /* Response body bytes; return 1 to pause reading (upconn_resume_read continues). */
    int (*body)(void *arg, const char *data, size_t len);
    /* The response is complete; KEEP_ALIVE: the connection may carry another request. */
    void (*done)(void *arg, bool keep_alive);
    /* The connection failed (or, idle, was closed by the server): it is unusable. */
    void (*failed)(void *arg, enum gw_err err, const char *detail);
    /* The body queue of the exchange fell below the low watermark (may be NULL). */
    void (*drained)(void *arg);
};

/*
 * Take over FD (a non-blocking socket; CONNECTING: connect() returned EINPROGRESS) and SSL (a
 * client session on FD, or NULL for plain HTTP; taken over). Reports to CB/ARG. NULL when out
 * of memory (FD and SSL are then closed and freed).
 */
struct upconn *upconn_new(struct event_base *base, int fd, SSL *ssl, bool connecting,
                          const struct upconn_cb *cb, void *arg);

/* Report to CB/ARG from now on. */
void upconn_set_owner(struct upconn *u, const struct upconn_cb *cb, void *arg);

/* Carry X: its bytes are written as soon as the connection is ready. */
void upconn_start(struct upconn *u, struct upx *x);
/* More body bytes were queued on the exchange (or body_end set): write them. */
void upconn_kick(struct upconn *u);

/* Does more than the high watermark wait in X's body queue? Then the sender must wait: X is
 * marked, and drained is called (from the loop) once the queue fell below the low mark. */
bool upx_full(struct upx *x);

/* Stop and resume reading the response (back-pressure towards a slow bot). */
void upconn_pause_read(struct upconn *u);
void upconn_resume_read(struct upconn *u);

bool upconn_tcp_up(const struct upconn *u);
bool upconn_ready(const struct upconn *u);
unsigned upconn_requests(const struct upconn *u); /* exchanges started on it */
SSL *upconn_ssl(const struct upconn *u);

/* Close at once; no callbacks. The exchange, if any, is the caller's to dispose of. */
void upconn_free(struct upconn *u);

#endif
