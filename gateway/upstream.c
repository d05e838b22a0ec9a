/*
 * upstream: pooled evhttp client connections to one upstream host (see upstream.h for the
 * contract).
 *
 * Lifetimes. A pool owns its connections (struct upconn) and the queue of waiting calls.
 * A connection owns its evhttp_connection, which owns the bufferevent, which owns the SSL
 * object and the socket. A call (struct upstream_call) is owned by whoever started it; while it
 * runs, the connection points at it and it points at the connection.
 *
 * Why connections are freed late: evhttp touches the connection after it has called our
 * request callback (evhttp_connection_done reads evcon->requests), so a connection is never
 * freed from inside an evhttp callback. Dead connections go on pool->graveyard, and the pool's
 * reaper event, activated on the loop, frees them once the stack has unwound.
 *
 * Why a connection is never reconnected: evhttp reconnects a closed connection with the same
 * bufferevent, and an OpenSSL bufferevent cannot start a second session on a new socket. So a
 * connection is used until its first close or error, then discarded.
 *
 * How "not a byte written" is known: a callback on the bufferevent's output buffer counts the
 * bytes that left it (into the socket, or into SSL_write for TLS). The TCP and TLS phases are
 * told apart with OpenSSL's info callback (handshake start = TCP connected).
 */
#include "upstream.h"

#include <arpa/inet.h>
#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/bufferevent_ssl.h>
#include <event2/dns.h>
#include <event2/event.h>
#include <event2/http.h>
#include <sys/queue.h>
#include <event2/keyvalq_struct.h>
#include <event2/util.h>
#include <netdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/queue.h>

#include "log.h"
#include "tls.h"
#include "util.h"

#define MAX_ADDRS 8
#define ADDR_PENALTY_MS 10000 /* skip an address that refused a connection for this long */

enum conn_state { CONN_BUSY, CONN_IDLE, CONN_DEAD };
enum call_phase { PH_QUEUED, PH_CONNECT, PH_TLS, PH_RESPONSE, PH_DONE };

struct upconn {
    TAILQ_ENTRY(upconn) link; /* on pool->idle or pool->graveyard */
    struct upstream_pool *pool;
    struct evhttp_connection *evcon; /* owned */
    struct bufferevent *bev;         /* owned by evcon */
    SSL *ssl;                        /* owned by bev; NULL for plain HTTP */
    struct event *idle_timer;        /* owned */
    struct upstream_call *call;      /* the request in flight, or NULL */
    enum conn_state state;
    bool listed;    /* on idle or graveyard */
    bool closed;    /* evhttp reported the connection closed */
    bool tcp_up;    /* TCP connected */
    bool tls_up;    /* handshake done (or plain HTTP and connected) */
    unsigned nreq;  /* requests started on this connection */
    size_t written; /* bytes of the current request that left the output buffer */
    int addr_index;
};
TAILQ_HEAD(upconn_list, upconn);

struct upstream_call {
    TAILQ_ENTRY(upstream_call) link; /* on pool->waiters while queued */
    struct upstream_pool *pool;
    struct upconn *conn;
    struct upstream_request req;
    upstream_done_fn done;
    void *arg;
    struct event *timer;         /* owned: phase deadlines */
    struct event *notify;        /* owned: deferred failure callback */
    struct evhttp_request *ereq; /* owned by evhttp while in flight */
    enum evhttp_request_error eerr;
    bool have_eerr;
    enum call_phase phase;
    bool cancelling;
    bool reused;
    int attempts;
    int status;
    enum gw_err err;
    char detail[160];
    struct evkeyvalq resp_headers;
    struct evbuffer *resp_body; /* owned */
};
TAILQ_HEAD(call_list, upstream_call);

struct upstream_pool {
    struct event_base *base;
    struct evdns_base *dns;
    SSL_CTX *ssl_ctx;
    const struct config_url *url;
    const struct config *cfg;
    char name[16];
    char host_header[300];

    struct sockaddr_storage addrs[MAX_ADDRS];
    uint64_t addr_down_until[MAX_ADDRS];
    int naddrs;
    int next_addr;
    bool dns_failed;
    char dns_error[128];
    struct evdns_getaddrinfo_request *dns_req;
    struct event *dns_timer;

    struct upconn_list idle;
    struct upconn_list graveyard;
    struct event *reaper;
    struct call_list waiters;
    uint32_t nconns;
    uint32_t nidle;
    uint32_t nwaiting;
    struct upstream_stats stats;
};

static void pool_pump(struct upstream_pool *pool);
static void call_dispatch(struct upstream_call *call, bool fresh_only);
static void call_finish(struct upstream_call *call);

/* ---- time helpers ---- */

static struct timeval ms_tv(uint32_t ms)
{
    struct timeval tv = {.tv_sec = ms / 1000, .tv_usec = (ms % 1000) * 1000};
    return tv;
}

/* ---- connections ---- */

static void conn_bury(struct upconn *c)
{
    struct upstream_pool *pool = c->pool;
    if (c->listed && c->state == CONN_IDLE) {
        TAILQ_REMOVE(&pool->idle, c, link);
        pool->nidle--;
        c->listed = false;
    }
    if (c->state != CONN_DEAD) {
        c->state = CONN_DEAD;
        pool->nconns--;
    }
    if (!c->listed) {
        TAILQ_INSERT_TAIL(&pool->graveyard, c, link);
        c->listed = true;
        event_active(pool->reaper, EV_TIMEOUT, 0);
    }
    if (c->idle_timer)
        evtimer_del(c->idle_timer);
}

static void conn_free(struct upconn *c)
{
    if (c->idle_timer)
        event_free(c->idle_timer);
    if (c->evcon) {
        evhttp_connection_set_closecb(c->evcon, NULL, NULL);
        evhttp_connection_free(c->evcon); /* frees bev, SSL, socket */
    }
    free(c);
}

static void reaper_cb(evutil_socket_t fd, short what, void *arg)
{
    struct upstream_pool *pool = arg;
    struct upconn *c;
    while ((c = TAILQ_FIRST(&pool->graveyard)) != NULL) {
        TAILQ_REMOVE(&pool->graveyard, c, link);
        conn_free(c);
    }
    /* Slots were freed: queued calls may proceed. */
    pool_pump(pool);
}

static void conn_close_cb(struct evhttp_connection *evcon, void *arg)
{
    struct upconn *c = arg;
    /* The server closed the connection, or evhttp reset it after an error. A busy connection
     * is buried by its request's callback, which evhttp calls next. */
    c->closed = true;
    if (c->state == CONN_IDLE)
        conn_bury(c);
}

static void conn_idle_timeout_cb(evutil_socket_t fd, short what, void *arg)
{
    struct upconn *c = arg;
    if (c->state == CONN_IDLE)
        conn_bury(c);
}

static void call_set_phase(struct upstream_call *call, enum call_phase ph);

static void conn_output_cb(struct evbuffer *buf, const struct evbuffer_cb_info *info, void *arg)
{
    struct upconn *c = arg;
    if (info->n_deleted == 0)
        return;
    c->written += info->n_deleted;
    if (!c->tcp_up || !c->tls_up) { /* plain HTTP: first bytes out mean connected */
        c->tcp_up = c->tls_up = true;
        if (c->call && c->call->phase < PH_RESPONSE)
            call_set_phase(c->call, PH_RESPONSE);
    }
}

static void conn_ssl_info_cb(const SSL *ssl, int where, int ret)
{
    struct upconn *c = SSL_get_app_data(ssl);
    if (!c)
        return;
    if ((where & SSL_CB_HANDSHAKE_START) && !c->tcp_up) {
        /* The OpenSSL bufferevent starts the handshake when the socket turns writable, which
         * is also how a refused connect shows: only a socket with a peer is connected. */
        struct sockaddr_storage peer;
        socklen_t plen = sizeof(peer);
        int fd = SSL_get_fd(ssl);
        if (fd < 0 || getpeername(fd, (struct sockaddr *)&peer, &plen) != 0)
            return;
        c->tcp_up = true;
        util_set_nodelay(fd);
        if (c->call && c->call->phase == PH_CONNECT)
            call_set_phase(c->call, PH_TLS);
    }
    /* TLS 1.3 tickets after the handshake fire these again: act on the first one only. */
    if ((where & SSL_CB_HANDSHAKE_DONE) && !c->tls_up) {
        c->tls_up = true;
        if (c->call && c->call->phase < PH_RESPONSE)
            call_set_phase(c->call, PH_RESPONSE);
    }
}

/* Pick the next usable address, round robin, skipping recently refused ones when possible. */
static int pool_pick_addr(struct upstream_pool *pool)
{
    uint64_t now = util_now_ms();
    for (int i = 0; i < pool->naddrs; i++) {
        int idx = (pool->next_addr + i) % pool->naddrs;
        if (pool->addr_down_until[idx] <= now) {
            pool->next_addr = (idx + 1) % pool->naddrs;
            return idx;
        }
    }
    int idx = pool->next_addr % pool->naddrs;
    pool->next_addr = (idx + 1) % pool->naddrs;
    return idx;
}

static struct upconn *conn_new(struct upstream_pool *pool)
{
    struct upconn *c = calloc(1, sizeof(*c));
    if (!c)
        return NULL;
    c->pool = pool;
    c->addr_index = pool_pick_addr(pool);

    if (pool->ssl_ctx) {
        c->ssl = tls_client_new(pool->ssl_ctx, pool->url->host);
        if (!c->ssl)
            goto fail_conn;
        SSL_set_app_data(c->ssl, c);
        SSL_set_info_callback(c->ssl, conn_ssl_info_cb);
        c->bev = bufferevent_openssl_socket_new(pool->base, -1, c->ssl, BUFFEREVENT_SSL_CONNECTING,
                                                BEV_OPT_CLOSE_ON_FREE);
        if (!c->bev) {
            SSL_free(c->ssl);
            goto fail_conn;
        }
        /* A peer that closes without close_notify is common; treat it as a normal EOF. */
        bufferevent_openssl_set_allow_dirty_shutdown(c->bev, 1);
    } else {
        c->bev = bufferevent_socket_new(pool->base, -1, BEV_OPT_CLOSE_ON_FREE);
        if (!c->bev)
            goto fail_conn;
    }
    evbuffer_add_cb(bufferevent_get_output(c->bev), conn_output_cb, c);

    char host[INET6_ADDRSTRLEN];
    const struct sockaddr_storage *ss = &pool->addrs[c->addr_index];
    if (ss->ss_family == AF_INET6)
        inet_ntop(AF_INET6, &((const struct sockaddr_in6 *)ss)->sin6_addr, host, sizeof(host));
    else
        inet_ntop(AF_INET, &((const struct sockaddr_in *)ss)->sin_addr, host, sizeof(host));

    /* A numeric address: evdns answers it without a query, so connecting never blocks. */
    c->evcon = evhttp_connection_base_bufferevent_new(pool->base, pool->dns, c->bev, host,
                                                      pool->url->port);
    if (!c->evcon) {
        bufferevent_free(c->bev);
        goto fail_conn;
    }
    const struct config *cfg = pool->cfg;
    struct timeval tv = ms_tv(cfg->server.request_timeout_ms);
    evhttp_connection_set_timeout_tv(c->evcon, &tv); /* backstop; our timers fire first */
    evhttp_connection_set_retries(c->evcon, 0);
    evhttp_connection_set_max_headers_size(c->evcon, 64 * 1024);
    evhttp_connection_set_max_body_size(c->evcon, 64 * 1024 * 1024);
    evhttp_connection_set_closecb(c->evcon, conn_close_cb, c);
    c->idle_timer = evtimer_new(pool->base, conn_idle_timeout_cb, c);
    if (!c->idle_timer) {
        evhttp_connection_free(c->evcon);
        goto fail_conn;
    }
    c->state = CONN_BUSY;
    pool->nconns++;
    pool->stats.connections_opened++;
    return c;

fail_conn:
    free(c);
    return NULL;
}

/* Back to the idle list after a complete response, or retired. */
static void conn_release(struct upconn *c, bool reusable)
{
    struct upstream_pool *pool = c->pool;
    c->call = NULL;
    if (c->state == CONN_DEAD)
        return; /* closed meanwhile; already buried */
    if (!reusable || c->closed || c->nreq >= pool->cfg->upstream.max_requests_per_conn) {
        conn_bury(c);
        return;
    }
    c->state = CONN_IDLE;
    TAILQ_INSERT_HEAD(&pool->idle, c, link); /* most recently used first */
    c->listed = true;
    pool->nidle++;
    struct timeval tv = ms_tv(pool->cfg->upstream.idle_timeout_ms);
    evtimer_add(c->idle_timer, &tv);
    /* A queued call takes it at once (evhttp accepts a new request from the callback of the
     * previous one: the connection is already idle then). */
    pool_pump(pool);
}

/* ---- calls ---- */

static void call_timer_cb(evutil_socket_t fd, short what, void *arg);

static void call_set_phase(struct upstream_call *call, enum call_phase ph)
{
    const struct config *cfg = call->pool->cfg;
    uint32_t ms = 0;
    call->phase = ph;
    switch (ph) {
    case PH_CONNECT:
        ms = cfg->upstream.connect_timeout_ms;
        break;
    case PH_TLS:
        ms = cfg->upstream.tls_handshake_timeout_ms;
        break;
    case PH_RESPONSE:
        ms = cfg->upstream.response_timeout_ms;
        break;
    default:
        evtimer_del(call->timer);
        return;
    }
    struct timeval tv = ms_tv(ms);
    evtimer_add(call->timer, &tv);
}

static void call_fail_later(struct upstream_call *call, enum gw_err err, const char *detail)
{
    call->status = 0;
    call->err = err;
    snprintf(call->detail, sizeof(call->detail), "%s", detail);
    call->phase = PH_DONE;
    evtimer_del(call->timer);
    event_active(call->notify, EV_TIMEOUT, 0);
}

static void call_notify_cb(evutil_socket_t fd, short what, void *arg)
{
    call_finish(arg);
}

static void call_finish(struct upstream_call *call)
{
    call->phase = PH_DONE;
    evtimer_del(call->timer);
    if (call->status == 0)
        call->pool->stats.failures++;
    call->done(call, call->arg);
}

static void classify_failure(struct upstream_call *call, struct upconn *c)
{
    const char *why = call->have_eerr && call->eerr == EVREQ_HTTP_DATA_TOO_LONG
                          ? "response too large"
                          : "connection closed before a complete response";
    if (!c->tcp_up) {
        call->err = GW_ERR_UPSTREAM_CONNECT;
        snprintf(call->detail, sizeof(call->detail), "connect failed: %s",
                 evutil_socket_error_to_string(EVUTIL_SOCKET_ERROR()));
    } else if (!c->tls_up) {
        const char *v = c->ssl ? tls_verify_error(c->ssl) : NULL;
        call->err = GW_ERR_UPSTREAM_TLS;
        snprintf(call->detail, sizeof(call->detail), "TLS handshake failed%s%s",
                 v ? ": certificate verify failed: " : "", v ? v : "");
    } else {
        call->err = GW_ERR_UPSTREAM_PROTOCOL;
        snprintf(call->detail, sizeof(call->detail), "%s", why);
    }
}

static void call_error_cb(enum evhttp_request_error e, void *arg)
{
    struct upstream_call *call = arg;
    call->eerr = e;
    call->have_eerr = true;
}

static void call_response_cb(struct evhttp_request *ereq, void *arg)
{
    struct upstream_call *call = arg;
    struct upconn *c = call->conn;
    struct upstream_pool *pool = call->pool;

    if (call->cancelling)
        return;
    call->ereq = NULL; /* evhttp frees it after we return */
    call->conn = NULL;

    int code = ereq ? evhttp_request_get_response_code(ereq) : 0;
    if (code <= 0) {
        classify_failure(call, c);
        bool nothing_sent = c->written == 0;
        bool refused = !c->tcp_up;
        if (refused)
            pool->addr_down_until[c->addr_index] = util_now_ms() + ADDR_PENALTY_MS;
        c->call = NULL;
        conn_bury(c);
        /* Retry once on a fresh connection when not a byte left: a stale keep-alive
         * connection or a refused address. A TLS verification failure would fail again. */
        if (nothing_sent && call->attempts == 1 && call->err != GW_ERR_UPSTREAM_TLS) {
            pool->stats.retries++;
            log_debug("upstream retry", "\"upstream\":\"%s\",\"reason\":\"%s\"", pool->name,
                      call->detail);
            call_dispatch(call, true);
            return;
        }
        call_finish(call);
        return;
    }

    call->status = code;
    struct evkeyval *h;
    TAILQ_FOREACH(h, evhttp_request_get_input_headers(ereq), next)
    evhttp_add_header(&call->resp_headers, h->key, h->value);
    evbuffer_add_buffer(call->resp_body, evhttp_request_get_input_buffer(ereq));

    /* evhttp has already closed the connection if the response said "Connection: close". */
    conn_release(c, true);
    call_finish(call);
}

static void call_timer_cb(evutil_socket_t fd, short what, void *arg)
{
    struct upstream_call *call = arg;
    struct upconn *c = call->conn;
    const char *what_timed_out = call->phase == PH_CONNECT ? "connect"
                                 : call->phase == PH_TLS   ? "TLS handshake"
                                                           : "response";
    call->err = GW_ERR_UPSTREAM_TIMEOUT;
    snprintf(call->detail, sizeof(call->detail), "upstream %s timed out", what_timed_out);
    call->status = 0;
    if (call->phase == PH_CONNECT && c)
        call->pool->addr_down_until[c->addr_index] = util_now_ms() + ADDR_PENALTY_MS;
    if (c && call->ereq) {
        call->cancelling = true;
        evhttp_cancel_request(call->ereq); /* resets the connection; no callback */
        call->ereq = NULL;
        call->cancelling = false;
    }
    if (c) {
        c->call = NULL;
        call->conn = NULL;
        conn_bury(c);
    }
    call_finish(call);
}

/* Put CALL on connection C and send it. */
static void call_send(struct upstream_call *call, struct upconn *c)
{
    struct upstream_pool *pool = call->pool;
    call->conn = c;
    c->call = call;
    c->state = CONN_BUSY;
    c->written = 0;
    call->reused = c->nreq > 0;
    c->nreq++;
    call->attempts++;
    call->have_eerr = false;
    pool->stats.requests++;
    if (call->reused)
        pool->stats.connections_reused++;

    struct evhttp_request *ereq = evhttp_request_new(call_response_cb, call);
    if (!ereq)
        goto fail;
    evhttp_request_set_error_cb(ereq, call_error_cb);
    struct evkeyvalq *out = evhttp_request_get_output_headers(ereq);
    struct evkeyval *h;
    evhttp_add_header(out, "Host", pool->host_header);
    TAILQ_FOREACH(h, call->req.headers, next)
    {
        if (evhttp_add_header(out, h->key, h->value) != 0) {
            evhttp_request_free(ereq);
            goto fail;
        }
    }
    size_t blen = call->req.body ? evbuffer_get_length(call->req.body) : 0;
    if (blen > 0) {
        char len[24];
        snprintf(len, sizeof(len), "%zu", blen);
        evhttp_add_header(out, "Content-Length", len);
        /* A reference: the bytes stay in the caller's buffer, which outlives the call. */
        if (evbuffer_add_buffer_reference(evhttp_request_get_output_buffer(ereq), call->req.body) !=
            0) {
            evhttp_request_free(ereq);
            goto fail;
        }
    } else if (call->req.method == EVHTTP_REQ_POST || call->req.method == EVHTTP_REQ_PUT) {
        evhttp_add_header(out, "Content-Length", "0");
    }

    call->ereq = ereq;
    call_set_phase(call, c->tls_up ? PH_RESPONSE : PH_CONNECT);
    if (evhttp_make_request(c->evcon, ereq, call->req.method, call->req.uri) != 0) {
        /* evhttp frees the request on failure */
        call->ereq = NULL;
        goto fail;
    }
    int fd = bufferevent_getfd(c->bev);
    if (fd >= 0 && !c->tcp_up)
        util_set_nodelay(fd);
    return;

fail:
    call->conn = NULL;
    c->call = NULL;
    conn_bury(c);
    call_fail_later(call, GW_ERR_INTERNAL, "cannot build the upstream request");
}

/* Take an idle connection, open a new one, or queue. FRESH_ONLY skips idle connections. */
static void call_dispatch(struct upstream_call *call, bool fresh_only)
{
    struct upstream_pool *pool = call->pool;
    struct upconn *c = NULL;

    if (!fresh_only) {
        c = TAILQ_FIRST(&pool->idle);
        if (c) {
            TAILQ_REMOVE(&pool->idle, c, link);
            c->listed = false;
            pool->nidle--;
            evtimer_del(c->idle_timer);
            call_send(call, c);
            return;
        }
    }
    if (pool->naddrs > 0 && pool->nconns < pool->cfg->upstream.pool_size) {
        c = conn_new(pool);
        if (!c) {
            call_fail_later(call, GW_ERR_INTERNAL, "out of memory");
            return;
        }
        call_send(call, c);
        return;
    }
    if (pool->naddrs == 0 && pool->dns_failed) {
        call_fail_later(call, GW_ERR_UPSTREAM_DNS, pool->dns_error);
        return;
    }
    call->phase = PH_QUEUED;
    TAILQ_INSERT_TAIL(&pool->waiters, call, link);
    pool->nwaiting++;
}

/* Hand connections (idle or new) to queued calls. */
static void pool_pump(struct upstream_pool *pool)
{
    struct upstream_call *call;
    while ((call = TAILQ_FIRST(&pool->waiters)) != NULL) {
        bool can = (pool->nidle > 0) ||
                   (pool->naddrs > 0 && pool->nconns < pool->cfg->upstream.pool_size) ||
                   (pool->naddrs == 0 && pool->dns_failed);
        if (!can)
            return;
        TAILQ_REMOVE(&pool->waiters, call, link);
        pool->nwaiting--;
        call_dispatch(call, false);
    }
}

struct upstream_call *upstream_call_start(struct upstream_pool *pool,
                                          const struct upstream_request *req, upstream_done_fn done,
                                          void *arg, enum gw_err *err)
{
    if (pool->naddrs == 0 && pool->dns_failed) {
        *err = GW_ERR_UPSTREAM_DNS;
        return NULL;
    }
    bool must_wait =
        pool->nidle == 0 && (pool->naddrs == 0 || pool->nconns >= pool->cfg->upstream.pool_size);
    if (must_wait && pool->nwaiting >= pool->cfg->upstream.queue_size) {
        *err = GW_ERR_QUEUE_FULL;
        return NULL;
    }
    struct upstream_call *call = calloc(1, sizeof(*call));
    if (!call) {
        *err = GW_ERR_INTERNAL;
        return NULL;
    }
    call->pool = pool;
    call->req = *req;
    call->done = done;
    call->arg = arg;
    TAILQ_INIT(&call->resp_headers);
    call->resp_body = evbuffer_new();
    call->timer = evtimer_new(pool->base, call_timer_cb, call);
    call->notify = event_new(pool->base, -1, 0, call_notify_cb, call);
    if (!call->resp_body || !call->timer || !call->notify) {
        upstream_call_free(call);
        *err = GW_ERR_INTERNAL;
        return NULL;
    }
    call_dispatch(call, false);
    return call;
}

void upstream_call_free(struct upstream_call *call)
{
    if (!call)
        return;
    struct upstream_pool *pool = call->pool;
    if (call->phase == PH_QUEUED) {
        TAILQ_REMOVE(&pool->waiters, call, link);
        pool->nwaiting--;
    } else if (call->conn) {
        struct upconn *c = call->conn;
        if (call->ereq) {
            call->cancelling = true;
            evhttp_cancel_request(call->ereq);
            call->ereq = NULL;
        }
        c->call = NULL;
        call->conn = NULL;
        conn_bury(c);
    }
    if (call->timer)
        event_free(call->timer);
    if (call->notify)
        event_free(call->notify);
    if (call->resp_body)
        evbuffer_free(call->resp_body);
    evhttp_clear_headers(&call->resp_headers);
    free(call);
}

int upstream_call_status(const struct upstream_call *call)
{
    return call->status;
}
struct evkeyvalq *upstream_call_headers(struct upstream_call *call)
{
    return &call->resp_headers;
}
struct evbuffer *upstream_call_body(struct upstream_call *call)
{
    return call->resp_body;
}
enum gw_err upstream_call_error(const struct upstream_call *call)
{
    return call->err;
}
const char *upstream_call_detail(const struct upstream_call *call)
{
    return call->detail;
}
int upstream_call_attempts(const struct upstream_call *call)
{
    return call->attempts;
}

/* ---- name resolution ---- */

static void dns_schedule(struct upstream_pool *pool, uint32_t ms)
{
    struct timeval tv = ms_tv(ms);
    evtimer_add(pool->dns_timer, &tv);
}

static void dns_done_cb(int result, struct evutil_addrinfo *res, void *arg)
{
    struct upstream_pool *pool = arg;
    pool->dns_req = NULL;
    if (result == EVUTIL_EAI_CANCEL)
        return;
    if (result != 0 || !res) {
        snprintf(pool->dns_error, sizeof(pool->dns_error), "cannot resolve %s: %s", pool->url->host,
                 evutil_gai_strerror(result));
        if (pool->naddrs == 0) {
            pool->dns_failed = true;
            log_error("upstream name resolution failed",
                      "\"upstream\":\"%s\",\"host\":\"%s\",\"reason\":\"%s\"", pool->name,
                      pool->url->host, evutil_gai_strerror(result));
        } else {
            log_warn("upstream re-resolution failed; keeping the previous addresses",
                     "\"upstream\":\"%s\",\"host\":\"%s\"", pool->name, pool->url->host);
        }
        if (res)
            evutil_freeaddrinfo(res);
        /* Retry sooner than the normal period while failing. */
        uint32_t retry = pool->cfg->upstream.dns_refresh_ms;
        dns_schedule(pool, retry < 5000 ? retry : 5000);
        pool_pump(pool);
        return;
    }
    int n = 0;
    for (struct evutil_addrinfo *ai = res; ai && n < MAX_ADDRS; ai = ai->ai_next) {
        if (ai->ai_family != AF_INET && ai->ai_family != AF_INET6)
            continue;
        memcpy(&pool->addrs[n], ai->ai_addr, ai->ai_addrlen);
        pool->addr_down_until[n] = 0;
        n++;
    }
    evutil_freeaddrinfo(res);
    pool->naddrs = n;
    pool->next_addr = 0;
    pool->dns_failed = n == 0;
    if (n == 0)
        snprintf(pool->dns_error, sizeof(pool->dns_error), "%s has no IPv4/IPv6 address",
                 pool->url->host);
    dns_schedule(pool, pool->cfg->upstream.dns_refresh_ms);
    pool_pump(pool);
}

static void dns_start(struct upstream_pool *pool)
{
    struct evutil_addrinfo hints;
    memset(&hints, 0, sizeof(hints));
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_protocol = IPPROTO_TCP;
    hints.ai_flags = EVUTIL_AI_ADDRCONFIG;
    /* May call dns_done_cb before returning (numeric hosts, /etc/hosts): that is fine here. */
    pool->dns_req = evdns_getaddrinfo(pool->dns, pool->url->host, NULL, &hints, dns_done_cb, pool);
}

static void dns_timer_cb(evutil_socket_t fd, short what, void *arg)
{
    struct upstream_pool *pool = arg;
    if (!pool->dns_req)
        dns_start(pool);
}

/* Numeric hosts need no resolver; returns true when HOST was one. */
static bool set_numeric(struct upstream_pool *pool, const char *host, uint16_t port)
{
    struct sockaddr_in *in = (struct sockaddr_in *)&pool->addrs[0];
    struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)&pool->addrs[0];
    memset(&pool->addrs[0], 0, sizeof(pool->addrs[0]));
    if (inet_pton(AF_INET, host, &in->sin_addr) == 1) {
        in->sin_family = AF_INET;
        in->sin_port = htons(port);
    } else if (inet_pton(AF_INET6, host, &in6->sin6_addr) == 1) {
        in6->sin6_family = AF_INET6;
        in6->sin6_port = htons(port);
    } else {
        return false;
    }
    pool->naddrs = 1;
    return true;
}

struct upstream_pool *upstream_pool_new(struct event_base *base, struct evdns_base *dns,
                                        SSL_CTX *ssl_ctx, const struct config_url *url,
                                        const struct config *cfg, const char *name)
{
    struct upstream_pool *pool = calloc(1, sizeof(*pool));
    if (!pool)
        return NULL;
    pool->base = base;
    pool->dns = dns;
    pool->ssl_ctx = url->tls ? ssl_ctx : NULL;
    pool->url = url;
    pool->cfg = cfg;
    snprintf(pool->name, sizeof(pool->name), "%s", name);
    bool v6 = strchr(url->host, ':') != NULL;
    bool default_port = (url->tls && url->port == 443) || (!url->tls && url->port == 80);
    if (default_port)
        snprintf(pool->host_header, sizeof(pool->host_header), v6 ? "[%s]" : "%s", url->host);
    else
        snprintf(pool->host_header, sizeof(pool->host_header), v6 ? "[%s]:%u" : "%s:%u", url->host,
                 url->port);
    TAILQ_INIT(&pool->idle);
    TAILQ_INIT(&pool->graveyard);
    TAILQ_INIT(&pool->waiters);
    pool->reaper = event_new(base, -1, 0, reaper_cb, pool);
    pool->dns_timer = evtimer_new(base, dns_timer_cb, pool);
    if (!pool->reaper || !pool->dns_timer) {
        upstream_pool_free(pool);
        return NULL;
    }
    if (!set_numeric(pool, url->host, url->port))
        dns_start(pool);
    return pool;
}

void upstream_pool_free(struct upstream_pool *pool)
{
    if (!pool)
        return;
    if (pool->dns_req)
        evdns_getaddrinfo_cancel(pool->dns_req);
    struct upconn *c;
    while ((c = TAILQ_FIRST(&pool->idle)) != NULL) {
        TAILQ_REMOVE(&pool->idle, c, link);
        conn_free(c);
    }
    while ((c = TAILQ_FIRST(&pool->graveyard)) != NULL) {
        TAILQ_REMOVE(&pool->graveyard, c, link);
        conn_free(c);
    }
    if (pool->reaper)
        event_free(pool->reaper);
    if (pool->dns_timer)
        event_free(pool->dns_timer);
    free(pool);
}

bool upstream_pool_resolved(const struct upstream_pool *pool)
{
    return pool->naddrs > 0;
}

void upstream_pool_stats(const struct upstream_pool *pool, struct upstream_stats *out)
{
    *out = pool->stats;
    out->open = pool->nconns;
    out->idle = pool->nidle;
    out->waiting = pool->nwaiting;
}
