/*
 * stats: one worker thread's counters, gauges, histograms and state flags. The worker thread
 * writes them (relaxed atomics, nothing locked on the request path); the admin thread sums
 * them over all threads when /readyz or /metrics is asked. They live as long as the worker.
 */
#ifndef GW_STATS_H
#define GW_STATS_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "metrics.h"
#include "router.h"

/* Why an upstream call failed, for gateway_upstream_errors_total{reason}. */
enum gw_upstream_error {
    GW_UPERR_DNS,
    GW_UPERR_CONNECT,
    GW_UPERR_TLS,
    GW_UPERR_PROTOCOL,
    GW_UPERR_TIMEOUT,
    GW_UPERR_QUEUE_FULL,
    GW_UPERR_QUEUE_TIMEOUT,
    GW_UPERR__COUNT
};

/* A pool's connections now (pool.c publishes them on every change). */
struct gw_pool_gauges {
    atomic_uint_fast32_t open, idle, waiting;
};

/* Route slot for a request answered before it was routed (protocol errors, 404). */
#define GW_STATS_NO_ROUTE ROUTER_MAX_ROUTES

struct gw_stats {
    atomic_bool running;
    atomic_bool draining;
    atomic_bool resolved[ROUTE_UPSTREAM_COUNT];
    atomic_bool audit_connected; /* the ledger's connection is up (or the ledger is off) */
    atomic_uint_fast64_t requests;
    atomic_uint_fast64_t inflight;
    atomic_uint_fast64_t refusals;                       /* requests refused by policy */
    atomic_uint_fast64_t by_endpoint[ROUTER_MAX_ROUTES]; /* requests answered, per route */
    atomic_uint_fast64_t clients_closed; /* bots gone before their answer was written */
    /* bots' connections */
    atomic_uint_fast64_t connections_open;
    atomic_uint_fast64_t connections_accepted;
    atomic_uint_fast64_t accept_errors; /* accept failed for want of descriptors or memory */
    atomic_uint_fast64_t accept_paused; /* times accepting paused (limit or descriptors) */
    /* upstream */
    atomic_uint_fast64_t upstream_connections_opened;
    atomic_uint_fast64_t upstream_requests;
    atomic_uint_fast64_t upstream_retries;
    atomic_uint_fast64_t upstream_tls_full;      /* full TLS handshakes */
    atomic_uint_fast64_t upstream_tls_resumed;   /* resumed sessions */
    atomic_uint_fast64_t upstream_socket_errors; /* socket() failed (descriptors) */
    /* the ledger */
    atomic_bool audit_spooling;               /* rows go to the spool (database unhealthy) */
    atomic_uint_fast64_t audit_committed;     /* rows committed by this thread's connection */
    atomic_uint_fast64_t audit_spooled;       /* rows handed to the spool */
    atomic_uint_fast64_t audit_lost;          /* rows neither the database nor a spool took */
    atomic_uint_fast64_t refusals_summarised; /* refusals counted in a summary, not a row */
    /* for /metrics */
    atomic_uint_fast64_t bytes_in, bytes_out; /* bodies and heads, bots' side */
    atomic_uint_fast64_t responses[ROUTER_MAX_ROUTES + 1][METRICS_STATUS_SLOTS];
    struct metrics_hist request_seconds[ROUTER_MAX_ROUTES + 1]; /* head's first byte to reply */
    struct metrics_hist upstream_seconds[ROUTE_UPSTREAM_COUNT];
    atomic_uint_fast64_t upstream_errors[ROUTE_UPSTREAM_COUNT][GW_UPERR__COUNT];
    struct gw_pool_gauges pools[ROUTE_UPSTREAM_COUNT];
    struct metrics_codes refusals_by_code;     /* every answer the gateway gave itself, by code */
    struct metrics_hist audit_commit_seconds;  /* a row handed over until durable */
    atomic_uint_fast64_t kpi_seconds_saved_ms; /* of accepted records made durable */
    atomic_uint_fast64_t kpi_entries;
    atomic_uint_fast64_t kpi_records;
    atomic_uint_fast64_t audit_pending; /* rows handed to the ledger, not yet durable nor lost */
    atomic_uint_fast64_t audit_batches; /* batches committed by this thread's connection */
    atomic_uint_fast64_t audit_batches_in_flight; /* batches on the wire, not yet committed */
};

#define STAT_ADD(st, field, n) atomic_fetch_add_explicit(&(st)->field, (n), memory_order_relaxed)
#define STAT_INC(st, field) STAT_ADD(st, field, 1)
#define STAT_DEC(st, field) atomic_fetch_sub_explicit(&(st)->field, 1, memory_order_relaxed)
#define STAT_SET(st, field, v) atomic_store_explicit(&(st)->field, (v), memory_order_relaxed)
#define STAT_GET(st, field) atomic_load_explicit(&(st)->field, memory_order_relaxed)

#endif
