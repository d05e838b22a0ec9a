/*
 * pool: upstream connections and calls of one worker thread for one host (see pool.h).
 *
 * Ownership. The pool owns its connections (struct pconn, each owning an upconn) and the FIFO
 * of waiting calls. A call is owned by whoever started it. While a connection carries a call,
 * each points at the other and the upconn reports to the call (call_cb); while idle it
 * reports to the pool (idle_cb).
 *
 * Phases of a call and their deadlines:
 *   QUEUED   waiting for a connection (queue_timeout)
 *   CONNECT  on a new connection, TCP connecting (connect_timeout)
 *   TLS      handshaking (tls_handshake_timeout)
 *   WAIT     request handed to a ready connection, waiting for the response head
 *   BODY     reading the response (response_timeout covers WAIT and each pause between reads)
 *   DONE
 */
#include "pool.h"

#include <arpa/inet.h>
#include <errno.h>
#include <event2/dns.h>
#include <event2/event.h>
#include <event2/event_struct.h>
#include <event2/util.h>
#include <netdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/queue.h>
#include <sys/socket.h>
#include <unistd.h>

#include "buf.h"
#include "log.h"
#include "stats.h"
#include "tls.h"
#include "upconn.h"
#include "util.h"

#define MAX_ADDRS 8
#define ADDR_PENALTY_MS 10000 /* skip an address that refused a connection for this long */
#define MAX_RESPONSE (64 * 1024 * 1024) /* largest response kept whole for the hooks */

enum phase { PH_NEW, PH_QUEUED, PH_CONNECT, PH_TLS, PH_WAIT, PH_BODY, PH_DONE };

struct pconn {
    TAILQ_ENTRY(pconn) link; /* on pool->idle */
    struct pool *pool;
    struct upconn *u;
    struct upstream_call *call; /* carried now, or NULL */
    struct event idle_timer;
    int addr_index;
    bool idle;
};
TAILQ_HEAD(pconn_list, pconn);

struct upstream_call {
    TAILQ_ENTRY(upstream_call) link; /* on pool->waiters while queued */
    struct pool *pool;
    struct pconn *pc;
    struct upstream_request req;
    struct upx x;
    const struct upstream_call_ops *ops;
    void *arg;
    struct event timer;  /* the phase's deadline */
    struct event notify; /* completion found inside upstream_call_start, reported from the loop */
    enum phase phase;
    int attempts;
    bool reused;
    /* result */
    int status;
    enum gw_err err;
    char detail[200];
    char *head;            /* copy of the response head, fields point into it */
    struct hfield *fields; /* in the same allocation */
    unsigned nfields;
    bool chunked, has_length;
    uint64_t length;
    struct bytes body;
};
TAILQ_HEAD(call_list, upstream_call);

struct pool {
    struct event_base *base;
    struct evdns_base *dns;
    SSL_CTX *ssl_ctx;
    const struct config_url *url;
    const struct config *cfg;
    struct gw_stats *stats;
    char name[16];
    char host_header[300];
    struct tls_session_slot session;

    struct sockaddr_storage addrs[MAX_ADDRS];
    socklen_t addrlens[MAX_ADDRS];
    uint64_t addr_down_until[MAX_ADDRS];
    int naddrs;
    int next_addr;
    bool dns_failed;
    char dns_error[128];
    struct evdns_getaddrinfo_request *dns_req;
    struct event dns_timer;

    struct pconn_list idle;
    struct call_list waiters;
    uint32_t nconns, nidle, nwaiting;
    uint32_t ncalls; /* calls alive (started, not yet freed) */
    struct pool_stats st;
    struct gw_pool_gauges *gauges; /* NULL: not published */
};

/* The connection gauges of /metrics (pool_set_gauges), written on every change. */
static void pool_publish(struct pool *p)
{
    if (!p->gauges)
        return;
    atomic_store_explicit(&p->gauges->open, p->nconns, memory_order_relaxed);
    atomic_store_explicit(&p->gauges->idle, p->nidle, memory_order_relaxed);
    atomic_store_explicit(&p->gauges->waiting, p->nwaiting, memory_order_relaxed);
}

static void call_dispatch(struct upstream_call *c, bool fresh_only);
static void call_finish(struct upstream_call *c);
static void pool_pump(struct pool *p);

static void ms_timer(struct event *ev, uint32_t ms)
{
    struct timeval tv = {.tv_sec = ms / 1000, .tv_usec = (suseconds_t)(ms % 1000) * 1000};
    evtimer_add(ev, &tv);
}

static uint32_t pool_max(const struct pool *p)
{
    uint32_t m = p->cfg->upstream.pool_max;
    return m > p->cfg->upstream.pool_size ? m : p->cfg->upstream.pool_size;
}

static uint32_t queue_max(const struct pool *p)
{
    uint32_t q = p->cfg->upstream.queue_size;
    if (q == 0) { /* follows max_connections: every bot of this thread may wait */
        uint32_t t = p->cfg->server.threads > 0 ? (uint32_t)p->cfg->server.threads : 1;
        q = (p->cfg->server.max_connections + t - 1) / t;
    }
    return q;
}

/* ---- connections ---- */

static void pconn_close(struct pconn *pc)
{
    struct pool *p = pc->pool;
    if (pc->idle) {
        TAILQ_REMOVE(&p->idle, pc, link);
        p->nidle--;
        pool_publish(p);
    }
    event_del(&pc->idle_timer);
    upconn_free(pc->u);
    p->nconns--;
    pool_publish(p);
    free(pc);
}

static void idle_failed(void *arg, enum gw_err err, const char *detail)
{
    struct pconn *pc = arg;
    struct pool *p = pc->pool;
    log_debug("pooled connection closed", "\"upstream\":\"%s\",\"reason\":\"%s\"", p->name, detail);
    pconn_close(pc);
    pool_pump(p);
}

static void idle_nothing(void *arg)
{
}

static void idle_head(void *arg, const struct http1_head *h, const char *hbuf)
{
}

static int idle_body(void *arg, const char *data, size_t len)
{
    return 0;
}

static void idle_done(void *arg, bool keep_alive)
{
}

/* An idle connection hears only about its own close. */
static const struct upconn_cb idle_cb = {
    .connected = idle_nothing,
    .ready = idle_nothing,
    .head = idle_head,
    .body = idle_body,
    .done = idle_done,
    .failed = idle_failed,
};

static void idle_timeout_cb(evutil_socket_t fd, short what, void *arg)
{
    struct pconn *pc = arg;
    struct pool *p = pc->pool;
    pconn_close(pc);
    pool_pump(p);
}

static void call_attach(struct upstream_call *c, struct pconn *pc);

/* The call is done with PC: give it to a waiter, keep it idle, or close it. */
static void pconn_release(struct pconn *pc, bool reusable)
{
    struct pool *p = pc->pool;
    pc->call = NULL;
    if (!reusable || upconn_requests(pc->u) >= p->cfg->upstream.max_requests_per_conn) {
        pconn_close(pc);
        pool_pump(p);
        return;
    }
    struct upstream_call *w = TAILQ_FIRST(&p->waiters);
    if (w) {
        TAILQ_REMOVE(&p->waiters, w, link);
        p->nwaiting--;
        pool_publish(p);
        evtimer_del(&w->timer);
        call_attach(w, pc);
        return;
    }
    if (p->nidle >= p->cfg->upstream.pool_size) {
        pconn_close(pc); /* beyond the idle size: opened for a burst, not kept */
        return;
    }
    upconn_set_owner(pc->u, &idle_cb, pc);
    pc->idle = true;
    TAILQ_INSERT_HEAD(&p->idle, pc, link); /* most recently used first */
    p->nidle++;
    pool_publish(p);
    ms_timer(&pc->idle_timer, p->cfg->upstream.idle_timeout_ms);
}

/* ---- calls: the connection reports ---- */

static void set_phase(struct upstream_call *c, enum phase ph)
{
    const struct config *cfg = c->pool->cfg;
    c->phase = ph;
    switch (ph) {
    case PH_QUEUED:
        ms_timer(&c->timer, cfg->upstream.queue_timeout_ms);
        break;
    case PH_CONNECT:
        ms_timer(&c->timer, cfg->upstream.connect_timeout_ms);
        break;
    case PH_TLS:
        ms_timer(&c->timer, cfg->upstream.tls_handshake_timeout_ms);
        break;
    case PH_WAIT:
    case PH_BODY:
        ms_timer(&c->timer, cfg->upstream.response_timeout_ms);
        break;
    default:
        evtimer_del(&c->timer);
        break;
    }
}

static void c_connected(void *arg)
{
    struct upstream_call *c = arg;
    set_phase(c, c->pool->ssl_ctx ? PH_TLS : PH_WAIT);
}

static void c_ready(void *arg)
{
    struct upstream_call *c = arg;
    SSL *ssl = upconn_ssl(c->pc->u);
    if (ssl) {
        if (SSL_session_reused(ssl))
            STAT_INC(c->pool->stats, upstream_tls_resumed);
        else
            STAT_INC(c->pool->stats, upstream_tls_full);
    }
    set_phase(c, PH_WAIT);
}

static void c_head(void *arg, const struct http1_head *h, const char *hbuf)
{
    struct upstream_call *c = arg;
    c->status = h->status;
    c->chunked = h->body == HTTP1_BODY_CHUNKED;
    c->has_length =
        h->body == HTTP1_BODY_LENGTH || (h->body == HTTP1_BODY_NONE && !c->req.head_request);
    c->length = h->content_length;
    free(c->head);
    c->head = malloc(sizeof(struct hfield) * h->nfields + h->len + 1);
    if (c->head) {
        c->fields = (struct hfield *)c->head;
        headers_copy_head(h, hbuf, c->head + sizeof(struct hfield) * h->nfields, c->fields, NULL,
                          NULL);
        c->nfields = h->nfields;
    } else {
        c->fields = NULL;
        c->nfields = 0;
    }
    set_phase(c, PH_BODY);
    if (c->req.stream_response)
        c->ops->head(c->arg);
}

static int c_body(void *arg, const char *data, size_t len)
{
    struct upstream_call *c = arg;
    set_phase(c, PH_BODY); /* progress: the read deadline starts over */
    if (c->req.stream_response)
        return c->ops->body(c->arg, data, len);
    if (c->body.len + len > MAX_RESPONSE || bytes_add(&c->body, data, len) != 0) {
        /* Too large to keep whole: give up the exchange (the connection is closed). */
        c->status = 0;
        c->err = GW_ERR_UPSTREAM_PROTOCOL;
        snprintf(c->detail, sizeof(c->detail), "response too large (over %d bytes)", MAX_RESPONSE);
        struct pconn *pc = c->pc;
        c->pc = NULL;
        pconn_close(pc); /* the connection is in its callback: it goes once that returns */
        c->phase = PH_DONE;
        evtimer_del(&c->timer);
        event_active(&c->notify, EV_TIMEOUT, 0);
        return 1;
    }
    return 0;
}

static void c_done(void *arg, bool keep_alive)
{
    struct upstream_call *c = arg;
    struct pconn *pc = c->pc;
    c->pc = NULL;
    pconn_release(pc, keep_alive);
    call_finish(c);
}

static void c_failed(void *arg, enum gw_err err, const char *detail)
{
    struct upstream_call *c = arg;
    struct pool *p = c->pool;
    struct pconn *pc = c->pc;
    bool nothing_sent = c->x.sent == 0;
    bool refused = !upconn_tcp_up(pc->u);
    if (refused)
        p->addr_down_until[pc->addr_index] = util_now_ms() + ADDR_PENALTY_MS;
    c->pc = NULL;
    pconn_close(pc);
    c->status = 0;
    c->err = err;
    snprintf(c->detail, sizeof(c->detail), "%s", detail);
    /* Retry once on a fresh connection when not a byte left: a stale keep-alive connection
     * or a refused address. A TLS verification failure would only fail again. */
    if (nothing_sent && c->attempts == 1 && err != GW_ERR_UPSTREAM_TLS && c->phase < PH_BODY) {
        p->st.retries++;
        STAT_INC(p->stats, upstream_retries);
        log_debug("upstream retry", "\"upstream\":\"%s\",\"reason\":\"%s\"", p->name, detail);
        call_dispatch(c, true);
        pool_pump(p);
        return;
    }
    pool_pump(p);
    call_finish(c);
}

static void c_drained(void *arg)
{
    struct upstream_call *c = arg;
    if (c->ops->drained)
        c->ops->drained(c->arg);
}

static const struct upconn_cb call_cb = {
    .connected = c_connected,
    .ready = c_ready,
    .head = c_head,
    .body = c_body,
    .done = c_done,
    .failed = c_failed,
    .drained = c_drained,
};

/* ---- calls: dispatching ---- */

static void call_finish(struct upstream_call *c)
{
    c->phase = PH_DONE;
    evtimer_del(&c->timer);
    if (c->status == 0)
        c->pool->st.failures++;
    c->ops->done(c->arg);
}

static void notify_cb(evutil_socket_t fd, short what, void *arg)
{
    call_finish(arg);
}

/* A failure found where no callback may run: report it from the loop. */
static void fail_later(struct upstream_call *c, enum gw_err err, const char *detail)
{
    c->status = 0;
    c->err = err;
    snprintf(c->detail, sizeof(c->detail), "%s", detail);
    c->phase = PH_DONE;
    evtimer_del(&c->timer);
    event_active(&c->notify, EV_TIMEOUT, 0);
}

static void timer_cb(evutil_socket_t fd, short what, void *arg)
{
    struct upstream_call *c = arg;
    struct pool *p = c->pool;
    c->status = 0;
    if (c->phase == PH_QUEUED) {
        TAILQ_REMOVE(&p->waiters, c, link);
        p->nwaiting--;
        pool_publish(p);
        c->err = GW_ERR_QUEUE_TIMEOUT;
        snprintf(c->detail, sizeof(c->detail), "no connection became free within queue_timeout");
        call_finish(c);
        return;
    }
    c->err = GW_ERR_UPSTREAM_TIMEOUT;
    snprintf(c->detail, sizeof(c->detail), "upstream %s timed out",
             c->phase == PH_CONNECT ? "connect"
             : c->phase == PH_TLS   ? "TLS handshake"
                                    : "response");
    struct pconn *pc = c->pc;
    if (pc) {
        if (c->phase == PH_CONNECT)
            p->addr_down_until[pc->addr_index] = util_now_ms() + ADDR_PENALTY_MS;
        c->pc = NULL;
        pconn_close(pc);
    }
    pool_pump(p);
    call_finish(c);
}

static void call_attach(struct upstream_call *c, struct pconn *pc)
{
    c->pc = pc;
    pc->call = c;
    if (pc->idle) {
        TAILQ_REMOVE(&c->pool->idle, pc, link);
        c->pool->nidle--;
        pool_publish(c->pool);
        pc->idle = false;
        event_del(&pc->idle_timer);
    }
    c->attempts++;
    c->reused = upconn_requests(pc->u) > 0;
    c->pool->st.requests++;
    STAT_INC(c->pool->stats, upstream_requests);
    upconn_set_owner(pc->u, &call_cb, c);
    set_phase(c, upconn_ready(pc->u) ? PH_WAIT : upconn_tcp_up(pc->u) ? PH_TLS : PH_CONNECT);
    upconn_start(pc->u, &c->x);
}

/* Pick the next usable address, round robin, skipping recently refused ones when possible. */
static int pick_addr(struct pool *p)
{
    uint64_t now = util_now_ms();
    for (int i = 0; i < p->naddrs; i++) {
        int idx = (p->next_addr + i) % p->naddrs;
        if (p->addr_down_until[idx] <= now) {
            p->next_addr = (idx + 1) % p->naddrs;
            return idx;
        }
    }
    int idx = p->next_addr % p->naddrs;
    p->next_addr = (idx + 1) % p->naddrs;
    return idx;
}

/* Open a connection. Returns NULL with errno set when no socket could be had. */
static struct pconn *pconn_open(struct pool *p)
{
    int idx = pick_addr(p);
    const struct sockaddr_storage *ss = &p->addrs[idx];
    int fd = socket(ss->ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return NULL;
    bool connecting = false;
    if (connect(fd, (const struct sockaddr *)ss, p->addrlens[idx]) != 0) {
        if (errno != EINPROGRESS) { /* refused at once (loopback does that) */
            int e = errno;
            close(fd);
            p->addr_down_until[idx] = util_now_ms() + ADDR_PENALTY_MS;
            errno = e;
            return NULL;
        }
        connecting = true;
    }
    SSL *ssl = NULL;
    if (p->ssl_ctx) {
        ssl = tls_client_new(p->ssl_ctx, p->url->host, &p->session);
        if (!ssl || SSL_set_fd(ssl, fd) != 1) {
            if (ssl)
                SSL_free(ssl);
            close(fd);
            errno = ENOMEM;
            return NULL;
        }
    }
    struct pconn *pc = calloc(1, sizeof(*pc));
    if (!pc) {
        if (ssl)
            SSL_free(ssl);
        close(fd);
        errno = ENOMEM;
        return NULL;
    }
    pc->pool = p;
    pc->addr_index = idx;
    evtimer_assign(&pc->idle_timer, p->base, idle_timeout_cb, pc);
    pc->u = upconn_new(p->base, fd, ssl, connecting, &idle_cb, pc);
    if (!pc->u) {
        free(pc);
        errno = ENOMEM;
        return NULL;
    }
    p->nconns++;
    pool_publish(p);
    p->st.connections_opened++;
    STAT_INC(p->stats, upstream_connections_opened);
    return pc;
}

static void call_dispatch(struct upstream_call *c, bool fresh_only)
{
    struct pool *p = c->pool;
    struct pconn *pc = fresh_only ? NULL : TAILQ_FIRST(&p->idle);
    if (pc) {
        call_attach(c, pc);
        return;
    }
    if (p->naddrs == 0 && p->dns_failed) {
        fail_later(c, GW_ERR_UPSTREAM_DNS, p->dns_error);
        return;
    }
    if (p->naddrs > 0 && p->nconns < pool_max(p)) {
        pc = pconn_open(p);
        if (pc) {
            call_attach(c, pc);
            return;
        }
        int e = errno;
        if (e == EMFILE || e == ENFILE || e == ENOBUFS || e == ENOMEM) {
            STAT_INC(p->stats, upstream_socket_errors);
            if (p->nconns == 0) {
                char d[160];
                snprintf(d, sizeof(d), "no socket for an upstream connection: %s", strerror(e));
                fail_later(c, GW_ERR_OVERLOADED, d);
                return;
            }
            /* Wait for a connection of this pool to come free instead. */
        } else {
            /* This attempt failed at once; the retry rule applies as to any other. */
            char d[160];
            snprintf(d, sizeof(d), "connect failed: %s", strerror(e));
            c->attempts++;
            if (c->attempts == 1) {
                p->st.retries++;
                STAT_INC(p->stats, upstream_retries);
                call_dispatch(c, true);
                return;
            }
            fail_later(c, GW_ERR_UPSTREAM_CONNECT, d);
            return;
        }
    }
    if (p->nwaiting >= queue_max(p)) {
        fail_later(c, GW_ERR_QUEUE_FULL, "too many requests are waiting for a connection");
        return;
    }
    TAILQ_INSERT_TAIL(&p->waiters, c, link);
    p->nwaiting++;
    pool_publish(p);
    set_phase(c, PH_QUEUED);
}

/* Capacity may have appeared (a connection closed, names resolved): serve waiters. */
static void pool_pump(struct pool *p)
{
    struct upstream_call *c;
    while ((c = TAILQ_FIRST(&p->waiters)) != NULL) {
        bool can = p->nidle > 0 || (p->naddrs > 0 && p->nconns < pool_max(p)) ||
                   (p->naddrs == 0 && p->dns_failed);
        if (!can)
            return;
        TAILQ_REMOVE(&p->waiters, c, link);
        p->nwaiting--;
        pool_publish(p);
        evtimer_del(&c->timer);
        c->phase = PH_NEW;
        uint32_t before = p->nwaiting;
        call_dispatch(c, false);
        if (p->nwaiting > before)
            return; /* it queued again (no socket): stop here */
    }
}

struct upstream_call *upstream_call_start(struct pool *p, const struct upstream_request *req,
                                          const struct upstream_call_ops *ops, void *arg)
{
    struct upstream_call *c = calloc(1, sizeof(*c));
    if (!c)
        return NULL;
    p->ncalls++;
    c->pool = p;
    c->req = *req;
    c->ops = ops;
    c->arg = arg;
    c->x.iov = req->iov;
    c->x.niov = req->niov;
    c->x.body_end = !req->body_follows;
    c->x.head_request = req->head_request;
    evtimer_assign(&c->timer, p->base, timer_cb, c);
    event_assign(&c->notify, p->base, -1, 0, notify_cb, c);
    call_dispatch(c, false);
    return c;
}

int upstream_call_write(struct upstream_call *c, const void *data, size_t len)
{
    if (c->phase == PH_DONE || outq_add(&c->x.body, data, len) != 0)
        return 0;
    if (c->pc)
        upconn_kick(c->pc->u);
    return upx_full(&c->x) ? 1 : 0; /* without a connection yet, too: drained comes later */
}

void upstream_call_write_end(struct upstream_call *c)
{
    c->x.body_end = true;
    if (c->pc && c->phase != PH_DONE)
        upconn_kick(c->pc->u);
}

void upstream_call_resume(struct upstream_call *c)
{
    if (c->pc)
        upconn_resume_read(c->pc->u);
}

bool upstream_call_finished(const struct upstream_call *c)
{
    return c->phase == PH_DONE;
}

bool upstream_call_sent(const struct upstream_call *c)
{
    return c->x.sent > 0;
}

bool upstream_call_request_written(const struct upstream_call *c)
{
    return c->x.body_end && c->x.iov_sent == iov_total(c->x.iov, c->x.niov) && c->x.body.bytes == 0;
}

void upstream_call_free(struct upstream_call *c)
{
    if (!c)
        return;
    struct pool *p = c->pool;
    if (c->phase == PH_QUEUED) {
        TAILQ_REMOVE(&p->waiters, c, link);
        p->nwaiting--;
        pool_publish(p);
    }
    if (c->pc) { /* in mid-exchange: the connection cannot be reused */
        struct pconn *pc = c->pc;
        c->pc = NULL;
        pconn_close(pc);
        pool_pump(p);
    }
    event_del(&c->timer);
    event_del(&c->notify);
    outq_clear(&c->x.body);
    bytes_free(&c->body);
    free(c->head);
    free(c);
    p->ncalls--;
}

int upstream_call_status(const struct upstream_call *c)
{
    return c->status;
}

const struct hfield *upstream_call_headers(const struct upstream_call *c, unsigned *n)
{
    *n = c->nfields;
    return c->fields;
}

const char *upstream_call_body(const struct upstream_call *c, size_t *len)
{
    *len = c->body.len;
    return c->body.data;
}

bool upstream_call_chunked(const struct upstream_call *c)
{
    return c->chunked;
}

bool upstream_call_has_length(const struct upstream_call *c, uint64_t *len)
{
    *len = c->length;
    return c->has_length;
}

enum gw_err upstream_call_error(const struct upstream_call *c)
{
    return c->err;
}

const char *upstream_call_detail(const struct upstream_call *c)
{
    return c->detail;
}

int upstream_call_attempts(const struct upstream_call *c)
{
    return c->attempts;
}

bool upstream_call_reused(const struct upstream_call *c)
{
    return c->reused;
}

/* ---- name resolution ---- */

static void dns_schedule(struct pool *p, uint32_t ms)
{
    ms_timer(&p->dns_timer, ms);
}

static void dns_done_cb(int result, struct evutil_addrinfo *res, void *arg)
{
    struct pool *p = arg;
    p->dns_req = NULL;
    if (result == EVUTIL_EAI_CANCEL)
        return;
    if (result != 0 || !res) {
        snprintf(p->dns_error, sizeof(p->dns_error), "cannot resolve %s: %s", p->url->host,
                 evutil_gai_strerror(result));
        if (p->naddrs == 0) {
            p->dns_failed = true;
            log_error("upstream name resolution failed",
                      "\"upstream\":\"%s\",\"host\":\"%s\",\"reason\":\"%s\"", p->name,
                      p->url->host, evutil_gai_strerror(result));
        } else {
            log_warn("upstream re-resolution failed; keeping the previous addresses",
                     "\"upstream\":\"%s\",\"host\":\"%s\"", p->name, p->url->host);
        }
        if (res)
            evutil_freeaddrinfo(res);
        uint32_t retry = p->cfg->upstream.dns_refresh_ms;
        dns_schedule(p, retry < 5000 ? retry : 5000);
        pool_pump(p);
        return;
    }
    int n = 0;
    for (struct evutil_addrinfo *ai = res; ai && n < MAX_ADDRS; ai = ai->ai_next) {
        if (ai->ai_family != AF_INET && ai->ai_family != AF_INET6)
            continue;
        memcpy(&p->addrs[n], ai->ai_addr, ai->ai_addrlen);
        p->addrlens[n] = (socklen_t)ai->ai_addrlen;
        if (ai->ai_family == AF_INET)
            ((struct sockaddr_in *)&p->addrs[n])->sin_port = htons(p->url->port);
        else
            ((struct sockaddr_in6 *)&p->addrs[n])->sin6_port = htons(p->url->port);
        p->addr_down_until[n] = 0;
        n++;
    }
    evutil_freeaddrinfo(res);
    p->naddrs = n;
    p->next_addr = 0;
    p->dns_failed = n == 0;
    if (n == 0)
        snprintf(p->dns_error, sizeof(p->dns_error), "%s has no IPv4/IPv6 address", p->url->host);
    dns_schedule(p, p->cfg->upstream.dns_refresh_ms);
    pool_pump(p);
}

static void dns_start(struct pool *p)
{
    struct evutil_addrinfo hints;
    memset(&hints, 0, sizeof(hints));
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_protocol = IPPROTO_TCP;
    hints.ai_flags = EVUTIL_AI_ADDRCONFIG;
    /* evdns may answer before returning (numeric hosts, /etc/hosts); dns_done_cb only stores
     * addresses and serves waiters, which is safe here. */
    p->dns_req = evdns_getaddrinfo(p->dns, p->url->host, NULL, &hints, dns_done_cb, p);
}

static void dns_timer_cb(evutil_socket_t fd, short what, void *arg)
{
    struct pool *p = arg;
    if (!p->dns_req)
        dns_start(p);
}

/* Numeric hosts need no resolver; returns true when HOST was one. */
static bool set_numeric(struct pool *p, const char *host, uint16_t port)
{
    struct sockaddr_in *in = (struct sockaddr_in *)&p->addrs[0];
    struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)&p->addrs[0];
    memset(&p->addrs[0], 0, sizeof(p->addrs[0]));
    if (inet_pton(AF_INET, host, &in->sin_addr) == 1) {
        in->sin_family = AF_INET;
        in->sin_port = htons(port);
        p->addrlens[0] = sizeof(*in);
    } else if (inet_pton(AF_INET6, host, &in6->sin6_addr) == 1) {
        in6->sin6_family = AF_INET6;
        in6->sin6_port = htons(port);
        p->addrlens[0] = sizeof(*in6);
    } else {
        return false;
    }
    p->naddrs = 1;
    return true;
}

struct pool *pool_new(struct event_base *base, struct evdns_base *dns, SSL_CTX *ssl_ctx,
                      const struct config_url *url, const struct config *cfg, const char *name,
                      struct gw_stats *stats)
{
    struct pool *p = calloc(1, sizeof(*p));
    if (!p)
        return NULL;
    p->base = base;
    p->dns = dns;
    p->ssl_ctx = url->tls ? ssl_ctx : NULL;
    p->url = url;
    p->cfg = cfg;
    p->stats = stats;
    snprintf(p->name, sizeof(p->name), "%s", name);
    bool v6 = strchr(url->host, ':') != NULL;
    bool default_port = (url->tls && url->port == 443) || (!url->tls && url->port == 80);
    if (default_port)
        snprintf(p->host_header, sizeof(p->host_header), v6 ? "[%s]" : "%s", url->host);
    else
        snprintf(p->host_header, sizeof(p->host_header), v6 ? "[%s]:%u" : "%s:%u", url->host,
                 url->port);
    TAILQ_INIT(&p->idle);
    TAILQ_INIT(&p->waiters);
    evtimer_assign(&p->dns_timer, base, dns_timer_cb, p);
    if (!set_numeric(p, url->host, url->port))
        dns_start(p);
    return p;
}

void pool_free(struct pool *p)
{
    if (!p)
        return;
    if (p->dns_req)
        evdns_getaddrinfo_cancel(p->dns_req);
    struct pconn *pc;
    while ((pc = TAILQ_FIRST(&p->idle)) != NULL)
        pconn_close(pc);
    event_del(&p->dns_timer);
    tls_session_slot_clear(&p->session);
    free(p);
}

bool pool_quiet(const struct pool *p)
{
    return p->ncalls == 0 && p->nwaiting == 0 && p->nconns == p->nidle;
}

void pool_set_config(struct pool *p, const struct config *cfg, const struct config_url *url)
{
    p->cfg = cfg;
    p->url = url;
}

void pool_set_gauges(struct pool *p, struct gw_pool_gauges *g)
{
    p->gauges = g;
    pool_publish(p);
}

bool pool_resolved(const struct pool *p)
{
    return p->naddrs > 0;
}

void pool_get_stats(const struct pool *p, struct pool_stats *out)
{
    *out = p->st;
    out->open = p->nconns;
    out->idle = p->nidle;
    out->waiting = p->nwaiting;
}

const char *pool_host(const struct pool *p)
{
    return p->host_header;
}

const char *pool_name(const struct pool *p)
{
    return p->name;
}
