/*
 * worker: one thread with its own event_base, evdns resolver, evhttp listener on its own
 * SO_REUSEPORT socket and its own upstream pools (design.md §3). Nothing on the request path is
 * shared with other threads; the admin thread reads the atomics in struct worker_status.
 */
#ifndef GW_WORKER_H
#define GW_WORKER_H

#include <openssl/ssl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <sys/queue.h>

#include "config.h"
#include "request.h"
#include "router.h"

struct event_base;
struct evdns_base;
struct evhttp;
struct evhttp_request;
struct evhttp_bound_socket;
struct event;
struct upstream_pool;
struct audit_thread;

/* Written by the worker's janitor (every second) and on state changes; read by admin. */
struct worker_status {
    atomic_bool running;
    atomic_bool draining;
    atomic_bool resolved[ROUTE_UPSTREAM_COUNT];
    atomic_uint_fast64_t requests;
    atomic_uint_fast64_t inflight;
    atomic_uint_fast64_t upstream_connections_opened;
    atomic_uint_fast64_t upstream_requests;
    atomic_uint_fast64_t upstream_retries;
    atomic_uint_fast64_t refusals;                       /* requests refused by policy */
    atomic_uint_fast64_t by_endpoint[ROUTER_MAX_ROUTES]; /* requests answered, per route */
    atomic_bool audit_connected; /* the audit ledger's connection is up (or the ledger off) */
};

struct worker {
    int index;
    pthread_t thread;
    struct config *cfg; /* a reference */
    struct event_base *base;
    struct evdns_base *dns;
    struct evhttp *http;
    struct evhttp_bound_socket *bound;
    struct upstream_pool *pools[ROUTE_UPSTREAM_COUNT];
    struct audit_thread *audit; /* NULL when the ledger is off */
    struct event *stop_ev;      /* activated from the main thread */
    struct event *deadline;     /* shutdown deadline */
    struct event *janitor;
    TAILQ_HEAD(, gw_request) inflight;
    unsigned ninflight;
    unsigned unflushed; /* replies handed to evhttp but not yet written out */
    uint32_t nconns;    /* bots' connections open on this thread (connguard) */
    uint32_t max_conns; /* this thread's share of [server] max_connections */
    bool accept_paused; /* the listener is disabled at the connection limit */
    bool draining;
    bool flush_grace; /* the shutdown deadline passed once; waiting for replies to go out */
    struct worker_status status;
};

/*
 * Build worker INDEX around the listening socket FD (taken over: closed with the worker).
 * CFG gets a new reference; SSL_CTX is borrowed. Returns NULL with a message in ERRBUF.
 */
struct worker *worker_new(int index, struct config *cfg, SSL_CTX *ssl_ctx, int fd, char *errbuf,
                          size_t errlen);
int worker_start(struct worker *w); /* spawn the thread; 0 or -1 */
void worker_stop(struct worker *w); /* thread-safe: begin draining */
void worker_join_and_free(struct worker *w);

/* Called by request.c as requests come and go. */
void worker_request_started(struct worker *w, struct gw_request *r);
void worker_request_finished(struct worker *w, struct gw_request *r);
/* A reply is about to be sent on EREQ: the worker keeps its loop running until it is written
 * (or the bot's connection fails), so shutdown never cuts a reply short. */
void worker_reply_queued(struct worker *w, struct evhttp_request *ereq);
void worker_count_refusal(struct worker *w);

#endif
