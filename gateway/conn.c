/*
 * conn: bots' connections on the gateway's own HTTP/1.1 layer (see conn.h).
 *
 * States of a connection:
 *
 *   TLS     handshake with the bot (TLS listeners only)
 *   IDLE    between requests; the keep-alive timer runs; no buffer unless bytes are pending
 *   HEAD    bytes of a head arrived; the head deadline runs from the first of them
 *   ACTIVE  a head was handed over; the request may ask for its body (the body deadline runs
 *           while it waits for bytes) and sends its reply; bytes that arrive meanwhile are
 *           kept (the next pipelined request) and a close is noticed
 *   FLUSH   the reply is complete but not all written; the send timer runs
 *   LINGER  after the last reply: write side shut, reading and dropping until the bot closes
 *           (so it sees the reply instead of a reset)
 *
 * The read buffer (struct rbuf) holds unconsumed bytes from c->pos on, the current head
 * included, and the parser and head structs of the message under way; it exists from a head's
 * first byte to the end of its body (and while bytes wait), is compacted after every read and
 * goes back to a small per-server cache when no longer needed. The write event exists only
 * while a reply waits for the socket. So an idle keep-alive connection costs the struct conn
 * with its read and timer events, about 0.5 KiB.
 *
 * Freeing. Calls from the request (conn_send, conn_abort, conn_read_body, ...) never free
 * the connection: a connection that must close is marked dead and its timer event activated,
 * and the close happens at the top of a loop callback. Every loop callback ends by closing a
 * dead connection, after which nothing touches it.
 */
#include "conn.h"

#include <arpa/inet.h>
#include <errno.h>
#include <event2/event.h>
#include <event2/event_struct.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/queue.h>
#include <sys/socket.h>
#include <unistd.h>

#include "buf.h"
#include "log.h"
#include "sio.h"
#include "stats.h"
#include "util.h"

#define RB_INITIAL 4096        /* a typical SDK request fits */
#define RB_BODY_ROOM 16384     /* room past the largest head for body bytes */
#define RB_CACHE 64            /* empty buffers kept per server */
#define HIGH_WATER (64 * 1024) /* reply bytes queued before a streaming source must wait */
#define LOW_WATER (16 * 1024)
#define LINGER_MS 2000
#define ACCEPT_BATCH 64
#define ACCEPT_RETRY_MS 100
#define BODY_FEED 16384 /* body bytes given to the parser per step: a pause takes effect soon */
#define MAX_IOV 64

enum cstate { C_TLS, C_IDLE, C_HEAD, C_ACTIVE, C_FLUSH, C_LINGER };

struct rbuf {
    struct rbuf *next; /* in the server's cache */
    size_t len, cap;
    struct http1_parser parser; /* the message under way */
    struct http1_head head;
    char data[];
};

struct conn {
    TAILQ_ENTRY(conn) link;
    struct conn_server *srv;
    struct sio io;
    struct event rev, timer;
    struct event *wev; /* only while a reply waits for the socket */
    enum cstate state;
    struct rbuf *rb;
    size_t pos; /* first unconsumed byte in rb (a head being parsed starts here) */
    struct outq out;
    const struct conn_sink *sink;
    void *sink_arg;
    uint64_t t_head_us;        /* first byte of the head being parsed (monotonic us) */
    uint64_t body_deadline_ms; /* while the body is asked for and not paused */
    uint64_t body_left_ms;     /* while paused */
    struct conn_addr peer;
    unsigned rev_on : 1, wev_on : 1;
    unsigned want_body : 1, body_paused : 1, body_done : 1, body_stop : 1, has_body : 1;
    unsigned expect_continue : 1, sent_continue : 1, keep_alive : 1;
    unsigned reply_done : 1, close_after : 1, above_high : 1;
    unsigned in_process : 1, dead : 1, peer_eof : 1;
};

struct conn_server {
    struct event_base *base;
    int lfd;
    struct event accept_ev, accept_timer;
    bool accept_on, accept_waiting, draining;
    struct conn_limits lim;
    SSL_CTX *tls;
    conn_request_fn fn;
    void *arg;
    struct gw_stats *stats;
    TAILQ_HEAD(, conn) conns;
    unsigned nconns;
    struct rbuf *rb_cache;
    unsigned rb_cached;
    uint64_t last_warn_ms;
};

static void conn_close(struct conn *c);
static void conn_process(struct conn *c);
static void timer_update(struct conn *c);
static void accept_resume(struct conn_server *srv);

/* ---- buffers ---- */

static struct rbuf *rbuf_get(struct conn_server *srv)
{
    struct rbuf *rb = srv->rb_cache;
    if (rb) {
        srv->rb_cache = rb->next;
        srv->rb_cached--;
    } else {
        rb = malloc(sizeof(*rb) + RB_INITIAL);
        if (!rb)
            return NULL;
        rb->cap = RB_INITIAL;
    }
    rb->next = NULL;
    rb->len = 0;
    return rb;
}

static void rbuf_put(struct conn_server *srv, struct rbuf *rb)
{
    if (!rb)
        return;
    if (rb->cap == RB_INITIAL && srv->rb_cached < RB_CACHE) {
        rb->next = srv->rb_cache;
        srv->rb_cache = rb;
        srv->rb_cached++;
    } else {
        free(rb);
    }
}

/* Make the buffer at least CAP bytes; the head struct moves with it. */
static int rbuf_grow(struct conn *c, size_t cap)
{
    struct rbuf *rb = realloc(c->rb, sizeof(*rb) + cap);
    if (!rb)
        return -1;
    rb->cap = cap;
    c->rb = rb;
    http1_rebind(&rb->parser, &rb->head);
    return 0;
}

/* Is a message under way whose parser lives in the buffer? */
static bool mid_message(const struct conn *c)
{
    return c->state == C_HEAD || (c->state == C_ACTIVE && c->has_body && !c->body_done);
}

/* Drop consumed bytes; give an empty buffer back once no message needs its parser. */
static void rbuf_compact(struct conn *c)
{
    struct rbuf *rb = c->rb;
    if (!rb || c->in_process)
        return;
    if (c->pos > 0) {
        memmove(rb->data, rb->data + c->pos, rb->len - c->pos);
        rb->len -= c->pos;
        c->pos = 0;
    }
    if (rb->len == 0 && !mid_message(c)) {
        rbuf_put(c->srv, rb);
        c->rb = NULL;
    }
}

/* ---- events and timers ---- */

static void rev_set(struct conn *c, bool on)
{
    if (on && !c->rev_on && !c->dead)
        event_add(&c->rev, NULL);
    else if (!on && c->rev_on)
        event_del(&c->rev);
    c->rev_on = on && !c->dead;
}

static void on_write(evutil_socket_t fd, short what, void *arg);
static void mark_dead(struct conn *c);

static void wev_set(struct conn *c, bool on)
{
    if (on && !c->wev_on && !c->dead) {
        if (!c->wev)
            c->wev = event_new(c->srv->base, c->io.fd, EV_WRITE | EV_PERSIST, on_write, c);
        if (!c->wev || event_add(c->wev, NULL) != 0) {
            c->wev_on = false;
            mark_dead(c);
            return;
        }
    } else if (!on && c->wev_on) {
        event_del(c->wev);
    }
    c->wev_on = on && !c->dead;
}

/* Between requests the write event is not kept. */
static void wev_release(struct conn *c)
{
    if (c->wev && !c->wev_on) {
        event_free(c->wev);
        c->wev = NULL;
    }
}

static void timer_in(struct conn *c, uint64_t ms)
{
    struct timeval tv = {.tv_sec = (time_t)(ms / 1000), .tv_usec = (suseconds_t)(ms % 1000) * 1000};
    evtimer_add(&c->timer, &tv);
}

static uint64_t left(uint64_t deadline, uint64_t now)
{
    return deadline > now ? deadline - now : 0;
}

/* Arm the one timer for what the connection waits for now. */
static void timer_update(struct conn *c)
{
    if (c->dead)
        return;
    const struct conn_limits *lim = &c->srv->lim;
    uint64_t now = util_now_ms();
    switch (c->state) {
    case C_TLS:
        timer_in(c, lim->header_timeout_ms);
        return;
    case C_IDLE:
        timer_in(c, lim->idle_timeout_ms);
        return;
    case C_HEAD:
        timer_in(c, left(c->t_head_us / 1000 + lim->header_timeout_ms, now));
        return;
    case C_ACTIVE:
        if (c->want_body && !c->body_done && !c->body_paused)
            timer_in(c, left(c->body_deadline_ms, now));
        else if (c->out.bytes > 0)
            timer_in(c, lim->send_timeout_ms);
        else
            evtimer_del(&c->timer);
        return;
    case C_FLUSH:
        timer_in(c, lim->send_timeout_ms);
        return;
    case C_LINGER:
        timer_in(c, LINGER_MS);
        return;
    }
}

/* Close from the loop, soon: used where the caller may still hold C. */
static void mark_dead(struct conn *c)
{
    if (c->dead)
        return;
    c->dead = 1;
    outq_clear(&c->out);
    event_active(&c->timer, EV_TIMEOUT, 0);
}

/* ---- replies ---- */

static void start_linger(struct conn *c)
{
    c->state = C_LINGER;
    if (c->peer_eof) {
        mark_dead(c);
        return;
    }
    if (c->io.ssl)
        SSL_shutdown(c->io.ssl); /* close_notify, best effort */
    shutdown(c->io.fd, SHUT_WR);
    if (c->rb) {
        rbuf_put(c->srv, c->rb);
        c->rb = NULL;
        c->pos = 0;
    }
    wev_set(c, false);
    rev_set(c, true);
    timer_update(c);
}

/* The reply is complete and written: next request, or close. */
static void finish_reply(struct conn *c)
{
    if (c->close_after || c->srv->draining || c->peer_eof) {
        start_linger(c);
        return;
    }
    c->state = C_IDLE;
    c->want_body = c->body_paused = c->body_done = c->body_stop = 0;
    c->sent_continue = c->reply_done = 0;
    wev_release(c);
    timer_update(c);
    rev_set(c, true);
    if (c->rb && c->rb->len > c->pos && !c->in_process)
        event_active(&c->rev, EV_READ, 0); /* a pipelined request is waiting */
}

/* Write what the queue holds. Returns false when the connection broke. */
static bool flush(struct conn *c)
{
    struct iovec iov[MAX_IOV];
    while (c->out.bytes > 0) {
        int n = outq_iov(&c->out, iov, MAX_IOV);
        ssize_t w = sio_writev(&c->io, iov, n);
        if (w > 0) {
            outq_consume(&c->out, (size_t)w);
            continue;
        }
        if (w == SIO_WANT_WRITE || w == SIO_WANT_READ)
            break;
        return false;
    }
    return true;
}

int conn_send(struct conn *c, const struct iovec *iov, int n, unsigned flags)
{
    if (!c->dead) {
        struct iovec local[MAX_IOV];
        struct iovec *v = local;
        int nv = n < MAX_IOV ? n : MAX_IOV;
        memcpy(local, iov, sizeof(*iov) * (size_t)nv);
        if (c->out.bytes == 0) {
            while (nv > 0) {
                ssize_t w = sio_writev(&c->io, v, nv);
                if (w > 0) {
                    iov_advance(&v, &nv, (size_t)w);
                    continue;
                }
                if (w == SIO_ERROR)
                    mark_dead(c);
                break;
            }
        }
        if (!c->dead && nv > 0) {
            if (outq_addv(&c->out, v, nv) != 0) {
                mark_dead(c);
            } else {
                wev_set(c, true);
            }
        }
    }
    if (flags & CONN_END) {
        c->sink = NULL;
        c->sink_arg = NULL;
        c->want_body = 0;
        c->reply_done = 1;
        if ((flags & CONN_CLOSE) || !c->keep_alive || (c->has_body && !c->body_done))
            c->close_after = 1;
        if (c->dead)
            return 0;
        if (c->out.bytes == 0) {
            finish_reply(c);
        } else {
            c->state = C_FLUSH;
            timer_update(c);
        }
        return 0;
    }
    if (c->dead)
        return 0;
    if (c->out.bytes > 0)
        timer_update(c);
    if (c->out.bytes > HIGH_WATER) {
        c->above_high = 1;
        return 1;
    }
    return 0;
}

void conn_abort(struct conn *c)
{
    c->sink = NULL;
    c->sink_arg = NULL;
    mark_dead(c);
}

bool conn_must_close(const struct conn *c)
{
    return c->close_after || !c->keep_alive || (c->has_body && !c->body_done) || c->srv->draining ||
           c->peer_eof;
}

uint64_t conn_head_started(const struct conn *c)
{
    return c->t_head_us / 1000;
}

uint64_t conn_head_started_us(const struct conn *c)
{
    return c->t_head_us;
}

void conn_peer_addr(const struct conn *c, struct conn_addr *out)
{
    *out = c->peer;
}

const char *conn_addr_str(const struct conn_addr *a, char *buf, size_t len)
{
    if (a->u.sa.sa_family != AF_INET && a->u.sa.sa_family != AF_INET6) {
        snprintf(buf, len, "local");
        return buf;
    }
    const void *p = a->u.sa.sa_family == AF_INET6 ? (const void *)&a->u.in6.sin6_addr
                                                  : (const void *)&a->u.in.sin_addr;
    if (!inet_ntop(a->u.sa.sa_family, p, buf, (socklen_t)len))
        snprintf(buf, len, "unknown");
    return buf;
}

/* ---- body ---- */

void conn_attach(struct conn *c, const struct conn_sink *sink, void *arg)
{
    c->sink = sink;
    c->sink_arg = arg;
}

void conn_read_body(struct conn *c)
{
    if (c->dead || c->state != C_ACTIVE || c->body_done || c->reply_done)
        return;
    if (!c->want_body) {
        c->want_body = 1;
        c->body_deadline_ms = util_now_ms() + c->srv->lim.body_timeout_ms;
        bool body_waiting = c->rb && c->rb->len > c->pos;
        if (c->expect_continue && !c->sent_continue && !body_waiting) {
            static const char cont[] = "HTTP/1.1 100 Continue\r\n\r\n";
            struct iovec v = {(void *)cont, sizeof(cont) - 1};
            c->sent_continue = 1;
            conn_send(c, &v, 1, 0);
        }
    } else if (c->body_paused) {
        c->body_paused = 0;
        c->body_deadline_ms = util_now_ms() + c->body_left_ms;
    } else {
        return;
    }
    timer_update(c);
    rev_set(c, true);
    if (!c->in_process && c->rb && c->rb->len > c->pos)
        event_active(&c->rev, EV_READ, 0);
}

void conn_pause_body(struct conn *c)
{
    if (!c->want_body || c->body_paused || c->body_done)
        return;
    c->body_paused = 1;
    c->body_left_ms = left(c->body_deadline_ms, util_now_ms());
    timer_update(c);
}

static int deliver_body(void *arg, const char *data, size_t len)
{
    struct conn *c = arg;
    if (!c->sink || c->sink->body(c->sink_arg, data, len) != 0) {
        c->body_stop = 1;
        return -1;
    }
    return 0;
}

/* ---- parsing ---- */

/* A head was refused (or timed out): the request function answers it, then the connection
 * closes. */
static void head_refused(struct conn *c, enum gw_err err, const char *why)
{
    c->state = C_ACTIVE;
    c->has_body = 0;
    c->body_done = 1;
    c->keep_alive = 0;
    c->close_after = 1;
    c->reply_done = 0;
    evtimer_del(&c->timer);
    c->srv->fn(c->srv->arg, c, NULL, NULL, err, why);
    if (c->state == C_ACTIVE && !c->reply_done)
        mark_dead(c); /* not answered: nothing else to do */
}

static void conn_process(struct conn *c)
{
    c->in_process = 1;
    while (!c->dead) {
        struct rbuf *rb = c->rb;
        if (c->state == C_IDLE || c->state == C_HEAD) {
            size_t avail = rb ? rb->len - c->pos : 0;
            if (avail == 0)
                break;
            if (c->state == C_IDLE) {
                c->state = C_HEAD;
                c->t_head_us = util_now_us();
                http1_init(&rb->parser, HTTP1_REQUEST, &rb->head, c->srv->lim.max_header_size);
                timer_update(c);
            }
            enum http1_rc rc = http1_parse_head(&rb->parser, rb->data + c->pos, avail);
            if (rc == HTTP1_AGAIN)
                break;
            if (rc == HTTP1_ERROR) {
                head_refused(c, rb->parser.err, rb->parser.why);
                continue;
            }
            const char *hbuf = rb->data + c->pos;
            struct http1_head *h = &rb->head;
            c->pos += h->len;
            c->state = C_ACTIVE;
            c->has_body = h->body != HTTP1_BODY_NONE;
            c->body_done = !c->has_body;
            c->keep_alive = h->keep_alive;
            c->expect_continue = h->expect_continue;
            c->want_body = c->body_paused = c->body_stop = c->sent_continue = 0;
            c->reply_done = c->close_after = 0;
            evtimer_del(&c->timer);
            c->srv->fn(c->srv->arg, c, h, hbuf, GW_ERR_INTERNAL, NULL);
            if (c->state == C_ACTIVE && !c->sink && !c->reply_done)
                mark_dead(c); /* the request could not even be taken on */
            continue;
        }
        if (c->state == C_ACTIVE && c->want_body && !c->body_done && !c->body_paused) {
            size_t avail = rb ? rb->len - c->pos : 0;
            if (avail == 0)
                break;
            size_t feed = avail < BODY_FEED ? avail : BODY_FEED, used = 0;
            enum http1_rc rc =
                http1_parse_body(&rb->parser, rb->data + c->pos, feed, &used, deliver_body, c);
            if (rc == HTTP1_ERROR) {
                c->want_body = 0;
                if (!c->body_stop && c->sink)
                    c->sink->body_error(c->sink_arg, rb->parser.err, rb->parser.why);
                continue;
            }
            c->pos += rc == HTTP1_AGAIN ? feed : used;
            if (rc == HTTP1_DONE) {
                c->body_done = 1;
                c->want_body = 0;
                timer_update(c);
                if (c->sink)
                    c->sink->body_end(c->sink_arg);
            }
            continue;
        }
        break;
    }
    c->in_process = 0;
}

/* ---- loop callbacks ---- */

static void peer_closed(struct conn *c)
{
    c->peer_eof = 1;
    switch (c->state) {
    case C_HEAD:
        STAT_INC(c->srv->stats, clients_closed);
        mark_dead(c);
        break;
    case C_ACTIVE:
        STAT_INC(c->srv->stats, clients_closed);
        mark_dead(c); /* conn_close tells the request */
        break;
    case C_FLUSH:
        rev_set(c, false); /* half-closed: the bot may still read the rest of the reply */
        break;
    default:
        mark_dead(c);
        break;
    }
}

static void handshake(struct conn *c)
{
    int r = sio_handshake(&c->io);
    if (r == 1) {
        c->state = C_IDLE;
        wev_set(c, false);
        rev_set(c, true);
        timer_update(c);
        event_active(&c->rev, EV_READ, 0); /* TLS may hold the first request already */
    } else if (r == SIO_WANT_READ) {
        wev_set(c, false);
        rev_set(c, true);
    } else if (r == SIO_WANT_WRITE) {
        wev_set(c, true);
    } else {
        mark_dead(c);
    }
}

static void linger_read(struct conn *c)
{
    char drop[4096];
    for (int i = 0; i < 16; i++) {
        ssize_t n = read(c->io.fd, drop, sizeof(drop));
        if (n > 0)
            continue;
        if (n < 0 && (errno == EAGAIN || errno == EINTR))
            return;
        mark_dead(c);
        return;
    }
}

static void on_read(evutil_socket_t fd, short what, void *arg)
{
    struct conn *c = arg;
    if (c->dead) {
        conn_close(c);
        return;
    }
    if (c->state == C_TLS) {
        handshake(c);
    } else if (c->state == C_LINGER) {
        linger_read(c);
    } else {
        if (!c->rb) {
            c->rb = rbuf_get(c->srv);
            c->pos = 0;
            if (!c->rb) {
                mark_dead(c);
                goto out;
            }
        }
        struct rbuf *rb = c->rb;
        if (rb->len == rb->cap) {
            size_t max = c->srv->lim.max_header_size + RB_BODY_ROOM;
            bool may_grow = c->state == C_IDLE || c->state == C_HEAD ||
                            (c->state == C_ACTIVE && c->want_body && !c->body_paused);
            if (!may_grow || rb->cap >= max || rbuf_grow(c, rb->cap * 2 < max ? rb->cap * 2 : max))
                rev_set(c, false); /* full: read again once bytes are consumed */
            rb = c->rb;
        }
        if (rb->len < rb->cap) {
            ssize_t n = sio_read(&c->io, rb->data + rb->len, rb->cap - rb->len);
            if (n > 0)
                rb->len += (size_t)n;
            else if (n == 0 || n == SIO_ERROR)
                peer_closed(c);
            else if (n == SIO_WANT_WRITE)
                wev_set(c, true);
        }
        if (!c->dead)
            conn_process(c);
        if (!c->dead) {
            rbuf_compact(c);
            if (!c->rev_on && !c->peer_eof && (!c->rb || c->rb->len < c->rb->cap))
                rev_set(c, true);
            if (c->rev_on && sio_pending(&c->io))
                event_active(&c->rev, EV_READ, 0); /* TLS holds more: no socket event */
        }
    }
out:
    if (c->dead)
        conn_close(c);
}

static void on_write(evutil_socket_t fd, short what, void *arg)
{
    struct conn *c = arg; /* the write event exists only while needed (wev_set) */
    if (c->dead) {
        conn_close(c);
        return;
    }
    if (c->state == C_TLS) {
        handshake(c);
    } else if (!flush(c)) {
        mark_dead(c);
    } else if (c->out.bytes == 0) {
        wev_set(c, false);
        if (c->state == C_FLUSH) {
            finish_reply(c);
        } else {
            timer_update(c);
            if (c->sink && c->above_high && c->sink->drained) {
                c->above_high = 0;
                c->sink->drained(c->sink_arg);
            }
        }
    } else {
        timer_update(c); /* progress: the send timer starts over */
        if (c->sink && c->above_high && c->out.bytes < LOW_WATER && c->sink->drained) {
            c->above_high = 0;
            c->sink->drained(c->sink_arg);
        }
    }
    if (c->dead)
        conn_close(c);
}

static void on_timer(evutil_socket_t fd, short what, void *arg)
{
    struct conn *c = arg;
    if (!c->dead) {
        switch (c->state) {
        case C_HEAD:
            head_refused(c, GW_ERR_CLIENT_TIMEOUT,
                         "the request head did not arrive in time (client_header_timeout)");
            break;
        case C_ACTIVE:
            if (c->want_body && !c->body_done && !c->body_paused && c->sink) {
                c->want_body = 0;
                c->sink->body_error(c->sink_arg, GW_ERR_CLIENT_TIMEOUT,
                                    "the request body did not arrive in time "
                                    "(client_body_timeout)");
            } else if (c->out.bytes > 0) {
                mark_dead(c); /* the bot does not read its reply */
            }
            break;
        default: /* TLS handshake, keep-alive, send and linger timeouts */
            mark_dead(c);
            break;
        }
    }
    if (c->dead)
        conn_close(c);
}

/* ---- connections ---- */

static void conn_close(struct conn *c)
{
    struct conn_server *srv = c->srv;
    if (c->sink) {
        const struct conn_sink *s = c->sink;
        void *a = c->sink_arg;
        c->sink = NULL;
        s->gone(a);
    }
    event_del(&c->rev);
    if (c->wev)
        event_free(c->wev);
    event_del(&c->timer);
    if (c->io.ssl)
        SSL_free(c->io.ssl);
    close(c->io.fd);
    outq_clear(&c->out);
    rbuf_put(srv, c->rb);
    TAILQ_REMOVE(&srv->conns, c, link);
    srv->nconns--;
    STAT_DEC(srv->stats, connections_open);
    free(c);
    accept_resume(srv);
}

static void conn_new(struct conn_server *srv, int fd, const struct conn_addr *peer)
{
    struct conn *c = calloc(1, sizeof(*c));
    if (!c) {
        close(fd);
        return;
    }
    c->srv = srv;
    c->io.fd = fd;
    c->peer = *peer;
    c->state = C_IDLE;
    event_assign(&c->rev, srv->base, fd, EV_READ | EV_PERSIST, on_read, c);
    evtimer_assign(&c->timer, srv->base, on_timer, c);
    if (srv->tls) {
        c->io.ssl = SSL_new(srv->tls);
        if (!c->io.ssl || SSL_set_fd(c->io.ssl, fd) != 1) {
            if (c->io.ssl)
                SSL_free(c->io.ssl);
            close(fd);
            free(c);
            return;
        }
        SSL_set_mode(c->io.ssl, SSL_MODE_ENABLE_PARTIAL_WRITE |
                                    SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER | SSL_MODE_RELEASE_BUFFERS);
        SSL_set_accept_state(c->io.ssl);
        c->state = C_TLS;
    }
    TAILQ_INSERT_TAIL(&srv->conns, c, link);
    srv->nconns++;
    STAT_INC(srv->stats, connections_open);
    STAT_INC(srv->stats, connections_accepted);
    rev_set(c, true);
    timer_update(c);
}

/* ---- accepting ---- */

static void accept_pause(struct conn_server *srv, bool retry_later)
{
    if (srv->accept_on) {
        event_del(&srv->accept_ev);
        srv->accept_on = false;
        STAT_INC(srv->stats, accept_paused);
    }
    if (retry_later && !srv->accept_waiting) {
        struct timeval tv = {0, ACCEPT_RETRY_MS * 1000};
        evtimer_add(&srv->accept_timer, &tv);
        srv->accept_waiting = true;
    }
}

static void accept_resume(struct conn_server *srv)
{
    if (srv->accept_on || srv->accept_waiting || srv->draining || srv->lfd < 0 ||
        srv->nconns >= srv->lim.max_connections)
        return;
    event_add(&srv->accept_ev, NULL);
    srv->accept_on = true;
}

static void accept_timer_cb(evutil_socket_t fd, short what, void *arg)
{
    struct conn_server *srv = arg;
    srv->accept_waiting = false;
    accept_resume(srv);
}

/* At most one warning a second, so a flood cannot flood the log. */
static bool warn_now(struct conn_server *srv)
{
    uint64_t now = util_now_ms();
    if (now - srv->last_warn_ms < 1000)
        return false;
    srv->last_warn_ms = now;
    return true;
}

static void on_accept(evutil_socket_t lfd, short what, void *arg)
{
    struct conn_server *srv = arg;
    for (int i = 0; i < ACCEPT_BATCH; i++) {
        if (srv->nconns >= srv->lim.max_connections) {
            if (warn_now(srv))
                log_warn("connection limit reached; not accepting until one closes",
                         "\"connections\":%u", srv->nconns);
            accept_pause(srv, false);
            return;
        }
        struct conn_addr peer;
        socklen_t plen = sizeof(peer);
        int fd = accept4(lfd, &peer.u.sa, &plen, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
            int e = errno;
            if (e == EINTR || e == ECONNABORTED || e == EPROTO)
                continue;
            if (e == EAGAIN || e == EWOULDBLOCK)
                return;
            STAT_INC(srv->stats, accept_errors);
            if (warn_now(srv))
                log_warn("accept failed; pausing accepting briefly",
                         "\"reason\":\"%s\",\"connections\":%u,\"retry_ms\":%d", strerror(e),
                         srv->nconns, ACCEPT_RETRY_MS);
            accept_pause(srv, true);
            return;
        }
        conn_new(srv, fd, &peer);
    }
}

void conn_server_set_limits(struct conn_server *srv, const struct conn_limits *lim)
{
    uint32_t max = srv->lim.max_connections;
    srv->lim = *lim;
    srv->lim.max_connections = max;
}

struct conn_server *conn_server_new(struct event_base *base, int fd, const struct conn_limits *lim,
                                    SSL_CTX *tls, conn_request_fn fn, void *arg,
                                    struct gw_stats *stats, char *errbuf, size_t errlen)
{
    struct conn_server *srv = calloc(1, sizeof(*srv));
    if (!srv) {
        snprintf(errbuf, errlen, "out of memory");
        close(fd);
        return NULL;
    }
    srv->base = base;
    srv->lfd = fd;
    srv->lim = *lim;
    if (srv->lim.max_connections == 0)
        srv->lim.max_connections = 1;
    srv->tls = tls;
    srv->fn = fn;
    srv->arg = arg;
    srv->stats = stats;
    TAILQ_INIT(&srv->conns);
    event_assign(&srv->accept_ev, base, fd, EV_READ | EV_PERSIST, on_accept, srv);
    evtimer_assign(&srv->accept_timer, base, accept_timer_cb, srv);
    if (fd >= 0)
        accept_resume(srv);
    return srv;
}

void conn_server_adopt(struct conn_server *srv, int fd)
{
    struct conn_addr peer;
    memset(&peer, 0, sizeof(peer));
    socklen_t plen = sizeof(peer);
    if (getpeername(fd, &peer.u.sa, &plen) != 0)
        peer.u.sa.sa_family = AF_UNSPEC;
    conn_new(srv, fd, &peer);
}

void conn_server_drain(struct conn_server *srv)
{
    if (srv->draining)
        return;
    srv->draining = true;
    if (srv->accept_on)
        event_del(&srv->accept_ev);
    srv->accept_on = false;
    evtimer_del(&srv->accept_timer);
    if (srv->lfd >= 0) {
        close(srv->lfd);
        srv->lfd = -1;
    }
    struct conn *c, *next;
    for (c = TAILQ_FIRST(&srv->conns); c; c = next) {
        next = TAILQ_NEXT(c, link);
        bool idle = (c->state == C_IDLE && (!c->rb || c->rb->len == c->pos)) || c->state == C_TLS;
        if (idle)
            conn_close(c);
    }
}

unsigned conn_server_count(const struct conn_server *srv)
{
    return srv->nconns;
}

unsigned conn_server_busy(const struct conn_server *srv)
{
    unsigned n = 0;
    const struct conn *c;
    TAILQ_FOREACH(c, &srv->conns, link)
    n += c->state == C_HEAD || c->state == C_ACTIVE || c->state == C_FLUSH;
    return n;
}

void conn_server_free(struct conn_server *srv)
{
    if (!srv)
        return;
    struct conn *c;
    while ((c = TAILQ_FIRST(&srv->conns)) != NULL)
        conn_close(c);
    if (srv->accept_on)
        event_del(&srv->accept_ev);
    evtimer_del(&srv->accept_timer);
    if (srv->lfd >= 0)
        close(srv->lfd);
    struct rbuf *rb;
    while ((rb = srv->rb_cache) != NULL) {
        srv->rb_cache = rb->next;
        free(rb);
    }
    free(srv);
}
