/*
 * pgw: the asynchronous PostgreSQL writer (see pgw.h for the design).
 *
 * States: RESOLVING (evdns for the host names) -> CONNECTING (PQconnectPoll) -> PREPARING
 * (statements + LISTEN, one pipeline) -> READY (batches) -> on any failure BACKOFF ->
 * RESOLVING.
 *
 * Ownership: the pgw owns its items until their callback has run (or they are cancelled and
 * finished), the PGconn, and its events. An item is on exactly one list: queue (waiting),
 * inflight (sent in a batch on the wire), or none (being finished).
 *
 * Several batches may be on the wire (pgw.h, "Pipelined batches"): `inflight` holds their
 * items oldest batch first, the last item of each batch marked `last`. Results come in the
 * same order: `current` walks the units across batch boundaries; a Sync result finishes the
 * oldest batch (everything up to its `last` item), whose results have all been read by then.
 *
 * A batch on the wire is a sequence of executions ("units"), each followed by its results and
 * a NULL: a unit is one item, or, for a batched statement, every row of that statement in the
 * batch. The inflight list keeps a unit's items next to each other; the first carries the
 * unit's size.
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
#include "util.h"

enum pgw_state { ST_BACKOFF, ST_RESOLVING, ST_CONNECTING, ST_PREPARING, ST_READY };

/* A result and how many items hold it: every row of a row_results unit holds the same one. */
struct pgw_result {
    PGresult *res;
    uint32_t refs;
};

struct pgw_item {
    TAILQ_ENTRY(pgw_item) link;
    struct pgw *p;
    size_t stmt;
    char **values; /* nvalues pointers into the same allocation, NULL for SQL NULL */
    int nvalues;
    pgw_done_fn done;
    void *arg;
    bool cancelled;
    bool solo;              /* send alone: its batched statement failed with other rows */
    bool failed;            /* this statement's own error in the current batch */
    bool answer_failed;     /* failed by its answer, not by PostgreSQL: the transaction stands */
    bool suspect;           /* its unit failed with several rows: sent again solo */
    bool last;              /* last item of its batch on the wire (the one its Sync closes) */
    uint32_t unit;          /* first item of a unit on the wire: the unit's size; 0 otherwise */
    struct pgw_result *res; /* its result in the current batch (shared by a row_results unit) */
    uint32_t row;           /* its row in res */
    char error[256];
};
TAILQ_HEAD(item_list, pgw_item);

#define MAX_HOSTS 16 /* hosts in a connection string; addresses in all */

struct host_entry {
    char name[256]; /* host name, address or socket directory */
    char port[16];  /* "" = default */
    bool resolve;   /* a name to look up with evdns */
    struct evdns_getaddrinfo_request *req;
    bool done;
    int naddrs;
    char addrs[MAX_HOSTS][INET6_ADDRSTRLEN];
};

struct pgw {
    struct event_base *base;
    struct evdns_base *dns;
    struct pgw_options opt;
    PQconninfoOption *parsed; /* the conninfo, parsed once */
    bool pass_through;        /* hostaddr given: hand the conninfo to libpq as it is */
    struct host_entry hosts[MAX_HOSTS];
    int nhosts;
    int dns_pending;
    char host_list[MAX_HOSTS * 272], addr_list[MAX_HOSTS * INET6_ADDRSTRLEN],
        port_list[MAX_HOSTS * 17];

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
    struct pgw_item *current; /* first item of the unit whose results are being read */
    size_t nqueued;
    /* Batches on the wire, oldest first: their items are in `inflight` in the same order, each
     * batch's last item marked `last`; sent[] is a ring of their send times. */
    uint32_t nbatches;
    uint32_t first_batch; /* ring index of the oldest */
    uint64_t sent_ms[PGW_MAX_DEPTH];
    bool logged_down;
    bool addrs_logged;
    bool freeing;
};

static void set_state_backoff(struct pgw *p, const char *why);
static uint32_t clamp_depth(uint32_t d);

/*
 * May a batch go now? Always when nothing is on the wire. With batches on the wire, another
 * goes only while fewer than pipeline_depth are, and only once PIPELINE_MIN statements wait:
 * a database far away gets the next batch without waiting a round trip, while one that is
 * merely busy is not handed a stream of one-row batches, each paying a statement's fixed cost
 * (measured: tests/bench/ledger.py, README "Performance").
 */
#define PIPELINE_MIN 8
static bool may_send(const struct pgw *p)
{
    if (p->state != ST_READY || p->nqueued == 0)
        return false;
    return p->nbatches == 0 || (p->nbatches < p->opt.pipeline_depth && p->nqueued >= PIPELINE_MIN);
}
static void try_flush(struct pgw *p);
static void start_connect(struct pgw *p);

/* Arm the batch timer for batch_delay (0: the next loop turn) unless it is armed already. */
static void arm_batch_timer(struct pgw *p)
{
    if (p->batch_timer_armed)
        return;
    struct timeval tv = {.tv_sec = p->opt.batch_delay_ms / 1000,
                         .tv_usec = (p->opt.batch_delay_ms % 1000) * 1000};
    evtimer_add(p->timer, &tv);
    p->batch_timer_armed = true;
}

/* ---- items ---- */

static void result_drop(struct pgw_item *it)
{
    struct pgw_result *r = it->res;
    it->res = NULL;
    if (r && --r->refs == 0) {
        PQclear(r->res);
        free(r);
    }
}

static void item_free(struct pgw_item *it)
{
    result_drop(it);
    free(it);
}

static void item_finish(struct pgw_item *it, enum pgw_status st)
{
    if (!it->cancelled && it->done)
        it->done(it->arg, st, it->res ? it->res->res : NULL, (int)it->row, it->error);
    item_free(it);
}

struct pgw_item *pgw_submit(struct pgw *p, size_t stmt, const char *const *values, pgw_done_fn done,
                            void *arg)
{
    if (stmt >= p->opt.nstatements || p->nqueued >= p->opt.queue_size || p->freeing)
        return NULL;
    int n = p->opt.statements[stmt].nparams;
    /* one allocation: the item, the value pointers, the values */
    size_t need = sizeof(struct pgw_item) + sizeof(char *) * (size_t)(n > 0 ? n : 1);
    for (int i = 0; i < n; i++)
        if (values[i])
            need += strlen(values[i]) + 1;
    struct pgw_item *it = malloc(need);
    if (!it)
        return NULL;
    memset(it, 0, sizeof(*it));
    it->values = (char **)(it + 1);
    char *o = (char *)(it->values + (n > 0 ? n : 1));
    for (int i = 0; i < n; i++) {
        if (!values[i]) {
            it->values[i] = NULL;
            continue;
        }
        size_t len = strlen(values[i]) + 1;
        memcpy(o, values[i], len);
        it->values[i] = o;
        o += len;
    }
    it->nvalues = n;
    it->p = p;
    it->stmt = stmt;
    it->done = done;
    it->arg = arg;
    TAILQ_INSERT_TAIL(&p->queue, it, link);
    p->nqueued++;
    /* A batch is started from the loop, never from here: a callback must not run inside the
     * call that submitted its statement (send_batch can fail and finish items). */
    if (may_send(p))
        arm_batch_timer(p);
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

size_t pgw_divert(struct pgw *p)
{
    struct item_list out;
    TAILQ_INIT(&out);
    TAILQ_CONCAT(&out, &p->queue, link);
    p->nqueued = 0;
    size_t n = 0;
    struct pgw_item *it;
    while ((it = TAILQ_FIRST(&out)) != NULL) {
        TAILQ_REMOVE(&out, it, link);
        snprintf(it->error, sizeof(it->error), "diverted before it was committed");
        if (!it->cancelled)
            n++;
        item_finish(it, PGW_DIVERTED);
    }
    return n;
}

bool pgw_connected(const struct pgw *p)
{
    return p->state == ST_READY;
}

bool pgw_stalled(const struct pgw *p, uint64_t ms)
{
    return p->state == ST_READY && p->nbatches > 0 &&
           util_now_ms() - p->sent_ms[p->first_batch] > ms;
}

size_t pgw_queued(const struct pgw *p)
{
    return p->nqueued;
}

size_t pgw_pending(const struct pgw *p)
{
    size_t n = p->nqueued;
    const struct pgw_item *it;
    TAILQ_FOREACH(it, &p->inflight, link)
    n++;
    return n;
}

/* ---- array literals ---- */

char *pgw_array_literal(const char *const *values, size_t n)
{
    size_t need = 3;
    for (size_t i = 0; i < n; i++) {
        need += 5; /* NULL or two quotes, and a comma */
        if (values[i])
            for (const char *c = values[i]; *c; c++)
                need += (*c == '"' || *c == '\\') ? 2 : 1;
    }
    char *out = malloc(need);
    if (!out)
        return NULL;
    char *o = out;
    *o++ = '{';
    for (size_t i = 0; i < n; i++) {
        if (i > 0)
            *o++ = ',';
        if (!values[i]) {
            memcpy(o, "NULL", 4);
            o += 4;
            continue;
        }
        *o++ = '"';
        for (const char *c = values[i]; *c; c++) {
            if (*c == '"' || *c == '\\')
                *o++ = '\\';
            *o++ = *c;
        }
        *o++ = '"';
    }
    *o++ = '}';
    *o = '\0';
    return out;
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

/* Put ITEM back at the head of the queue (callers go from the last to the first, so the
 * order is kept), or drop it if cancelled. */
static void requeue_head(struct pgw *p, struct pgw_item *it)
{
    result_drop(it);
    it->failed = false;
    it->last = false;
    it->unit = 0;
    if (it->cancelled) {
        item_free(it);
        return;
    }
    TAILQ_INSERT_HEAD(&p->queue, it, link);
    p->nqueued++;
}

static void requeue_inflight(struct pgw *p)
{
    /* The batch goes back at the head of the queue, in order: it is sent again (idempotent). */
    struct pgw_item *it;
    while ((it = TAILQ_LAST(&p->inflight, item_list)) != NULL) {
        TAILQ_REMOVE(&p->inflight, it, link);
        requeue_head(p, it);
    }
    p->current = NULL;
    if (p->nbatches > 0 && p->opt.on_batch)
        p->opt.on_batch(p->opt.arg, 0, false);
    p->nbatches = 0;
}

static void timer_cb(evutil_socket_t fd, short what, void *arg);

static void set_state_backoff(struct pgw *p, const char *why)
{
    bool was_up = p->state == ST_READY || p->state == ST_PREPARING;
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
    if (was_up && p->opt.on_down && !p->freeing)
        p->opt.on_down(p->opt.arg);
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

static bool is_numeric(const char *h)
{
    unsigned char buf[sizeof(struct in6_addr)];
    return inet_pton(AF_INET, h, buf) == 1 || inet_pton(AF_INET6, h, buf) == 1;
}

/* Append S to the comma-separated LIST (of CAP bytes). */
static void list_add(char *list, size_t cap, const char *s)
{
    size_t n = strlen(list);
    snprintf(list + n, cap - n, "%s%s", n ? "," : "", s);
}

static void connect_with_params(struct pgw *p)
{
    const char *keys[64], *vals[64];
    int n = 0;
    bool lists = !p->pass_through;
    if (lists) {
        /* every address of every host, in order: host (for TLS and messages), hostaddr and
         * port lists of equal length */
        p->host_list[0] = p->addr_list[0] = p->port_list[0] = '\0';
        bool any_port = false;
        int count = 0;
        for (int h = 0; h < p->nhosts; h++) {
            struct host_entry *e = &p->hosts[h];
            int k = e->resolve ? e->naddrs : 1;
            for (int i = 0; i < k && count < MAX_HOSTS; i++, count++) {
                list_add(p->host_list, sizeof(p->host_list), e->name);
                list_add(p->addr_list, sizeof(p->addr_list),
                         e->resolve            ? e->addrs[i]
                         : is_numeric(e->name) ? e->name
                                               : "");
                list_add(p->port_list, sizeof(p->port_list), e->port);
                any_port |= e->port[0] != '\0';
            }
        }
        if (count == 0) {
            set_state_backoff(p, "no address of the database host could be resolved");
            return;
        }
        if (p->logged_down || !p->addrs_logged) {
            char h[sizeof(p->host_list) + 64], a[sizeof(p->addr_list) + 64];
            log_info("audit database addresses, tried in order",
                     "\"conn\":\"%s\",\"hosts\":\"%s\",\"addresses\":\"%s\"", p->opt.name,
                     log_json_escape(p->host_list, h, sizeof(h)),
                     log_json_escape(p->addr_list, a, sizeof(a)));
            p->addrs_logged = true;
        }
        keys[n] = "host";
        vals[n++] = p->host_list;
        keys[n] = "hostaddr";
        vals[n++] = p->addr_list;
        if (any_port) {
            keys[n] = "port";
            vals[n++] = p->port_list;
        }
    }
    for (PQconninfoOption *o = p->parsed; o->keyword && n < 60; o++) {
        if (!o->val)
            continue;
        if (lists && (strcmp(o->keyword, "host") == 0 || strcmp(o->keyword, "hostaddr") == 0 ||
                      strcmp(o->keyword, "port") == 0))
            continue;
        keys[n] = o->keyword;
        vals[n] = o->val;
        n++;
    }
    keys[n] = NULL;
    vals[n] = NULL;
    p->conn = PQconnectStartParams(keys, vals, 0);
    if (!p->conn || PQstatus(p->conn) == CONNECTION_BAD) {
        conn_error(p, "cannot start connecting");
        return;
    }
    pgw_log_notices(p->conn, p->opt.name);
    p->state = ST_CONNECTING;
    /* PQconnectStart leaves the first step to PQconnectPoll, which wants writability. */
    p->fd = -1;
    int fd = PQsocket(p->conn);
    p->ev = event_new(p->base, fd, EV_WRITE | EV_PERSIST, socket_cb, p);
    p->fd = fd;
    if (!p->ev || event_add(p->ev, NULL) != 0)
        conn_error(p, "cannot watch the socket");
}

/* Keep the addresses of RES (a lookup of entry E), without duplicates, in order. */
static void take_addresses(struct host_entry *e, int result, struct evutil_addrinfo *res)
{
    e->done = true;
    e->naddrs = 0;
    if (result != 0 || !res)
        log_warn("cannot resolve the audit database host", "\"host\":\"%s\",\"error\":\"%s\"",
                 e->name, evutil_gai_strerror(result));
    for (struct evutil_addrinfo *ai = res; ai && e->naddrs < MAX_HOSTS; ai = ai->ai_next) {
        char *out = e->addrs[e->naddrs];
        if (ai->ai_family == AF_INET6)
            inet_ntop(AF_INET6, &((struct sockaddr_in6 *)ai->ai_addr)->sin6_addr, out,
                      INET6_ADDRSTRLEN);
        else if (ai->ai_family == AF_INET)
            inet_ntop(AF_INET, &((struct sockaddr_in *)ai->ai_addr)->sin_addr, out,
                      INET6_ADDRSTRLEN);
        else
            continue;
        bool dup = false;
        for (int i = 0; i < e->naddrs; i++)
            dup |= strcmp(e->addrs[i], out) == 0;
        if (!dup)
            e->naddrs++;
    }
}

/* evdns passes one pointer: the lookup's owner and which host it is for. */
struct dns_ctx {
    struct pgw *p;
    int index;
};

static void dns_entry_cb(int result, struct evutil_addrinfo *res, void *arg)
{
    struct dns_ctx *c = arg;
    struct pgw *p = c->p;
    struct host_entry *e = &p->hosts[c->index];
    free(c);
    e->req = NULL;
    if (result == EVUTIL_EAI_CANCEL) {
        if (res)
            evutil_freeaddrinfo(res);
        return;
    }
    take_addresses(e, result, res);
    if (res)
        evutil_freeaddrinfo(res);
    if (--p->dns_pending == 0)
        connect_with_params(p);
}

static void start_connect(struct pgw *p)
{
    p->state = ST_RESOLVING;
    if (p->pass_through) {
        connect_with_params(p);
        return;
    }
    struct evutil_addrinfo hints;
    memset(&hints, 0, sizeof(hints));
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    /* one extra count until every lookup is started: a lookup evdns answers at once (from its
     * cache, or a failure) must not start connecting while others are not even asked */
    p->dns_pending = 1;
    for (int h = 0; h < p->nhosts; h++) {
        struct host_entry *e = &p->hosts[h];
        e->done = !e->resolve;
        e->naddrs = 0;
        if (!e->resolve)
            continue;
        struct dns_ctx *c = malloc(sizeof(*c));
        if (!c)
            continue;
        c->p = p;
        c->index = h;
        p->dns_pending++;
        struct evdns_getaddrinfo_request *req =
            evdns_getaddrinfo(p->dns, e->name, NULL, &hints, dns_entry_cb, c);
        if (!e->done)
            e->req = req;
    }
    if (--p->dns_pending == 0)
        connect_with_params(p);
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

/* Finish the oldest batch on the wire: its Sync result just arrived. Its results have all been
 * read, so `current` already points past it (into the next batch, or NULL). */
static void batch_done(struct pgw *p)
{
    bool any_failed = false;
    struct item_list done;
    TAILQ_INIT(&done);
    struct pgw_item *it;
    while ((it = TAILQ_FIRST(&p->inflight)) != NULL) {
        TAILQ_REMOVE(&p->inflight, it, link);
        TAILQ_INSERT_TAIL(&done, it, link);
        any_failed |= (it->failed && !it->answer_failed) || it->suspect;
        if (it == p->current) /* cannot happen: a Sync comes after its batch's results */
            p->current = NULL;
        if (it->last)
            break;
    }
    if (p->nbatches > 0) {
        p->nbatches--;
        p->first_batch = (p->first_batch + 1) % PGW_MAX_DEPTH;
    }
    if (p->opt.on_batch)
        p->opt.on_batch(p->opt.arg, p->nbatches, true);
    if (TAILQ_EMPTY(&p->inflight))
        p->current = NULL;

    /* PostgreSQL refused a statement, so the transaction was rolled back: everything but the
     * culprits goes again, at the head and in order; rows of a failed multi-row execution go
     * again alone. */
    if (any_failed) {
        struct pgw_item *prev;
        for (it = TAILQ_LAST(&done, item_list); it; it = prev) {
            prev = TAILQ_PREV(it, item_list, link);
            if (it->failed)
                continue;
            TAILQ_REMOVE(&done, it, link);
            if (it->suspect) {
                it->solo = true;
                it->suspect = false;
            }
            requeue_head(p, it);
        }
    }
    while ((it = TAILQ_FIRST(&done)) != NULL) {
        TAILQ_REMOVE(&done, it, link);
        if (it->failed)
            log_error("audit statement failed",
                      "\"conn\":\"%s\",\"statement\":\"%s\",\"error\":\"%s\"", p->opt.name,
                      p->opt.statements[it->stmt].name, it->error);
        item_finish(it, it->failed ? PGW_FAILED : PGW_OK);
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

/* The current unit failed with RES: blame it, or its rows if it carried several. */
static void unit_failed(struct pgw *p, const PGresult *res)
{
    struct pgw_item *it = p->current;
    uint32_t n = it->unit;
    if (n == 1) {
        it->failed = true;
        note_error(it->error, sizeof(it->error), res);
        return;
    }
    char why[256];
    note_error(why, sizeof(why), res);
    log_warn("a batch of audit rows was refused; sending its rows one by one to find the bad one",
             "\"conn\":\"%s\",\"statement\":\"%s\",\"rows\":%u,\"error\":\"%s\"", p->opt.name,
             p->opt.statements[it->stmt].name, n, why);
    for (uint32_t i = 0; i < n && it; i++, it = TAILQ_NEXT(it, link))
        it->suspect = true;
}

/* Mark every item of the unit starting at FIRST failed with WHY: its answer was of no use.
 * PostgreSQL ran the statement and the batch's transaction commits, so the other units of the
 * batch are not sent again. */
static void unit_fail_all(struct pgw_item *first, const char *why)
{
    struct pgw_item *it = first;
    for (uint32_t i = 0; i < first->unit && it; i++, it = TAILQ_NEXT(it, link)) {
        it->failed = true;
        it->answer_failed = true;
        snprintf(it->error, sizeof(it->error), "%s", why);
    }
}

/* RES is the result of the unit starting at FIRST (taken over: kept or cleared). A statement's
 * result goes to its item; a row_results unit's to every row, each with its place; a batched
 * write's is of no use to its rows (they get NULL). */
static void keep_result(struct pgw *p, struct pgw_item *first, PGresult *res)
{
    const struct pgw_statement *s = &p->opt.statements[first->stmt];
    uint32_t n = s->row_results && first->unit ? first->unit : 1; /* the items that get it */
    if (s->batched && !s->row_results) {
        PQclear(res);
        return;
    }
    if (s->row_results && PQntuples(res) != (int)n) {
        char why[160];
        snprintf(why, sizeof(why), "%s answered %d rows for the %u rows it was given", s->name,
                 PQntuples(res), n);
        PQclear(res);
        unit_fail_all(first, why);
        return;
    }
    struct pgw_result *r = malloc(sizeof(*r));
    if (!r) {
        PQclear(res);
        unit_fail_all(first, "out of memory");
        return;
    }
    r->res = res;
    r->refs = 0;
    struct pgw_item *it = first;
    for (uint32_t i = 0; i < n && it; i++, it = TAILQ_NEXT(it, link)) {
        result_drop(it);
        it->res = r;
        it->row = i;
        r->refs++;
    }
}

static void next_unit(struct pgw *p)
{
    struct pgw_item *it = p->current;
    for (uint32_t n = it->unit; n > 0 && it; n--)
        it = TAILQ_NEXT(it, link);
    p->current = it;
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
            /* End of the current unit's results: move to the next one. */
            if (p->current)
                next_unit(p);
            if (!p->current && p->nbatches == 0)
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
            unit_failed(p, res);
            PQclear(res);
        } else if (st == PGRES_PIPELINE_ABORTED) {
            PQclear(res); /* not this unit's fault: sent again */
        } else {
            keep_result(p, it, res);
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
        /* With several hosts libpq closes a failed socket and opens the next one, which may
         * get the same descriptor number: watch it afresh every time while connecting. */
        unwatch(p);
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

/* Send one unit: the N items starting at FIRST (already in the inflight list, contiguous). */
static int send_unit(struct pgw *p, struct pgw_item *first, uint32_t n)
{
    const struct pgw_statement *s = &p->opt.statements[first->stmt];
    first->unit = n;
    if (!s->batched)
        return PQsendQueryPrepared(p->conn, s->name, first->nvalues,
                                   (const char *const *)first->values, NULL, NULL, 0)
                   ? 0
                   : -1;
    /* one array per column */
    int rc = 0;
    const char **col = malloc(sizeof(char *) * n);
    char **arrays = calloc((size_t)s->nparams, sizeof(char *));
    if (!col || !arrays) {
        rc = -1;
        goto out;
    }
    for (int c = 0; c < s->nparams && rc == 0; c++) {
        struct pgw_item *it = first;
        for (uint32_t i = 0; i < n; i++, it = TAILQ_NEXT(it, link))
            col[i] = it->values[c];
        if (!(arrays[c] = pgw_array_literal(col, n)))
            rc = -1;
    }
    if (rc == 0 && !PQsendQueryPrepared(p->conn, s->name, s->nparams, (const char *const *)arrays,
                                        NULL, NULL, 0))
        rc = -1;
out:
    if (arrays)
        for (int c = 0; c < s->nparams; c++)
            free(arrays[c]);
    free(arrays);
    free(col);
    return rc;
}

static void send_batch(struct pgw *p)
{
    /* Take up to batch_size items off the queue; group the rows of each batched statement
     * (in the order the statements first appear), leave the rest in submission order. */
    struct item_list take;
    TAILQ_INIT(&take);
    uint32_t n = 0;
    struct pgw_item *it;
    while (n < p->opt.batch_size && (it = TAILQ_FIRST(&p->queue)) != NULL) {
        TAILQ_REMOVE(&p->queue, it, link);
        p->nqueued--;
        if (it->cancelled) {
            item_free(it);
            continue;
        }
        TAILQ_INSERT_TAIL(&take, it, link);
        n++;
    }
    if (n == 0)
        return;
    struct pgw_item *first_sent = TAILQ_FIRST(&take);
    while ((it = TAILQ_FIRST(&take)) != NULL) {
        TAILQ_REMOVE(&take, it, link);
        TAILQ_INSERT_TAIL(&p->inflight, it, link);
        uint32_t rows = 1;
        if (p->opt.statements[it->stmt].batched && !it->solo) {
            struct pgw_item *q, *next;
            for (q = TAILQ_FIRST(&take); q; q = next) {
                next = TAILQ_NEXT(q, link);
                if (q->stmt == it->stmt && !q->solo) {
                    TAILQ_REMOVE(&take, q, link);
                    TAILQ_INSERT_TAIL(&p->inflight, q, link);
                    rows++;
                }
            }
        }
        if (send_unit(p, it, rows) != 0) {
            /* put the rest back in the batch so that the failure requeues everything */
            TAILQ_CONCAT(&p->inflight, &take, link);
            conn_error(p, "cannot send a statement");
            return;
        }
    }
    if (!PQpipelineSync(p->conn)) {
        conn_error(p, "cannot sync");
        return;
    }
    TAILQ_LAST(&p->inflight, item_list)->last = true;
    p->sent_ms[(p->first_batch + p->nbatches) % PGW_MAX_DEPTH] = util_now_ms();
    p->nbatches++;
    if (!p->current) /* the batches before it (if any) have all their results read */
        p->current = first_sent;
    if (p->opt.on_batch)
        p->opt.on_batch(p->opt.arg, p->nbatches, false);
    if (flush_out(p) != 0)
        conn_error(p, "cannot send");
}

/* Send every batch that may go now (several when the queue holds more than one batch and
 * the pipeline has room), or arm the batch timer for a queue below batch_size. */
static void try_flush(struct pgw *p)
{
    while (may_send(p)) {
        if (p->nqueued < p->opt.batch_size && p->opt.batch_delay_ms > 0) {
            arm_batch_timer(p);
            return;
        }
        if (p->batch_timer_armed) {
            evtimer_del(p->timer);
            p->batch_timer_armed = false;
        }
        send_batch(p); /* takes at least one statement off the queue, or fails the connection */
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
    if (may_send(p))
        send_batch(p); /* what waited batch_delay goes, however few */
    try_flush(p);
}

/* ---- life ---- */

/* Split the comma-separated LIST into OUT[i] of SIZE bytes each; returns the count, or -1 when
 * there are too many or an element is too long. */
static int split_list(const char *list, char out[][256], int max)
{
    int n = 0;
    const char *s = list;
    for (;;) {
        const char *comma = strchr(s, ',');
        size_t len = comma ? (size_t)(comma - s) : strlen(s);
        if (n >= max || len >= 256)
            return -1;
        memcpy(out[n], s, len);
        out[n][len] = '\0';
        n++;
        if (!comma)
            return n;
        s = comma + 1;
    }
}

/* Read the host, hostaddr and port of the connection string (or PGHOST, PGPORT). */
static int plan_hosts(struct pgw *p, char *errbuf, size_t errlen)
{
    const char *host = NULL, *hostaddr = NULL, *port = NULL;
    for (PQconninfoOption *o = p->parsed; o->keyword; o++) {
        if (strcmp(o->keyword, "host") == 0)
            host = o->val;
        else if (strcmp(o->keyword, "hostaddr") == 0)
            hostaddr = o->val;
        else if (strcmp(o->keyword, "port") == 0)
            port = o->val;
    }
    if (!host || !*host)
        host = getenv("PGHOST");
    if (!port || !*port)
        port = getenv("PGPORT");
    /* hostaddr given, or no host at all (libpq's default socket): libpq needs no lookup */
    if ((hostaddr && *hostaddr) || !host || !*host) {
        p->pass_through = true;
        return 0;
    }
    char names[MAX_HOSTS][256], ports[MAX_HOSTS][256];
    int nh = split_list(host, names, MAX_HOSTS);
    int np = port && *port ? split_list(port, ports, MAX_HOSTS) : 0;
    if (nh < 0 || np < 0 || (np > 1 && np != nh)) {
        snprintf(errbuf, errlen,
                 "the audit database connection string lists too many hosts (at most %d) or "
                 "a number of ports that does not match its hosts",
                 MAX_HOSTS);
        return -1;
    }
    p->nhosts = nh;
    for (int i = 0; i < nh; i++) {
        struct host_entry *e = &p->hosts[i];
        const char *pt = np == 0 ? "" : np == 1 ? ports[0] : ports[i];
        memcpy(e->name, names[i], strlen(names[i]) + 1); /* split_list: < 256 bytes */
        if (strlen(pt) >= sizeof(e->port)) {
            snprintf(errbuf, errlen, "the audit database connection string has an invalid port");
            return -1;
        }
        memcpy(e->port, pt, strlen(pt) + 1);
        e->resolve = e->name[0] && e->name[0] != '/' && e->name[0] != '@' && !is_numeric(e->name);
    }
    return 0;
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
    p->opt.pipeline_depth = clamp_depth(p->opt.pipeline_depth);
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
    if (plan_hosts(p, errbuf, errlen) != 0) {
        PQconninfoFree(p->parsed);
        free(p);
        return NULL;
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
    p->freeing = true;
    for (int h = 0; h < p->nhosts; h++)
        if (p->hosts[h].req) {
            evdns_getaddrinfo_cancel(p->hosts[h].req);
            p->hosts[h].req = NULL;
        }
    unwatch(p);
    if (p->conn)
        PQfinish(p->conn);
    p->conn = NULL;
    /* Whatever was not committed goes back to its owner (who may keep it elsewhere). */
    requeue_inflight(p);
    pgw_divert(p);
    if (p->timer)
        event_free(p->timer);
    if (p->parsed)
        PQconninfoFree(p->parsed);
    free(p);
}

static void on_notice(void *arg, const PGresult *res)
{
    const char *sev = PQresultErrorField(res, PG_DIAG_SEVERITY_NONLOCALIZED);
    const char *msg = PQresultErrorField(res, PG_DIAG_MESSAGE_PRIMARY);
    char e1[64], e2[600], e3[128];
    log_warn("audit database message", "\"severity\":\"%s\",\"message\":\"%s\",\"who\":\"%s\"",
             log_json_escape(sev ? sev : "?", e1, sizeof(e1)),
             log_json_escape(msg ? msg : "", e2, sizeof(e2)),
             log_json_escape(arg ? (const char *)arg : "", e3, sizeof(e3)));
}

static uint32_t clamp_depth(uint32_t d)
{
    return d < 1 ? 1 : d > PGW_MAX_DEPTH ? PGW_MAX_DEPTH : d;
}

void pgw_set_tuning(struct pgw *p, uint32_t batch_size, uint32_t batch_delay_ms,
                    uint32_t pipeline_depth, uint32_t queue_size, uint32_t reconnect_max_ms)
{
    p->opt.batch_size = batch_size;
    p->opt.batch_delay_ms = batch_delay_ms;
    p->opt.pipeline_depth = clamp_depth(pipeline_depth);
    p->opt.queue_size = queue_size;
    p->opt.reconnect_max_ms = reconnect_max_ms;
}

void pgw_log_notices(PGconn *conn, const char *who)
{
    if (conn)
        PQsetNoticeReceiver(conn, on_notice, (void *)who);
}
