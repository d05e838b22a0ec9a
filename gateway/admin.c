/*
 * admin: /livez and /readyz (see admin.h), served by the same HTTP/1.1 layer as the bots
 * (conn.c) on the main thread's loop. Bodies are JSON that says what is and is not ready, so
 * an operator reading a failed probe knows why without the logs.
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
#include "request.h"
#include "spool.h"
#include "stats.h"
#include "util.h"
#include "worker.h"

struct admin {
    struct conn_server *server;
    struct gw_stats stats; /* of the admin listener itself */
    bool audit_enabled;
    struct spool *spool;
    struct worker **workers;
    int nworkers;
    bool draining;
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
    reply_json(c, 404, NULL, json_pack("{s:s}", "error", "not found: /livez, /readyz"));
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
