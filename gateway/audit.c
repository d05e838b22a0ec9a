/*
 * audit: the KPI ledger's hooks and per-thread state (see audit.h).
 *
 * Ordering. An accepted FinishRun or task action is forwarded only after the INSERT of its
 * record is part of a committed batch (pgw.c). If the commit does not come within
 * commit_timeout, the bot gets 503 + Retry-After and the request is not forwarded; a statement
 * still queued is dropped (no record), one already sent may still commit, so its outcome row
 * then says why the request went no further ("audit.commit_timeout"). Outcome rows and
 * rejected records do not hold the reply back: they are queued after it, and kept in the queue
 * while the database is away.
 *
 * Process resolution never guesses: cache, then database, else the record says
 * "unknown_process". KPI settings: a process_kpi_settings row wins; without one, a
 * [process "KEY"] section of the config file; without either, "no_settings".
 *
 * Ownership: struct audit_rec hangs off the request (r->hook_data[REQUEST_PHASE_AUDIT]) and is
 * freed with it by the done hook; a pgw item holds the request only while r->cancel is set,
 * and the cancel path detaches it first.
 */
#include "audit.h"

#include <arpa/inet.h>
#include <event2/event.h>
#include <inttypes.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "config.h"
#include "kpi.h"
#include "log.h"
#include "pgw.h"
#include "ctx.h"
#include "pool.h"
#include "request.h"
#include "stats.h"

/* ---- prepared statements ---- */

enum {
    ST_FINISHRUN,
    ST_TASK,
    ST_OUTCOME,
    ST_LEARN_RUN,
    ST_LEARN_TASK,
    ST_LOOKUP_RUN,
    ST_LOOKUP_TASK,
    ST_SETTINGS,
    ST_PARTITIONS,
    ST_SETTINGS_BARRIER,
};

static const struct pgw_statement statements[] = {
    [ST_FINISHRUN] = {"gw_finishrun",
                      "insert into finishrun_audit (request_id, received_at, gateway_instance, "
                      "client_id, customer_key, bot_subject, source_addr, run_id, process_key, "
                      "overrides, overwrite_seconds_saved, overwrite_entries, kpi_rule, "
                      "kpi_entries, kpi_seconds_saved, kpi_settings, decision, reason_code, "
                      "reason_message) values ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, "
                      "$12, $13, $14, $15, $16, $17, $18, $19) on conflict do nothing",
                      19},
    [ST_TASK] = {"gw_task",
                 "insert into task_action_audit (request_id, received_at, gateway_instance, "
                 "client_id, customer_key, bot_subject, source_addr, task_id, process_key, "
                 "overrides, overwrite_seconds_saved, overwrite_entries, kpi_rule, kpi_entries, "
                 "kpi_seconds_saved, kpi_settings, decision, reason_code, reason_message, "
                 "endpoint, action) values ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, "
                 "$13, $14, $15, $16, $17, $18, $19, $20, $21) on conflict do nothing",
                 21},
    [ST_OUTCOME] = {"gw_outcome",
                    "insert into audit_outcome (request_id, received_at, endpoint, "
                    "gateway_instance, upstream_status, succeeded, message, failure, "
                    "status_sent, audit_seconds, upstream_seconds, total_seconds) values ($1, "
                    "$2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12) on conflict do nothing",
                    12},
    [ST_LEARN_RUN] = {"gw_learn_run",
                      "insert into run_process (run_id, process_key, source, request_id) "
                      "values ($1, $2, $3, $4) on conflict do nothing",
                      4},
    [ST_LEARN_TASK] = {"gw_learn_task",
                       "insert into task_process (task_id, process_key, run_id, source, "
                       "request_id) values ($1, $2, $3, $4, $5) on conflict (task_id) do "
                       "update set run_id = coalesce(excluded.run_id, task_process.run_id) "
                       "where excluded.run_id is not null and excluded.run_id is distinct "
                       "from task_process.run_id",
                       5},
    [ST_LOOKUP_RUN] = {"gw_lookup_run", "select process_key from run_process where run_id = $1", 1},
    [ST_LOOKUP_TASK] = {"gw_lookup_task", "select process_key from task_process where task_id = $1",
                        1},
    [ST_SETTINGS] = {"gw_settings",
                     "select process_key, tasks_enabled, seconds_per_run, seconds_per_task, "
                     "advanced_mode, default_entries, seconds_per_entry from "
                     "process_kpi_settings",
                     0},
    [ST_PARTITIONS] = {"gw_partitions", "select count(*) from gateway_ensure_partitions($1)", 1},
    [ST_SETTINGS_BARRIER] = {"gw_barrier", "select 1", 0},
};
#define NSTATEMENTS (sizeof(statements) / sizeof(statements[0]))

/* ---- id -> processKey cache: fixed capacity, oldest entry evicted (a ring) ---- */

struct idmap_node {
    int64_t id;
    char *pk; /* owned */
    int32_t next;
};

struct idmap {
    uint32_t cap, nbuckets, ring, count;
    int32_t *buckets;
    struct idmap_node *nodes;
};

static int idmap_init(struct idmap *m, uint32_t cap)
{
    memset(m, 0, sizeof(*m));
    if (cap == 0)
        return 0;
    m->cap = cap;
    m->nbuckets = 1;
    while (m->nbuckets < cap)
        m->nbuckets <<= 1;
    m->buckets = malloc(sizeof(int32_t) * m->nbuckets);
    m->nodes = calloc(cap, sizeof(*m->nodes));
    if (!m->buckets || !m->nodes)
        return -1;
    for (uint32_t i = 0; i < m->nbuckets; i++)
        m->buckets[i] = -1;
    return 0;
}

static void idmap_clear(struct idmap *m)
{
    for (uint32_t i = 0; i < m->count && i < m->cap; i++)
        free(m->nodes[i].pk);
    free(m->nodes);
    free(m->buckets);
    memset(m, 0, sizeof(*m));
}

static uint32_t idmap_hash(const struct idmap *m, int64_t id)
{
    uint64_t x = (uint64_t)id * 0x9e3779b97f4a7c15ull;
    return (uint32_t)(x >> 32) & (m->nbuckets - 1);
}

static const char *idmap_get(const struct idmap *m, int64_t id)
{
    if (m->cap == 0)
        return NULL;
    for (int32_t i = m->buckets[idmap_hash(m, id)]; i >= 0; i = m->nodes[i].next)
        if (m->nodes[i].id == id)
            return m->nodes[i].pk;
    return NULL;
}

static void idmap_put(struct idmap *m, int64_t id, const char *pk)
{
    if (m->cap == 0 || idmap_get(m, id))
        return;
    char *copy = strdup(pk);
    if (!copy)
        return;
    uint32_t slot = m->ring;
    struct idmap_node *n = &m->nodes[slot];
    if (m->count == m->cap) { /* evict the oldest: unlink it from its bucket */
        int32_t *pp = &m->buckets[idmap_hash(m, n->id)];
        while (*pp >= 0 && *pp != (int32_t)slot)
            pp = &m->nodes[*pp].next;
        if (*pp == (int32_t)slot)
            *pp = n->next;
        free(n->pk);
    } else {
        m->count++;
    }
    n->id = id;
    n->pk = copy;
    uint32_t b = idmap_hash(m, id);
    n->next = m->buckets[b];
    m->buckets[b] = (int32_t)slot;
    m->ring = (slot + 1) % m->cap;
}

/* ---- per-thread state ---- */

struct settings_entry {
    char *key;
    struct kpi_settings s;
};

struct audit_thread {
    struct gw_ctx *ctx;
    char name[32];
    struct pgw *db;
    struct idmap runs, tasks;
    struct settings_entry *settings; /* sorted by key, from the settings table */
    size_t nsettings;
    bool settings_loaded;
    struct event *refresh;    /* settings reload, partitions (worker 0) */
    uint64_t learn_submitted; /* mapping statements queued so far */
    uint64_t last_partitions_ms;
};

static int settings_cmp(const void *a, const void *b)
{
    return strcmp(((const struct settings_entry *)a)->key, ((const struct settings_entry *)b)->key);
}

static void settings_free(struct settings_entry *s, size_t n)
{
    for (size_t i = 0; i < n; i++)
        free(s[i].key);
    free(s);
}

static void settings_loaded_cb(void *arg, bool ok, const PGresult *res, const char *error)
{
    struct audit_thread *a = arg;
    if (!ok || !res) {
        log_warn("cannot load process_kpi_settings", "\"error\":\"%s\"", error ? error : "");
        return;
    }
    int n = PQntuples(res);
    struct settings_entry *s = calloc((size_t)(n > 0 ? n : 1), sizeof(*s));
    if (!s)
        return;
    for (int i = 0; i < n; i++) {
        s[i].key = strdup(PQgetvalue(res, i, 0));
        s[i].s.tasks_enabled = PQgetvalue(res, i, 1)[0] == 't';
        s[i].s.seconds_per_run = (int32_t)strtol(PQgetvalue(res, i, 2), NULL, 10);
        s[i].s.seconds_per_task = (int32_t)strtol(PQgetvalue(res, i, 3), NULL, 10);
        s[i].s.advanced_mode = PQgetvalue(res, i, 4)[0] == 't';
        s[i].s.default_entries = (int32_t)strtol(PQgetvalue(res, i, 5), NULL, 10);
        s[i].s.seconds_per_entry = (int32_t)strtol(PQgetvalue(res, i, 6), NULL, 10);
        if (!s[i].key) {
            settings_free(s, (size_t)i);
            return;
        }
    }
    qsort(s, (size_t)n, sizeof(*s), settings_cmp);
    settings_free(a->settings, a->nsettings);
    a->settings = s;
    a->nsettings = (size_t)n;
    a->settings_loaded = true;
}

static void settings_reload(struct audit_thread *a)
{
    pgw_submit(a->db, ST_SETTINGS, NULL, settings_loaded_cb, a);
}

static void partitions_done_cb(void *arg, bool ok, const PGresult *res, const char *error)
{
    if (!ok)
        log_warn("gateway_ensure_partitions failed", "\"error\":\"%s\"", error ? error : "");
}

static void ensure_partitions(struct audit_thread *a)
{
    char days[16];
    snprintf(days, sizeof(days), "%u", a->ctx->cfg->audit.partitions_ahead);
    const char *v[1] = {days};
    a->last_partitions_ms = util_now_ms();
    pgw_submit(a->db, ST_PARTITIONS, v, partitions_done_cb, a);
}

static void on_connected(void *arg)
{
    struct audit_thread *a = arg;
    settings_reload(a);
    if (a->ctx->index == 0)
        ensure_partitions(a);
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

/* Effective settings of process PK: the table's row, else the config file's section. */
static bool settings_for(struct audit_thread *a, const char *pk, struct kpi_settings *out)
{
    struct settings_entry key = {.key = (char *)pk};
    struct settings_entry *e =
        a->nsettings ? bsearch(&key, a->settings, a->nsettings, sizeof(key), settings_cmp) : NULL;
    if (e) {
        *out = e->s;
        return true;
    }
    const struct config_process *cp = config_process_find(a->ctx->cfg, pk);
    if (!cp || !(cp->has_tasks_enabled || cp->has_seconds_per_run || cp->has_seconds_per_task ||
                 cp->has_advanced_mode || cp->has_default_entries || cp->has_seconds_per_entry))
        return false;
    memset(out, 0, sizeof(*out));
    out->tasks_enabled = cp->has_tasks_enabled && cp->tasks_enabled;
    out->seconds_per_run = cp->has_seconds_per_run ? cp->seconds_per_run : 0;
    out->seconds_per_task = cp->has_seconds_per_task ? cp->seconds_per_task : 0;
    out->advanced_mode = cp->has_advanced_mode && cp->advanced_mode;
    out->default_entries = cp->has_default_entries ? cp->default_entries : 0;
    out->seconds_per_entry = cp->has_seconds_per_entry ? cp->seconds_per_entry : 0;
    return true;
}

int audit_thread_new(struct gw_ctx *ctx, struct audit_thread **out, char *errbuf, size_t errlen)
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
    snprintf(a->name, sizeof(a->name), "thread %d", ctx->index);
    struct pgw_options o = {
        .conninfo = cfg->audit.database,
        .name = a->name,
        .statements = statements,
        .nstatements = NSTATEMENTS,
        .batch_size = cfg->audit.batch_size,
        .batch_delay_ms = cfg->audit.batch_delay_ms,
        .queue_size = cfg->audit.queue_size,
        .reconnect_max_ms = cfg->audit.reconnect_max_ms,
        .listen_channel = "gateway_kpi_settings",
        .on_connected = on_connected,
        .on_notify = on_notify,
        .arg = a,
    };
    a->db = pgw_new(ctx->base, ctx->dns, &o, errbuf, errlen);
    if (!a->db) {
        audit_thread_free(a);
        return -1;
    }
    a->refresh = event_new(ctx->base, -1, EV_PERSIST, refresh_cb, a);
    if (a->refresh) {
        uint32_t ms = cfg->audit.settings_refresh_ms;
        struct timeval tv = {.tv_sec = ms / 1000, .tv_usec = (ms % 1000) * 1000};
        event_add(a->refresh, &tv);
    }
    *out = a;
    return 0;
}

void audit_thread_free(struct audit_thread *a)
{
    if (!a)
        return;
    if (a->refresh)
        event_free(a->refresh);
    pgw_free(a->db);
    idmap_clear(&a->runs);
    idmap_clear(&a->tasks);
    settings_free(a->settings, a->nsettings);
    free(a);
}

bool audit_thread_ready(const struct audit_thread *a)
{
    return !a || pgw_connected(a->db);
}

bool audit_thread_flushed(const struct audit_thread *a)
{
    return !a || !pgw_connected(a->db) || pgw_pending(a->db) == 0;
}

/* ---- per-request record ---- */

enum rec_state { REC_NEW, REC_LOOKUP, REC_WRITING, REC_COMMITTED, REC_TIMED_OUT };

struct audit_rec {
    struct gw_request *r;
    struct audit_thread *a;
    enum rec_state state;
    struct pgw_item *item; /* in flight: lookup or insert */
    struct event *timer;   /* commit_timeout */
    bool sent;             /* the insert may be in the database (sent, or committed) */
    uint64_t t_committed_ms;
    char process_key[256];
    bool have_process;
    /* outcome, read in the RESPONSE phase */
    bool have_answer;
    int succeeded; /* -1 unknown, 0, 1 */
    char message[512];
};

static bool audited(const struct route *rt)
{
    return rt && (rt->audit == ROUTE_AUDIT_FINISHRUN || rt->audit == ROUTE_AUDIT_TASK_ACTION);
}

static void fmt_time(uint64_t wall_ms, char *buf, size_t len)
{
    time_t s = (time_t)(wall_ms / 1000);
    struct tm tm;
    gmtime_r(&s, &tm);
    snprintf(buf, len, "%04d-%02d-%02d %02d:%02d:%02d.%03u+00", (tm.tm_year + 1900) % 10000,
             tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec,
             (unsigned)(wall_ms % 1000));
}

/* Base64url-decode the JWT payload segment of the bearer token and read who the bot is. The
 * token itself is never kept. */
static void bot_identity(struct gw_request *r, char *ckey, size_t cklen, char *subject, size_t slen)
{
    ckey[0] = subject[0] = '\0';
    const char *auth = request_header(r, "Authorization");
    if (!auth || strncasecmp(auth, "Bearer ", 7) != 0)
        return;
    const char *tok = auth + 7;
    while (*tok == ' ')
        tok++;
    const char *dot1 = strchr(tok, '.');
    const char *dot2 = dot1 ? strchr(dot1 + 1, '.') : NULL;
    if (!dot1 || !dot2 || dot2 - dot1 - 1 > 8192)
        return;
    size_t n = (size_t)(dot2 - dot1 - 1);
    unsigned char buf[6200];
    size_t o = 0;
    uint32_t acc = 0;
    int bits = 0;
    for (size_t i = 0; i < n; i++) {
        char c = dot1[1 + i];
        int v = c >= 'A' && c <= 'Z'   ? c - 'A'
                : c >= 'a' && c <= 'z' ? c - 'a' + 26
                : c >= '0' && c <= '9' ? c - '0' + 52
                : c == '-' || c == '+' ? 62
                : c == '_' || c == '/' ? 63
                                       : -1;
        if (v < 0)
            break;
        acc = (acc << 6) | (uint32_t)v;
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            if (o < sizeof(buf))
                buf[o++] = (unsigned char)(acc >> bits);
        }
    }
    json_t *claims = json_loadb((const char *)buf, o, 0, NULL);
    if (!json_is_object(claims)) {
        json_decref(claims);
        return;
    }
    const char *ck = json_string_value(json_object_get(claims, "auth.anymate.app/CustomerKey"));
    const char *sub = json_string_value(json_object_get(claims, "auth.anymate.app/UserName"));
    if (!sub)
        sub = json_string_value(json_object_get(claims, "sub"));
    if (ck)
        snprintf(ckey, cklen, "%s", ck);
    if (sub)
        snprintf(subject, slen, "%s", sub);
    json_decref(claims);
}

/* The overrides exactly as sent: only the keys present, null kept. */
static void overrides_json(const struct gw_request *r, char *buf, size_t len)
{
    const struct payload_result *p = &r->payload;
    size_t o = (size_t)snprintf(buf, len, "{");
    if (r->payload_valid && p->seconds_state != PAYLOAD_ABSENT) {
        if (p->seconds_state == PAYLOAD_NULL)
            o += (size_t)snprintf(buf + o, len - o, "\"overwriteSecondsSaved\": null");
        else
            o += (size_t)snprintf(buf + o, len - o, "\"overwriteSecondsSaved\": %" PRId32,
                                  p->seconds);
    }
    if (r->payload_valid && p->entries_state != PAYLOAD_ABSENT) {
        const char *sep = o > 1 ? ", " : "";
        if (p->entries_state == PAYLOAD_NULL)
            o += (size_t)snprintf(buf + o, len - o, "%s\"overwriteEntries\": null", sep);
        else
            o += (size_t)snprintf(buf + o, len - o, "%s\"overwriteEntries\": %" PRId32, sep,
                                  p->entries);
    }
    snprintf(buf + o, len - o, "}");
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

/* Build the record's parameters and submit the INSERT. DECISION "accepted" or "rejected". */
static struct pgw_item *submit_record(struct audit_thread *a, struct gw_request *r,
                                      const char *decision, const char *process_key,
                                      pgw_done_fn done, void *arg)
{
    const struct config *cfg = a->ctx->cfg;
    const struct route *rt = r->match.route;
    bool accepted = strcmp(decision, "accepted") == 0;
    bool is_run = rt->audit == ROUTE_AUDIT_FINISHRUN;
    char received[40], ckey[256], subject[256], src[64] = "", id[24], overrides[160];
    char sec[16], ent[16], kent[24], ksec[24], ksettings[256];
    const char *rule = NULL, *kentries = NULL, *kseconds = NULL, *kset = NULL;

    fmt_time(r->t_wall_ms, received, sizeof(received));
    bot_identity(r, ckey, sizeof(ckey), subject, sizeof(subject));
    snprintf(src, sizeof(src), "%s", request_peer(r));
    snprintf(id, sizeof(id), "%" PRId64, r->payload.id);
    overrides_json(r, overrides, sizeof(overrides));
    bool has_sec = r->payload_valid && r->payload.seconds_state == PAYLOAD_VALUE;
    bool has_ent = r->payload_valid && r->payload.entries_state == PAYLOAD_VALUE;
    snprintf(sec, sizeof(sec), "%" PRId32, r->payload.seconds);
    snprintf(ent, sizeof(ent), "%" PRId32, r->payload.entries);

    if (accepted) {
        struct kpi_settings st;
        bool have_settings = process_key && settings_for(a, process_key, &st);
        struct kpi_overrides ov = {.has_seconds = has_sec,
                                   .seconds = r->payload.seconds,
                                   .has_entries = has_ent,
                                   .entries = r->payload.entries};
        struct kpi_result k;
        kpi_compute(is_run ? KPI_RUN : KPI_TASK, process_key, have_settings ? &st : NULL, &ov, &k);
        rule = kpi_rule_name(k.rule);
        if (k.has_entries) {
            snprintf(kent, sizeof(kent), "%" PRId64, k.entries);
            kentries = kent;
        }
        if (k.has_seconds) {
            snprintf(ksec, sizeof(ksec), "%" PRId64, k.seconds);
            kseconds = ksec;
        }
        if (have_settings) {
            snprintf(ksettings, sizeof(ksettings),
                     "{\"tasksEnabled\": %s, \"secondsPerRun\": %d, \"secondsPerTask\": %d, "
                     "\"advancedMode\": %s, \"defaultEntries\": %d, \"secondsPerEntry\": %d}",
                     st.tasks_enabled ? "true" : "false", st.seconds_per_run, st.seconds_per_task,
                     st.advanced_mode ? "true" : "false", st.default_entries, st.seconds_per_entry);
            kset = ksettings;
        }
    }
    const char *idv = r->payload_valid ? id : NULL;
    const char *reason = accepted ? NULL : (r->error_code ? r->error_code : "gateway.internal");
    const char *reason_msg = accepted ? NULL : r->error_message;
    /* The two statements share their first 19 parameters; task actions add two. */
    const char *v[21] = {r->id,
                         received,
                         cfg->audit.instance,
                         cfg->upstream.client_id,
                         ckey[0] ? ckey : NULL,
                         subject[0] ? subject : NULL,
                         src[0] ? src : NULL,
                         idv,
                         process_key,
                         overrides,
                         has_sec ? sec : NULL,
                         has_ent ? ent : NULL,
                         rule,
                         kentries,
                         kseconds,
                         kset,
                         decision,
                         reason,
                         reason_msg,
                         rt->name,
                         task_action_of(rt->name)};
    return pgw_submit(a->db, is_run ? ST_FINISHRUN : ST_TASK, v, done, arg);
}

/* ---- AUDIT phase ---- */

static void rec_cancel(struct gw_request *r)
{
    struct audit_rec *rec = r->hook_data[REQUEST_PHASE_AUDIT];
    if (rec->timer)
        evtimer_del(rec->timer);
    if (rec->item) {
        if (!pgw_item_cancel(rec->item) && rec->state == REC_WRITING)
            rec->sent = true; /* it may still commit */
        rec->item = NULL;
    }
}

static void write_done(void *arg, bool ok, const PGresult *res, const char *error)
{
    struct audit_rec *rec = arg;
    struct gw_request *r = rec->r;
    rec->item = NULL;
    evtimer_del(rec->timer);
    if (!ok) {
        rec->state = REC_TIMED_OUT;
        log_error("audit record refused by the database", "\"id\":\"%s\",\"error\":\"%s\"", r->id,
                  error ? error : "");
        r->cancel = NULL;
        r->ended_by = "gateway";
        request_reply_header(r, "Retry-After", "5");
        request_reply_refusal(r, 503, "audit.write_failed",
                              "the audit ledger refused the record; nothing was forwarded");
        return;
    }
    rec->state = REC_COMMITTED;
    rec->sent = true;
    rec->t_committed_ms = util_now_ms();
    request_resume(r);
}

static void write_record(struct audit_rec *rec)
{
    struct gw_request *r = rec->r;
    const struct config *cfg = rec->a->ctx->cfg;
    const char *pk = rec->have_process ? rec->process_key : NULL;

    /* The process's own bounds, now that it is known (the global ones ran in policy). */
    const struct config_process *cp = pk ? config_process_find(cfg, pk) : NULL;
    const char *code = NULL;
    char msg[200];
    if (cp && cp->has_max_overwrite_seconds_saved && r->payload.seconds_state == PAYLOAD_VALUE &&
        (uint32_t)r->payload.seconds > cp->max_overwrite_seconds_saved) {
        code = "policy.seconds_above_limit";
        snprintf(msg, sizeof(msg),
                 "overwriteSecondsSaved %d is above the limit of %u for process %.100s",
                 r->payload.seconds, cp->max_overwrite_seconds_saved, pk);
    } else if (cp && cp->has_max_overwrite_entries && r->payload.entries_state == PAYLOAD_VALUE &&
               (uint32_t)r->payload.entries > cp->max_overwrite_entries) {
        code = "policy.entries_above_limit";
        snprintf(msg, sizeof(msg),
                 "overwriteEntries %d is above the limit of %u for process %.100s",
                 r->payload.entries, cp->max_overwrite_entries, pk);
    }
    if (code) {
        evtimer_del(rec->timer);
        r->cancel = NULL;
        STAT_INC(r->ctx->stats, refusals);
        request_reply_refusal(r, 422, code, msg);
        return;
    }
    rec->state = REC_WRITING;
    rec->item = submit_record(rec->a, r, "accepted", pk, write_done, rec);
    if (!rec->item) {
        evtimer_del(rec->timer);
        r->cancel = NULL;
        request_reply_header(r, "Retry-After", "1");
        request_reply_refusal(r, 503, "audit.queue_full",
                              "the audit ledger is backed up; nothing was forwarded");
    }
}

static void lookup_done(void *arg, bool ok, const PGresult *res, const char *error)
{
    struct audit_rec *rec = arg;
    rec->item = NULL;
    if (ok && res && PQntuples(res) == 1) {
        snprintf(rec->process_key, sizeof(rec->process_key), "%s", PQgetvalue(res, 0, 0));
        rec->have_process = true;
        struct idmap *m =
            rec->r->match.route->audit == ROUTE_AUDIT_FINISHRUN ? &rec->a->runs : &rec->a->tasks;
        idmap_put(m, rec->r->payload.id, rec->process_key);
    } else if (!ok) {
        log_warn("process lookup failed; recording the process as unknown",
                 "\"id\":\"%s\",\"error\":\"%s\"", rec->r->id, error ? error : "");
    }
    write_record(rec);
}

static void commit_timeout_cb(evutil_socket_t fd, short what, void *arg)
{
    struct audit_rec *rec = arg;
    struct gw_request *r = rec->r;
    rec_cancel(r);
    r->cancel = NULL;
    rec->state = REC_TIMED_OUT;
    r->ended_by = "gateway";
    request_reply_header(r, "Retry-After", "5");
    request_reply_refusal(r, 503, "audit.unavailable",
                          "the audit ledger could not record this request in time; nothing was "
                          "forwarded, try again");
}

static enum request_next audit_phase(struct gw_request *r)
{
    struct audit_thread *a = r->ctx->audit;
    if (!a)
        return REQUEST_NEXT;
    /* The response phase reads the answers of audited and learning endpoints whole. */
    if (r->match.route->audit != ROUTE_AUDIT_COUNT_ONLY)
        r->buffer_response = true;
    if (!audited(r->match.route) || !r->payload_valid)
        return REQUEST_NEXT;
    struct audit_rec *rec = calloc(1, sizeof(*rec));
    if (!rec) {
        request_reply_refusal(r, 503, "internal.no_memory", "out of memory");
        return REQUEST_DONE;
    }
    rec->r = r;
    rec->a = a;
    rec->succeeded = -1;
    r->hook_data[REQUEST_PHASE_AUDIT] = rec;
    rec->timer = evtimer_new(r->ctx->base, commit_timeout_cb, rec);
    if (!rec->timer) {
        request_reply_refusal(r, 503, "internal.no_memory", "out of memory");
        return REQUEST_DONE;
    }
    uint32_t ms = r->ctx->cfg->audit.commit_timeout_ms;
    struct timeval tv = {.tv_sec = ms / 1000, .tv_usec = (ms % 1000) * 1000};
    evtimer_add(rec->timer, &tv);
    r->cancel = rec_cancel;

    bool is_run = r->match.route->audit == ROUTE_AUDIT_FINISHRUN;
    const char *pk = idmap_get(is_run ? &a->runs : &a->tasks, r->payload.id);
    if (pk) {
        snprintf(rec->process_key, sizeof(rec->process_key), "%s", pk);
        rec->have_process = true;
        write_record(rec);
    } else {
        char id[24];
        snprintf(id, sizeof(id), "%" PRId64, r->payload.id);
        const char *v[1] = {id};
        rec->state = REC_LOOKUP;
        rec->item = pgw_submit(a->db, is_run ? ST_LOOKUP_RUN : ST_LOOKUP_TASK, v, lookup_done, rec);
        if (!rec->item) {
            evtimer_del(rec->timer);
            r->cancel = NULL;
            request_reply_header(r, "Retry-After", "1");
            request_reply_refusal(r, 503, "audit.queue_full",
                                  "the audit ledger is backed up; nothing was forwarded");
            return REQUEST_DONE;
        }
    }
    /* write_record may already have replied (bounds) - then the request is gone. */
    return REQUEST_AGAIN;
}

/* ---- RESPONSE phase: learn maps, read the outcome ---- */

/*
 * Learning holds the answer back until the mappings are committed (at most commit_timeout):
 * a bot can only send FinishRun for a runId it has received, so when it does, every replica
 * can resolve it. Statements commit in submission order, so waiting for the last one is
 * waiting for all. The wait state outlives the request if the commit is late: whichever of
 * the two ends last frees it.
 */
struct learn_wait {
    struct gw_request *r; /* NULL once the request is gone */
    struct event *timer;
    bool waiting; /* the request is suspended on this */
    bool cb_done; /* the last statement's callback has run */
};

static void learn_submit(struct audit_thread *a, size_t stmt, const char *const *v)
{
    if (pgw_submit(a->db, stmt, v, NULL, NULL))
        a->learn_submitted++;
    else
        log_error("audit queue full: a runId/taskId mapping was not recorded", "");
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
    const char *v[5] = {t, pk, have_run ? rn : NULL, r->match.route->name, r->id};
    learn_submit(a, ST_LEARN_TASK, v);
    if (have_run) {
        idmap_put(&a->runs, json_integer_value(rid), pk);
        const char *rv[4] = {rn, pk, r->match.route->name, r->id};
        learn_submit(a, ST_LEARN_RUN, rv);
    }
}

static void learn(struct audit_thread *a, struct gw_request *r, json_t *body)
{
    const struct route *rt = r->match.route;
    if (!r->match.key || r->match.key_len == 0 || r->match.key_len >= 256)
        return;
    char pk[256];
    memcpy(pk, r->match.key, r->match.key_len);
    pk[r->match.key_len] = '\0';

    if (rt->audit == ROUTE_AUDIT_LEARN_RUN) {
        json_t *rid = json_object_get(body, "runId");
        if (!json_is_integer(rid) || json_integer_value(rid) <= 0)
            return;
        char rn[24];
        snprintf(rn, sizeof(rn), "%" JSON_INTEGER_FORMAT, json_integer_value(rid));
        idmap_put(&a->runs, json_integer_value(rid), pk);
        const char *v[4] = {rn, pk, rt->name, r->id};
        learn_submit(a, ST_LEARN_RUN, v);
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
            const char *v[5] = {tn, pk, NULL, rt->name, r->id};
            learn_submit(a, ST_LEARN_TASK, v);
        }
        return;
    }
    learn_task(a, r, body, pk); /* TakeNext, CreateAndTakeTask, CreateTask */
}

static void learn_wait_done(void *arg, bool ok, const PGresult *res, const char *error)
{
    struct learn_wait *lw = arg;
    lw->cb_done = true;
    if (!lw->r) {
        free(lw);
        return;
    }
    if (lw->waiting) {
        lw->waiting = false;
        evtimer_del(lw->timer);
        lw->r->cancel = NULL;
        request_resume(lw->r);
    }
}

static void learn_timeout_cb(evutil_socket_t fd, short what, void *arg)
{
    struct learn_wait *lw = arg;
    if (!lw->waiting)
        return;
    lw->waiting = false;
    log_warn("runId/taskId mapping not committed in time; answering anyway", "\"id\":\"%s\"",
             lw->r->id);
    lw->r->cancel = NULL;
    request_resume(lw->r);
}

static void learn_cancel(struct gw_request *r)
{
    struct learn_wait *lw = r->hook_data[REQUEST_PHASE_RESPONSE];
    lw->waiting = false;
    evtimer_del(lw->timer);
}

/* Submit the barrier: a statement that completes only after every learn statement before it.
 * Returns REQUEST_AGAIN when the request now waits, REQUEST_NEXT otherwise. */
static enum request_next learn_barrier(struct audit_thread *a, struct gw_request *r)
{
    /* Database away: the mappings wait in the queue; do not hold bots' answers meanwhile. */
    if (!pgw_connected(a->db))
        return REQUEST_NEXT;
    struct learn_wait *lw = calloc(1, sizeof(*lw));
    if (!lw)
        return REQUEST_NEXT;
    lw->r = r;
    lw->timer = evtimer_new(r->ctx->base, learn_timeout_cb, lw);
    if (!lw->timer) {
        free(lw);
        return REQUEST_NEXT;
    }
    if (!pgw_submit(a->db, ST_SETTINGS_BARRIER, NULL, learn_wait_done, lw)) {
        event_free(lw->timer);
        free(lw);
        return REQUEST_NEXT;
    }
    r->hook_data[REQUEST_PHASE_RESPONSE] = lw;
    lw->waiting = true;
    r->cancel = learn_cancel;
    uint32_t ms = r->ctx->cfg->audit.commit_timeout_ms;
    struct timeval tv = {.tv_sec = ms / 1000, .tv_usec = (ms % 1000) * 1000};
    evtimer_add(lw->timer, &tv);
    return REQUEST_AGAIN;
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
    uint64_t before = a->learn_submitted;
    if (learns)
        learn(a, r, doc);
    bool learned = a->learn_submitted > before;
    if (rec && json_is_object(doc)) {
        json_t *s = json_object_get(doc, "succeeded");
        json_t *m = json_object_get(doc, "message");
        rec->succeeded = json_is_boolean(s) ? json_is_true(s) : -1;
        if (json_is_string(m))
            snprintf(rec->message, sizeof(rec->message), "%s", json_string_value(m));
        rec->have_answer = true;
    }
    json_decref(doc);
    return learned ? learn_barrier(a, r) : REQUEST_NEXT;
}

/* ---- done: outcomes, rejected records, counts ---- */

static void write_outcome(struct audit_thread *a, struct gw_request *r, struct audit_rec *rec)
{
    char received[40], up[8], sent[8], as[32], us[32], ts[32];
    fmt_time(r->t_wall_ms, received, sizeof(received));
    int ustatus = r->call ? upstream_call_status(r->call) : 0;
    snprintf(up, sizeof(up), "%d", ustatus);
    snprintf(sent, sizeof(sent), "%d", r->status);
    uint64_t now = util_now_ms();
    snprintf(as, sizeof(as), "%.3f",
             rec->t_committed_ms ? (double)(rec->t_committed_ms - r->t_start_ms) / 1000.0 : 0.0);
    snprintf(us, sizeof(us), "%.3f", (double)r->t_up_ms / 1000.0);
    snprintf(ts, sizeof(ts), "%.3f", (double)(now - r->t_start_ms) / 1000.0);
    const char *failure = NULL;
    if (ustatus == 0)
        failure = rec->state == REC_TIMED_OUT ? "audit.commit_timeout"
                  : r->error_code             ? r->error_code
                                              : "gateway.internal";
    const char *v[12] = {r->id,
                         received,
                         r->match.route->name,
                         a->ctx->cfg->audit.instance,
                         ustatus ? up : NULL,
                         rec->succeeded < 0 ? NULL
                         : rec->succeeded   ? "true"
                                            : "false",
                         rec->have_answer && rec->message[0] ? rec->message : NULL,
                         failure,
                         sent,
                         rec->t_committed_ms ? as : NULL,
                         r->call ? us : NULL,
                         ts};
    if (!pgw_submit(a->db, ST_OUTCOME, v, NULL, NULL))
        log_error("audit queue full: outcome not recorded", "\"id\":\"%s\",\"status\":%d", r->id,
                  r->status);
}

static void audit_done(struct gw_request *r)
{
    struct audit_thread *a = r->ctx->audit;
    struct audit_rec *rec = r->hook_data[REQUEST_PHASE_AUDIT];
    if (a && r->match.route && audited(r->match.route)) {
        if (rec && (rec->state == REC_COMMITTED || rec->sent)) {
            write_outcome(a, r, rec);
        } else if (r->error_code && (!rec || rec->state != REC_TIMED_OUT)) {
            /* refused before a record was written: record the refusal with its reason */
            if (!submit_record(a, r, "rejected", rec && rec->have_process ? rec->process_key : NULL,
                               NULL, NULL))
                log_error("audit queue full: rejection not recorded",
                          "\"id\":\"%s\",\"reason\":\"%s\"", r->id, r->error_code);
        }
    }
    struct learn_wait *lw = r->hook_data[REQUEST_PHASE_RESPONSE];
    if (lw) {
        event_free(lw->timer);
        if (lw->cb_done)
            free(lw);
        else
            lw->r = NULL; /* the callback frees it */
        r->hook_data[REQUEST_PHASE_RESPONSE] = NULL;
    }
    if (rec) {
        if (rec->item)
            pgw_item_cancel(rec->item);
        if (rec->timer)
            event_free(rec->timer);
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
