/*
 * audit: the KPI ledger's request hooks and per-thread state (see audit.h).
 *
 * Every ledger row goes out through ledger_write, which picks its way:
 *   - the database is healthy (connected, its batch in flight younger than commit_timeout, its
 *     queue not full): the thread's pgw, group-committed;
 *   - otherwise, with a spool: the spool (appended, fdatasync'ed by the writer thread);
 *   - otherwise: the pgw queue (kept in memory until the database is back; an audit record
 *     that gates a request then gets 503 when commit_timeout passes, as without a spool).
 * A row handed to pgw that is not committed in time, or that pgw hands back (connection lost,
 * database frozen: pgw_divert), goes to the spool as well. The row is durable as soon as one
 * of the two ways says so; both may write it, which is harmless (idempotent inserts).
 *
 * Each row in flight is a struct lrec; whoever waits for it (the request whose record gates
 * its forwarding, a learning answer waiting for its maps) registers a notify callback, and
 * detaches when it goes away. An lrec is freed when neither pgw nor the spool holds it.
 *
 * Ordering. A request is forwarded only once its record is durable; an outcome follows its
 * record's way (a spooled record's outcome is spooled too, so the replay inserts it after the
 * record), and maps are durable before the answer that taught them goes to the bot.
 *
 * Process resolution never guesses: cache, then database (only while it is healthy), else the
 * record says "unknown_process" (the replay values it again). KPI settings: a
 * process_kpi_settings row wins; without one, a [process "KEY"] section of the config file.
 *
 * Refusals: a refused FinishRun or task action is recorded row by row up to
 * refusal_records_per_second per thread; beyond that the refusals are counted per endpoint
 * and error code and written as one refusal_summary row per second.
 */
#include "audit.h"

#include <event2/event.h>
#include <inttypes.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/queue.h>

#include "config.h"
#include "ctx.h"
#include "identity.h"
#include "idmap.h"
#include "ledger.h"
#include "log.h"
#include "pgw.h"
#include "pool.h"
#include "request.h"
#include "spool.h"
#include "stats.h"
#include "util.h"

#define TICK_MS 100
#define MAX_AGG 32 /* distinct (endpoint, code) pairs counted per summary window */

struct refusal_count {
    char endpoint[32];
    char code[64];
    uint64_t n;
};

struct audit_thread {
    struct gw_ctx *ctx;
    char name[32];
    struct pgw *db;
    struct spool *spool;          /* NULL: no spool */
    struct spool_worker *spool_w; /* this thread's handle */
    struct idmap runs, tasks;
    struct ledger_settings *settings; /* from the table; NULL until loaded */
    struct event *refresh;            /* settings reload, partitions (worker 0) */
    struct event *tick;               /* stall check, refusal summaries */
    uint64_t last_partitions_ms;
    bool spooling;       /* rows currently go to the spool (logged on change) */
    unsigned nlrecs;     /* rows in flight */
    unsigned nunsettled; /* ... of which neither durable nor given up */
    TAILQ_HEAD(, lrec) lrecs;
    /* refusal sampling: a token bucket refilled every second */
    uint32_t refusal_tokens;
    uint64_t refusal_second;
    struct refusal_count agg[MAX_AGG];
    unsigned nagg;
    uint64_t agg_start_wall;
};

/* ---- rows in flight ---- */

struct lrec;
typedef void (*lrec_notify_fn)(void *arg, struct lrec *l, bool ok, const char *error);

struct lrec {
    TAILQ_ENTRY(lrec) link; /* on the thread's list */
    struct audit_thread *a;
    struct ledger_rec *rec;
    enum spool_class cls;
    struct pgw_item *item; /* queued or in flight in pgw */
    bool in_spool;         /* appended, not yet synced */
    bool spooled;          /* synced in the spool */
    bool appended;         /* ever handed to the spool (its outcome follows it there) */
    bool durable;
    bool settled;          /* durable, or given up */
    lrec_notify_fn notify; /* once, when durable or lost; NULL when nobody waits */
    void *notify_arg;
    uint64_t t_us; /* handed to the ledger (for gateway_audit_commit_seconds) */
};

static void lrec_release(struct lrec *l)
{
    if (l->item || l->in_spool)
        return;
    struct audit_thread *a = l->a;
    if (!l->settled) {
        a->nunsettled--;
        STAT_SET(a->ctx->stats, audit_pending, a->nunsettled);
    }
    TAILQ_REMOVE(&a->lrecs, l, link);
    a->nlrecs--;
    free(l->rec);
    free(l);
}

/* L is durable (OK) or lost: tell whoever waits, once. */
static void lrec_notify(struct lrec *l, bool ok, const char *error)
{
    if (!l->settled) {
        l->settled = true;
        l->a->nunsettled--;
        STAT_SET(l->a->ctx->stats, audit_pending, l->a->nunsettled);
    }
    lrec_notify_fn fn = l->notify;
    l->notify = NULL;
    if (fn)
        fn(l->notify_arg, l, ok, error);
}

static void spool_done(void *arg, bool ok, const char *error);

/* L is durable (committed or synced in the spool) for the first time: its commit latency and,
 * for an accepted record, its KPI values count in /metrics. */
static void lrec_durable(struct lrec *l)
{
    struct gw_stats *st = l->a->ctx->stats;
    l->durable = true;
    metrics_observe(&st->audit_commit_seconds, util_now_us() - l->t_us);
    const struct ledger_rec *rec = l->rec;
    if (rec->kind != LEDGER_RUN && rec->kind != LEDGER_TASK)
        return;
    const char *d = ledger_get(rec, LF_DECISION);
    if (!d || strcmp(d, "accepted") != 0)
        return;
    STAT_INC(st, kpi_records);
    const char *secs = ledger_get(rec, LF_KPI_SECONDS), *entries = ledger_get(rec, LF_KPI_ENTRIES);
    if (secs) {
        double v = strtod(secs, NULL);
        if (v > 0)
            STAT_ADD(st, kpi_seconds_saved_ms, (uint64_t)(v * 1000.0 + 0.5));
    }
    if (entries) {
        long long v = strtoll(entries, NULL, 10);
        if (v > 0)
            STAT_ADD(st, kpi_entries, (uint64_t)v);
    }
}

/* Hand L to the spool. True when it was taken. */
static bool lrec_to_spool(struct lrec *l)
{
    struct audit_thread *a = l->a;
    if (!a->spool_w || l->in_spool || l->spooled)
        return l->in_spool || l->spooled;
    if (spool_append(a->spool_w, l->rec, l->cls, spool_done, l) != 0)
        return false;
    l->in_spool = l->appended = true;
    STAT_INC(a->ctx->stats, audit_spooled);
    return true;
}

static void pgw_done(void *arg, enum pgw_status st, const PGresult *res, int row, const char *error)
{
    struct lrec *l = arg;
    struct audit_thread *a = l->a;
    l->item = NULL;
    if (st == PGW_OK) {
        STAT_INC(a->ctx->stats, audit_committed);
        if (!l->durable) {
            lrec_durable(l);
            lrec_notify(l, true, NULL);
        }
    } else if (st == PGW_DIVERTED) {
        if (!l->durable && !lrec_to_spool(l)) {
            if (!l->in_spool) {
                if (!l->notify)
                    STAT_INC(a->ctx->stats, audit_lost);
                log_error("ledger row lost: the database did not take it and there is no room "
                          "for it in a spool",
                          "\"table\":\"%s\",\"request_id\":\"%s\"",
                          ledger_table((enum ledger_kind)l->rec->kind),
                          ledger_get(l->rec, 0) ? ledger_get(l->rec, 0) : "");
                lrec_notify(l, false, "the audit ledger could not record this request");
            }
        }
    } else if (!l->durable && !l->in_spool) {
        /* PostgreSQL refused the row itself (pgw logged why). */
        if (!l->notify)
            STAT_INC(a->ctx->stats, audit_lost);
        lrec_notify(l, false, error);
    }
    lrec_release(l);
}

static void spool_done(void *arg, bool ok, const char *error)
{
    struct lrec *l = arg;
    l->in_spool = false;
    if (ok) {
        l->spooled = true;
        if (!l->durable) {
            lrec_durable(l);
            /* still queued in pgw: the replay will insert it, the live insert is not needed */
            if (l->item && pgw_item_cancel(l->item))
                l->item = NULL;
            lrec_notify(l, true, NULL);
        }
    } else if (!l->durable && !l->item) {
        if (!l->notify)
            STAT_INC(l->a->ctx->stats, audit_lost);
        lrec_notify(l, false, error);
    }
    lrec_release(l);
}

/* Is the database able to take rows right now? */
static bool db_healthy(struct audit_thread *a)
{
    return pgw_connected(a->db) && !pgw_stalled(a->db, a->ctx->cfg->audit.commit_timeout_ms) &&
           pgw_queued(a->db) < a->ctx->cfg->audit.queue_size;
}

static void note_mode(struct audit_thread *a, bool spooling)
{
    if (spooling == a->spooling)
        return;
    a->spooling = spooling;
    STAT_SET(a->ctx->stats, audit_spooling, spooling);
    if (spooling)
        log_warn("ledger: the audit database cannot take rows in time; records go to the spool",
                 "\"thread\":%d,\"queued\":%zu", a->ctx->index, pgw_queued(a->db));
    else
        log_info("ledger: the audit database takes rows again; the spool is replayed",
                 "\"thread\":%d", a->ctx->index);
}

/*
 * Write REC (taken over) as a row of class CLS; NOTIFY(ARG, ...) once it is durable or lost.
 * Returns the lrec, or NULL when it could be queued nowhere (REC freed; no notify).
 */
static struct lrec *ledger_write(struct audit_thread *a, struct ledger_rec *rec,
                                 enum spool_class cls, lrec_notify_fn notify, void *arg)
{
    if (!rec)
        return NULL;
    struct lrec *l = calloc(1, sizeof(*l));
    if (!l) {
        free(rec);
        return NULL;
    }
    *l = (struct lrec){
        .a = a, .rec = rec, .cls = cls, .notify = notify, .notify_arg = arg, .t_us = util_now_us()};
    TAILQ_INSERT_TAIL(&a->lrecs, l, link);
    a->nlrecs++;
    a->nunsettled++;
    STAT_SET(a->ctx->stats, audit_pending, a->nunsettled);
    bool healthy = db_healthy(a);
    if (a->spool_w)
        note_mode(a, !healthy);
    /* an outcome goes where its record went, so that the replay inserts it after it */
    bool spool_first = a->spool_w && (!healthy || cls == SPOOL_OUTCOME);
    if (spool_first && lrec_to_spool(l))
        return l;
    if (healthy || !a->spool_w) {
        const char *v[LEDGER_MAX_FIELDS];
        ledger_values(l->rec, v);
        l->item = pgw_submit(a->db, l->rec->kind, v, pgw_done, l);
        if (l->item)
            return l;
    }
    /* the spool is full (or out of memory) and the database cannot take it now either */
    l->notify = NULL;
    lrec_notify(l, false, NULL);
    lrec_release(l);
    return NULL;
}

/* ---- per-thread state ---- */

static void settings_loaded_cb(void *arg, enum pgw_status st, const PGresult *res, int row,
                               const char *error)
{
    struct audit_thread *a = arg;
    if (st != PGW_OK || !res) {
        if (st == PGW_FAILED)
            log_warn("cannot load process_kpi_settings", "\"error\":\"%s\"", error ? error : "");
        return;
    }
    struct ledger_settings *s = ledger_settings_from(res);
    if (!s)
        return;
    ledger_settings_free(a->settings);
    a->settings = s;
}

static void settings_reload(struct audit_thread *a)
{
    pgw_submit(a->db, LST_SETTINGS, NULL, settings_loaded_cb, a);
}

static void partitions_done_cb(void *arg, enum pgw_status st, const PGresult *res, int row,
                               const char *error)
{
    if (st == PGW_FAILED)
        log_warn("gateway_ensure_partitions failed", "\"error\":\"%s\"", error ? error : "");
}

static void ensure_partitions(struct audit_thread *a)
{
    char days[16];
    snprintf(days, sizeof(days), "%u", a->ctx->cfg->audit.partitions_ahead);
    const char *v[1] = {days};
    a->last_partitions_ms = util_now_ms();
    pgw_submit(a->db, LST_PARTITIONS, v, partitions_done_cb, a);
}

static void on_connected(void *arg)
{
    struct audit_thread *a = arg;
    settings_reload(a);
    if (a->ctx->index == 0)
        ensure_partitions(a);
}

static void on_down(void *arg)
{
    struct audit_thread *a = arg;
    /* with a spool, nothing waits in memory for the database to come back */
    if (a->spool_w) {
        note_mode(a, true);
        pgw_divert(a->db);
    }
}

static void on_batch(void *arg, uint32_t in_flight, bool committed)
{
    struct audit_thread *a = arg;
    STAT_SET(a->ctx->stats, audit_batches_in_flight, in_flight);
    if (committed)
        STAT_INC(a->ctx->stats, audit_batches);
}

static void on_notify(void *arg, const char *channel, const char *payload)
{
    settings_reload(arg);
}

static void refresh_cb(evutil_socket_t fd, short what, void *arg)
{
    struct audit_thread *a = arg;
    if (!pgw_connected(a->db))
        return;
    settings_reload(a);
    if (a->ctx->index == 0 && util_now_ms() - a->last_partitions_ms > 6 * 3600 * 1000ull)
        ensure_partitions(a);
}

static void flush_refusal_summary(struct audit_thread *a);

static void tick_cb(evutil_socket_t fd, short what, void *arg)
{
    struct audit_thread *a = arg;
    STAT_SET(a->ctx->stats, audit_connected, pgw_connected(a->db));
    if (a->spool_w) {
        bool healthy = db_healthy(a);
        /* a frozen or overloaded database: what waits in pgw's queue goes to the spool, and so
         * does what it has had in hand for longer than commit_timeout */
        if (!healthy && pgw_queued(a->db) > 0)
            pgw_divert(a->db);
        if (pgw_stalled(a->db, a->ctx->cfg->audit.commit_timeout_ms)) {
            struct lrec *l, *next;
            for (l = TAILQ_FIRST(&a->lrecs); l; l = next) {
                next = TAILQ_NEXT(l, link);
                if (!l->durable && l->item && !l->in_spool)
                    lrec_to_spool(l);
            }
        }
        if (healthy && a->spooling && pgw_pending(a->db) == 0)
            note_mode(a, false);
    }
    if (a->nagg > 0 && util_wall_ms() - a->agg_start_wall >= 1000)
        flush_refusal_summary(a);
}

static struct timeval ms_tv(uint32_t ms)
{
    struct timeval tv = {.tv_sec = ms / 1000, .tv_usec = (suseconds_t)(ms % 1000) * 1000};
    return tv;
}

void audit_thread_reconfigure(struct audit_thread *a, const struct config *cfg)
{
    if (!a)
        return;
    pgw_set_tuning(a->db, cfg->audit.batch_size, cfg->audit.batch_delay_ms,
                   cfg->audit.pipeline_depth, cfg->audit.queue_size, cfg->audit.reconnect_max_ms);
}

int audit_thread_new(struct gw_ctx *ctx, struct spool *spool, struct audit_thread **out,
                     char *errbuf, size_t errlen)
{
    *out = NULL;
    const struct config *cfg = ctx->cfg;
    if (!cfg->audit.database)
        return 0;
    struct audit_thread *a = calloc(1, sizeof(*a));
    if (!a || idmap_init(&a->runs, cfg->audit.map_cache_size) != 0 ||
        idmap_init(&a->tasks, cfg->audit.map_cache_size) != 0) {
        snprintf(errbuf, errlen, "out of memory for the audit caches");
        audit_thread_free(a);
        return -1;
    }
    a->ctx = ctx;
    TAILQ_INIT(&a->lrecs);
    snprintf(a->name, sizeof(a->name), "thread %d", ctx->index);
    a->spool = spool;
    if (spool && !(a->spool_w = spool_worker_new(spool, ctx->index, ctx->base))) {
        snprintf(errbuf, errlen, "cannot attach thread %d to the spool", ctx->index);
        audit_thread_free(a);
        return -1;
    }
    struct pgw_options o = {
        .conninfo = cfg->audit.database,
        .name = a->name,
        .statements = ledger_statements(),
        .nstatements = LST_COUNT,
        .batch_size = cfg->audit.batch_size,
        .batch_delay_ms = cfg->audit.batch_delay_ms,
        .pipeline_depth = cfg->audit.pipeline_depth,
        .queue_size = cfg->audit.queue_size,
        .reconnect_max_ms = cfg->audit.reconnect_max_ms,
        .listen_channel = "gateway_kpi_settings",
        .on_connected = on_connected,
        .on_notify = on_notify,
        .on_down = on_down,
        .on_batch = on_batch,
        .arg = a,
    };
    a->db = pgw_new(ctx->base, ctx->dns, &o, errbuf, errlen);
    if (!a->db) {
        audit_thread_free(a);
        return -1;
    }
    a->refresh = event_new(ctx->base, -1, EV_PERSIST, refresh_cb, a);
    a->tick = event_new(ctx->base, -1, EV_PERSIST, tick_cb, a);
    if (!a->refresh || !a->tick) {
        snprintf(errbuf, errlen, "out of memory");
        audit_thread_free(a);
        return -1;
    }
    struct timeval tv = ms_tv(cfg->audit.settings_refresh_ms);
    event_add(a->refresh, &tv);
    tv = ms_tv(TICK_MS);
    event_add(a->tick, &tv);
    a->refusal_tokens = cfg->audit.refusal_records_per_second;
    *out = a;
    return 0;
}

void audit_thread_free(struct audit_thread *a)
{
    if (!a)
        return;
    if (a->nagg > 0 && a->db)
        flush_refusal_summary(a);
    if (a->refresh)
        event_free(a->refresh);
    if (a->tick)
        event_free(a->tick);
    /* what the database has not committed goes to the spool (pgw hands it back), and the
     * spool is synced before the thread goes */
    pgw_free(a->db);
    a->db = NULL;
    spool_worker_free(a->spool_w);
    if (a->nunsettled > 0)
        log_error("ledger rows lost at shutdown: neither the database nor a spool took them",
                  "\"thread\":%d,\"rows\":%u", a->ctx ? a->ctx->index : -1, a->nunsettled);
    struct lrec *l;
    while ((l = TAILQ_FIRST(&a->lrecs)) != NULL) { /* their holders are gone with pgw */
        TAILQ_REMOVE(&a->lrecs, l, link);
        free(l->rec);
        free(l);
    }
    idmap_clear(&a->runs);
    idmap_clear(&a->tasks);
    ledger_settings_free(a->settings);
    free(a);
}

bool audit_thread_ready(const struct audit_thread *a)
{
    return !a || pgw_connected(a->db);
}

bool audit_thread_flushed(const struct audit_thread *a)
{
    if (!a || a->nunsettled == 0)
        return true;
    /* rows wait only for a database that cannot take them: nothing more will happen */
    return !a->spool_w && !pgw_connected(a->db);
}

/* ---- the AUDIT phase ---- */

enum rec_state { REC_NEW, REC_LOOKUP, REC_WRITING, REC_COMMITTED, REC_FAILED };

struct audit_rec;

/* One record of the request: the request's own task action or FinishRun, or an item of a
 * Return. */
struct audit_item {
    struct audit_rec *rec;
    const struct payload_result *p;
    unsigned index;
    struct pgw_item *lookup;
    struct lrec *l;
    bool durable;
    char process_key[IDMAP_KEY_MAX];
    bool have_process;
};

struct audit_rec {
    struct gw_request *r;
    struct audit_thread *a;
    enum rec_state state;
    struct audit_item *items;
    size_t nitems, lookups, pending;
    struct event *timer; /* commit_timeout */
    bool extended;       /* the timer ran out once and the records went to the spool */
    bool maybe_written;  /* a record may be (or become) durable: an outcome is due */
    bool appended;       /* a record went to the spool: so does the outcome */
    uint64_t t_committed_ms;
    /* outcome, read in the RESPONSE phase */
    bool have_answer;
    int succeeded; /* -1 unknown, 0, 1 */
    char message[512];
};

static bool audited(const struct route *rt)
{
    return rt && (rt->audit == ROUTE_AUDIT_FINISHRUN || rt->audit == ROUTE_AUDIT_TASK_ACTION);
}

static bool is_run(const struct gw_request *r)
{
    return r->match.route->audit == ROUTE_AUDIT_FINISHRUN;
}

static const char *task_action_of(const char *endpoint)
{
    if (strncmp(endpoint, "Solved", 6) == 0)
        return "Solved";
    if (strncmp(endpoint, "Manual", 6) == 0)
        return "Manual";
    if (strncmp(endpoint, "Retry", 5) == 0)
        return "Retry";
    if (strncmp(endpoint, "Error", 5) == 0)
        return "Error";
    return NULL;
}

/* The audit record of R: accepted for task action or FinishRun P (item INDEX) of process PK
 * (NULL: unknown), or rejected with R's error (P NULL). */
static struct ledger_rec *audit_record(struct audit_thread *a, struct gw_request *r,
                                       const struct payload_result *p, unsigned index,
                                       const char *pk)
{
    const struct config *cfg = r->cfg; /* the request's snapshot, also after a reload */
    const struct route *rt = r->match.route;
    bool accepted = p != NULL;
    struct kpi_settings st;
    bool from_table = false;
    bool have_settings =
        accepted && pk && ledger_settings_find(a->settings, cfg, pk, &st, &from_table);
    if (!p && r->payload_valid && !r->items)
        p = &r->payload; /* refused after validation (bounds): the overrides are known */
    struct ledger_audit_in in = {
        .kind = is_run(r) ? LEDGER_RUN : LEDGER_TASK,
        .request_id = r->id,
        .received_wall_ms = r->t_wall_ms,
        .instance = cfg->audit.instance,
        .client_id = cfg->upstream.client_id,
        .who = request_identity(r),
        .source_addr = request_peer(r),
        .have_id = p != NULL,
        .id = p ? p->id : 0,
        .process_key = pk,
        .payload = p,
        .accepted = accepted,
        .reason_code = r->error_code,
        .reason_message = r->error_message[0] ? r->error_message : NULL,
        .item = index,
        .endpoint = rt->name,
        .action = p && p->action ? payload_action_name(p->action) : task_action_of(rt->name),
        .settings = have_settings ? &st : NULL,
        .settings_from_table = from_table,
    };
    return ledger_audit_record(&in);
}

/* Detach from every record: a timed-out or gone request waits for nothing; a record not yet
 * sent anywhere is dropped (then it will never exist). */
static void rec_detach(struct audit_rec *rec)
{
    evtimer_del(rec->timer);
    bool any_left = false;
    for (size_t i = 0; i < rec->nitems; i++) {
        struct audit_item *it = &rec->items[i];
        if (it->lookup) {
            pgw_item_cancel(it->lookup);
            it->lookup = NULL;
        }
        struct lrec *l = it->l;
        if (!l) {
            any_left |= it->durable;
            continue;
        }
        l->notify = NULL;
        it->l = NULL;
        rec->appended |= l->appended;
        if (l->item && !l->in_spool && !l->spooled && !l->durable && pgw_item_cancel(l->item)) {
            l->item = NULL;
            lrec_release(l);
        } else {
            any_left = true;
        }
    }
    if (rec->maybe_written && !any_left)
        rec->maybe_written = false;
}

static void rec_cancel(struct gw_request *r)
{
    rec_detach(r->hook_data[REQUEST_PHASE_AUDIT]);
}

static void refuse_unavailable(struct gw_request *r, const char *code, const char *msg)
{
    r->cancel = NULL;
    r->ended_by = "gateway";
    request_reply_header(r, "Retry-After", "5");
    request_reply_refusal(r, 503, code, msg);
}

static void item_notify(void *arg, struct lrec *l, bool ok, const char *error)
{
    struct audit_item *it = arg;
    struct audit_rec *rec = it->rec;
    struct gw_request *r = rec->r;
    rec->appended |= l->appended;
    it->l = NULL; /* it may be freed once both ways are done with it */
    it->durable = ok;
    if (!ok) {
        rec->state = REC_FAILED;
        char why[200];
        log_error("audit record could not be made durable", "\"id\":\"%s\",\"error\":\"%s\"", r->id,
                  log_json_escape(error ? error : "", why, sizeof(why)));
        rec_detach(rec);
        refuse_unavailable(r, "audit.write_failed",
                           "the audit ledger could not record this request; nothing was "
                           "forwarded");
        return;
    }
    if (--rec->pending > 0)
        return;
    evtimer_del(rec->timer);
    rec->state = REC_COMMITTED;
    rec->t_committed_ms = util_now_ms();
    request_resume(r);
}

static void commit_timeout_cb(evutil_socket_t fd, short what, void *arg)
{
    struct audit_rec *rec = arg;
    struct gw_request *r = rec->r;
    /* With a spool: the records go there too, and get as long again to be synced. */
    if (rec->state == REC_WRITING && !rec->extended && rec->a->spool_w) {
        bool all = true;
        for (size_t i = 0; i < rec->nitems; i++)
            if (rec->items[i].l)
                all &= lrec_to_spool(rec->items[i].l);
        if (all) {
            rec->extended = true;
            rec->appended = true;
            struct timeval tv = ms_tv(rec->r->cfg->audit.commit_timeout_ms);
            evtimer_add(rec->timer, &tv);
            return;
        }
    }
    rec_detach(rec);
    rec->state = REC_FAILED;
    refuse_unavailable(r, "audit.unavailable",
                       "the audit ledger could not record this request in time; nothing was "
                       "forwarded, try again");
}

/* The process's own bounds for item IT, now that its process is known (the gateway-wide ones
 * ran in policy). Returns the refusal code, with MSG filled, or NULL. */
static const char *process_bounds(const struct config *cfg, const struct audit_item *it, bool many,
                                  char *msg, size_t len)
{
    const char *pk = it->have_process ? it->process_key : NULL;
    const struct config_process *cp = pk ? config_process_find(cfg, pk) : NULL;
    const struct payload_result *p = it->p;
    char item[32] = "";
    if (many)
        snprintf(item, sizeof(item), "item %u: ", it->index);
    if (cp && cp->has_max_overwrite_seconds_saved && p->seconds_state == PAYLOAD_VALUE &&
        (uint32_t)p->seconds > cp->max_overwrite_seconds_saved) {
        snprintf(msg, len, "%soverwriteSecondsSaved %d is above the limit of %u for process %.100s",
                 item, p->seconds, cp->max_overwrite_seconds_saved, pk);
        return "policy.seconds_above_limit";
    }
    if (cp && cp->has_max_overwrite_entries && p->entries_state == PAYLOAD_VALUE &&
        (uint32_t)p->entries > cp->max_overwrite_entries) {
        snprintf(msg, len, "%soverwriteEntries %d is above the limit of %u for process %.100s",
                 item, p->entries, cp->max_overwrite_entries, pk);
        return "policy.entries_above_limit";
    }
    return NULL;
}

static void write_records(struct audit_rec *rec)
{
    struct gw_request *r = rec->r;
    const struct config *cfg = r->cfg;
    char msg[240];
    for (size_t i = 0; i < rec->nitems; i++) {
        const char *code = process_bounds(cfg, &rec->items[i], r->items != NULL, msg, sizeof(msg));
        if (code) {
            evtimer_del(rec->timer);
            r->cancel = NULL;
            STAT_INC(r->ctx->stats, refusals);
            request_reply_refusal(r, 422, code, msg);
            return;
        }
    }
    rec->state = REC_WRITING;
    rec->maybe_written = true;
    rec->pending = rec->nitems;
    for (size_t i = 0; i < rec->nitems; i++) {
        struct audit_item *it = &rec->items[i];
        it->l = ledger_write(
            rec->a,
            audit_record(rec->a, r, it->p, it->index, it->have_process ? it->process_key : NULL),
            SPOOL_GATE, item_notify, it);
        if (it->l)
            continue;
        rec->state = REC_FAILED;
        rec_detach(rec);
        bool full = rec->a->spool_w != NULL;
        refuse_unavailable(r, full ? "audit.spool_full" : "audit.queue_full",
                           full ? "the audit database is unavailable and the local spool is "
                                  "full; nothing was forwarded, try again later"
                                : "the audit ledger is backed up; nothing was forwarded");
        return;
    }
}

static void lookup_done(void *arg, enum pgw_status st, const PGresult *res, int row,
                        const char *error)
{
    struct audit_item *it = arg;
    struct audit_rec *rec = it->rec;
    it->lookup = NULL;
    if (st == PGW_OK && res && row < PQntuples(res) && !PQgetisnull(res, row, 0)) {
        util_copy_text(it->process_key, sizeof(it->process_key), PQgetvalue(res, row, 0));
        it->have_process = true;
        idmap_put(is_run(rec->r) ? &rec->a->runs : &rec->a->tasks, it->p->id, it->process_key);
    } else if (st == PGW_FAILED) {
        log_warn("process lookup failed; recording the process as unknown",
                 "\"id\":\"%s\",\"error\":\"%s\"", rec->r->id, error ? error : "");
    }
    if (--rec->lookups == 0)
        write_records(rec);
}

static enum request_next audit_phase(struct gw_request *r)
{
    struct audit_thread *a = r->ctx->audit;
    if (!a)
        return REQUEST_NEXT;
    /* The response phase reads the answers of audited and learning endpoints whole. */
    if (r->match.route->audit != ROUTE_AUDIT_COUNT_ONLY)
        r->buffer_response = true;
    size_t n = r->items ? r->nitems : 1;
    if (!audited(r->match.route) || !r->payload_valid || n == 0)
        return REQUEST_NEXT;
    struct audit_rec *rec = calloc(1, sizeof(*rec));
    struct audit_item *items = calloc(n, sizeof(*items));
    if (!rec || !items) {
        free(rec);
        free(items);
        request_reply_refusal(r, 503, "internal.no_memory", "out of memory");
        return REQUEST_DONE;
    }
    rec->r = r;
    rec->a = a;
    rec->succeeded = -1;
    rec->items = items;
    rec->nitems = n;
    r->hook_data[REQUEST_PHASE_AUDIT] = rec;
    rec->timer = evtimer_new(r->ctx->base, commit_timeout_cb, rec);
    if (!rec->timer) {
        request_reply_refusal(r, 503, "internal.no_memory", "out of memory");
        return REQUEST_DONE;
    }
    struct timeval tv = ms_tv(r->cfg->audit.commit_timeout_ms);
    evtimer_add(rec->timer, &tv);
    r->cancel = rec_cancel;

    struct idmap *cache = is_run(r) ? &a->runs : &a->tasks;
    /* Without a spool the record waits for the database anyway, and so may its lookup; with
     * one, a database that cannot answer in time is not asked (the replay values it later). */
    bool ask = db_healthy(a) || !a->spool_w;
    rec->lookups = 1; /* until every lookup is asked: none may complete the set early */
    for (size_t i = 0; i < n; i++) {
        struct audit_item *it = &items[i];
        it->rec = rec;
        it->index = (unsigned)i;
        it->p = r->items ? &r->items[i] : &r->payload;
        const char *pk = idmap_get(cache, it->p->id);
        if (pk) {
            util_copy_text(it->process_key, sizeof(it->process_key), pk);
            it->have_process = true;
            continue;
        }
        if (!ask)
            continue; /* the database cannot be asked now: the replay values it later */
        char id[24];
        snprintf(id, sizeof(id), "%" PRId64, it->p->id);
        const char *v[1] = {id};
        it->lookup =
            pgw_submit(a->db, is_run(r) ? LST_LOOKUP_RUN : LST_LOOKUP_TASK, v, lookup_done, it);
        if (it->lookup)
            rec->lookups++;
    }
    rec->state = REC_LOOKUP;
    if (--rec->lookups == 0)
        write_records(rec); /* may reply at once (bounds, no room): then R is gone */
    return REQUEST_AGAIN;
}

/* ---- RESPONSE phase: learn maps, read the outcome ---- */

/*
 * Learning holds the answer back until the maps are durable (committed or spooled; at most
 * twice commit_timeout): a bot can only send FinishRun for a runId it has received, so when it
 * does, every replica can resolve it (or the replay will). The wait outlives nothing: when the
 * request goes, it detaches from its maps, which are written all the same.
 */
struct learn_wait {
    struct gw_request *r;
    struct event *timer;
    struct lrec **maps;
    unsigned n, cap, pending;
    bool extended;
};

static void learn_detach(struct learn_wait *lw)
{
    for (unsigned i = 0; i < lw->n; i++)
        if (lw->maps[i]) {
            lw->maps[i]->notify = NULL;
            lw->maps[i] = NULL;
        }
    lw->pending = 0;
}

static void learn_notify(void *arg, struct lrec *l, bool ok, const char *error)
{
    struct learn_wait *lw = arg;
    for (unsigned i = 0; i < lw->n; i++)
        if (lw->maps[i] == l)
            lw->maps[i] = NULL;
    if (!ok)
        log_warn("a runId/taskId map could not be recorded", "\"id\":\"%s\"", lw->r->id);
    if (--lw->pending == 0) {
        evtimer_del(lw->timer);
        lw->r->cancel = NULL;
        request_resume(lw->r);
    }
}

static void learn_timeout_cb(evutil_socket_t fd, short what, void *arg)
{
    struct learn_wait *lw = arg;
    if (!lw->extended && lw->r->ctx->audit->spool_w) {
        bool all = true;
        for (unsigned i = 0; i < lw->n; i++)
            if (lw->maps[i])
                all &= lrec_to_spool(lw->maps[i]);
        if (all) {
            lw->extended = true;
            struct timeval tv = ms_tv(lw->r->cfg->audit.commit_timeout_ms);
            evtimer_add(lw->timer, &tv);
            return;
        }
    }
    log_warn("runId/taskId map not durable in time; answering anyway", "\"id\":\"%s\"", lw->r->id);
    learn_detach(lw);
    lw->r->cancel = NULL;
    request_resume(lw->r);
}

static void learn_cancel(struct gw_request *r)
{
    struct learn_wait *lw = r->hook_data[REQUEST_PHASE_RESPONSE];
    evtimer_del(lw->timer);
    learn_detach(lw);
}

static struct learn_wait *learn_wait_of(struct gw_request *r)
{
    struct learn_wait *lw = r->hook_data[REQUEST_PHASE_RESPONSE];
    if (lw)
        return lw;
    lw = calloc(1, sizeof(*lw));
    if (!lw)
        return NULL;
    lw->r = r;
    lw->timer = evtimer_new(r->ctx->base, learn_timeout_cb, lw);
    if (!lw->timer) {
        free(lw);
        return NULL;
    }
    r->hook_data[REQUEST_PHASE_RESPONSE] = lw;
    return lw;
}

/* Write one map row and, when the request can wait for it, wait: not for a database known to
 * be away when there is no spool (the map then waits in memory, the bot does not). */
static void learn_write(struct audit_thread *a, struct gw_request *r, enum ledger_kind kind,
                        const char *const *v)
{
    struct learn_wait *lw = a->spool_w || db_healthy(a) ? learn_wait_of(r) : NULL;
    if (lw && lw->n == lw->cap) {
        unsigned ncap = lw->cap ? lw->cap * 2 : 4;
        struct lrec **nm = realloc(lw->maps, sizeof(*nm) * ncap);
        if (nm) {
            lw->maps = nm;
            lw->cap = ncap;
        }
    }
    bool wait = lw && lw->n < lw->cap;
    struct lrec *l =
        ledger_write(a, ledger_rec_new(kind, v), SPOOL_OTHER, wait ? learn_notify : NULL, lw);
    if (!l) {
        STAT_INC(a->ctx->stats, audit_lost);
        log_error("a runId/taskId map was not recorded: the ledger's queue and spool are full",
                  "\"id\":\"%s\"", r->id);
        return;
    }
    if (wait) {
        lw->maps[lw->n++] = l;
        lw->pending++;
    }
}

static void learn_task(struct audit_thread *a, struct gw_request *r, json_t *task, const char *pk)
{
    json_t *tid = json_object_get(task, "taskId");
    json_t *rid = json_object_get(task, "runId");
    if (!json_is_integer(tid) || json_integer_value(tid) <= 0)
        return;
    char t[24], rn[24];
    snprintf(t, sizeof(t), "%" JSON_INTEGER_FORMAT, json_integer_value(tid));
    bool have_run = json_is_integer(rid) && json_integer_value(rid) > 0;
    if (have_run)
        snprintf(rn, sizeof(rn), "%" JSON_INTEGER_FORMAT, json_integer_value(rid));
    idmap_put(&a->tasks, json_integer_value(tid), pk);
    const char *v[LM_TASK_COUNT] = {[LM_ID] = t,
                                    [LM_PROCESS_KEY] = pk,
                                    [LM_SOURCE] = r->match.route->name,
                                    [LM_REQUEST_ID] = r->id,
                                    [LM_RUN_ID] = have_run ? rn : NULL};
    learn_write(a, r, LEDGER_TASK_MAP, v);
    if (have_run) {
        idmap_put(&a->runs, json_integer_value(rid), pk);
        const char *rv[LM_RUN_COUNT] = {rn, pk, r->match.route->name, r->id};
        learn_write(a, r, LEDGER_RUN_MAP, rv);
    }
}

static void learn(struct audit_thread *a, struct gw_request *r, json_t *body)
{
    const struct route *rt = r->match.route;
    if (!r->match.key || r->match.key_len == 0 || r->match.key_len >= IDMAP_KEY_MAX)
        return;
    char pk[IDMAP_KEY_MAX];
    memcpy(pk, r->match.key, r->match.key_len);
    pk[r->match.key_len] = '\0';

    if (rt->audit == ROUTE_AUDIT_LEARN_RUN) {
        json_t *rid = json_object_get(body, "runId");
        if (!json_is_integer(rid) || json_integer_value(rid) <= 0)
            return;
        char rn[24];
        snprintf(rn, sizeof(rn), "%" JSON_INTEGER_FORMAT, json_integer_value(rid));
        idmap_put(&a->runs, json_integer_value(rid), pk);
        const char *v[LM_RUN_COUNT] = {rn, pk, rt->name, r->id};
        learn_write(a, r, LEDGER_RUN_MAP, v);
        return;
    }
    if (json_is_array(body)) { /* TakeMany */
        size_t i;
        json_t *t;
        json_array_foreach(body, i, t) learn_task(a, r, t, pk);
        return;
    }
    json_t *ids = json_object_get(body, "taskIds"); /* CreateTasks */
    if (json_is_array(ids)) {
        size_t i;
        json_t *t;
        json_array_foreach(ids, i, t)
        {
            if (!json_is_integer(t) || json_integer_value(t) <= 0)
                continue;
            char tn[24];
            snprintf(tn, sizeof(tn), "%" JSON_INTEGER_FORMAT, json_integer_value(t));
            idmap_put(&a->tasks, json_integer_value(t), pk);
            const char *v[LM_TASK_COUNT] = {tn, pk, rt->name, r->id, NULL};
            learn_write(a, r, LEDGER_TASK_MAP, v);
        }
        return;
    }
    learn_task(a, r, body, pk); /* TakeNext, CreateAndTakeTask, CreateTask */
}

static enum request_next response_phase(struct gw_request *r)
{
    struct audit_thread *a = r->ctx->audit;
    if (!a || !r->call)
        return REQUEST_NEXT;
    const struct route *rt = r->match.route;
    bool learns = rt->audit == ROUTE_AUDIT_LEARN_RUN || rt->audit == ROUTE_AUDIT_LEARN_TASKS;
    struct audit_rec *rec = r->hook_data[REQUEST_PHASE_AUDIT];
    int status = upstream_call_status(r->call);
    if ((!learns && !rec) || status < 200 || status > 299)
        return REQUEST_NEXT;
    size_t len = 0;
    const char *bytes = upstream_call_body(r->call, &len);
    if (len == 0 || len > 16 * 1024 * 1024)
        return REQUEST_NEXT;
    json_t *doc = bytes ? json_loadb(bytes, len, 0, NULL) : NULL;
    if (!doc)
        return REQUEST_NEXT;
    if (learns)
        learn(a, r, doc);
    if (rec && json_is_object(doc)) {
        json_t *s = json_object_get(doc, "succeeded");
        json_t *m = json_object_get(doc, "message");
        rec->succeeded = json_is_boolean(s) ? json_is_true(s) : -1;
        if (json_is_string(m))
            util_copy_text(rec->message, sizeof(rec->message), json_string_value(m));
        rec->have_answer = true;
    }
    json_decref(doc);
    struct learn_wait *lw = r->hook_data[REQUEST_PHASE_RESPONSE];
    if (!lw || lw->pending == 0)
        return REQUEST_NEXT;
    r->cancel = learn_cancel;
    struct timeval tv = ms_tv(r->cfg->audit.commit_timeout_ms);
    evtimer_add(lw->timer, &tv);
    return REQUEST_AGAIN;
}

/* ---- done: outcomes, refusals ---- */

static void write_outcome(struct audit_thread *a, struct gw_request *r, struct audit_rec *rec,
                          bool record_spooled)
{
    char received[40], up[24], sent[24], as[32], us[32], ts[32];
    ledger_time(r->t_wall_ms, received, sizeof(received));
    int ustatus = r->call ? upstream_call_status(r->call) : 0;
    util_fmt_i64(up, ustatus);
    util_fmt_i64(sent, r->status);
    uint64_t now = util_now_ms();
    util_fmt_millis(as, rec->t_committed_ms ? rec->t_committed_ms - r->t_start_ms : 0);
    util_fmt_millis(us, (r->t_up_us + 500) / 1000); /* rounded to the millisecond */
    util_fmt_millis(ts, now - r->t_start_ms);
    const char *failure = NULL;
    if (ustatus == 0)
        failure = rec->state == REC_FAILED ? "audit.commit_timeout"
                  : r->error_code          ? r->error_code
                                           : "gateway.internal";
    const char *v[LO_COUNT] = {
        [LO_REQUEST_ID] = r->id,
        [LO_RECEIVED_AT] = received,
        [LO_ENDPOINT] = r->match.route->name,
        [LO_INSTANCE] = a->ctx->cfg->audit.instance,
        [LO_UPSTREAM_STATUS] = ustatus ? up : NULL,
        [LO_SUCCEEDED] = rec->succeeded < 0 ? NULL
                         : rec->succeeded   ? "true"
                                            : "false",
        [LO_MESSAGE] = rec->have_answer && rec->message[0] ? rec->message : NULL,
        [LO_FAILURE] = failure,
        [LO_STATUS_SENT] = sent,
        [LO_AUDIT_SECONDS] = rec->t_committed_ms ? as : NULL,
        [LO_UPSTREAM_SECONDS] = r->call ? us : NULL,
        [LO_TOTAL_SECONDS] = ts,
    };
    if (!ledger_write(a, ledger_rec_new(LEDGER_OUTCOME, v),
                      record_spooled ? SPOOL_OUTCOME : SPOOL_OTHER, NULL, NULL)) {
        STAT_INC(a->ctx->stats, audit_lost);
        log_error("audit outcome not recorded: the ledger's queue and spool are full",
                  "\"id\":\"%s\",\"status\":%d", r->id, r->status);
    }
}

static void flush_refusal_summary(struct audit_thread *a)
{
    char start[40], end[40], count[24], id[37];
    uint64_t now = util_wall_ms();
    ledger_time(a->agg_start_wall, start, sizeof(start));
    ledger_time(now, end, sizeof(end));
    for (unsigned i = 0; i < a->nagg; i++) {
        util_uuid7(id);
        snprintf(count, sizeof(count), "%" PRIu64, a->agg[i].n);
        const char *v[LS_COUNT] = {
            id, start, end, a->ctx->cfg->audit.instance, a->agg[i].endpoint, a->agg[i].code, count};
        if (!ledger_write(a, ledger_rec_new(LEDGER_REFUSALS, v), SPOOL_OTHER, NULL, NULL)) {
            STAT_INC(a->ctx->stats, audit_lost);
            log_error("refusal summary not recorded: the ledger's queue and spool are full",
                      "\"endpoint\":\"%s\",\"reason\":\"%s\",\"refusals\":%" PRIu64,
                      a->agg[i].endpoint, a->agg[i].code, a->agg[i].n);
        }
    }
    a->nagg = 0;
}

/* A refused audited request: its record, or a count in this second's summary. */
static void record_refusal(struct audit_thread *a, struct gw_request *r, struct audit_rec *rec)
{
    uint64_t second = util_now_ms() / 1000;
    if (second != a->refusal_second) {
        a->refusal_second = second;
        a->refusal_tokens = a->ctx->cfg->audit.refusal_records_per_second;
    }
    if (a->refusal_tokens > 0) {
        a->refusal_tokens--;
        const char *pk = rec && rec->nitems == 1 && rec->items[0].have_process
                             ? rec->items[0].process_key
                             : NULL;
        if (ledger_write(a, audit_record(a, r, NULL, 0, pk), SPOOL_OTHER, NULL, NULL))
            return;
        /* no room anywhere: at least count it */
    }
    STAT_INC(a->ctx->stats, refusals_summarised);
    const char *ep = r->match.route->name, *code = r->error_code ? r->error_code : "-";
    for (unsigned i = 0; i < a->nagg; i++) {
        if (strcmp(a->agg[i].endpoint, ep) == 0 && strcmp(a->agg[i].code, code) == 0) {
            a->agg[i].n++;
            return;
        }
    }
    if (a->nagg == MAX_AGG)
        flush_refusal_summary(a);
    if (a->nagg == 0)
        a->agg_start_wall = util_wall_ms();
    struct refusal_count *c = &a->agg[a->nagg++];
    util_copy_text(c->endpoint, sizeof(c->endpoint), ep);
    util_copy_text(c->code, sizeof(c->code), code);
    c->n = 1;
}

static void audit_done(struct gw_request *r)
{
    struct audit_thread *a = r->ctx->audit;
    struct audit_rec *rec = r->hook_data[REQUEST_PHASE_AUDIT];
    if (a && r->match.route && audited(r->match.route)) {
        if (rec)
            rec_detach(rec); /* notes whether a record went to the spool */
        if (rec && rec->maybe_written) {
            write_outcome(a, r, rec, rec->appended);
        } else if (r->error_code && (!rec || rec->state != REC_FAILED)) {
            /* refused before a record was written: record the refusal with its reason */
            record_refusal(a, r, rec);
        }
    }
    struct learn_wait *lw = r->hook_data[REQUEST_PHASE_RESPONSE];
    if (lw) {
        learn_detach(lw);
        event_free(lw->timer);
        free(lw->maps);
        free(lw);
        r->hook_data[REQUEST_PHASE_RESPONSE] = NULL;
    }
    if (rec) {
        rec_detach(rec);
        if (rec->timer)
            event_free(rec->timer);
        free(rec->items);
        free(rec);
        r->hook_data[REQUEST_PHASE_AUDIT] = NULL;
    }
}

int audit_init(void)
{
    if (request_hook_add(REQUEST_PHASE_AUDIT, "audit", audit_phase) != 0 ||
        request_hook_add(REQUEST_PHASE_RESPONSE, "audit-response", response_phase) != 0 ||
        request_done_hook_add("audit", audit_done) != 0)
        return -1;
    return 0;
}
