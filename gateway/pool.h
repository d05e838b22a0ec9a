/*
 * pool: the upstream side of one worker thread for one upstream host (the Anymate API host or
 * its auth host): keep-alive connections (upconn.c), name resolution, and the calls that use
 * them. Nothing is shared with other threads.
 *
 *   - A call takes the most recently used idle connection, else opens a new one while fewer
 *     than pool_max are open, else waits in a FIFO (at most queue_size, at most queue_timeout;
 *     503 beyond either). Bursts wait; they are not refused.
 *   - Released connections go to the first waiting call, else back to the idle list, of which
 *     at most pool_size are kept (as nginx's keepalive); each retires after
 *     max_requests_per_conn requests or idle_timeout idle.
 *   - TLS: chain, host name (or IP) and SNI verified (tls.c); a new connection resumes the
 *     last session of the pool (session tickets), so reconnecting costs no full handshake.
 *   - A request is retried once, on a fresh connection, only when not one byte of it was
 *     written (connect refused, a pooled connection found closed). A written request is never
 *     retried, GET included: Anymate's GETs are not idempotent.
 *   - Separate deadlines for waiting in the queue, the TCP connect, the TLS handshake and the
 *     response (between reads once it flows).
 *   - The host name is resolved with evdns, re-resolved every dns_refresh; an address that
 *     refused a connection is skipped for a while.
 *
 * Completions: a call's callbacks run only from the loop, never inside upstream_call_*.
 */
#ifndef GW_POOL_H
#define GW_POOL_H

#include <openssl/ssl.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/uio.h>

#include "config.h"
#include "errors.h"
#include "headers.h"

struct event_base;
struct evdns_base;
struct gw_stats;
struct pool;
struct upstream_call;

struct pool_stats {
    uint64_t connections_opened;
    uint64_t requests;
    uint64_t retries;
    uint64_t failures;
    uint32_t open;    /* live connections now */
    uint32_t idle;    /* of which idle */
    uint32_t waiting; /* queued calls now */
};

/*
 * A pool for URL on BASE. SSL_CTX is required for https URLs (borrowed; outlives the pool).
 * CFG is borrowed and must outlive the pool. NAME ("api", "auth") appears in logs. STATS: the
 * thread's counters (borrowed). Starts resolving at once. NULL when out of memory.
 */
struct pool *pool_new(struct event_base *base, struct evdns_base *dns, SSL_CTX *ssl_ctx,
                      const struct config_url *url, const struct config *cfg, const char *name,
                      struct gw_stats *stats);

/* Close every connection and free the pool. No call may be in flight or queued. */
void pool_free(struct pool *p);

bool pool_resolved(const struct pool *p); /* at least one address known */
void pool_get_stats(const struct pool *p, struct pool_stats *out);
/* Publish the connections open, idle and waiting into G on every change (borrowed; it must
 * outlive the pool). */
struct gw_pool_gauges;
void pool_set_gauges(struct pool *p, struct gw_pool_gauges *g);

/* A reloaded configuration for the same upstream (host, port and scheme unchanged): CFG and URL
 * replace the borrowed ones from now on (calls in flight read their limits afresh). */
void pool_set_config(struct pool *p, const struct config *cfg, const struct config_url *url);

/* No call alive and no connection in use: pool_free may run (a retired pool after a reload
 * waits for this; its idle connections are closed then). */
bool pool_quiet(const struct pool *p);
const char *pool_host(const struct pool *p); /* the Host header value for this upstream */
const char *pool_name(const struct pool *p);

/* What to send. Borrowed until the call's done callback or its free. */
struct upstream_request {
    const struct iovec *iov; /* the head, and the whole body when known */
    int niov;
    bool body_follows;    /* the body streams in through upstream_call_write/_end */
    bool head_request;    /* HEAD: the response has no body */
    bool stream_response; /* hand the response over as it arrives (head, body) */
};

struct upstream_call_ops {
    /* stream_response: the response head is known (status, headers). */
    void (*head)(void *arg);
    /* stream_response: body bytes; return 1 to pause until upstream_call_resume. */
    int (*body)(void *arg, const char *data, size_t len);
    /* The call ended: upstream_call_status > 0, or 0 and upstream_call_error says why. */
    void (*done)(void *arg);
    /* body_follows: the queue fell below the low watermark after a write returned 1. */
    void (*drained)(void *arg);
};

/* Start REQ. Returns NULL only when out of memory; every other failure (queue full, name not
 * resolvable, no descriptors) arrives through done, later. */
struct upstream_call *upstream_call_start(struct pool *p, const struct upstream_request *req,
                                          const struct upstream_call_ops *ops, void *arg);

/* Streamed request body bytes (copied). Returns 1 when more than the high watermark waits. */
int upstream_call_write(struct upstream_call *c, const void *data, size_t len);
/* The streamed body is complete. */
void upstream_call_write_end(struct upstream_call *c);
/* Continue reading the response after body returned 1. */
void upstream_call_resume(struct upstream_call *c);

/* Has the call ended (done was called or is due)? */
bool upstream_call_finished(const struct upstream_call *c);

/* Did any byte of the request reach the kernel? Was all of it written? */
bool upstream_call_sent(const struct upstream_call *c);
bool upstream_call_request_written(const struct upstream_call *c);

/* Cancel if still running (a connection in mid-exchange is closed; no callback) and free. */
void upstream_call_free(struct upstream_call *c);

/* Results, valid after head/done until upstream_call_free. */
int upstream_call_status(const struct upstream_call *c);
const struct hfield *upstream_call_headers(const struct upstream_call *c, unsigned *n);
/* The response body (not stream_response); NULL when empty. */
const char *upstream_call_body(const struct upstream_call *c, size_t *len);
bool upstream_call_chunked(const struct upstream_call *c); /* the response was chunked */
bool upstream_call_has_length(const struct upstream_call *c, uint64_t *len);
enum gw_err upstream_call_error(const struct upstream_call *c);
const char *upstream_call_detail(const struct upstream_call *c); /* short, owned by the call */
int upstream_call_attempts(const struct upstream_call *c);
bool upstream_call_reused(const struct upstream_call *c); /* carried by a pooled connection */

#endif
