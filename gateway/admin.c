/*
 * admin: /livez, /readyz and /metrics (see admin.h), served by the same HTTP/1.1 layer as the
 * bots (conn.c) on the main thread's loop. /livez and /readyz answer JSON that says what is and
 * is not ready, so an operator reading a failed probe knows why without the logs. /metrics is
 * the Prometheus text exposition (version 0.0.4): the workers' counters summed at scrape time.
 */
#include "admin.h"

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "conn.h"
#include "log.h"
#include "metrics.h"
#include "request.h"
#include "spool.h"
#include "stats.h"
#include "util.h"
#include "version.h"
#include "worker.h"

struct admin {
    struct conn_server *server;
    struct gw_stats stats; /* of the admin listener itself */
    bool audit_enabled;
    struct spool *spool;
    struct worker **workers;
    int nworkers;
    bool draining;
    uint64_t started_wall_ms;
    uint64_t reloads_ok, reloads_failed, last_reload_ok_wall_ms;
};

static void reply_json(struct conn *c, int status, const char *allow, json_t *body)
{
    char *s = json_dumps(body, JSON_COMPACT | JSON_PRESERVE_ORDER);
    json_decref(body);
    size_t len = s ? strlen(s) : 0;
    char head[512];
    int n = snprintf(head, sizeof(head),
                     "HTTP/1.1 %d %s\r\nContent-Type: application/json\r\nCache-Control: "
                     "no-store\r\nContent-Length: %zu\r\n%s%s%s\r\n",
                     status, errors_reason(status), len, allow ? "Allow: " : "", allow ? allow : "",
                     allow ? "\r\n" : "");
    struct iovec iov[2] = {{head, (size_t)n}, {s, len}};
    conn_send(c, iov, len ? 2 : 1, CONN_END);
    free(s);
}

#define MAX_WORKERS_FOR_METRICS 1024

/* A counter summed over the workers; OFF is its offset in struct gw_stats. */
static uint64_t sum_at(const struct admin *a, size_t off)
{
    uint64_t sum = 0;
    for (int i = 0; i < a->nworkers; i++) {
        atomic_uint_fast64_t *p = (atomic_uint_fast64_t *)((char *)&a->workers[i]->stats + off);
        sum += atomic_load_explicit(p, memory_order_relaxed);
    }
    return sum;
}
#define SUM(field) sum_at(a, offsetof(struct gw_stats, field))

static json_t *readyz(struct admin *a, bool *ready_out)
{
    int running = 0, draining = 0, resolved[ROUTE_UPSTREAM_COUNT] = {0}, audit_up = 0;
    int spooling = 0;
    for (int i = 0; i < a->nworkers; i++) {
        struct gw_stats *st = &a->workers[i]->stats;
        running += STAT_GET(st, running);
        draining += STAT_GET(st, draining);
        for (int u = 0; u < ROUTE_UPSTREAM_COUNT; u++)
            resolved[u] += STAT_GET(st, resolved[u]);
        audit_up += STAT_GET(st, audit_connected);
        spooling += STAT_GET(st, audit_spooling);
    }
    bool workers_ok = running == a->nworkers && draining == 0;
    bool api_ok = resolved[ROUTE_UPSTREAM_API] == a->nworkers;
    bool auth_ok = resolved[ROUTE_UPSTREAM_AUTH] == a->nworkers;
    bool ready = !a->draining && workers_ok && api_ok && auth_ok;
    /* The audit ledger is reported but does not decide readiness: without the database only
     * FinishRun and task actions get 503, everything else still works. */
    json_t *checks = json_pack(
        "{s:{s:b, s:i, s:i}, s:{s:b, s:i}, s:{s:b, s:i}, s:{s:b, s:b, s:i}, s:b}", "workers", "ok",
        workers_ok, "running", running, "configured", a->nworkers, "upstream_api", "resolved",
        api_ok, "threads_resolved", resolved[ROUTE_UPSTREAM_API], "upstream_auth", "resolved",
        auth_ok, "threads_resolved", resolved[ROUTE_UPSTREAM_AUTH], "audit_ledger", "enabled",
        a->audit_enabled, "connected", a->audit_enabled && audit_up == a->nworkers,
        "threads_connected", a->audit_enabled ? audit_up : 0, "shutting_down", a->draining);
    json_t *counters = json_pack(
        "{s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I}",
        "requests", (json_int_t)SUM(requests), "inflight", (json_int_t)SUM(inflight), "refusals",
        (json_int_t)SUM(refusals), "clients_closed", (json_int_t)SUM(clients_closed),
        "connections_open", (json_int_t)SUM(connections_open), "connections_accepted",
        (json_int_t)SUM(connections_accepted), "accept_errors", (json_int_t)SUM(accept_errors),
        "accept_paused", (json_int_t)SUM(accept_paused), "upstream_connections_opened",
        (json_int_t)SUM(upstream_connections_opened), "upstream_requests",
        (json_int_t)SUM(upstream_requests), "upstream_retries", (json_int_t)SUM(upstream_retries),
        "upstream_tls_full_handshakes", (json_int_t)SUM(upstream_tls_full), "upstream_tls_resumed",
        (json_int_t)SUM(upstream_tls_resumed), "upstream_socket_errors",
        (json_int_t)SUM(upstream_socket_errors), "buffered_body_bytes",
        (json_int_t)request_buffered_bytes(), "log_lines_dropped", (json_int_t)log_dropped());
    json_t *ledger = json_pack(
        "{s:I, s:I, s:I, s:I}", "rows_committed", (json_int_t)SUM(audit_committed), "rows_spooled",
        (json_int_t)SUM(audit_spooled), "rows_lost", (json_int_t)SUM(audit_lost),
        "refusals_summarised", (json_int_t)SUM(refusals_summarised));
    if (a->spool) {
        struct spool_stats ss;
        spool_get_stats(a->spool, &ss);
        uint64_t now = util_wall_ms();
        json_object_set_new(
            ledger, "spool",
            json_pack(
                "{s:b, s:I, s:I, s:I, s:f, s:I, s:I, s:I, s:I, s:I, s:I, s:I}", "in_use",
                spooling > 0, "records", (json_int_t)ss.records, "bytes", (json_int_t)ss.bytes,
                "segments", (json_int_t)ss.segments, "oldest_record_age_seconds",
                ss.oldest_wall_ms && now > ss.oldest_wall_ms
                    ? (double)(now - ss.oldest_wall_ms) / 1000.0
                    : 0.0,
                "appended", (json_int_t)ss.appended, "syncs", (json_int_t)ss.syncs, "replayed",
                (json_int_t)ss.replayed, "refused_full", (json_int_t)ss.refused_full,
                "write_errors", (json_int_t)ss.write_errors, "replay_refused",
                (json_int_t)ss.replay_refused, "cut_bytes", (json_int_t)ss.cut_bytes));
    }
    json_object_set_new(json_object_get(checks, "audit_ledger"), "counters", ledger);
    /* Requests per endpoint (not recorded row by row in the ledger, so counted here). */
    json_t *endpoints = json_object();
    for (size_t e = 0; e < ROUTER_MAX_ROUTES && router_by_index(e); e++) {
        uint64_t n =
            sum_at(a, offsetof(struct gw_stats, by_endpoint) + e * sizeof(atomic_uint_fast64_t));
        if (n)
            json_object_set_new(endpoints, router_by_index(e)->name, json_integer((json_int_t)n));
    }
    json_object_set_new(counters, "endpoints", endpoints);
    *ready_out = ready;
    return json_pack("{s:b, s:o, s:o}", "ready", ready, "checks", checks, "counters", counters);
}

/* ---- /metrics ---- */

static void reply_text(struct conn *c, int status, const char *ctype, const char *body, size_t len)
{
    char head[512];
    int n = snprintf(head, sizeof(head),
                     "HTTP/1.1 %d %s\r\nContent-Type: %s\r\nCache-Control: no-store\r\n"
                     "Content-Length: %zu\r\n\r\n",
                     status, errors_reason(status), ctype, len);
    struct iovec iov[2] = {{head, (size_t)n}, {(void *)body, len}};
    conn_send(c, iov, len ? 2 : 1, CONN_END);
}

static void counter(struct metrics_text *t, const char *name, const char *help, uint64_t v)
{
    metrics_family(t, name, "counter", help);
    metrics_sample_u64(t, name, NULL, v);
}

static void gauge(struct metrics_text *t, const char *name, const char *help, double v)
{
    metrics_family(t, name, "gauge", help);
    metrics_sample(t, name, NULL, v);
}

static const char *const upstream_names[ROUTE_UPSTREAM_COUNT] = {"api", "auth"};
static const char *const uperr_names[GW_UPERR__COUNT] = {
    "dns", "connect", "tls", "protocol", "timeout", "queue_full", "queue_timeout"};

static const char *route_label(size_t ri)
{
    const struct route *rt = ri < ROUTER_MAX_ROUTES ? router_by_index(ri) : NULL;
    return rt ? rt->name : "none";
}

static void render_requests(struct admin *a, struct metrics_text *t)
{
    char labels[160];
    metrics_family(t, "gateway_requests_total", "counter",
                   "Requests answered, by endpoint (route) and status sent (499: the bot left "
                   "first; route=\"none\": answered before routing).");
    for (size_t ri = 0; ri <= ROUTER_MAX_ROUTES; ri++) {
        if (ri < ROUTER_MAX_ROUTES && !router_by_index(ri))
            continue;
        for (unsigned sl = 0; sl < METRICS_STATUS_SLOTS; sl++) {
            uint64_t n = 0;
            for (int i = 0; i < a->nworkers; i++)
                n += atomic_load_explicit(&a->workers[i]->stats.responses[ri][sl],
                                          memory_order_relaxed);
            if (!n)
                continue;
            if (sl == METRICS_STATUS_SLOTS - 1)
                snprintf(labels, sizeof(labels), "route=\"%s\",code=\"none\"", route_label(ri));
            else
                snprintf(labels, sizeof(labels), "route=\"%s\",code=\"%u\"", route_label(ri),
                         sl + METRICS_STATUS_MIN);
            metrics_sample_u64(t, "gateway_requests_total", labels, n);
        }
    }
    const struct metrics_hist *hs[MAX_WORKERS_FOR_METRICS];
    int nw = a->nworkers < MAX_WORKERS_FOR_METRICS ? a->nworkers : MAX_WORKERS_FOR_METRICS;
    metrics_family(t, "gateway_request_duration_seconds", "histogram",
                   "From the first byte of a request's head to its reply handed to the kernel, "
                   "by endpoint.");
    for (size_t ri = 0; ri <= ROUTER_MAX_ROUTES; ri++) {
        if (ri < ROUTER_MAX_ROUTES && !router_by_index(ri))
            continue;
        uint64_t any = 0;
        for (int i = 0; i < nw; i++) {
            hs[i] = &a->workers[i]->stats.request_seconds[ri];
            for (int b = 0; b < METRICS_NBUCKETS; b++)
                any += atomic_load_explicit(&hs[i]->bucket[b], memory_order_relaxed);
        }
        if (!any)
            continue;
        snprintf(labels, sizeof(labels), "route=\"%s\"", route_label(ri));
        metrics_hist_render(t, "gateway_request_duration_seconds", labels, hs, (size_t)nw);
    }
    metrics_family(t, "gateway_upstream_duration_seconds", "histogram",
                   "From forwarding a request to the upstream's answer complete, by upstream.");
    for (int u = 0; u < ROUTE_UPSTREAM_COUNT; u++) {
        for (int i = 0; i < nw; i++)
            hs[i] = &a->workers[i]->stats.upstream_seconds[u];
        snprintf(labels, sizeof(labels), "upstream=\"%s\"", upstream_names[u]);
        metrics_hist_render(t, "gateway_upstream_duration_seconds", labels, hs, (size_t)nw);
    }
    metrics_family(t, "gateway_upstream_errors_total", "counter",
                   "Upstream calls that failed, by upstream and reason.");
    for (int u = 0; u < ROUTE_UPSTREAM_COUNT; u++)
        for (int e = 0; e < GW_UPERR__COUNT; e++) {
            uint64_t n = 0;
            for (int i = 0; i < a->nworkers; i++)
                n += atomic_load_explicit(&a->workers[i]->stats.upstream_errors[u][e],
                                          memory_order_relaxed);
            snprintf(labels, sizeof(labels), "upstream=\"%s\",reason=\"%s\"", upstream_names[u],
                     uperr_names[e]);
            metrics_sample_u64(t, "gateway_upstream_errors_total", labels, n);
        }
    static const char *const pool_gauges[3][2] = {
        {"gateway_upstream_connections_open", "Upstream connections open, by upstream."},
        {"gateway_upstream_connections_idle", "Upstream connections idle in the pools."},
        {"gateway_upstream_requests_waiting",
         "Requests waiting for an upstream connection, by upstream."}};
    for (int g = 0; g < 3; g++) {
        metrics_family(t, pool_gauges[g][0], "gauge", pool_gauges[g][1]);
        for (int u = 0; u < ROUTE_UPSTREAM_COUNT; u++) {
            uint64_t n = 0;
            for (int i = 0; i < a->nworkers; i++) {
                const struct gw_pool_gauges *pg = &a->workers[i]->stats.pools[u];
                n += atomic_load_explicit(g == 0   ? &pg->open
                                          : g == 1 ? &pg->idle
                                                   : &pg->waiting,
                                          memory_order_relaxed);
            }
            snprintf(labels, sizeof(labels), "upstream=\"%s\"", upstream_names[u]);
            metrics_sample_u64(t, pool_gauges[g][0], labels, n);
        }
    }
}

/* Refusal codes summed over the threads (each thread's table is in its own order). */
static void render_refusals(struct admin *a, struct metrics_text *t)
{
    const char *codes[METRICS_MAX_CODES * 2];
    uint64_t counts[METRICS_MAX_CODES * 2];
    size_t n = 0;
    uint64_t other = 0;
    for (int i = 0; i < a->nworkers; i++) {
        struct metrics_codes *mc = &a->workers[i]->stats.refusals_by_code;
        other += atomic_load_explicit(&mc->other, memory_order_relaxed);
        for (size_t k = 0; k < METRICS_MAX_CODES; k++) {
            const char *code = atomic_load_explicit(&mc->code[k], memory_order_acquire);
            if (!code)
                break;
            uint64_t v = atomic_load_explicit(&mc->n[k], memory_order_relaxed);
            size_t j = 0;
            while (j < n && strcmp(codes[j], code) != 0)
                j++;
            if (j == n) {
                if (n == sizeof(codes) / sizeof(codes[0])) {
                    other += v;
                    continue;
                }
                codes[n] = code;
                counts[n++] = 0;
            }
            counts[j] += v;
        }
    }
    metrics_family(t, "gateway_refusals_total", "counter",
                   "Requests the gateway answered itself with an error, by error code (the "
                   "\"error\" of its JSON answer).");
    char labels[160], esc[128];
    for (size_t j = 0; j < n; j++) {
        snprintf(labels, sizeof(labels), "code=\"%s\"",
                 metrics_label_escape(codes[j], esc, sizeof(esc)));
        metrics_sample_u64(t, "gateway_refusals_total", labels, counts[j]);
    }
    if (other)
        metrics_sample_u64(t, "gateway_refusals_total", "code=\"other\"", other);
}

static void render_ledger(struct admin *a, struct metrics_text *t)
{
    int connected = 0, spooling = 0;
    for (int i = 0; i < a->nworkers; i++) {
        connected += STAT_GET(&a->workers[i]->stats, audit_connected);
        spooling += STAT_GET(&a->workers[i]->stats, audit_spooling);
    }
    gauge(t, "gateway_audit_enabled", "1 when the KPI audit ledger is on.", a->audit_enabled);
    if (!a->audit_enabled)
        return;
    gauge(t, "gateway_audit_database_connections_up",
          "Worker threads whose audit database connection is up (of gateway_worker_threads).",
          connected);
    gauge(t, "gateway_audit_spooling_threads",
          "Worker threads whose ledger rows go to the spool now (the database is down or slow).",
          spooling);
    counter(t, "gateway_audit_rows_committed_total", "Ledger rows committed in PostgreSQL.",
            SUM(audit_committed));
    counter(t, "gateway_audit_rows_spooled_total", "Ledger rows handed to the spool.",
            SUM(audit_spooled));
    counter(t, "gateway_audit_rows_lost_total",
            "Ledger rows neither the database nor a spool took (logged one by one).",
            SUM(audit_lost));
    gauge(t, "gateway_audit_rows_pending",
          "Ledger rows handed over and not yet durable in the database or the spool.",
          (double)SUM(audit_pending));
    counter(t, "gateway_audit_batches_total",
            "Batches (one commit each) the ledger's connections finished; rows committed divided "
            "by this is the mean batch size.",
            SUM(audit_batches));
    gauge(t, "gateway_audit_batches_in_flight",
          "Batches on the wire and not yet committed, over all connections (each connection "
          "has at most [audit] pipeline_depth).",
          (double)SUM(audit_batches_in_flight));
    counter(t, "gateway_audit_refusals_summarised_total",
            "Refusals counted in a refusal_summary row instead of a row of their own.",
            SUM(refusals_summarised));
    const struct metrics_hist *hs[MAX_WORKERS_FOR_METRICS];
    int nw = a->nworkers < MAX_WORKERS_FOR_METRICS ? a->nworkers : MAX_WORKERS_FOR_METRICS;
    for (int i = 0; i < nw; i++)
        hs[i] = &a->workers[i]->stats.audit_commit_seconds;
    metrics_family(t, "gateway_audit_commit_seconds", "histogram",
                   "From a ledger row handed over to its commit in PostgreSQL or its sync in the "
                   "spool.");
    metrics_hist_render(t, "gateway_audit_commit_seconds", NULL, hs, (size_t)nw);
    counter(t, "gateway_kpi_records_total",
            "Accepted FinishRun and task-action records made durable.", SUM(kpi_records));
    metrics_family(t, "gateway_kpi_seconds_saved_total", "counter",
                   "Seconds saved, as valued by the KPI rules, of the records made durable.");
    metrics_sample(t, "gateway_kpi_seconds_saved_total", NULL,
                   (double)SUM(kpi_seconds_saved_ms) / 1000.0);
    counter(t, "gateway_kpi_entries_total", "Entries of the records made durable.",
            SUM(kpi_entries));
    if (!a->spool)
        return;
    struct spool_stats ss;
    spool_get_stats(a->spool, &ss);
    uint64_t now = util_wall_ms();
    gauge(t, "gateway_spool_records", "Records in the spool, waiting for the replay.",
          (double)ss.records);
    gauge(t, "gateway_spool_bytes", "Bytes of the spool's segment files.", (double)ss.bytes);
    gauge(t, "gateway_spool_segments", "Segment files in the spool.", (double)ss.segments);
    gauge(t, "gateway_spool_oldest_record_age_seconds",
          "Age of the oldest segment holding records (0: none).",
          ss.oldest_wall_ms && now > ss.oldest_wall_ms ? (double)(now - ss.oldest_wall_ms) / 1000.0
                                                       : 0.0);
    counter(t, "gateway_spool_rows_appended_total", "Rows appended to the spool.", ss.appended);
    counter(t, "gateway_spool_syncs_total", "fdatasync calls of the spool's writer.", ss.syncs);
    counter(t, "gateway_spool_rows_replayed_total", "Spooled rows inserted by the replay.",
            ss.replayed);
    counter(t, "gateway_spool_refused_full_total",
            "Rows the spool refused for want of room (their requests got 503).", ss.refused_full);
    counter(t, "gateway_spool_write_errors_total", "Failed writes or syncs of the spool.",
            ss.write_errors);
    counter(t, "gateway_spool_replay_refused_total",
            "Spooled rows PostgreSQL refused at replay (kept in refused.seg).", ss.replay_refused);
    counter(t, "gateway_spool_cut_bytes_total",
            "Damaged bytes cut from segments at start-up (kept under cut/).", ss.cut_bytes);
}

static void metrics_page(struct admin *a, struct conn *c)
{
    struct metrics_text t = {0};
    int running = 0, draining = 0;
    for (int i = 0; i < a->nworkers; i++) {
        running += STAT_GET(&a->workers[i]->stats, running);
        draining += STAT_GET(&a->workers[i]->stats, draining);
    }
    metrics_family(&t, "gateway_build_info", "gauge", "The gateway's version; always 1.");
    metrics_sample(&t, "gateway_build_info", "version=\"" GW_VERSION "\"", 1);
    gauge(&t, "gateway_start_time_seconds", "When the gateway started (Unix time).",
          (double)a->started_wall_ms / 1000.0);
    gauge(&t, "gateway_worker_threads", "Worker threads configured.", a->nworkers);
    gauge(&t, "gateway_worker_threads_running", "Worker threads running their loop.", running);
    gauge(&t, "gateway_draining", "1 while the gateway shuts down.", a->draining || draining);
    metrics_family(&t, "gateway_config_reloads_total", "counter",
                   "SIGHUP reloads, by result (failure: the file had errors, the running "
                   "configuration stayed).");
    metrics_sample_u64(&t, "gateway_config_reloads_total", "result=\"success\"", a->reloads_ok);
    metrics_sample_u64(&t, "gateway_config_reloads_total", "result=\"failure\"", a->reloads_failed);
    gauge(&t, "gateway_config_last_reload_success_timestamp_seconds",
          "When the configuration in force was loaded (start or last successful reload).",
          (double)(a->last_reload_ok_wall_ms ? a->last_reload_ok_wall_ms : a->started_wall_ms) /
              1000.0);
    render_requests(a, &t);
    render_refusals(a, &t);
    gauge(&t, "gateway_requests_in_flight", "Requests being handled now.", (double)SUM(inflight));
    counter(&t, "gateway_clients_closed_total", "Bots gone before their answer was written.",
            SUM(clients_closed));
    gauge(&t, "gateway_connections_open", "Bots' connections open now.",
          (double)SUM(connections_open));
    counter(&t, "gateway_connections_accepted_total", "Bots' connections accepted.",
            SUM(connections_accepted));
    counter(&t, "gateway_accept_errors_total", "accept failed for want of descriptors or memory.",
            SUM(accept_errors));
    counter(&t, "gateway_received_bytes_total", "Bytes received from bots (heads and bodies).",
            SUM(bytes_in));
    counter(&t, "gateway_sent_bytes_total", "Bytes sent to bots (heads and bodies).",
            SUM(bytes_out));
    counter(&t, "gateway_upstream_connections_opened_total", "Upstream connections opened.",
            SUM(upstream_connections_opened));
    counter(&t, "gateway_upstream_retries_total",
            "Upstream requests sent again on a fresh connection (not a byte had been written).",
            SUM(upstream_retries));
    counter(&t, "gateway_upstream_tls_handshakes_total", "Full TLS handshakes with upstreams.",
            SUM(upstream_tls_full));
    counter(&t, "gateway_upstream_tls_resumptions_total", "Resumed TLS sessions with upstreams.",
            SUM(upstream_tls_resumed));
    gauge(&t, "gateway_buffered_body_bytes", "Request body bytes buffered now (all threads).",
          (double)request_buffered_bytes());
    counter(&t, "gateway_log_lines_dropped_total",
            "Log lines dropped because a thread's log queue was full (the sink stalled).",
            log_dropped());
    render_ledger(a, &t);
    if (t.failed) {
        metrics_text_free(&t);
        reply_json(c, 503, NULL, json_pack("{s:s}", "error", "out of memory for /metrics"));
        return;
    }
    reply_text(c, 200, "text/plain; version=0.0.4; charset=utf-8", t.s, t.len);
    metrics_text_free(&t);
}

static void on_head(void *arg, struct conn *c, const struct http1_head *h, const char *hbuf,
                    enum gw_err err, const char *why)
{
    struct admin *a = arg;
    if (!h) {
        reply_json(
            c, errors_info(err)->status, NULL,
            json_pack("{s:s, s:s}", "error", errors_info(err)->code, "message", why ? why : ""));
        return;
    }
    const char *target = hbuf + h->target.off;
    size_t plen = 0;
    while (plen < h->target.len && target[plen] != '?')
        plen++;
    if (h->method.len != 3 || memcmp(hbuf + h->method.off, "GET", 3) != 0) {
        reply_json(c, 405, "GET", json_pack("{s:s}", "error", "method not allowed"));
        return;
    }
    if (plen == 6 && memcmp(target, "/livez", 6) == 0) {
        reply_json(c, 200, NULL, json_pack("{s:s}", "status", "alive"));
        return;
    }
    if (plen == 7 && memcmp(target, "/readyz", 7) == 0) {
        bool ready = false;
        json_t *body = readyz(a, &ready);
        reply_json(c, ready ? 200 : 503, NULL, body);
        return;
    }
    if (plen == 8 && memcmp(target, "/metrics", 8) == 0) {
        metrics_page(a, c);
        return;
    }
    reply_json(c, 404, NULL, json_pack("{s:s}", "error", "not found: /livez, /readyz, /metrics"));
}

struct admin *admin_new(struct event_base *base, int fd, struct worker **workers, int nworkers,
                        struct spool *spool, char *errbuf, size_t errlen)
{
    struct admin *a = calloc(1, sizeof(*a));
    if (!a) {
        close(fd);
        snprintf(errbuf, errlen, "out of memory");
        return NULL;
    }
    a->workers = workers;
    a->nworkers = nworkers;
    a->spool = spool;
    a->audit_enabled = nworkers > 0 && workers[0]->cfg->audit.database != NULL;
    a->started_wall_ms = util_wall_ms();
    struct conn_limits lim = {
        .max_header_size = 8192,
        .header_timeout_ms = 10000,
        .body_timeout_ms = 10000,
        .idle_timeout_ms = 10000,
        .send_timeout_ms = 10000,
        .max_connections = 64,
    };
    a->server = conn_server_new(base, fd, &lim, NULL, on_head, a, &a->stats, errbuf, errlen);
    if (!a->server) {
        free(a);
        return NULL;
    }
    return a;
}

void admin_note_reload(struct admin *a, bool ok)
{
    if (!a)
        return;
    if (ok) {
        a->reloads_ok++;
        a->last_reload_ok_wall_ms = util_wall_ms();
    } else {
        a->reloads_failed++;
    }
}

void admin_set_draining(struct admin *a)
{
    a->draining = true;
}

void admin_free(struct admin *a)
{
    if (!a)
        return;
    conn_server_free(a->server);
    free(a);
}
