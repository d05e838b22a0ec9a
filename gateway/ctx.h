/*
 * ctx: the narrow per-thread context the request path runs in: the loop, the resolver, the
 * configuration snapshot, the upstream pools, the audit ledger's thread state, the counters
 * and the requests in flight. The worker builds one per thread and passes it down; modules
 * take what they need from it and never see the worker, so nothing below the worker depends
 * on it.
 */
#ifndef GW_CTX_H
#define GW_CTX_H

#include <stdbool.h>
#include <sys/queue.h>

#include "router.h"

struct event_base;
struct evdns_base;
struct config;
struct pool;
struct audit_thread;
struct gw_stats;
struct gw_request;
struct identity_cache;

struct gw_ctx {
    int index; /* worker thread number, for logs and records */
    struct event_base *base;
    struct evdns_base *dns;
    struct config *cfg; /* the thread's snapshot; the worker holds the reference */
    struct pool *pools[ROUTE_UPSTREAM_COUNT];
    struct audit_thread *audit; /* NULL: the ledger is off */
    struct gw_stats *stats;
    struct identity_cache *identities; /* bots' token claims decoded (NULL: decode each time) */
    bool draining;                     /* shutting down: new requests get 503, replies close */
    /* Requests in flight on this thread; request.c keeps the list. */
    TAILQ_HEAD(gw_request_list, gw_request) requests;
    unsigned nrequests;
};

#endif
