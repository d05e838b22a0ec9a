/*
 * request: the phase pipeline (see request.h). Built-in phases and registered hooks are one
 * flat list of steps; a request walks it with r->step, so a hook that suspends (REQUEST_AGAIN)
 * resumes exactly where it left off.
 */
#include "request.h"

#include <event2/buffer.h>
#include <event2/event.h>
#include <event2/http.h>
#include <event2/http_struct.h>
#include <sys/queue.h>
#include <event2/keyvalq_struct.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "headers.h"
#include "log.h"
#include "upstream.h"
#include "worker.h"

/* ---- the step list ---- */

#define MAX_HOOKS 16
static request_hook_fn hooks[REQUEST_PHASE__COUNT][MAX_HOOKS];
static unsigned nhooks[REQUEST_PHASE__COUNT];

static request_done_fn done_hooks[MAX_HOOKS];
static unsigned ndone_hooks;

int request_done_hook_add(const char *name, request_done_fn fn)
{
    (void)name;
    if (ndone_hooks >= MAX_HOOKS)
        return -1;
    done_hooks[ndone_hooks++] = fn;
    return 0;
}

int request_hook_add(enum request_phase phase, const char *name, request_hook_fn fn)
{
    if (phase >= REQUEST_PHASE__COUNT || nhooks[phase] >= MAX_HOOKS)
        return -1;
    (void)name;
    hooks[phase][nhooks[phase]++] = fn;
    return 0;
}

static enum request_next phase_head(struct gw_request *r);
static enum request_next phase_route(struct gw_request *r);
static enum request_next phase_body(struct gw_request *r);
static enum request_next phase_forward(struct gw_request *r);
static enum request_next phase_reply(struct gw_request *r);

/* Steps before forwarding are numbered from 0; the response steps follow the forward step.
 * Hook steps are looked up through (phase, index) so registration order is kept. */
struct step_ref {
    request_hook_fn builtin; /* NULL: the hooks of PHASE run here */
    enum request_phase phase;
};

/* The fixed order; hooks of a phase run where the phase marker stands. */
static const struct step_ref order[] = {
    {phase_head, 0},
    {phase_route, 0},
    {phase_body, 0},
    {NULL, REQUEST_PHASE_POLICY},
    {NULL, REQUEST_PHASE_AUDIT},
    {phase_forward, 0},
    {NULL, REQUEST_PHASE_RESPONSE},
    {phase_reply, 0},
};
#define NORDER (sizeof(order) / sizeof(order[0]))

/* r->step encodes (position in order) * MAX_HOOKS + hook index. */
static void run_pipeline(struct gw_request *r)
{
    for (;;) {
        unsigned pos = r->step / MAX_HOOKS, sub = r->step % MAX_HOOKS;
        if (pos >= NORDER)
            return;
        const struct step_ref *s = &order[pos];
        request_hook_fn fn;
        if (s->builtin) {
            fn = s->builtin;
            r->step = (pos + 1) * MAX_HOOKS;
        } else if (sub < nhooks[s->phase]) {
            fn = hooks[s->phase][sub];
            r->step++;
        } else {
            r->step = (pos + 1) * MAX_HOOKS;
            continue;
        }
        enum request_next next = fn(r);
        if (next != REQUEST_NEXT)
            return; /* AGAIN: resumed later; DONE: replied and freed */
    }
}

void request_resume(struct gw_request *r)
{
    r->cancel = NULL;
    run_pipeline(r);
}

/* ---- reply and end of life ---- */

static void request_free(struct gw_request *r)
{
    worker_request_finished(r->worker, r);
    if (r->call)
        upstream_call_free(r->call);
    if (r->deadline)
        event_free(r->deadline);
    if (r->fwd_headers) {
        evhttp_clear_headers(r->fwd_headers);
        free(r->fwd_headers);
    }
    free(r);
}

static void access_log(struct gw_request *r)
{
    if (!r->worker->cfg->log.access_log)
        return;
    uint64_t dur = util_now_ms() - r->t_start_ms;
    const struct route *rt = r->match.route;
    log_info("access",
             "\"id\":\"%s\",\"method\":\"%s\",\"route\":\"%s\",\"status\":%d,\"ms\":%llu,"
             "\"upstream_ms\":%llu,\"bytes_in\":%zu,\"bytes_out\":%zu,\"ended_by\":\"%s\","
             "\"error\":%s%s%s,\"thread\":%d",
             r->id, r->method, rt ? rt->name : "-", r->status, (unsigned long long)dur,
             (unsigned long long)r->t_up_ms, r->bytes_in, r->bytes_out, r->ended_by,
             r->error_code ? "\"" : "", r->error_code ? r->error_code : "null",
             r->error_code ? "\"" : "", r->worker->index);
}

/* The one place a reply leaves: sets the request id and connection handling, sends, logs and
 * frees R. BODY is drained (may be NULL). */
static void send_reply(struct gw_request *r, int status, struct evbuffer *body)
{
    struct evkeyvalq *out = evhttp_request_get_output_headers(r->ereq);
    evhttp_remove_header(out, "X-Request-Id");
    evhttp_add_header(out, "X-Request-Id", r->id);
    if (r->close || r->worker->draining) {
        evhttp_remove_header(out, "Connection");
        evhttp_add_header(out, "Connection", "close");
    }
    r->status = status;
    r->bytes_out = body ? evbuffer_get_length(body) : 0;
    if (r->deadline)
        evtimer_del(r->deadline);
    if (r->match.route)
        atomic_fetch_add(&r->worker->status.by_endpoint[router_index(r->match.route)], 1);
    /* Observers run while the bot's request is still at hand (peer, headers), with the
     * status decided; evhttp may free the request once the reply is handed over. */
    for (unsigned i = 0; i < ndone_hooks; i++)
        done_hooks[i](r);
    worker_reply_queued(r->worker, r->ereq);
    evhttp_send_reply(r->ereq, status, NULL, body);
    r->ereq = NULL;
    access_log(r);
    request_free(r);
}

void request_reply_refusal(struct gw_request *r, int status, const char *code, const char *message)
{
    r->error_code = code;
    snprintf(r->error_message, sizeof(r->error_message), "%s", message ? message : "");
    if (!r->ended_by)
        r->ended_by = "gateway";
    char *json = errors_body(code, message, r->id);
    struct evbuffer *body = evbuffer_new();
    if (json && body)
        evbuffer_add(body, json, strlen(json));
    free(json);
    struct evkeyvalq *out = evhttp_request_get_output_headers(r->ereq);
    evhttp_add_header(out, "Content-Type", "application/json; charset=utf-8");
    evhttp_add_header(out, "Cache-Control", "no-store");
    send_reply(r, status, body);
    if (body)
        evbuffer_free(body);
}

void request_reply_error(struct gw_request *r, enum gw_err err, const char *message)
{
    const struct gw_err_info *info = errors_info(err);
    if (err == GW_ERR_BAD_FRAMING || err == GW_ERR_BAD_HEADER || err == GW_ERR_BAD_REQUEST ||
        err == GW_ERR_BAD_TARGET)
        r->close = true; /* the rest of the stream cannot be trusted */
    if (err == GW_ERR_METHOD && r->match.route && r->match.route->allow)
        evhttp_add_header(evhttp_request_get_output_headers(r->ereq), "Allow",
                          r->match.route->allow);
    if (err == GW_ERR_SHUTTING_DOWN || err == GW_ERR_QUEUE_FULL)
        evhttp_add_header(evhttp_request_get_output_headers(r->ereq), "Retry-After", "1");
    request_reply_refusal(r, info->status, info->code, message ? message : info->message);
}

static void stop_pending_work(struct gw_request *r)
{
    if (r->cancel) {
        void (*cancel)(struct gw_request *) = r->cancel;
        r->cancel = NULL;
        cancel(r);
    }
    if (r->call) {
        upstream_call_free(r->call);
        r->call = NULL;
    }
}

void request_abort(struct gw_request *r)
{
    stop_pending_work(r);
    r->ended_by = "shutdown";
    request_reply_error(r, GW_ERR_SHUTTING_DOWN, NULL);
}

static void deadline_cb(evutil_socket_t fd, short what, void *arg)
{
    struct gw_request *r = arg;
    stop_pending_work(r);
    r->ended_by = "timeout";
    request_reply_error(r, GW_ERR_REQUEST_TIMEOUT, NULL);
}

/* ---- built-in phases ---- */

static const char *method_name(enum evhttp_cmd_type t)
{
    switch (t) {
    case EVHTTP_REQ_GET:
        return "GET";
    case EVHTTP_REQ_POST:
        return "POST";
    case EVHTTP_REQ_HEAD:
        return "HEAD";
    case EVHTTP_REQ_PUT:
        return "PUT";
    case EVHTTP_REQ_DELETE:
        return "DELETE";
    case EVHTTP_REQ_OPTIONS:
        return "OPTIONS";
    case EVHTTP_REQ_TRACE:
        return "TRACE";
    case EVHTTP_REQ_CONNECT:
        return "CONNECT";
    case EVHTTP_REQ_PATCH:
        return "PATCH";
    }
    return "?";
}

static enum request_next phase_head(struct gw_request *r)
{
    const char *uri = evhttp_request_get_uri(r->ereq);
    struct evkeyvalq *in = evhttp_request_get_input_headers(r->ereq);

    /* Request id first, so that even a refusal carries one. */
    const char *given = evhttp_find_header(in, "X-Request-Id");
    if (given && headers_count(in, "X-Request-Id") == 1 && util_request_id_ok(given, strlen(given)))
        snprintf(r->id, sizeof(r->id), "%s", given);
    else
        util_uuid7(r->id);

    if (!uri || uri[0] != '/') {
        request_reply_error(r, GW_ERR_BAD_TARGET, NULL);
        return REQUEST_DONE;
    }
    /* libevent accepts any HTTP/x.y; only 1.0 and 1.1 mean what the gateway implements. */
    if (r->ereq->major != 1 || r->ereq->minor > 1) {
        r->ereq->major = 1; /* evhttp echoes the request's version in the status line */
        r->ereq->minor = 1;
        request_reply_error(r, GW_ERR_BAD_REQUEST, "only HTTP/1.0 and HTTP/1.1 are supported");
        return REQUEST_DONE;
    }
    enum gw_err err;
    const char *why = NULL;
    size_t line_len = strlen(r->method) + strlen(uri) + 11; /* " HTTP/1.1\r\n" */
    if (headers_check_request(in, line_len, r->worker->cfg->server.max_header_size, &err, &why) !=
        0) {
        request_reply_error(r, err, why);
        return REQUEST_DONE;
    }
    return REQUEST_NEXT;
}

static enum request_next phase_route(struct gw_request *r)
{
    unsigned method = (unsigned)evhttp_request_get_command(r->ereq);
    const char *why = NULL;
    if (router_canonical_path(evhttp_request_get_uri(r->ereq), r->path, sizeof(r->path), &why) !=
        0) {
        request_reply_refusal(r, 400, "request.noncanonical_path", why);
        return REQUEST_DONE;
    }
    if (router_match(method, r->path, &r->match) != 0) {
        request_reply_error(r, GW_ERR_NOT_FOUND, NULL);
        return REQUEST_DONE;
    }
    if (!r->match.method_ok) {
        char msg[160];
        snprintf(msg, sizeof(msg), "%s is not allowed on %s; use %s", r->method,
                 r->match.route->name, r->match.route->allow);
        request_reply_error(r, GW_ERR_METHOD, msg);
        return REQUEST_DONE;
    }
    return REQUEST_NEXT;
}

static enum request_next phase_body(struct gw_request *r)
{
    struct evbuffer *body = evhttp_request_get_input_buffer(r->ereq);
    r->bytes_in = evbuffer_get_length(body);
    /* evhttp enforces the same limit while reading; this guards chunked edge cases. */
    if (r->bytes_in > r->worker->cfg->server.max_body_size) {
        r->close = true;
        request_reply_error(r, GW_ERR_BODY_TOO_LARGE, NULL);
        return REQUEST_DONE;
    }
    return REQUEST_NEXT;
}

static void forward_done(struct upstream_call *call, void *arg);

static int build_forward_headers(struct gw_request *r)
{
    struct evkeyvalq *in = evhttp_request_get_input_headers(r->ereq);
    r->fwd_headers = calloc(1, sizeof(*r->fwd_headers));
    if (!r->fwd_headers)
        return -1;
    TAILQ_INIT(r->fwd_headers);
    if (headers_copy(in, r->fwd_headers, true) != 0)
        return -1;
    evhttp_add_header(r->fwd_headers, "X-Request-Id", r->id);
    if (r->worker->cfg->server.x_forwarded_for) {
        char *peer = NULL;
        ev_uint16_t port = 0;
        evhttp_connection_get_peer(evhttp_request_get_connection(r->ereq), &peer, &port);
        const char *prev = evhttp_find_header(in, "X-Forwarded-For");
        char xff[512];
        if (prev)
            snprintf(xff, sizeof(xff), "%s, %s", prev, peer ? peer : "unknown");
        else
            snprintf(xff, sizeof(xff), "%s", peer ? peer : "unknown");
        evhttp_add_header(r->fwd_headers, "X-Forwarded-For", xff);
    }
    return 0;
}

static enum request_next phase_forward(struct gw_request *r)
{
    if (build_forward_headers(r) != 0) {
        request_reply_error(r, GW_ERR_BAD_HEADER, NULL);
        return REQUEST_DONE;
    }
    struct upstream_request ureq = {
        .method = evhttp_request_get_command(r->ereq),
        .uri = evhttp_request_get_uri(r->ereq),
        .headers = r->fwd_headers,
        .body = evhttp_request_get_input_buffer(r->ereq),
    };
    enum gw_err err;
    struct upstream_pool *pool = r->worker->pools[r->match.route->upstream];
    r->t_up_start_ms = util_now_ms();
    r->call = upstream_call_start(pool, &ureq, forward_done, r, &err);
    if (!r->call) {
        request_reply_error(r, err, NULL);
        return REQUEST_DONE;
    }
    return REQUEST_AGAIN;
}

static void forward_done(struct upstream_call *call, void *arg)
{
    struct gw_request *r = arg;
    r->t_up_ms = util_now_ms() - r->t_up_start_ms;
    run_pipeline(r); /* response hooks, then phase_reply */
}

static enum request_next phase_reply(struct gw_request *r)
{
    struct upstream_call *call = r->call;
    int status = upstream_call_status(call);
    if (status == 0) {
        enum gw_err err = upstream_call_error(call);
        const char *detail = upstream_call_detail(call);
        const struct gw_err_info *info = errors_info(err);
        char msg[300];
        snprintf(msg, sizeof(msg), "%s: %s", info->message, detail);
        log_warn("upstream failed",
                 "\"id\":\"%s\",\"upstream\":\"%s\",\"error\":\"%s\",\"detail\":\"%s\","
                 "\"attempts\":%d",
                 r->id, r->match.route->upstream == ROUTE_UPSTREAM_AUTH ? "auth" : "api",
                 info->code, detail, upstream_call_attempts(call));
        r->ended_by = err == GW_ERR_UPSTREAM_TIMEOUT ? "timeout" : "upstream";
        request_reply_error(r, err, msg);
        return REQUEST_DONE;
    }
    struct evkeyvalq *out = evhttp_request_get_output_headers(r->ereq);
    headers_copy(upstream_call_headers(call), out, false);
    r->ended_by = "upstream";
    send_reply(r, status, upstream_call_body(call));
    return REQUEST_DONE;
}

/* ---- entry ---- */

void request_handle(struct evhttp_request *ereq, void *arg)
{
    struct worker *w = arg;
    struct gw_request *r = calloc(1, sizeof(*r));
    if (!r) {
        evhttp_send_error(ereq, 500, NULL);
        return;
    }
    r->worker = w;
    r->ereq = ereq;
    r->method = method_name(evhttp_request_get_command(ereq));
    r->t_start_ms = util_now_ms();
    r->t_wall_ms = util_wall_ms();
    r->ended_by = NULL;
    worker_request_started(w, r);

    r->deadline = evtimer_new(w->base, deadline_cb, r);
    if (r->deadline) {
        uint32_t ms = w->cfg->server.request_timeout_ms;
        struct timeval tv = {.tv_sec = ms / 1000, .tv_usec = (ms % 1000) * 1000};
        evtimer_add(r->deadline, &tv);
    }
    run_pipeline(r);
}
