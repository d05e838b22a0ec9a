/*
 * replay: the spool's records into PostgreSQL (see replay.h).
 */
#include "replay.h"

#include <errno.h>
#include <inttypes.h>
#include <libpq-fe.h>
#include <poll.h>
#include <pthread.h>
#include <sys/socket.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "config.h"
#include "ledger.h"
#include "log.h"
#include "migrate.h"
#include "pgw.h"
#include "spool.h"
#include "util.h"

#define MAX_SEGMENTS 4096 /* per pass */

struct replay {
    struct spool *s;
    struct replay_options opt;
    char *conninfo;
    pthread_t thread;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    bool stop;
    atomic_bool active;
    PGconn *conn;
    uint32_t backoff_ms;
    bool logged_down;
    bool migrated;
    struct config *cfg; /* own reference, under mu: replay_set_config swaps it */
};

/* Sleep MS milliseconds unless asked to stop. True when stopping. */
static bool nap(struct replay *r, uint32_t ms)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    ts.tv_sec += ms / 1000;
    ts.tv_nsec += (long)(ms % 1000) * 1000000L;
    if (ts.tv_nsec >= 1000000000L) {
        ts.tv_sec++;
        ts.tv_nsec -= 1000000000L;
    }
    pthread_mutex_lock(&r->mu);
    if (!r->stop)
        pthread_cond_timedwait(&r->cv, &r->mu, &ts);
    bool stop = r->stop;
    pthread_mutex_unlock(&r->mu);
    return stop;
}

static bool stopping(struct replay *r)
{
    pthread_mutex_lock(&r->mu);
    bool stop = r->stop;
    pthread_mutex_unlock(&r->mu);
    return stop;
}

static void one_line(char *s)
{
    for (char *c = s; *c; c++)
        if (*c == '\n' || *c == '"' || *c == '\\')
            *c = ' ';
}

/* Drop the connection; log the outage once (WHY NULL: not an outage). */
static void disconnect(struct replay *r, const char *why)
{
    pthread_mutex_lock(&r->mu);
    PGconn *c = r->conn;
    r->conn = NULL;
    pthread_mutex_unlock(&r->mu);
    if (c)
        PQfinish(c);
    if (why && !r->logged_down) {
        char w[300];
        snprintf(w, sizeof(w), "%s", why ? why : "");
        one_line(w);
        log_warn("spool replay waits for the audit database", "\"reason\":\"%s\"", w);
        r->logged_down = true;
    }
}

/* Connect without blocking past a stop request: PQconnectStart, then PQconnectPoll with
 * short polls (libpq's own host name lookup may block this thread; never a worker's). */
static PGconn *connect_polling(struct replay *r)
{
    PGconn *c = PQconnectStart(r->conninfo);
    if (!c || PQstatus(c) == CONNECTION_BAD)
        return c;
    pgw_log_notices(c, "spool replay");
    PostgresPollingStatusType st = PGRES_POLLING_WRITING;
    uint64_t deadline = util_now_ms() + 10000;
    while (st != PGRES_POLLING_OK && st != PGRES_POLLING_FAILED) {
        if (stopping(r) || util_now_ms() > deadline) {
            PQfinish(c);
            return NULL;
        }
        struct pollfd pfd = {PQsocket(c), st == PGRES_POLLING_READING ? POLLIN : POLLOUT, 0};
        int n = poll(&pfd, 1, 200);
        if (n < 0 && errno != EINTR)
            break;
        if (n > 0)
            st = PQconnectPoll(c);
    }
    return c;
}

static bool connect_db(struct replay *r)
{
    if (r->conn && PQstatus(r->conn) == CONNECTION_OK)
        return true;
    if (r->conn)
        disconnect(r, NULL);
    PGconn *c = connect_polling(r);
    if (!c || PQstatus(c) != CONNECTION_OK) {
        char why[300];
        snprintf(why, sizeof(why), "%s", c ? PQerrorMessage(c) : "connection timed out");
        if (c)
            PQfinish(c);
        disconnect(r, why);
        return false;
    }
    pthread_mutex_lock(&r->mu);
    r->conn = c;
    pthread_mutex_unlock(&r->mu);
    if (r->opt.migrate_first && !r->migrated) {
        char err[512];
        if (migrate_apply(r->opt.conninfo, NULL, err, sizeof(err)) < 0) {
            disconnect(r, err);
            return false;
        }
        r->migrated = true;
        log_info("audit database migrated by the spool replay (start-up could not)", "");
    }
    r->logged_down = false;
    r->backoff_ms = 200;
    return true;
}

static bool exec_ok(struct replay *r, const char *sql, char *err, size_t errlen)
{
    PGresult *res = PQexec(r->conn, sql);
    bool ok = res && PQresultStatus(res) == PGRES_COMMAND_OK;
    if (!ok)
        snprintf(err, errlen, "%s", r->conn ? PQerrorMessage(r->conn) : "no connection");
    PQclear(res);
    return ok;
}

/* Insert RECS[0..N) (all of one kind) with one execution of the kind's batched statement. */
static bool insert_rows(struct replay *r, enum ledger_kind kind, struct ledger_rec **recs, size_t n,
                        char *err, size_t errlen)
{
    const struct pgw_statement *st = &ledger_statements()[kind];
    unsigned nf = ledger_nfields(kind);
    const char **col = malloc(sizeof(char *) * n);
    char *arrays[LEDGER_MAX_FIELDS] = {0};
    bool ok = col != NULL;
    for (unsigned c = 0; ok && c < nf; c++) {
        for (size_t i = 0; i < n; i++)
            col[i] = ledger_get(recs[i], c);
        ok = (arrays[c] = pgw_array_literal(col, n)) != NULL;
    }
    if (!ok) {
        snprintf(err, errlen, "out of memory");
    } else {
        PGresult *res = PQexecParams(r->conn, st->sql, (int)nf, NULL, (const char *const *)arrays,
                                     NULL, NULL, 0);
        ok = res && PQresultStatus(res) == PGRES_COMMAND_OK;
        if (!ok)
            snprintf(err, errlen, "%s", PQerrorMessage(r->conn));
        PQclear(res);
    }
    for (unsigned c = 0; c < nf; c++)
        free(arrays[c]);
    free(col);
    return ok;
}

/* ---- reading a segment ---- */

struct records {
    struct ledger_rec **v;
    size_t n, cap;
};

static void collect(void *arg, uint64_t offset, struct ledger_rec *rec)
{
    struct records *rs = arg;
    if (rs->n == rs->cap) {
        size_t ncap = rs->cap ? rs->cap * 2 : 256;
        struct ledger_rec **nv = realloc(rs->v, sizeof(*nv) * ncap);
        if (!nv) {
            free(rec);
            return;
        }
        rs->v = nv;
        rs->cap = ncap;
    }
    rs->v[rs->n++] = rec;
}

static void cut_after_start(void *arg, uint64_t offset, uint64_t len, const char *why, bool tail)
{
    /* segments were repaired at start-up, and written since by this process: a bad frame now
     * means the disk changed under us */
    log_error("spool: a damaged frame in a segment being replayed is skipped",
              "\"offset\":%" PRIu64 ",\"bytes\":%" PRIu64 ",\"reason\":\"%s\"", offset, len, why);
}

static void records_free(struct records *rs)
{
    for (size_t i = 0; i < rs->n; i++)
        free(rs->v[i]);
    free(rs->v);
    memset(rs, 0, sizeof(*rs));
}

static int read_segment(const struct spool_segment *seg, struct records *rs)
{
    FILE *f = fopen(seg->path, "rb");
    if (!f)
        return errno == ENOENT ? 1 : -1;
    fseek(f, 0, SEEK_END);
    long size = ftell(f);
    fseek(f, 0, SEEK_SET);
    unsigned char *buf = malloc(size > 0 ? (size_t)size : 1);
    int rc = -1;
    if (buf && fread(buf, 1, (size_t)size, f) == (size_t)size) {
        struct spool_scan_cb cb = {collect, cut_after_start, rs};
        uint64_t end;
        rc = spool_scan(buf, (size_t)size, &cb, &end) == 0 ? 0 : -1;
    }
    free(buf);
    fclose(f);
    return rc;
}

/* ---- valuing records whose process was unknown ---- */

static bool lookup(struct replay *r, bool runs, struct records *rs,
                   const struct ledger_settings *st, char *err, size_t errlen)
{
    enum ledger_kind kind = runs ? LEDGER_RUN : LEDGER_TASK;
    const char **ids = malloc(sizeof(char *) * (rs->n ? rs->n : 1));
    size_t n = 0;
    for (size_t i = 0; ids && i < rs->n; i++) {
        const struct ledger_rec *x = rs->v[i];
        const char *d = ledger_get(x, LF_DECISION);
        if (x->kind == kind && d && strcmp(d, "accepted") == 0 && !ledger_get(x, LF_PROCESS_KEY) &&
            ledger_get(x, LF_ID))
            ids[n++] = ledger_get(x, LF_ID);
    }
    if (n == 0) {
        free(ids);
        return true;
    }
    char *arr = pgw_array_literal(ids, n);
    free(ids);
    if (!arr) {
        snprintf(err, errlen, "out of memory");
        return false;
    }
    const char *sql = runs ? "select run_id::text, process_key from run_process where run_id = "
                             "any($1::bigint[])"
                           : "select task_id::text, process_key from task_process where "
                             "task_id = any($1::bigint[])";
    const char *params[1] = {arr};
    PGresult *res = PQexecParams(r->conn, sql, 1, NULL, params, NULL, NULL, 0);
    free(arr);
    if (!res || PQresultStatus(res) != PGRES_TUPLES_OK) {
        snprintf(err, errlen, "%s", PQerrorMessage(r->conn));
        PQclear(res);
        return false;
    }
    int rows = PQntuples(res);
    pthread_mutex_lock(&r->mu);
    struct config *cfg = config_ref(r->cfg); /* a reload may swap r->cfg meanwhile */
    pthread_mutex_unlock(&r->mu);
    for (size_t i = 0; i < rs->n; i++) {
        struct ledger_rec *x = rs->v[i];
        const char *d = ledger_get(x, LF_DECISION);
        if (x->kind != kind || !d || strcmp(d, "accepted") != 0 || ledger_get(x, LF_PROCESS_KEY) ||
            !ledger_get(x, LF_ID))
            continue;
        for (int k = 0; k < rows; k++) {
            if (strcmp(PQgetvalue(res, k, 0), ledger_get(x, LF_ID)) != 0)
                continue;
            const char *pk = PQgetvalue(res, k, 1);
            struct kpi_settings ks;
            bool from_table;
            bool have = ledger_settings_find(st, cfg, pk, &ks, &from_table);
            struct ledger_rec *y = ledger_revalue(x, pk, have ? &ks : NULL, from_table);
            if (y) {
                free(x);
                rs->v[i] = y;
            }
            break;
        }
    }
    config_unref(cfg);
    PQclear(res);
    return true;
}

/* ---- one segment ---- */

/* Insert every record of RS in ONE transaction; KINDS selects which (bit per kind).
 * Returns 0, or -1 (connection trouble: try later) with ERR. */
static int insert_all(struct replay *r, struct records *rs, unsigned kinds, char *err,
                      size_t errlen)
{
    if (!exec_ok(r, "begin", err, errlen))
        return -1;
    uint32_t batch = r->opt.batch_rows ? r->opt.batch_rows : 500;
    struct ledger_rec **group = malloc(sizeof(*group) * batch);
    bool ok = group != NULL, refused = false;
    for (int k = 0; ok && k < LEDGER_KINDS; k++) {
        if (!(kinds & (1u << k)))
            continue;
        size_t g = 0;
        for (size_t i = 0; ok && i <= rs->n; i++) {
            if (i < rs->n && rs->v[i]->kind == k)
                group[g++] = rs->v[i];
            if (g > 0 && (g == batch || i == rs->n)) {
                ok = insert_rows(r, (enum ledger_kind)k, group, g, err, errlen);
                g = 0;
            }
        }
    }
    if (ok) {
        free(group);
        return exec_ok(r, "commit", err, errlen) ? 0 : -1;
    }
    /* a refused batch: find the bad rows one by one, with a savepoint each */
    exec_ok(r, "rollback", err, errlen);
    if (PQstatus(r->conn) != CONNECTION_OK) {
        free(group);
        return -1;
    }
    char e2[256];
    if (!exec_ok(r, "begin", e2, sizeof(e2))) {
        free(group);
        return -1;
    }
    for (size_t i = 0; i < rs->n; i++) {
        if (!(kinds & (1u << rs->v[i]->kind)))
            continue;
        if (!exec_ok(r, "savepoint one", e2, sizeof(e2)))
            break;
        char why[512];
        if (insert_rows(r, (enum ledger_kind)rs->v[i]->kind, &rs->v[i], 1, why, sizeof(why))) {
            exec_ok(r, "release savepoint one", e2, sizeof(e2));
            continue;
        }
        if (PQstatus(r->conn) != CONNECTION_OK)
            break;
        exec_ok(r, "rollback to savepoint one", e2, sizeof(e2));
        one_line(why);
        char id[200];
        const char *rid = ledger_get(rs->v[i], 0);
        log_error("spool replay: the database refused a record; it is kept in refused.seg",
                  "\"table\":\"%s\",\"request_id\":\"%s\",\"error\":\"%s\"",
                  ledger_table((enum ledger_kind)rs->v[i]->kind),
                  log_json_escape(rid ? rid : "", id, sizeof(id)), why);
        spool_keep_refused(r->s, rs->v[i]);
        refused = true;
    }
    free(group);
    (void)refused;
    if (PQstatus(r->conn) != CONNECTION_OK) {
        snprintf(err, errlen, "connection lost");
        return -1;
    }
    return exec_ok(r, "commit", err, errlen) ? 0 : -1;
}

/* Mark the audit records of RS as having come through the spool. */
static void mark_spooled(struct records *rs)
{
    for (size_t i = 0; i < rs->n; i++) {
        struct ledger_rec *x = rs->v[i];
        if (x->kind != LEDGER_RUN && x->kind != LEDGER_TASK)
            continue;
        struct ledger_rec *y = ledger_with(x, LF_SPOOLED, "true");
        if (y) {
            free(x);
            rs->v[i] = y;
        }
    }
}

static void rate_limit(struct replay *r, uint64_t rows, uint64_t started_ms)
{
    if (r->opt.rows_per_second == 0 || rows == 0)
        return;
    uint64_t want_ms = rows * 1000 / r->opt.rows_per_second;
    uint64_t took = util_now_ms() - started_ms;
    if (want_ms > took)
        nap(r, (uint32_t)(want_ms - took));
}

/* One pass over the closed segments. Returns 0 when they were all replayed, -1 on trouble. */
static int pass(struct replay *r)
{
    static struct spool_segment segs[MAX_SEGMENTS];
    size_t nseg = spool_closed_segments(r->s, segs, MAX_SEGMENTS);
    if (nseg == 0)
        return 0;
    if (!connect_db(r))
        return -1;
    atomic_store(&r->active, true);
    char err[512] = "";
    /* the settings of this moment, for records valued now */
    struct ledger_settings *st = NULL;
    PGresult *res = PQexec(r->conn, ledger_statements()[LST_SETTINGS].sql);
    if (res && PQresultStatus(res) == PGRES_TUPLES_OK)
        st = ledger_settings_from(res);
    PQclear(res);
    uint64_t total = 0;
    int rc = 0;
    log_info("spool replay: starting", "\"segments\":%zu", nseg);
    /* sweep 1: the maps of every segment */
    const unsigned maps = (1u << LEDGER_RUN_MAP) | (1u << LEDGER_TASK_MAP);
    for (size_t i = 0; i < nseg && rc == 0 && !stopping(r); i++) {
        struct records rs = {0};
        int rd = read_segment(&segs[i], &rs);
        if (rd == 0) {
            uint64_t t0 = util_now_ms();
            rc = insert_all(r, &rs, maps, err, sizeof(err));
            rate_limit(r, rs.n, t0);
        }
        records_free(&rs);
    }
    /* sweep 2: everything else, segment by segment, each deleted once committed */
    const unsigned rest = ~maps;
    for (size_t i = 0; i < nseg && rc == 0 && !stopping(r); i++) {
        struct records rs = {0};
        int rd = read_segment(&segs[i], &rs);
        if (rd < 0) {
            log_error("spool replay: cannot read a segment", "\"seq\":%" PRIu64, segs[i].seq);
            records_free(&rs);
            continue;
        }
        uint64_t t0 = util_now_ms();
        if (rd == 0) {
            if (!lookup(r, true, &rs, st, err, sizeof(err)) ||
                !lookup(r, false, &rs, st, err, sizeof(err))) {
                rc = -1;
            } else {
                mark_spooled(&rs);
                rc = insert_all(r, &rs, rest, err, sizeof(err));
            }
        }
        if (rc == 0) {
            spool_segment_done(r->s, &segs[i], rs.n);
            total += rs.n;
            rate_limit(r, rs.n, t0);
        }
        records_free(&rs);
    }
    ledger_settings_free(st);
    atomic_store(&r->active, false);
    if (rc != 0) {
        disconnect(r, err);
        return -1;
    }
    log_info("spool replay: done", "\"records\":%" PRIu64, total);
    return 0;
}

static void *replay_main(void *arg)
{
    struct replay *r = arg;
    log_thread_start(-1);
    while (!stopping(r)) {
        if (pass(r) != 0) {
            if (nap(r, r->backoff_ms))
                break;
            r->backoff_ms = r->backoff_ms * 2 > r->opt.reconnect_max_ms ? r->opt.reconnect_max_ms
                                                                        : r->backoff_ms * 2;
            continue;
        }
        spool_wait_closed(r->s, 1000);
    }
    disconnect(r, NULL);
    log_thread_stop();
    return NULL;
}

struct replay *replay_start(struct spool *s, const struct replay_options *o, char *err,
                            size_t errlen)
{
    struct replay *r = calloc(1, sizeof(*r));
    if (!r) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    r->s = s;
    r->opt = *o;
    r->cfg = config_ref(o->cfg);
    r->opt.cfg = NULL; /* r->cfg, under mu */
    r->backoff_ms = 200;
    size_t len = strlen(o->conninfo) + 64;
    r->conninfo = malloc(len);
    pthread_mutex_init(&r->mu, NULL);
    pthread_cond_init(&r->cv, NULL);
    if (!r->conninfo) {
        snprintf(err, errlen, "out of memory");
        replay_stop(r);
        return NULL;
    }
    snprintf(r->conninfo, len, "%s", o->conninfo);
    if (pthread_create(&r->thread, NULL, replay_main, r) != 0) {
        snprintf(err, errlen, "cannot start the spool replay thread");
        free(r->conninfo);
        r->conninfo = NULL;
        replay_stop(r);
        return NULL;
    }
    return r;
}

void replay_stop(struct replay *r)
{
    if (!r)
        return;
    if (r->conninfo) {
        pthread_mutex_lock(&r->mu);
        r->stop = true;
        pthread_cond_broadcast(&r->cv);
        /* a statement waiting on a frozen database returns at once with an error */
        if (r->conn && PQsocket(r->conn) >= 0)
            shutdown(PQsocket(r->conn), SHUT_RDWR);
        pthread_mutex_unlock(&r->mu);
        pthread_join(r->thread, NULL);
    }
    pthread_mutex_destroy(&r->mu);
    pthread_cond_destroy(&r->cv);
    config_unref(r->cfg);
    free(r->conninfo);
    free(r);
}

void replay_set_config(struct replay *r, struct config *cfg)
{
    if (!r)
        return;
    struct config *ref = config_ref(cfg);
    pthread_mutex_lock(&r->mu);
    struct config *old = r->cfg;
    r->cfg = ref;
    pthread_mutex_unlock(&r->mu);
    config_unref(old);
}

bool replay_active(const struct replay *r)
{
    return r && atomic_load(&r->active);
}
