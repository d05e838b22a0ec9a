/*
 * admin: /livez and /readyz (see admin.h). Bodies are JSON that says what is and is not ready,
 * so an operator reading a failed probe knows why without the logs.
 */
#include "admin.h"

#include <event2/buffer.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>
#include <jansson.h>
#include <stdbool.h>
#include <stdlib.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "worker.h"

struct admin {
    struct evhttp *http;
    bool audit_enabled;
    struct worker **workers;
    int nworkers;
    bool draining;
};

static void reply_json(struct evhttp_request *req, int status, json_t *body)
{
    char *s = json_dumps(body, JSON_COMPACT | JSON_PRESERVE_ORDER);
    struct evbuffer *buf = evbuffer_new();
    if (s && buf)
        evbuffer_add(buf, s, strlen(s));
    evhttp_add_header(evhttp_request_get_output_headers(req), "Content-Type", "application/json");
    evhttp_add_header(evhttp_request_get_output_headers(req), "Cache-Control", "no-store");
    evhttp_send_reply(req, status, NULL, buf);
    if (buf)
        evbuffer_free(buf);
    free(s);
    json_decref(body);
}

static void handle(struct evhttp_request *req, void *arg)
{
    struct admin *a = arg;
    const char *uri = evhttp_request_get_uri(req);
    size_t plen = strcspn(uri, "?");

    if (evhttp_request_get_command(req) != EVHTTP_REQ_GET) {
        evhttp_add_header(evhttp_request_get_output_headers(req), "Allow", "GET");
        reply_json(req, 405, json_pack("{s:s}", "error", "method not allowed"));
        return;
    }
    if (plen == 6 && strncmp(uri, "/livez", 6) == 0) {
        reply_json(req, 200, json_pack("{s:s}", "status", "alive"));
        return;
    }
    if (plen == 7 && strncmp(uri, "/readyz", 7) == 0) {
        bool ready = !a->draining;
        int running = 0, draining = 0, resolved[ROUTE_UPSTREAM_COUNT] = {0}, audit_up = 0;
        uint64_t requests = 0, opened = 0, upreq = 0, refusals = 0;
        for (int i = 0; i < a->nworkers; i++) {
            struct worker_status *st = &a->workers[i]->status;
            running += atomic_load(&st->running);
            draining += atomic_load(&st->draining);
            for (int u = 0; u < ROUTE_UPSTREAM_COUNT; u++)
                resolved[u] += atomic_load(&st->resolved[u]);
            requests += atomic_load(&st->requests);
            opened += atomic_load(&st->upstream_connections_opened);
            upreq += atomic_load(&st->upstream_requests);
            refusals += atomic_load(&st->refusals);
            audit_up += atomic_load(&st->audit_connected);
        }
        bool workers_ok = running == a->nworkers && draining == 0;
        bool api_ok = resolved[ROUTE_UPSTREAM_API] == a->nworkers;
        bool auth_ok = resolved[ROUTE_UPSTREAM_AUTH] == a->nworkers;
        ready = ready && workers_ok && api_ok && auth_ok;
        /* The audit ledger is reported but does not decide readiness: without the database
         * only FinishRun and task actions get 503, everything else still works. */
        json_t *checks = json_pack(
            "{s:{s:b, s:i, s:i}, s:{s:b, s:i}, s:{s:b, s:i}, s:{s:b, s:b, s:i}, s:b}", "workers",
            "ok", workers_ok, "running", running, "configured", a->nworkers, "upstream_api",
            "resolved", api_ok, "threads_resolved", resolved[ROUTE_UPSTREAM_API], "upstream_auth",
            "resolved", auth_ok, "threads_resolved", resolved[ROUTE_UPSTREAM_AUTH], "audit_ledger",
            "enabled", a->audit_enabled, "connected", a->audit_enabled && audit_up == a->nworkers,
            "threads_connected", a->audit_enabled ? audit_up : 0, "shutting_down", a->draining);
        json_t *counters =
            json_pack("{s:I, s:I, s:I, s:I}", "requests", (json_int_t)requests,
                      "upstream_connections_opened", (json_int_t)opened, "upstream_requests",
                      (json_int_t)upreq, "refusals", (json_int_t)refusals);
        /* Requests per endpoint (not recorded row by row in the ledger, so counted here). */
        json_t *endpoints = json_object();
        for (size_t e = 0; e < ROUTER_MAX_ROUTES && router_by_index(e); e++) {
            uint64_t n = 0;
            for (int i = 0; i < a->nworkers; i++)
                n += atomic_load(&a->workers[i]->status.by_endpoint[e]);
            if (n)
                json_object_set_new(endpoints, router_by_index(e)->name,
                                    json_integer((json_int_t)n));
        }
        json_object_set_new(counters, "endpoints", endpoints);
        json_t *body =
            json_pack("{s:b, s:o, s:o}", "ready", ready, "checks", checks, "counters", counters);
        reply_json(req, ready ? 200 : 503, body);
        return;
    }
    reply_json(req, 404, json_pack("{s:s}", "error", "not found: /livez, /readyz"));
}

struct admin *admin_new(struct event_base *base, int fd, struct worker **workers, int nworkers,
                        char *errbuf, size_t errlen)
{
    struct admin *a = calloc(1, sizeof(*a));
    if (!a) {
        close(fd);
        snprintf(errbuf, errlen, "out of memory");
        return NULL;
    }
    a->workers = workers;
    a->nworkers = nworkers;
    a->audit_enabled = nworkers > 0 && workers[0]->cfg->audit.database != NULL;
    a->http = evhttp_new(base);
    if (!a->http || !evhttp_accept_socket_with_handle(a->http, fd)) {
        snprintf(errbuf, errlen, "cannot serve the admin listener");
        close(fd);
        admin_free(a);
        return NULL;
    }
    evhttp_set_max_headers_size(a->http, 8192);
    evhttp_set_max_body_size(a->http, 0);
    evhttp_set_timeout(a->http, 10);
    evhttp_set_gencb(a->http, handle, a);
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
    if (a->http)
        evhttp_free(a->http);
    free(a);
}
