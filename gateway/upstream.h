/*
 * upstream: per-thread pools of keep-alive HTTP/1.1 connections to one upstream host (the
 * Anymate API host or its auth host), over verified TLS or plain HTTP, driven by libevent's
 * evhttp client.
 *
 * Shape (one pool per worker thread per upstream host; nothing shared, nothing locked):
 *   - idle connections are reused most-recently-used first; at most pool_size connections;
 *     a connection is retired after max_requests_per_conn requests, after idle_timeout, when
 *     the server closes it or after any error (an evhttp connection over TLS cannot reconnect);
 *   - requests that find no connection wait in a bounded FIFO queue (queue_size), else fail at
 *     once with GW_ERR_QUEUE_FULL;
 *   - the host name is resolved with evdns, never blocking the loop, and re-resolved every
 *     dns_refresh; an address that refused a connection is skipped for a while;
 *   - a request is retried once, on a fresh connection, only when not one byte of it was
 *     written (connect refused or reset before sending). A request that was written, POST or
 *     GET, is never retried: Anymate's GETs are not idempotent (TakeNext locks a task,
 *     StartOrGetRun opens a run);
 *   - separate deadlines for TCP connect, TLS handshake and the response.
 */
#ifndef GW_UPSTREAM_H
#define GW_UPSTREAM_H

#include <event2/http.h>
#include <openssl/ssl.h>
#include <stdbool.h>
#include <stdint.h>

#include "config.h"
#include "errors.h"

struct event_base;
struct evdns_base;
struct evbuffer;
struct evkeyvalq;
struct upstream_pool;
struct upstream_call;

struct upstream_stats {
    uint64_t connections_opened;
    uint64_t connections_reused; /* requests sent on an already used connection */
    uint64_t requests;
    uint64_t retries;
    uint64_t failures;
    uint32_t open;    /* live connections now */
    uint32_t idle;    /* of which idle */
    uint32_t waiting; /* queued requests now */
};

/*
 * New pool for URL on BASE. SSL_CTX is required when URL is https (borrowed; must outlive the
 * pool). CFG is borrowed and must outlive the pool (the worker holds a reference). NAME ("api",
 * "auth") appears in logs. Starts name resolution at once. Returns NULL when out of memory.
 */
struct upstream_pool *upstream_pool_new(struct event_base *base, struct evdns_base *dns,
                                        SSL_CTX *ssl_ctx, const struct config_url *url,
                                        const struct config *cfg, const char *name);

/* Close every connection and free the pool. No call may still be in flight or queued. */
void upstream_pool_free(struct upstream_pool *pool);

/* True once the host has at least one resolved address. */
bool upstream_pool_resolved(const struct upstream_pool *pool);
void upstream_pool_stats(const struct upstream_pool *pool, struct upstream_stats *out);

/* What to send. Everything is borrowed until the call's done callback or its free. */
struct upstream_request {
    enum evhttp_cmd_type method;
    const char *uri;                 /* origin-form target, sent unchanged */
    const struct evkeyvalq *headers; /* end-to-end headers to send; Host is added */
    struct evbuffer *body;           /* may be NULL or empty; never drained */
};

typedef void (*upstream_done_fn)(struct upstream_call *call, void *arg);

/*
 * Start REQ on POOL. DONE is called exactly once, later, from the loop (never from inside this
 * function), unless the call is freed first. Returns NULL and sets *ERR when the request cannot
 * even be queued (queue full, name resolution failed, out of memory): no callback then.
 */
struct upstream_call *upstream_call_start(struct upstream_pool *pool,
                                          const struct upstream_request *req, upstream_done_fn done,
                                          void *arg, enum gw_err *err);

/*
 * Results, valid from the done callback until upstream_call_free. On success status is the
 * upstream HTTP status (>= 100); on failure status is 0 and error()/detail() say why.
 */
int upstream_call_status(const struct upstream_call *call);
struct evkeyvalq *upstream_call_headers(struct upstream_call *call);
struct evbuffer *upstream_call_body(struct upstream_call *call);
enum gw_err upstream_call_error(const struct upstream_call *call);
const char *upstream_call_detail(const struct upstream_call *call); /* static or owned; short */
int upstream_call_attempts(const struct upstream_call *call);

/* Cancel (if still running: the connection is closed, no callback) and free. */
void upstream_call_free(struct upstream_call *call);

#endif
