/*
 * request: the phase pipeline (see request.h).
 *
 * Built-in phases and registered hooks form one flat list of steps; a request walks it with
 * r->step, so a step that suspends (REQUEST_AGAIN) resumes exactly where it left off. What a
 * suspended request waits for is in r->wait:
 *
 *   W_BODY      its body, read whole (validated endpoints)
 *   W_HOOK      a hook (audit commit, map learning); r->cancel stops it
 *   W_UPSTREAM  the upstream call (its body may be streaming up meanwhile)
 *   W_STREAM    the upstream's body, streaming down to the bot
 *
 * The bot going away (sink gone) cancels what can be cancelled: a call that has not written a
 * byte (or not all of its request) is freed, so a request whose bot is gone is never
 * forwarded; a written request runs to its end and its outcome is recorded. Either way the
 * request then resumes through request_resume, which finishes it without a reply.
 *
 * Body memory: bodies read whole reserve their size, streamed bodies one window, from a
 * process-wide budget ([server] max_buffered_body); a request that would exceed it gets 503.
 */
#include "request.h"

#include <event2/event.h>
#include <inttypes.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "config.h"
#include "conn.h"
#include "identity.h"
#include "log.h"
#include "metrics.h"
#include "pool.h"
#include "stats.h"

#define STREAM_WINDOW (64 * 1024) /* budget held by a body streaming upstream */
#define BODY_STEP 4096            /* budget grows by this for chunked bodies read whole */

enum { W_NONE, W_BODY, W_HOOK, W_UPSTREAM, W_STREAM };

/* ---- the step list ---- */

#define MAX_HOOKS 16
static request_hook_fn hooks[REQUEST_PHASE__COUNT][MAX_HOOKS];
static unsigned nhooks[REQUEST_PHASE__COUNT];

static request_done_fn done_hooks[MAX_HOOKS];
static unsigned ndone_hooks;

static atomic_size_t buffered_total;

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
    (void)name;
    if (phase >= REQUEST_PHASE__COUNT || nhooks[phase] >= MAX_HOOKS)
        return -1;
    hooks[phase][nhooks[phase]++] = fn;
    return 0;
}

static enum request_next phase_head(struct gw_request *r);
static enum request_next phase_route(struct gw_request *r);
static enum request_next phase_body(struct gw_request *r);
static enum request_next phase_forward(struct gw_request *r);
static enum request_next phase_reply(struct gw_request *r);

struct step_ref {
    request_hook_fn builtin; /* NULL: the hooks of PHASE run here */
    enum request_phase phase;
};

static const struct step_ref order[] = {
    {phase_head, 0},
    {phase_route, 0},
    {NULL, REQUEST_PHASE_HEAD},
    {phase_body, 0},
    {NULL, REQUEST_PHASE_POLICY},
    {NULL, REQUEST_PHASE_AUDIT},
    {phase_forward, 0},
    {NULL, REQUEST_PHASE_RESPONSE},
    {phase_reply, 0},
};
#define NORDER (sizeof(order) / sizeof(order[0]))
#define FORWARD_POS 6u
_Static_assert(FORWARD_POS < NORDER, "phase_forward's position");

static void request_finish(struct gw_request *r);

static void finish_gone(struct gw_request *r)
{
    r->status = 499;
    if (!r->error_code)
        r->error_code = errors_info(GW_ERR_CLIENT_CLOSED)->code;
    r->ended_by = "client";
    request_finish(r);
}

/* r->step encodes (position in order) * MAX_HOOKS + hook index. */
static void run_pipeline(struct gw_request *r)
{
    for (;;) {
        unsigned pos = r->step / MAX_HOOKS, sub = r->step % MAX_HOOKS;
        if (pos >= NORDER) {
            finish_gone(r); /* only a streaming reply resumes here: its bot went away */
            return;
        }
        if (!r->conn && pos <= FORWARD_POS) {
            finish_gone(r); /* the bot left before anything was forwarded */
            return;
        }
        const struct step_ref *s = &order[pos];
        request_hook_fn fn;
        if (s->builtin) {
            fn = s->builtin; /* sets r->wait itself before it returns AGAIN */
            r->step = (pos + 1) * MAX_HOOKS;
        } else if (sub < nhooks[s->phase]) {
            fn = hooks[s->phase][sub];
            r->step++;
            r->wait = W_HOOK; /* what the hook's AGAIN means */
        } else {
            r->step = (pos + 1) * MAX_HOOKS;
            continue;
        }
        /* After anything but NEXT, R may be gone already: a step that suspends may still have
         * finished the request before returning (a refusal decided at once). */
        if (fn(r) != REQUEST_NEXT)
            return;
        r->wait = W_NONE;
    }
}

void request_resume(struct gw_request *r)
{
    r->cancel = NULL;
    r->wait = W_NONE;
    run_pipeline(r);
}

static void wake_cb(evutil_socket_t fd, short what, void *arg)
{
    request_resume(arg);
}

/* Resume from the loop, not from the current call. */
static void wake(struct gw_request *r)
{
    event_active(&r->wake, EV_TIMEOUT, 0);
}

/* ---- body budget ---- */

static bool budget_take(struct gw_request *r, size_t n)
{
    size_t limit = r->cfg->server.max_buffered_body;
    size_t now = atomic_fetch_add(&buffered_total, n) + n;
    if (now > limit) {
        atomic_fetch_sub(&buffered_total, n);
        return false;
    }
    r->body_reserved += n;
    return true;
}

size_t request_buffered_bytes(void)
{
    return atomic_load(&buffered_total);
}

/* ---- end of life ---- */

const struct identity *request_identity(struct gw_request *r)
{
    if (!r->who_known) {
        identity_cached(r->ctx->identities, request_header(r, "Authorization"), &r->who);
        r->who_known = true;
    }
    return &r->who;
}

/* The reason label of an upstream failure's error code, or -1 for other codes. */
static int upstream_error_reason(const char *code)
{
    static const struct {
        enum gw_err err;
        enum gw_upstream_error reason;
    } map[] = {
        {GW_ERR_UPSTREAM_DNS, GW_UPERR_DNS},
        {GW_ERR_UPSTREAM_CONNECT, GW_UPERR_CONNECT},
        {GW_ERR_UPSTREAM_TLS, GW_UPERR_TLS},
        {GW_ERR_UPSTREAM_PROTOCOL, GW_UPERR_PROTOCOL},
        {GW_ERR_UPSTREAM_TIMEOUT, GW_UPERR_TIMEOUT},
        {GW_ERR_QUEUE_FULL, GW_UPERR_QUEUE_FULL},
        {GW_ERR_QUEUE_TIMEOUT, GW_UPERR_QUEUE_TIMEOUT},
    };
    if (strncmp(code, "upstream.", 9) != 0)
        return -1;
    for (size_t i = 0; i < sizeof(map) / sizeof(map[0]); i++)
        if (strcmp(code, errors_info(map[i].err)->code) == 0)
            return (int)map[i].reason;
    return -1;
}

/* The request's part of /metrics: its status by route, its durations, what refused it. */
static void count_request(struct gw_request *r, uint64_t total_us)
{
    struct gw_stats *st = r->ctx->stats;
    const struct route *rt = r->match.route;
    size_t ri = rt ? router_index(rt) : GW_STATS_NO_ROUTE;
    STAT_ADD(st, bytes_in, r->bytes_in);
    STAT_ADD(st, bytes_out, r->bytes_out);
    atomic_fetch_add_explicit(&st->responses[ri][metrics_status_slot(r->status)], 1,
                              memory_order_relaxed);
    metrics_observe(&st->request_seconds[ri], total_us);
    if (rt && r->forwarded && r->t_up_us > 0)
        metrics_observe(&st->upstream_seconds[rt->upstream], r->t_up_us);
    if (r->error_code && r->status != 499) {
        metrics_code_inc(&st->refusals_by_code, r->error_code);
        int reason = rt ? upstream_error_reason(r->error_code) : -1;
        if (reason >= 0)
            atomic_fetch_add_explicit(&st->upstream_errors[rt->upstream][reason], 1,
                                      memory_order_relaxed);
    }
}

/*
 * One JSON line per request on the access log: who (the bot's customer and name from its
 * token's claims, never the token), what (method, route, canonical path), the answer (status,
 * bytes, durations, whether the upstream connection was new or reused), who ended it and the
 * error code of a refusal or failure.
 */
static void access_log(struct gw_request *r, uint64_t total_us)
{
    if (!r->cfg->log.access_log)
        return;
    const struct route *rt = r->match.route;
    const struct identity *who = request_identity(r);
    char cust[IDENTITY_MAX * 2], bot[IDENTITY_MAX * 2], path[512], method[64];
    log_json_escape(who->customer_key, cust, sizeof(cust));
    log_json_escape(who->subject, bot, sizeof(bot));
    log_json_escape(r->path && r->path[0] ? r->path : (r->target ? r->target : ""), path,
                    sizeof(path));
    log_json_escape(r->method ? r->method : "", method, sizeof(method));
    log_access("\"request_id\":\"%s\",\"customer\":\"%s\",\"bot\":\"%s\",\"peer\":\"%s\","
               "\"method\":\"%s\",\"route\":\"%s\",\"path\":\"%s\",\"status\":%d,"
               "\"bytes_in\":%zu,\"bytes_out\":%zu,\"seconds\":%.6f,\"upstream_seconds\":%.6f,"
               "\"upstream_connection\":%s,\"ended_by\":\"%s\",\"error\":%s%s%s,\"thread\":%d",
               r->id, cust, bot, request_peer(r), method, rt ? rt->name : "-", path, r->status,
               r->bytes_in, r->bytes_out, (double)total_us / 1e6, (double)r->t_up_us / 1e6,
               !r->up_known   ? "null"
               : r->up_reused ? "\"reused\""
                              : "\"new\"",
               r->ended_by ? r->ended_by : "gateway", r->error_code ? "\"" : "",
               r->error_code ? r->error_code : "null", r->error_code ? "\"" : "", r->ctx->index);
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

static void request_finish(struct gw_request *r)
{
    struct gw_ctx *ctx = r->ctx;
    if (r->conn && !r->replied) { /* never leave a bot without an end */
        conn_abort(r->conn);
        r->conn = NULL;
    }
    if (r->cancel) {
        void (*cancel)(struct gw_request *) = r->cancel;
        r->cancel = NULL;
        cancel(r);
    }
    event_del(&r->deadline);
    event_del(&r->wake);
    if (r->match.route)
        STAT_INC(ctx->stats, by_endpoint[router_index(r->match.route)]);
    for (unsigned i = 0; i < ndone_hooks; i++)
        done_hooks[i](r);
    uint64_t total_us = util_now_us() - r->t_start_us;
    count_request(r, total_us);
    access_log(r, total_us);
    if (r->call)
        upstream_call_free(r->call);
    if (r->body_reserved)
        atomic_fetch_sub(&buffered_total, r->body_reserved);
    TAILQ_REMOVE(&ctx->requests, r, link);
    ctx->nrequests--;
    STAT_DEC(ctx->stats, inflight);
    bytes_free(&r->body);
    bytes_free(&r->up_head);
    bytes_free(&r->reply_head);
    free(r->items);
    config_unref(r->cfg);
    free(r);
}

/* ---- the gateway's own replies ---- */

void request_reply_header(struct gw_request *r, const char *name, const char *value)
{
    size_t room = sizeof(r->reply_headers) - r->reply_headers_len;
    int n = snprintf(r->reply_headers + r->reply_headers_len, room, "%s: %s\r\n", name, value);
    if (n > 0 && (size_t)n < room)
        r->reply_headers_len += (size_t)n;
}

static bool closing(struct gw_request *r)
{
    return r->close || r->ctx->draining || conn_must_close(r->conn);
}

static const char *connection_line(struct gw_request *r, bool close)
{
    if (close)
        return "Connection: close\r\n";
    return r->http_minor == 0 ? "Connection: keep-alive\r\n" : "";
}

/* Send a complete reply and hand the connection back. */
static void send_whole(struct gw_request *r, const char *head, size_t hlen, const char *body,
                       size_t blen, bool close)
{
    struct iovec iov[2] = {{(void *)head, hlen}, {(void *)body, blen}};
    conn_send(r->conn, iov, blen ? 2 : 1, CONN_END | (close ? CONN_CLOSE : 0));
    r->conn = NULL;
    r->replied = true;
    r->bytes_out = blen;
}

void request_reply_refusal(struct gw_request *r, int status, const char *code, const char *message)
{
    r->error_code = code;
    snprintf(r->error_message, sizeof(r->error_message), "%s", message ? message : "");
    if (!r->ended_by)
        r->ended_by = "gateway";
    r->status = status;
    if (r->conn) {
        char *json = errors_body(code, message, r->id);
        bool close = closing(r);
        char head[1024];
        int n = snprintf(head, sizeof(head),
                         "HTTP/1.1 %d %s\r\nContent-Type: application/json; charset=utf-8\r\n"
                         "Cache-Control: no-store\r\nContent-Length: %zu\r\nX-Request-Id: %s\r\n"
                         "%.*s%s\r\n",
                         status, errors_reason(status), json ? strlen(json) : 0, r->id,
                         (int)r->reply_headers_len, r->reply_headers, connection_line(r, close));
        if (n < 0 || (size_t)n >= sizeof(head))
            n = 0;
        send_whole(r, head, (size_t)n, json, json ? strlen(json) : 0, close);
        free(json);
    }
    request_finish(r);
}

void request_reply_error(struct gw_request *r, enum gw_err err, const char *message)
{
    const struct gw_err_info *info = errors_info(err);
    switch (err) {
    case GW_ERR_BAD_REQUEST:
    case GW_ERR_BAD_FRAMING:
    case GW_ERR_BAD_HEADER:
    case GW_ERR_BAD_TARGET:
    case GW_ERR_BAD_CHUNK:
    case GW_ERR_BAD_HOST:
    case GW_ERR_HEADERS_TOO_LARGE:
    case GW_ERR_CLIENT_TIMEOUT:
    case GW_ERR_EXPECTATION:
        r->close = true; /* the rest of the stream cannot be trusted */
        break;
    case GW_ERR_METHOD:
        if (r->match.route && r->match.route->allow)
            request_reply_header(r, "Allow", r->match.route->allow);
        break;
    case GW_ERR_SHUTTING_DOWN:
    case GW_ERR_QUEUE_FULL:
    case GW_ERR_QUEUE_TIMEOUT:
    case GW_ERR_OVERLOADED:
        request_reply_header(r, "Retry-After", "1");
        break;
    default:
        break;
    }
    request_reply_refusal(r, info->status, info->code, message ? message : info->message);
}

const char *request_peer(struct gw_request *r)
{
    if (!r->peer[0])
        conn_addr_str(&r->peer_addr, r->peer, sizeof(r->peer));
    return r->peer;
}

const char *request_header(const struct gw_request *r, const char *name)
{
    return headers_get(r->fields, r->nfields, name);
}

unsigned request_header_count(const struct gw_request *r, const char *name)
{
    return headers_count(r->fields, r->nfields, name);
}

/* ---- deadline, shutdown ---- */

static void deadline_cb(evutil_socket_t fd, short what, void *arg)
{
    struct gw_request *r = arg;
    stop_pending_work(r);
    r->ended_by = "timeout";
    if (r->reply_started) { /* the bot has part of an answer: cut it off */
        r->error_code = errors_info(GW_ERR_REQUEST_TIMEOUT)->code;
        if (r->conn)
            conn_abort(r->conn);
        r->conn = NULL;
        r->replied = true;
        request_finish(r);
        return;
    }
    request_reply_error(r, GW_ERR_REQUEST_TIMEOUT, NULL);
}

void request_abort_all(struct gw_ctx *ctx)
{
    struct gw_request *r;
    while ((r = TAILQ_FIRST(&ctx->requests)) != NULL) {
        stop_pending_work(r);
        r->ended_by = "shutdown";
        if (r->reply_started) {
            r->error_code = errors_info(GW_ERR_SHUTTING_DOWN)->code;
            if (r->conn)
                conn_abort(r->conn);
            r->conn = NULL;
            r->replied = true;
            request_finish(r);
        } else {
            request_reply_error(r, GW_ERR_SHUTTING_DOWN, NULL);
        }
    }
}

/* ---- the bot's connection reports ---- */

static int sink_body(void *arg, const char *data, size_t len)
{
    struct gw_request *r = arg;
    r->bytes_in += len;
    if (r->bytes_in > r->body_limit) {
        char msg[160];
        snprintf(msg, sizeof(msg), "the %s body is larger than the %zu bytes this gateway accepts",
                 r->match.route ? r->match.route->name : "request", r->body_limit);
        stop_pending_work(r);
        r->close = true;
        if (r->reply_started) { /* the upstream already answered part: cut it off */
            r->error_code = errors_info(GW_ERR_BODY_TOO_LARGE)->code;
            conn_abort(r->conn);
            r->conn = NULL;
            r->replied = true;
            request_finish(r);
            return -1;
        }
        request_reply_error(r, GW_ERR_BODY_TOO_LARGE, msg);
        return -1;
    }
    if (r->body_whole) {
        if (r->body.len + len > r->body_reserved &&
            !budget_take(r, len > BODY_STEP ? len : BODY_STEP)) {
            r->close = true;
            request_reply_error(r, GW_ERR_OVERLOADED,
                                "the gateway holds as many request bodies "
                                "as it may ([server] max_buffered_body)");
            return -1;
        }
        if (bytes_add(&r->body, data, len) != 0) {
            r->close = true;
            request_reply_error(r, GW_ERR_OVERLOADED, "out of memory for the request body");
            return -1;
        }
        return 0;
    }
    if (!r->call)
        return 0; /* the upstream already answered: the rest is dropped */
    int full;
    if (r->chunked) { /* re-framed: one chunk per piece */
        char size[24];
        int n = snprintf(size, sizeof(size), "%zx\r\n", len);
        upstream_call_write(r->call, size, (size_t)n);
        upstream_call_write(r->call, data, len);
        full = upstream_call_write(r->call, "\r\n", 2);
    } else {
        full = upstream_call_write(r->call, data, len);
    }
    if (full && r->conn)
        conn_pause_body(r->conn);
    return 0;
}

static void sink_body_end(void *arg)
{
    struct gw_request *r = arg;
    r->body_complete = true;
    if (r->body_whole) {
        if (r->wait == W_BODY)
            request_resume(r);
        return;
    }
    if (r->call) {
        if (r->chunked)
            upstream_call_write(r->call, "0\r\n\r\n", 5);
        upstream_call_write_end(r->call);
    }
}

static void sink_body_error(void *arg, enum gw_err err, const char *why)
{
    struct gw_request *r = arg;
    /* An incomplete request never reaches the upstream whole: its call is closed. */
    stop_pending_work(r);
    r->close = true;
    if (r->reply_started) {
        r->error_code = errors_info(err)->code;
        conn_abort(r->conn);
        r->conn = NULL;
        r->replied = true;
        request_finish(r);
        return;
    }
    if (err == GW_ERR_CLIENT_TIMEOUT)
        r->ended_by = "timeout";
    request_reply_error(r, err, why);
}

static void sink_gone(void *arg)
{
    struct gw_request *r = arg;
    r->conn = NULL;
    if (!r->ended_by)
        r->ended_by = "client";
    switch (r->wait) {
    case W_BODY:
        wake(r);
        break;
    case W_UPSTREAM:
        /* Not forwarded yet, or its body cut short: cancel. Written whole: let it finish, so
         * the outcome records what Anymate said. */
        if (r->call && !upstream_call_request_written(r->call)) {
            upstream_call_free(r->call);
            r->call = NULL;
            wake(r);
        }
        break;
    case W_STREAM:
        if (r->call) {
            upstream_call_free(r->call);
            r->call = NULL;
        }
        wake(r);
        break;
    default:
        break; /* a hook resumes it */
    }
}

static void sink_drained(void *arg)
{
    struct gw_request *r = arg;
    if (r->call)
        upstream_call_resume(r->call);
}

static const struct conn_sink sink = {
    .body = sink_body,
    .body_end = sink_body_end,
    .body_error = sink_body_error,
    .gone = sink_gone,
    .drained = sink_drained,
};

/* ---- the upstream call reports ---- */

static void up_head(void *arg)
{
    struct gw_request *r = arg;
    r->t_up_us = util_now_us() - r->t_up_start_us;
    r->up_known = true;
    r->up_reused = upstream_call_reused(r->call);
    request_resume(r); /* response hooks, then phase_reply prepares the head */
}

static int up_body(void *arg, const char *data, size_t len)
{
    struct gw_request *r = arg;
    if (!r->conn)
        return 0;
    r->bytes_out += len;
    struct iovec iov[4];
    int n = 0;
    bool with_head = r->reply_head.len > 0; /* the head, with the first bytes of the body */
    if (with_head)
        iov[n++] = (struct iovec){r->reply_head.data, r->reply_head.len};
    r->reply_started = true;
    char size[24];
    if (r->stream_chunked) {
        int k = snprintf(size, sizeof(size), "%zx\r\n", len);
        iov[n++] = (struct iovec){size, (size_t)k};
        iov[n++] = (struct iovec){(void *)data, len};
        iov[n++] = (struct iovec){"\r\n", 2};
    } else {
        iov[n++] = (struct iovec){(void *)data, len};
    }
    int full = conn_send(r->conn, iov, n, 0);
    if (with_head)
        bytes_free(&r->reply_head);
    return full;
}

static void log_upstream_failure(struct gw_request *r, enum gw_err err)
{
    char d[300];
    log_warn("upstream failed",
             "\"id\":\"%s\",\"upstream\":\"%s\",\"error\":\"%s\",\"detail\":\"%s\","
             "\"attempts\":%d",
             r->id, r->match.route->upstream == ROUTE_UPSTREAM_AUTH ? "auth" : "api",
             errors_info(err)->code, log_json_escape(upstream_call_detail(r->call), d, sizeof(d)),
             upstream_call_attempts(r->call));
}

/* The streamed response ended (or failed). */
static void stream_end(struct gw_request *r)
{
    r->wait = W_NONE;
    if (!r->conn) {
        finish_gone(r);
        return;
    }
    if (upstream_call_status(r->call) == 0) {
        enum gw_err err = upstream_call_error(r->call);
        if (!r->reply_started) { /* nothing sent yet: the bot still gets a proper answer */
            char msg[300];
            snprintf(msg, sizeof(msg), "%s: %s", errors_info(err)->message,
                     upstream_call_detail(r->call));
            log_upstream_failure(r, err);
            r->ended_by = err == GW_ERR_UPSTREAM_TIMEOUT ? "timeout" : "upstream";
            request_reply_error(r, err, msg);
            return;
        }
        log_upstream_failure(r, err);
        r->error_code = errors_info(err)->code;
        r->ended_by = err == GW_ERR_UPSTREAM_TIMEOUT ? "timeout" : "upstream";
        conn_abort(r->conn); /* the bot sees a cut reply, not a complete wrong one */
        r->conn = NULL;
        r->replied = true;
        request_finish(r);
        return;
    }
    struct iovec iov[2];
    int n = 0;
    if (r->reply_head.len)
        iov[n++] = (struct iovec){r->reply_head.data, r->reply_head.len};
    if (r->stream_chunked)
        iov[n++] = (struct iovec){"0\r\n\r\n", 5};
    conn_send(r->conn, iov, n, CONN_END | (r->close ? CONN_CLOSE : 0));
    r->conn = NULL;
    r->replied = true;
    request_finish(r);
}

static void up_done(void *arg)
{
    struct gw_request *r = arg;
    r->t_up_us = util_now_us() - r->t_up_start_us;
    if (r->wait == W_STREAM) {
        stream_end(r);
        return;
    }
    request_resume(r);
}

static void up_drained(void *arg)
{
    struct gw_request *r = arg;
    if (r->conn)
        conn_read_body(r->conn);
}

static const struct upstream_call_ops up_ops = {
    .head = up_head,
    .body = up_body,
    .done = up_done,
    .drained = up_drained,
};

/* ---- built-in phases ---- */

static enum request_next phase_head(struct gw_request *r)
{
    /* Request id first, so that even a refusal carries one. */
    const char *given = request_header(r, "X-Request-Id");
    if (given && request_header_count(r, "X-Request-Id") == 1 &&
        util_request_id_ok(given, strlen(given)))
        snprintf(r->id, sizeof(r->id), "%s", given);
    if (r->ctx->draining) {
        r->close = true;
        r->ended_by = "shutdown";
        request_reply_error(r, GW_ERR_SHUTTING_DOWN, NULL);
        return REQUEST_DONE;
    }
    if (r->target[0] != '/') {
        request_reply_error(r, GW_ERR_BAD_TARGET, NULL);
        return REQUEST_DONE;
    }
    return REQUEST_NEXT;
}

static enum request_next phase_route(struct gw_request *r)
{
    const char *why = NULL;
    if (router_canonical_path(r->target, r->path, strlen(r->target) + 1, &why) != 0) {
        request_reply_refusal(r, 400, "request.noncanonical_path", why);
        return REQUEST_DONE;
    }
    if (router_match(r->method_bit, r->path, &r->match) != 0) {
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

static enum request_next refuse_size(struct gw_request *r)
{
    char msg[200];
    snprintf(msg, sizeof(msg), "the %s body is %" PRIu64 " bytes; this gateway accepts at most %zu",
             r->match.route->name, r->content_length, r->body_limit);
    r->close = true;
    request_reply_error(r, GW_ERR_BODY_TOO_LARGE, msg);
    return REQUEST_DONE;
}

static enum request_next phase_body(struct gw_request *r)
{
    if (!r->has_length && !r->chunked) {
        r->body_complete = true;
        return REQUEST_NEXT;
    }
    if (r->has_length && r->content_length > r->body_limit)
        return refuse_size(r);
    if (!r->body_whole) {
        r->streaming_up = true; /* forward starts it */
        return REQUEST_NEXT;
    }
    size_t want = r->has_length ? (size_t)r->content_length : BODY_STEP;
    if (!budget_take(r, want)) {
        r->close = true;
        request_reply_error(r, GW_ERR_OVERLOADED,
                            "the gateway holds as many request bodies as "
                            "it may ([server] max_buffered_body)");
        return REQUEST_DONE;
    }
    if (bytes_reserve(&r->body, want) != 0) {
        r->close = true;
        request_reply_error(r, GW_ERR_OVERLOADED, "out of memory for the request body");
        return REQUEST_DONE;
    }
    r->wait = W_BODY;
    conn_read_body(r->conn);
    return REQUEST_AGAIN;
}

static int build_upstream_head(struct gw_request *r, struct pool *pool)
{
    struct bytes *b = &r->up_head;
    const struct config *cfg = r->cfg;
    const char *host = pool_host(pool);
    const char *xff = cfg->server.x_forwarded_for ? request_header(r, "X-Forwarded-For") : NULL;
    bool keep[HTTP1_MAX_FIELDS];
    headers_forward_all(r->fields, r->nfields, true, keep);
    /* Never longer than the bot's head plus what the gateway adds: one allocation. */
    if (bytes_reserve(b, r->head_len + strlen(host) + (xff ? strlen(xff) : 0) + 256) != 0)
        return -1;
    int rc = bytes_addstr(b, r->method) | bytes_add(b, " ", 1) | bytes_addstr(b, r->target) |
             bytes_addstr(b, " HTTP/1.1\r\n") | bytes_header(b, "Host", host);
    for (unsigned i = 0; i < r->nfields; i++)
        if (keep[i])
            rc |= bytes_header(b, r->fields[i].name, r->fields[i].value);
    rc |= bytes_header(b, "X-Request-Id", r->id);
    if (cfg->server.x_forwarded_for) {
        rc |= bytes_addstr(b, "X-Forwarded-For: ");
        if (xff)
            rc |= bytes_addstr(b, xff) | bytes_addstr(b, ", ");
        rc |= bytes_addstr(b, request_peer(r)) | bytes_addstr(b, "\r\n");
    }
    /* Framing is rebuilt from what the gateway reads, never copied. */
    if (r->streaming_up && !r->has_length) {
        rc |= bytes_addstr(b, "Transfer-Encoding: chunked\r\n");
    } else if (r->streaming_up || r->body.len > 0 || r->has_length || r->chunked ||
               (r->method_bit & (ROUTE_POST | ROUTE_PUT | ROUTE_PATCH))) {
        rc |= bytes_addstr(b, "Content-Length: ") |
              bytes_u64(b, r->streaming_up ? r->content_length : r->body.len) |
              bytes_addstr(b, "\r\n");
    }
    return rc | bytes_addstr(b, "\r\n");
}

static enum request_next phase_forward(struct gw_request *r)
{
    struct pool *pool = r->ctx->pools[r->match.route->upstream];
    if (build_upstream_head(r, pool) != 0) {
        request_reply_error(r, GW_ERR_OVERLOADED, "out of memory for the upstream request");
        return REQUEST_DONE;
    }
    if (r->streaming_up && !budget_take(r, STREAM_WINDOW)) {
        r->close = true;
        request_reply_error(r, GW_ERR_OVERLOADED,
                            "the gateway holds as many request bodies as "
                            "it may ([server] max_buffered_body)");
        return REQUEST_DONE;
    }
    r->up_iov[0].iov_base = r->up_head.data;
    r->up_iov[0].iov_len = r->up_head.len;
    r->up_iov[1].iov_base = r->body.data;
    r->up_iov[1].iov_len = r->body.len;
    struct upstream_request req = {
        .iov = r->up_iov,
        .niov = r->body.len ? 2 : 1,
        .body_follows = r->streaming_up,
        .head_request = r->method_bit == ROUTE_HEAD,
        .stream_response = !r->buffer_response,
    };
    r->t_up_start_us = util_now_us();
    r->call = upstream_call_start(pool, &req, &up_ops, r);
    if (!r->call) {
        request_reply_error(r, GW_ERR_OVERLOADED, "out of memory for the upstream call");
        return REQUEST_DONE;
    }
    r->forwarded = true;
    r->wait = W_UPSTREAM;
    if (r->streaming_up)
        conn_read_body(r->conn);
    return REQUEST_AGAIN;
}

/* Reply head for the upstream's answer: its end-to-end headers, our id and framing (LENGTH:
 * a Content-Length when >= 0; else chunked when CHUNKED; else none). */
static int build_reply_head(struct gw_request *r, struct bytes *b, int status, long long length,
                            bool chunked, bool close)
{
    unsigned n;
    const struct hfield *f = upstream_call_headers(r->call, &n);
    bool keep[HTTP1_MAX_FIELDS];
    headers_forward_all(f, n, false, keep);
    const char *reason = errors_reason(status);
    if (strcmp(reason, "Unknown") == 0)
        reason = "";
    int rc = bytes_reserve(b, 512) | bytes_addstr(b, "HTTP/1.1 ") | bytes_u64(b, (unsigned)status) |
             bytes_add(b, " ", 1) | bytes_addstr(b, reason) | bytes_addstr(b, "\r\n");
    for (unsigned i = 0; i < n; i++)
        if (keep[i])
            rc |= bytes_header(b, f[i].name, f[i].value);
    rc |= bytes_header(b, "X-Request-Id", r->id);
    if (length >= 0)
        rc |= bytes_addstr(b, "Content-Length: ") | bytes_u64(b, (unsigned long long)length) |
              bytes_addstr(b, "\r\n");
    else if (chunked)
        rc |= bytes_addstr(b, "Transfer-Encoding: chunked\r\n");
    return rc | bytes_addstr(b, connection_line(r, close)) | bytes_addstr(b, "\r\n");
}

/* Largest rest of a response read and dropped when its bot is gone, so that the upstream
 * connection stays usable; larger (or unknown) ones close it instead. */
#define DRAIN_MAX (64 * 1024)

static enum request_next phase_reply(struct gw_request *r)
{
    struct upstream_call *call = r->call;
    if (!r->conn) {
        uint64_t len;
        if (call && !upstream_call_finished(call) && upstream_call_status(call) > 0 &&
            upstream_call_has_length(call, &len) && len <= DRAIN_MAX) {
            r->wait = W_STREAM; /* the body is dropped; stream_end finishes the request */
            return REQUEST_AGAIN;
        }
        finish_gone(r);
        return REQUEST_DONE;
    }
    int status = upstream_call_status(call);
    if (status == 0) {
        enum gw_err err = upstream_call_error(call);
        const struct gw_err_info *info = errors_info(err);
        char msg[300];
        snprintf(msg, sizeof(msg), "%s: %s", info->message, upstream_call_detail(call));
        log_upstream_failure(r, err);
        r->ended_by = err == GW_ERR_UPSTREAM_TIMEOUT ? "timeout" : "upstream";
        request_reply_error(r, err, msg);
        return REQUEST_DONE;
    }
    r->ended_by = "upstream";
    r->status = status;
    bool no_body = r->method_bit == ROUTE_HEAD || status == 204 || status == 304 || status < 200;
    uint64_t ulen = 0;
    bool has_len = upstream_call_has_length(call, &ulen);
    if (r->buffer_response) {
        size_t blen = 0;
        const char *body = upstream_call_body(call, &blen);
        bool close = closing(r);
        struct bytes head = {0};
        if (build_reply_head(r, &head, status, no_body ? -1 : (long long)blen, false, close) != 0) {
            bytes_free(&head);
            request_reply_error(r, GW_ERR_OVERLOADED, "out of memory for the reply");
            return REQUEST_DONE;
        }
        send_whole(r, head.data, head.len, body, blen, close);
        bytes_free(&head);
        request_finish(r);
        return REQUEST_DONE;
    }
    /* Streaming: the head goes out with the first body bytes (one write), the body as it
     * comes. Until then an upstream failure can still be answered with an error. */
    long long length = -1;
    if (!no_body && has_len)
        length = (long long)ulen;
    else if (!no_body && r->http_minor >= 1)
        r->stream_chunked = true;
    else if (!no_body)
        r->close = true; /* HTTP/1.0 bot, length unknown: the close ends the body */
    bool close = closing(r);
    r->close = close;
    if (build_reply_head(r, &r->reply_head, status, length, r->stream_chunked, close) != 0) {
        request_reply_error(r, GW_ERR_OVERLOADED, "out of memory for the reply");
        return REQUEST_DONE;
    }
    r->wait = W_STREAM;
    return REQUEST_AGAIN;
}

/* ---- entry ---- */

static struct gw_request *request_new(struct gw_ctx *ctx, struct conn *c,
                                      const struct http1_head *h, const char *hbuf)
{
    /* One block: the request, its fields, its copy of the head, room for the canonical path
     * (never longer than the target). */
    size_t nf = h ? h->nfields : 0, hlen = h ? h->len + 1 : 0, plen = h ? h->target.len + 1 : 1;
    struct gw_request *r = calloc(1, sizeof(*r) + sizeof(struct hfield) * nf + hlen + plen);
    if (!r)
        return NULL;
    r->path = (char *)(r + 1) + sizeof(struct hfield) * nf + hlen;
    r->ctx = ctx;
    r->conn = c;
    r->t_start_us = conn_head_started_us(c);
    if (r->t_start_us == 0)
        r->t_start_us = util_now_us();
    r->t_start_ms = r->t_start_us / 1000;
    r->t_wall_ms = util_wall_ms();
    r->cfg = config_ref(ctx->cfg);
    r->body_limit = r->cfg->server.max_body_size;
    util_uuid7(r->id);
    conn_peer_addr(c, &r->peer_addr);
    r->method = r->target = "-";
    if (h) {
        struct hfield *fields = (struct hfield *)(r + 1);
        char *copy = (char *)(fields + nf);
        headers_copy_head(h, hbuf, copy, fields, &r->method, &r->target);
        r->fields = fields;
        r->nfields = h->nfields;
        r->head_len = h->len;
        r->method_bit = router_method_bit(r->method);
        r->http_minor = h->minor;
        r->has_length = h->body == HTTP1_BODY_LENGTH;
        r->content_length = h->content_length;
        r->chunked = h->body == HTTP1_BODY_CHUNKED;
    }
    event_assign(&r->wake, ctx->base, -1, 0, wake_cb, r);
    evtimer_assign(&r->deadline, ctx->base, deadline_cb, r);
    uint64_t spent = util_now_ms() - r->t_start_ms;
    uint64_t ms = r->cfg->server.request_timeout_ms;
    ms = ms > spent ? ms - spent : 0;
    struct timeval tv = {.tv_sec = (time_t)(ms / 1000), .tv_usec = (suseconds_t)(ms % 1000) * 1000};
    evtimer_add(&r->deadline, &tv);
    TAILQ_INSERT_TAIL(&ctx->requests, r, link);
    ctx->nrequests++;
    STAT_INC(ctx->stats, requests);
    STAT_INC(ctx->stats, inflight);
    return r;
}

void request_on_head(void *arg, struct conn *c, const struct http1_head *h, const char *hbuf,
                     enum gw_err err, const char *why)
{
    struct gw_ctx *ctx = arg;
    struct gw_request *r = request_new(ctx, c, h, hbuf);
    if (!r) {
        static const char oom[] = "HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\n"
                                  "Retry-After: 1\r\nConnection: close\r\n\r\n";
        struct iovec iov = {(void *)oom, sizeof(oom) - 1};
        conn_send(c, &iov, 1, CONN_END | CONN_CLOSE);
        return;
    }
    conn_attach(c, &sink, r);
    if (!h) {
        if (err == GW_ERR_CLIENT_TIMEOUT)
            r->ended_by = "timeout";
        request_reply_error(r, err, why);
        return;
    }
    run_pipeline(r);
}
