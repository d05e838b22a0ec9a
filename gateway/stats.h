/*
 * stats: one worker thread's counters and state flags. The worker thread writes them (relaxed
 * atomics, nothing locked on the request path); the admin thread sums them over all threads
 * when /readyz is asked.
 */
#ifndef GW_STATS_H
#define GW_STATS_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "router.h"

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
};

#define STAT_ADD(st, field, n) atomic_fetch_add_explicit(&(st)->field, (n), memory_order_relaxed)
#define STAT_INC(st, field) STAT_ADD(st, field, 1)
#define STAT_DEC(st, field) atomic_fetch_sub_explicit(&(st)->field, 1, memory_order_relaxed)
#define STAT_SET(st, field, v) atomic_store_explicit(&(st)->field, (v), memory_order_relaxed)
#define STAT_GET(st, field) atomic_load_explicit(&(st)->field, memory_order_relaxed)

#endif
