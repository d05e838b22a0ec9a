/*
 * pgw: the asynchronous PostgreSQL writer (see pgw.h for the design).
 *
 * States: RESOLVING (evdns for the host name) -> CONNECTING (PQconnectPoll) -> PREPARING
 * (statements + LISTEN, one pipeline) -> READY (batches) -> on any failure BACKOFF -> RESOLVING.
 *
 * Ownership: the pgw owns its items until their callback has run (or they are cancelled and
 * finished), the PGconn, and its events. An item is on exactly one list: queue (waiting),
 * inflight (sent in the current batch), or none (being finished).
 */
#include "pgw.h"

#include <arpa/inet.h>
#include <event2/dns.h>
#include <event2/event.h>
#include <event2/util.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/queue.h>

#include "log.h"

enum pgw_state { ST_BACKOFF, ST_RESOLVING, ST_CONNECTING, ST_PREPARING, ST_READY };

struct pgw_item {
    TAILQ_ENTRY(pgw_item) link;
    struct pgw *p;
    size_t stmt;
    char **values; /* owned copies */
    int nvalues;
    pgw_done_fn done;
    void *arg;
    bool cancelled;
    bool failed;   /* this statement's own error in the current batch */
    PGresult *res; /* its result in the current batch */
    char error[256];
};
TAILQ_HEAD(item_list, pgw_item);

struct pgw {
    struct event_base *base;
    struct evdns_base *dns;
    struct pgw_options opt;
    PQconninfoOption *parsed; /* the conninfo, parsed once */
    char hostaddr[INET6_ADDRSTRLEN];
    bool need_dns;
    char dns_host[256];
    struct evdns_getaddrinfo_request *dns_req;

    enum pgw_state state;
    PGconn *conn;
    int fd;
    struct event *ev;    /* socket readiness */
    struct event *timer; /* batch delay, backoff */
    uint32_t backoff_ms;
    bool batch_timer_armed;

    /* PREPARING: results still expected before READY (prepares + LISTEN, then Sync) */
    int prep_pending;
    bool prep_failed;
    char prep_error[256];

    struct item_list queue;
    struct item_list inflight;
    struct pgw_item *current; /* inflight item whose results are being read */
    size_t nqueued;
    bool batch_open; /* a batch was sent; its Sync result is awaited */
    bool logged_down;
};

static void set_state_backoff(struct pgw *p, const char *why);
static void try_flush(struct pgw *p);
static void start_connect(struct pgw *p);

/* ---- items ---- */

static void item_free(struct pgw_item *it)
{
    for (int i = 0; i < it->nvalues; i++)
        free(it->values[i]);
    free(it->values);
    if (it->res)
        PQclear(it->res);
    free(it);
}

static void item_finish(struct pgw_item *it, bool ok)
{
    if (!it->cancelled && it->done)
        it->done(it->arg, ok, it->res, it->error);
    item_free(it);
}

struct pgw_item *pgw_submit(struct pgw *p, size_t stmt, const char *const *values, pgw_done_fn done,
                            void *arg)
{
    if (stmt >= p->opt.nstatements || p->nqueued >= p->opt.queue_size)
        return NULL;
    struct pgw_item *it = calloc(1, sizeof(*it));
    if (!it)
        return NULL;
    int n = p->opt.statements[stmt].nparams;
    it->values = calloc((size_t)(n > 0 ? n : 1), sizeof(char *));
    if (!it->values) {
        free(it);
        return NULL;
    }
    it->nvalues = n;
    for (int i = 0; i < n; i++) {
        if (values[i] && !(it->values[i] = strdup(values[i]))) {
            item_free(it);
            return NULL;
        }
    }
    it->p = p;
    it->stmt = stmt;
    it->done = done;
    it->arg = arg;
    TAILQ_INSERT_TAIL(&p->queue, it, link);
    p->nqueued++;
    try_flush(p);
    return it;
}

bool pgw_item_cancel(struct pgw_item *it)
{
    struct pgw *p = it->p;
    it->cancelled = true;
    /* Still queued: nobody will see it being dropped. In flight: finished by the batch. */
    struct pgw_item *q;
    TAILQ_FOREACH(q, &p->queue, link)
    {
        if (q == it) {
            TAILQ_REMOVE(&p->queue, it, link);
            p->nqueued--;
            item_free(it);
            return true;
        }
    }
    return false;
}

bool pgw_connected(const struct pgw *p)
{
    return p->state == ST_READY;
}

/* ---- socket events ---- */

static void socket_cb(evutil_socket_t fd, short what, void *arg);

static void watch(struct pgw *p, short what)
{
    int fd = PQsocket(p->conn);
    if (p->ev && (fd != p->fd || event_pending(p->ev, EV_READ | EV_WRITE, NULL) != what)) {
        event_free(p->ev);
        p->ev = NULL;
    }
    if (!p->ev) {
        p->fd = fd;
        p->ev = event_new(p->base, fd, what | EV_PERSIST, socket_cb, p);
        if (p->ev)
            event_add(p->ev, NULL);
    }
}

static void unwatch(struct pgw *p)
{
    if (p->ev) {
        event_free(p->ev);
        p->ev = NULL;
    }
    p->fd = -1;
}

/* Flush libpq's output; watch for writability while it has more. 0, or -1 on failure. */
static int flush_out(struct pgw *p)
{
    int r = PQflush(p->conn);
    if (r < 0)
        return -1;
    watch(p, r > 0 ? (EV_READ | EV_WRITE) : EV_READ);
    return 0;
}

/* ---- connection loss and backoff ---- */

static void requeue_inflight(struct pgw *p)
{
    /* Put the batch back at the head of the queue, in order: it is sent again (idempotent). */
    struct pgw_item *it;
    while ((it = TAILQ_LAST(&p->inflight, item_list)) != NULL) {
        TAILQ_REMOVE(&p->inflight, it, link);
        if (it->res) {
            PQclear(it->res);
            it->res = NULL;
        }
        it->failed = false;
        if (it->cancelled) {
            item_free(it);
            continue;
        }
        TAILQ_INSERT_HEAD(&p->queue, it, link);
        p->nqueued++;
    }
    p->current = NULL;
    p->batch_open = false;
}

static void timer_cb(evutil_socket_t fd, short what, void *arg);

static void set_state_backoff(struct pgw *p, const char *why)
{
    unwatch(p);
    if (p->conn) {
        PQfinish(p->conn);
        p->conn = NULL;
    }
    requeue_inflight(p);
    if (!p->logged_down || p->state == ST_READY)
        log_error("audit database unavailable",
                  "\"conn\":\"%s\",\"reason\":\"%s\",\"retry_ms\":%u,\"queued\":%zu", p->opt.name,
                  why, p->backoff_ms, p->nqueued);
    p->logged_down = true;
    p->state = ST_BACKOFF;
    struct timeval tv = {.tv_sec = p->backoff_ms / 1000, .tv_usec = (p->backoff_ms % 1000) * 1000};
    evtimer_add(p->timer, &tv);
    p->batch_timer_armed = false;
    p->backoff_ms =
        p->backoff_ms * 2 > p->opt.reconnect_max_ms ? p->opt.reconnect_max_ms : p->backoff_ms * 2;
}

static void conn_error(struct pgw *p, const char *what)
{
    char why[300];
    const char *m = p->conn ? PQerrorMessage(p->conn) : "";
    snprintf(why, sizeof(why), "%s: %s", what, m && *m ? m : "connection lost");
    for (char *c = why; *c; c++)
        if (*c == '\n' || *c == '"' || *c == '\\')
            *c = ' ';
    set_state_backoff(p, why);
}

/* ---- connect ---- */

static void connect_with_params(struct pgw *p)
{
    const char *keys[64], *vals[64];
    int n = 0;
    for (PQconninfoOption *o = p->parsed; o->keyword && n < 60; o++) {
        if (!o->val)
            continue;
        if (p->hostaddr[0] && strcmp(o->keyword, "hostaddr") == 0)
            continue;
        keys[n] = o->keyword;
        vals[n] = o->val;
        n++;
    }
    if (p->hostaddr[0]) {
        keys[n] = "hostaddr";
        vals[n] = p->hostaddr;
        n++;
    }
    keys[n] = NULL;
    vals[n] = NULL;
    p->conn = PQconnectStartParams(keys, vals, 0);
    if (!p->conn || PQstatus(p->conn) == CONNECTION_BAD) {
        conn_error(p, "cannot start connecting");
        return;
    }
    p->state = ST_CONNECTING;
    /* PQconnectStart leaves the first step to PQconnectPoll, which wants writability. */
    p->fd = -1;
    int fd = PQsocket(p->conn);
    p->ev = event_new(p->base, fd, EV_WRITE | EV_PERSIST, socket_cb, p);
    p->fd = fd;
    if (!p->ev || event_add(p->ev, NULL) != 0)
        conn_error(p, "cannot watch the socket");
}

static void dns_cb(int result, struct evutil_addrinfo *res, void *arg)
{
    struct pgw *p = arg;
    p->dns_req = NULL;
    if (result == EVUTIL_EAI_CANCEL)
        return;
    if (result != 0 || !res) {
        char why[300];
        snprintf(why, sizeof(why), "cannot resolve %s: %s", p->dns_host,
                 evutil_gai_strerror(result));
        if (res)
            evutil_freeaddrinfo(res);
        set_state_backoff(p, why);
        return;
    }
    if (res->ai_family == AF_INET6)
        inet_ntop(AF_INET6, &((struct sockaddr_in6 *)res->ai_addr)->sin6_addr, p->hostaddr,
                  sizeof(p->hostaddr));
    else
        inet_ntop(AF_INET, &((struct sockaddr_in *)res->ai_addr)->sin_addr, p->hostaddr,
                  sizeof(p->hostaddr));
    evutil_freeaddrinfo(res);
    connect_with_params(p);
}

static void start_connect(struct pgw *p)
{
    p->state = ST_RESOLVING;
    if (!p->need_dns) {
        connect_with_params(p);
        return;
    }
    struct evutil_addrinfo hints;
    memset(&hints, 0, sizeof(hints));
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    p->hostaddr[0] = '\0';
    p->dns_req = evdns_getaddrinfo(p->dns, p->dns_host, NULL, &hints, dns_cb, p);
}

static void send_prepares(struct pgw *p)
{
    if (PQsetnonblocking(p->conn, 1) != 0 || PQenterPipelineMode(p->conn) != 1) {
        conn_error(p, "cannot enter pipeline mode");
        return;
    }
    p->prep_pending = 0;
    p->prep_failed = false;
    for (size_t i = 0; i < p->opt.nstatements; i++) {
        const struct pgw_statement *s = &p->opt.statements[i];
        if (!PQsendPrepare(p->conn, s->name, s->sql, s->nparams, NULL)) {
            conn_error(p, "cannot send a prepare");
            return;
        }
        p->prep_pending++;
    }
    if (p->opt.listen_channel) {
        char sql[128];
        snprintf(sql, sizeof(sql), "LISTEN %s", p->opt.listen_channel);
        if (!PQsendQueryParams(p->conn, sql, 0, NULL, NULL, NULL, NULL, 0)) {
            conn_error(p, "cannot send LISTEN");
            return;
        }
        p->prep_pending++;
    }
    if (!PQpipelineSync(p->conn)) {
        conn_error(p, "cannot sync");
        return;
    }
    p->state = ST_PREPARING;
    if (flush_out(p) != 0)
        conn_error(p, "cannot send");
}

static void on_ready(struct pgw *p)
{
    p->state = ST_READY;
    p->backoff_ms = 100;
    if (p->logged_down)
        log_info("audit database connected", "\"conn\":\"%s\",\"queued\":%zu", p->opt.name,
                 p->nqueued);
    p->logged_down = false;
    if (p->opt.on_connected)
        p->opt.on_connected(p->opt.arg);
    try_flush(p);
}

/* ---- results ---- */

/* Finish the batch whose Sync result just arrived. */
static void batch_done(struct pgw *p)
{
    bool any_failed = false;
    struct pgw_item *it;
    TAILQ_FOREACH(it, &p->inflight, link)
    any_failed |= it->failed;

    struct item_list done;
    TAILQ_INIT(&done);
    while ((it = TAILQ_FIRST(&p->inflight)) != NULL) {
        TAILQ_REMOVE(&p->inflight, it, link);
        TAILQ_INSERT_TAIL(&done, it, link);
    }
    p->current = NULL;
    p->batch_open = false;

    /* Retry the innocent part of a failed batch first (at the head, in order). */
    if (any_failed) {
        struct pgw_item *prev;
        for (it = TAILQ_LAST(&done, item_list); it; it = prev) {
            prev = TAILQ_PREV(it, item_list, link);
            if (it->failed)
                continue;
            TAILQ_REMOVE(&done, it, link);
            if (it->res) {
                PQclear(it->res);
                it->res = NULL;
            }
            if (it->cancelled) {
                item_free(it);
                continue;
            }
            TAILQ_INSERT_HEAD(&p->queue, it, link);
            p->nqueued++;
        }
    }
    while ((it = TAILQ_FIRST(&done)) != NULL) {
        TAILQ_REMOVE(&done, it, link);
        if (it->failed)
            log_error("audit statement failed",
                      "\"conn\":\"%s\",\"statement\":\"%s\",\"error\":\"%s\"", p->opt.name,
                      p->opt.statements[it->stmt].name, it->error);
        item_finish(it, !it->failed);
    }
    try_flush(p);
}

static void note_error(char *buf, size_t len, const PGresult *res)
{
    const char *m = PQresultErrorMessage(res);
    snprintf(buf, len, "%s", m && *m ? m : "statement failed");
    for (char *c = buf; *c; c++)
        if (*c == '\n' || *c == '"' || *c == '\\')
            *c = ' ';
}

static void read_results(struct pgw *p)
{
    int nulls = 0; /* two NULLs in a row: nothing more is ready */
    while (p->conn && !PQisBusy(p->conn)) {
        PGresult *res = PQgetResult(p->conn);
        nulls = res ? 0 : nulls + 1;
        if (nulls >= 2)
            return;
        if (p->state == ST_PREPARING) {
            if (!res) {
                continue; /* end of one prepare's results */
            }
            ExecStatusType st = PQresultStatus(res);
            if (st == PGRES_PIPELINE_SYNC) {
                PQclear(res);
                if (p->prep_failed) {
                    char why[300];
                    snprintf(why, sizeof(why), "preparing statements failed: %s", p->prep_error);
                    set_state_backoff(p, why);
                    return;
                }
                on_ready(p);
                continue;
            }
            if (st != PGRES_COMMAND_OK) {
                p->prep_failed = true;
                note_error(p->prep_error, sizeof(p->prep_error), res);
            }
            PQclear(res);
            continue;
        }
        if (!res) {
            /* End of the current statement's results: move to the next one. */
            if (p->current)
                p->current = TAILQ_NEXT(p->current, link);
            if (!p->current && !p->batch_open)
                return;
            continue;
        }
        ExecStatusType st = PQresultStatus(res);
        if (st == PGRES_PIPELINE_SYNC) {
            PQclear(res);
            batch_done(p);
            continue;
        }
        struct pgw_item *it = p->current;
        if (!it) { /* a result we did not ask for; should not happen */
            PQclear(res);
            continue;
        }
        if (st == PGRES_FATAL_ERROR) {
            it->failed = true;
            note_error(it->error, sizeof(it->error), res);
            PQclear(res);
        } else if (st == PGRES_PIPELINE_ABORTED) {
            PQclear(res); /* not this statement's fault: sent again */
        } else {
            if (it->res)
                PQclear(it->res);
            it->res = res;
        }
    }
}

static void handle_notifies(struct pgw *p)
{
    PGnotify *n;
    while (p->conn && (n = PQnotifies(p->conn)) != NULL) {
        if (p->opt.on_notify)
            p->opt.on_notify(p->opt.arg, n->relname, n->extra);
        PQfreemem(n);
    }
}

static void socket_cb(evutil_socket_t fd, short what, void *arg)
{
    struct pgw *p = arg;
    if (p->state == ST_CONNECTING) {
        PostgresPollingStatusType ps = PQconnectPoll(p->conn);
        switch (ps) {
        case PGRES_POLLING_READING:
            watch(p, EV_READ);
            return;
        case PGRES_POLLING_WRITING:
            watch(p, EV_WRITE);
            return;
        case PGRES_POLLING_OK:
            unwatch(p);
            send_prepares(p);
            return;
        default:
            conn_error(p, "connection failed");
            return;
        }
    }
    if (what & EV_WRITE) {
        if (flush_out(p) != 0) {
            conn_error(p, "write failed");
            return;
        }
    }
    if (what & EV_READ) {
        if (!PQconsumeInput(p->conn)) {
            conn_error(p, "read failed");
            return;
        }
        read_results(p);
        handle_notifies(p);
        if (p->conn && PQstatus(p->conn) == CONNECTION_BAD)
            conn_error(p, "connection lost");
    }
}

/* ---- batching ---- */

static void send_batch(struct pgw *p)
{
    uint32_t n = 0;
    struct pgw_item *it;
    while (n < p->opt.batch_size && (it = TAILQ_FIRST(&p->queue)) != NULL) {
        TAILQ_REMOVE(&p->queue, it, link);
        p->nqueued--;
        if (it->cancelled) {
            item_free(it);
            continue;
        }
        const struct pgw_statement *s = &p->opt.statements[it->stmt];
        TAILQ_INSERT_TAIL(&p->inflight, it, link);
        if (!PQsendQueryPrepared(p->conn, s->name, it->nvalues, (const char *const *)it->values,
                                 NULL, NULL, 0)) {
            conn_error(p, "cannot send a statement");
            return;
        }
        n++;
    }
    if (n == 0)
        return;
    if (!PQpipelineSync(p->conn)) {
        conn_error(p, "cannot sync");
        return;
    }
    p->batch_open = true;
    p->current = TAILQ_FIRST(&p->inflight);
    if (flush_out(p) != 0)
        conn_error(p, "cannot send");
}

static void try_flush(struct pgw *p)
{
    if (p->state != ST_READY || p->batch_open || p->nqueued == 0)
        return;
    if (p->nqueued >= p->opt.batch_size || p->opt.batch_delay_ms == 0) {
        if (p->batch_timer_armed) {
            evtimer_del(p->timer);
            p->batch_timer_armed = false;
        }
        send_batch(p);
        return;
    }
    if (!p->batch_timer_armed) {
        struct timeval tv = {.tv_sec = p->opt.batch_delay_ms / 1000,
                             .tv_usec = (p->opt.batch_delay_ms % 1000) * 1000};
        evtimer_add(p->timer, &tv);
        p->batch_timer_armed = true;
    }
}

static void timer_cb(evutil_socket_t fd, short what, void *arg)
{
    struct pgw *p = arg;
    if (p->state == ST_BACKOFF) {
        start_connect(p);
        return;
    }
    p->batch_timer_armed = false;
    if (p->state == ST_READY && !p->batch_open && p->nqueued > 0)
        send_batch(p);
}

/* ---- life ---- */

static bool is_numeric(const char *h)
{
    unsigned char buf[sizeof(struct in6_addr)];
    return inet_pton(AF_INET, h, buf) == 1 || inet_pton(AF_INET6, h, buf) == 1;
}

struct pgw *pgw_new(struct event_base *base, struct evdns_base *dns, const struct pgw_options *opts,
                    char *errbuf, size_t errlen)
{
    struct pgw *p = calloc(1, sizeof(*p));
    if (!p) {
        snprintf(errbuf, errlen, "out of memory");
        return NULL;
    }
    p->base = base;
    p->dns = dns;
    p->opt = *opts;
    p->fd = -1;
    p->backoff_ms = 100;
    TAILQ_INIT(&p->queue);
    TAILQ_INIT(&p->inflight);
    char *perr = NULL;
    p->parsed = PQconninfoParse(opts->conninfo, &perr);
    if (!p->parsed) {
        /* libpq's message may quote the string; say only what is wrong in general terms. */
        snprintf(errbuf, errlen, "the audit database connection string does not parse%s%s",
                 perr ? ": " : "", perr ? perr : "");
        for (char *c = errbuf; *c; c++)
            if (*c == '\n')
                *c = ' ';
        PQfreemem(perr);
        free(p);
        return NULL;
    }
    /* A single host name (not a socket directory, not an address, no hostaddr): resolve it
     * ourselves. Lists of hosts are passed through to libpq unchanged. */
    const char *host = NULL, *hostaddr = NULL;
    for (PQconninfoOption *o = p->parsed; o->keyword; o++) {
        if (strcmp(o->keyword, "host") == 0)
            host = o->val;
        else if (strcmp(o->keyword, "hostaddr") == 0)
            hostaddr = o->val;
    }
    if (!host || !*host)
        host = getenv("PGHOST");
    if (host && *host && host[0] != '/' && host[0] != '@' && !strchr(host, ',') &&
        !(hostaddr && *hostaddr) && !is_numeric(host) && strlen(host) < sizeof(p->dns_host)) {
        p->need_dns = true;
        snprintf(p->dns_host, sizeof(p->dns_host), "%s", host);
    }
    p->timer = evtimer_new(base, timer_cb, p);
    if (!p->timer) {
        snprintf(errbuf, errlen, "out of memory");
        pgw_free(p);
        return NULL;
    }
    start_connect(p);
    return p;
}

void pgw_free(struct pgw *p)
{
    if (!p)
        return;
    if (p->dns_req)
        evdns_getaddrinfo_cancel(p->dns_req);
    unwatch(p);
    if (p->conn)
        PQfinish(p->conn);
    /* Whatever was not written is lost with the process: tell the submitters, so that
     * nobody waits for (or keeps memory for) a statement that will never complete. */
    struct pgw_item *it;
    while ((it = TAILQ_FIRST(&p->inflight)) != NULL) {
        TAILQ_REMOVE(&p->inflight, it, link);
        snprintf(it->error, sizeof(it->error), "the gateway is shutting down");
        if (it->res) {
            PQclear(it->res);
            it->res = NULL;
        }
        item_finish(it, false);
    }
    while ((it = TAILQ_FIRST(&p->queue)) != NULL) {
        TAILQ_REMOVE(&p->queue, it, link);
        snprintf(it->error, sizeof(it->error), "the gateway is shutting down");
        item_finish(it, false);
    }
    if (p->timer)
        event_free(p->timer);
    if (p->parsed)
        PQconninfoFree(p->parsed);
    free(p);
}

size_t pgw_pending(const struct pgw *p)
{
    size_t n = p->nqueued;
    const struct pgw_item *it;
    TAILQ_FOREACH(it, &p->inflight, link)
    n++;
    return n;
}
