/*
 * ledger: ledger rows as values, their batched statements, KPI settings (see ledger.h).
 */
#include "ledger.h"

#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "config.h"
#include "identity.h"
#include "payload.h"
#include "pgw.h"
#include "util.h"

/* ---- tables and columns ---- */

struct column {
    const char *name;
    const char *type; /* SQL type of the column (the array parameter is TYPE[]) */
};

static const struct column audit_columns[LF_TASK_COUNT] = {
    [LF_REQUEST_ID] = {"request_id", "text"},
    [LF_RECEIVED_AT] = {"received_at", "timestamptz"},
    [LF_INSTANCE] = {"gateway_instance", "text"},
    [LF_CLIENT_ID] = {"client_id", "text"},
    [LF_CUSTOMER_KEY] = {"customer_key", "text"},
    [LF_BOT_SUBJECT] = {"bot_subject", "text"},
    [LF_SOURCE_ADDR] = {"source_addr", "inet"},
    [LF_ID] = {"run_id", "bigint"}, /* task_id for task records */
    [LF_PROCESS_KEY] = {"process_key", "text"},
    [LF_OVERRIDES] = {"overrides", "jsonb"},
    [LF_OVERWRITE_SECONDS] = {"overwrite_seconds_saved", "integer"},
    [LF_OVERWRITE_ENTRIES] = {"overwrite_entries", "integer"},
    [LF_KPI_RULE] = {"kpi_rule", "text"},
    [LF_KPI_ENTRIES] = {"kpi_entries", "bigint"},
    [LF_KPI_SECONDS] = {"kpi_seconds_saved", "bigint"},
    [LF_KPI_SETTINGS] = {"kpi_settings", "jsonb"},
    [LF_DECISION] = {"decision", "text"},
    [LF_REASON_CODE] = {"reason_code", "text"},
    [LF_REASON_MESSAGE] = {"reason_message", "text"},
    [LF_SPOOLED] = {"spooled", "boolean"},
    [LF_ITEM] = {"item", "integer"},
    [LF_ENDPOINT] = {"endpoint", "text"},
    [LF_ACTION] = {"action", "text"},
};

static const struct column outcome_columns[LO_COUNT] = {
    [LO_REQUEST_ID] = {"request_id", "text"},
    [LO_RECEIVED_AT] = {"received_at", "timestamptz"},
    [LO_ENDPOINT] = {"endpoint", "text"},
    [LO_INSTANCE] = {"gateway_instance", "text"},
    [LO_UPSTREAM_STATUS] = {"upstream_status", "integer"},
    [LO_SUCCEEDED] = {"succeeded", "boolean"},
    [LO_MESSAGE] = {"message", "text"},
    [LO_FAILURE] = {"failure", "text"},
    [LO_STATUS_SENT] = {"status_sent", "integer"},
    [LO_AUDIT_SECONDS] = {"audit_seconds", "double precision"},
    [LO_UPSTREAM_SECONDS] = {"upstream_seconds", "double precision"},
    [LO_TOTAL_SECONDS] = {"total_seconds", "double precision"},
};

static const struct column map_columns[LM_TASK_COUNT] = {
    [LM_ID] = {"run_id", "bigint"}, /* task_id for task maps */
    [LM_PROCESS_KEY] = {"process_key", "text"},
    [LM_SOURCE] = {"source", "text"},
    [LM_REQUEST_ID] = {"request_id", "text"},
    [LM_RUN_ID] = {"run_id", "bigint"},
};

static const struct column refusal_columns[LS_COUNT] = {
    [LS_SUMMARY_ID] = {"summary_id", "text"},
    [LS_WINDOW_START] = {"window_start", "timestamptz"},
    [LS_WINDOW_END] = {"window_end", "timestamptz"},
    [LS_INSTANCE] = {"gateway_instance", "text"},
    [LS_ENDPOINT] = {"endpoint", "text"},
    [LS_REASON_CODE] = {"reason_code", "text"},
    [LS_COUNT_VALUE] = {"refusals", "bigint"},
};

static const struct {
    const char *table;
    const struct column *cols;
    unsigned n;
} kinds[LEDGER_KINDS] = {
    [LEDGER_RUN] = {"finishrun_audit", audit_columns, LF_RUN_COUNT},
    [LEDGER_TASK] = {"task_action_audit", audit_columns, LF_TASK_COUNT},
    [LEDGER_OUTCOME] = {"audit_outcome", outcome_columns, LO_COUNT},
    [LEDGER_RUN_MAP] = {"run_process", map_columns, LM_RUN_COUNT},
    [LEDGER_TASK_MAP] = {"task_process", map_columns, LM_TASK_COUNT},
    [LEDGER_REFUSALS] = {"refusal_summary", refusal_columns, LS_COUNT},
};

unsigned ledger_nfields(enum ledger_kind kind)
{
    return (unsigned)kind < LEDGER_KINDS ? kinds[kind].n : 0;
}

const char *ledger_table(enum ledger_kind kind)
{
    return (unsigned)kind < LEDGER_KINDS ? kinds[kind].table : "?";
}

static const char *column_name(enum ledger_kind kind, unsigned i)
{
    if (kind == LEDGER_TASK && i == LF_ID)
        return "task_id";
    if (kind == LEDGER_TASK_MAP && i == LM_ID)
        return "task_id";
    return kinds[kind].cols[i].name;
}

/* ---- records ---- */

struct ledger_rec *ledger_rec_new(enum ledger_kind kind, const char *const *values)
{
    unsigned n = ledger_nfields(kind);
    if (n == 0)
        return NULL;
    size_t size = 0;
    for (unsigned i = 0; i < n; i++)
        if (values[i])
            size += strlen(values[i]) + 1;
    if (size > LEDGER_MAX_BYTES)
        return NULL;
    struct ledger_rec *r = malloc(sizeof(*r) + size);
    if (!r)
        return NULL;
    r->kind = (uint8_t)kind;
    r->nfields = (uint8_t)n;
    r->size = (uint16_t)size;
    size_t o = 0;
    for (unsigned i = 0; i < LEDGER_MAX_FIELDS; i++) {
        if (i >= n || !values[i]) {
            r->off[i] = 0xFFFF;
            continue;
        }
        size_t len = strlen(values[i]) + 1;
        memcpy(r->data + o, values[i], len);
        r->off[i] = (uint16_t)o;
        o += len;
    }
    return r;
}

const char *ledger_get(const struct ledger_rec *r, unsigned i)
{
    if (i >= r->nfields || r->off[i] == 0xFFFF)
        return NULL;
    return r->data + r->off[i];
}

void ledger_values(const struct ledger_rec *r, const char **out)
{
    for (unsigned i = 0; i < LEDGER_MAX_FIELDS; i++)
        out[i] = ledger_get(r, i);
}

struct ledger_rec *ledger_with(const struct ledger_rec *r, unsigned i, const char *v)
{
    const char *vals[LEDGER_MAX_FIELDS];
    ledger_values(r, vals);
    if (i < LEDGER_MAX_FIELDS)
        vals[i] = v;
    return ledger_rec_new((enum ledger_kind)r->kind, vals);
}

size_t ledger_encoded_size(const struct ledger_rec *r)
{
    size_t n = 2;
    for (unsigned i = 0; i < r->nfields; i++) {
        const char *v = ledger_get(r, i);
        n += 2 + (v ? strlen(v) : 0);
    }
    return n;
}

void ledger_encode(const struct ledger_rec *r, unsigned char *buf)
{
    size_t o = 0;
    buf[o++] = r->kind;
    buf[o++] = r->nfields;
    for (unsigned i = 0; i < r->nfields; i++) {
        const char *v = ledger_get(r, i);
        size_t len = v ? strlen(v) : 0xFFFF;
        buf[o++] = (unsigned char)(len & 0xFF);
        buf[o++] = (unsigned char)(len >> 8);
        if (v) {
            memcpy(buf + o, v, len);
            o += len;
        }
    }
}

struct ledger_rec *ledger_decode(const unsigned char *buf, size_t len)
{
    if (len < 2 || buf[0] >= LEDGER_KINDS || buf[1] != ledger_nfields(buf[0]))
        return NULL;
    enum ledger_kind kind = buf[0];
    unsigned n = buf[1];
    char copies[LEDGER_MAX_BYTES + LEDGER_MAX_FIELDS];
    const char *vals[LEDGER_MAX_FIELDS] = {0};
    size_t o = 2, c = 0;
    for (unsigned i = 0; i < n; i++) {
        if (o + 2 > len)
            return NULL;
        size_t flen = (size_t)buf[o] | ((size_t)buf[o + 1] << 8);
        o += 2;
        if (flen == 0xFFFF)
            continue;
        if (o + flen > len || c + flen + 1 > sizeof(copies) || memchr(buf + o, 0, flen))
            return NULL;
        memcpy(copies + c, buf + o, flen);
        copies[c + flen] = '\0';
        vals[i] = copies + c;
        c += flen + 1;
        o += flen;
    }
    if (o != len)
        return NULL;
    return ledger_rec_new(kind, vals);
}

/* ---- statements ---- */

static struct pgw_statement statements[LST_COUNT];
static char *statement_sql[LST_COUNT];
static pthread_once_t statements_once = PTHREAD_ONCE_INIT;

/* insert into TABLE (cols) select * from unnest($1::t1[], ...) on conflict do nothing */
static char *insert_sql(enum ledger_kind kind)
{
    char *sql = malloc(4096);
    if (!sql)
        abort(); /* at start-up, before any request */
    unsigned n = kinds[kind].n;
    size_t o = (size_t)snprintf(sql, 4096, "insert into %s (", kinds[kind].table);
    for (unsigned i = 0; i < n; i++)
        o += (size_t)snprintf(sql + o, 4096 - o, "%s%s", i ? ", " : "", column_name(kind, i));
    if (kind == LEDGER_TASK_MAP) {
        /* one row per task: of several in a batch, the latest that names a run */
        o += (size_t)snprintf(sql + o, 4096 - o,
                              ") select distinct on (task_id) task_id, process_key, source, "
                              "request_id, run_id from unnest(");
    } else {
        o += (size_t)snprintf(sql + o, 4096 - o, ") select * from unnest(");
    }
    for (unsigned i = 0; i < n; i++)
        o += (size_t)snprintf(sql + o, 4096 - o, "%s$%u::%s[]", i ? ", " : "", i + 1,
                              kinds[kind].cols[i].type);
    if (kind == LEDGER_TASK_MAP)
        snprintf(sql + o, 4096 - o,
                 ") with ordinality as u(task_id, process_key, source, request_id, run_id, ord) "
                 "order by task_id, run_id is null, ord desc "
                 "on conflict (task_id) do update set run_id = excluded.run_id "
                 "where excluded.run_id is not null "
                 "and excluded.run_id is distinct from task_process.run_id");
    else
        snprintf(sql + o, 4096 - o, ") on conflict do nothing");
    return sql;
}

static void build_statements(void)
{
    static const char *const names[LEDGER_KINDS] = {"gw_run",     "gw_task",     "gw_outcome",
                                                    "gw_run_map", "gw_task_map", "gw_refusals"};
    for (int k = 0; k < LEDGER_KINDS; k++) {
        statement_sql[k] = insert_sql((enum ledger_kind)k);
        statements[k] = (struct pgw_statement){
            .name = names[k], .sql = statement_sql[k], .nparams = (int)kinds[k].n, .batched = true};
    }
    /* The lookups of a batch are one execution: one answer row per id, in order (NULL: not
     * known). One statement per lookup cost PostgreSQL about 8 us each, a batched one about
     * 1.3 us per id (pgbench, 16 per batch). */
#define LOOKUP_SQL(table, column)                                                                  \
    "select m.process_key from unnest($1::bigint[]) with ordinality as u(id, ord) left "           \
    "join " table " m on m." column " = u.id order by u.ord"
    statements[LST_LOOKUP_RUN] = (struct pgw_statement){.name = "gw_lookup_run",
                                                        .sql = LOOKUP_SQL("run_process", "run_id"),
                                                        .nparams = 1,
                                                        .batched = true,
                                                        .row_results = true};
    statements[LST_LOOKUP_TASK] = statements[LST_LOOKUP_RUN];
    statements[LST_LOOKUP_TASK].name = "gw_lookup_task";
    statements[LST_LOOKUP_TASK].sql = LOOKUP_SQL("task_process", "task_id");
#undef LOOKUP_SQL
    statements[LST_SETTINGS] = (struct pgw_statement){
        .name = "gw_settings",
        .sql = "select process_key, tasks_enabled, seconds_per_run, seconds_per_task, "
               "advanced_mode, default_entries, seconds_per_entry from process_kpi_settings",
        .nparams = 0};
    statements[LST_PARTITIONS] =
        (struct pgw_statement){.name = "gw_partitions",
                               .sql = "select count(*) from gateway_ensure_partitions($1)",
                               .nparams = 1};
}

const struct pgw_statement *ledger_statements(void)
{
    pthread_once(&statements_once, build_statements);
    return statements;
}

/* ---- KPI settings ---- */

struct settings_entry {
    char *key;
    struct kpi_settings s;
};

struct ledger_settings {
    size_t n;
    struct settings_entry e[];
};

static int entry_cmp(const void *a, const void *b)
{
    return strcmp(((const struct settings_entry *)a)->key, ((const struct settings_entry *)b)->key);
}

struct ledger_settings *ledger_settings_from(const PGresult *res)
{
    int n = PQntuples(res);
    struct ledger_settings *s =
        calloc(1, sizeof(*s) + sizeof(struct settings_entry) * (size_t)(n > 0 ? n : 1));
    if (!s)
        return NULL;
    for (int i = 0; i < n; i++) {
        struct settings_entry *e = &s->e[i];
        if (!(e->key = strdup(PQgetvalue(res, i, 0)))) {
            ledger_settings_free(s);
            return NULL;
        }
        s->n++;
        e->s.tasks_enabled = PQgetvalue(res, i, 1)[0] == 't';
        e->s.seconds_per_run = (int32_t)strtol(PQgetvalue(res, i, 2), NULL, 10);
        e->s.seconds_per_task = (int32_t)strtol(PQgetvalue(res, i, 3), NULL, 10);
        e->s.advanced_mode = PQgetvalue(res, i, 4)[0] == 't';
        e->s.default_entries = (int32_t)strtol(PQgetvalue(res, i, 5), NULL, 10);
        e->s.seconds_per_entry = (int32_t)strtol(PQgetvalue(res, i, 6), NULL, 10);
    }
    qsort(s->e, s->n, sizeof(s->e[0]), entry_cmp);
    return s;
}

void ledger_settings_free(struct ledger_settings *s)
{
    if (!s)
        return;
    for (size_t i = 0; i < s->n; i++)
        free(s->e[i].key);
    free(s);
}

bool ledger_settings_find(const struct ledger_settings *s, const struct config *cfg, const char *pk,
                          struct kpi_settings *out, bool *from_table)
{
    *from_table = false;
    if (s && s->n) {
        struct settings_entry key = {.key = (char *)pk};
        const struct settings_entry *e = bsearch(&key, s->e, s->n, sizeof(key), entry_cmp);
        if (e) {
            *out = e->s;
            *from_table = true;
            return true;
        }
    }
    const struct config_process *cp = cfg ? config_process_find(cfg, pk) : NULL;
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

/* ---- building records ---- */

void ledger_time(uint64_t wall_ms, char *buf, size_t len)
{
    /* The date and time of the second, formatted once per second per thread (every record
     * and outcome carries a time: gmtime and snprintf per row showed in profiles). */
    static __thread uint64_t cached_sec = UINT64_MAX;
    static __thread char cached[80]; /* "YYYY-MM-DD HH:MM:SS" (room for what %d could be) */
    uint64_t sec = wall_ms / 1000;
    if (sec != cached_sec) {
        time_t t = (time_t)sec;
        struct tm tm;
        gmtime_r(&t, &tm);
        snprintf(cached, sizeof(cached), "%04d-%02d-%02d %02d:%02d:%02d",
                 (tm.tm_year + 1900) % 10000, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min,
                 tm.tm_sec);
        cached_sec = sec;
    }
    char full[32];
    memcpy(full, cached, 19);
    unsigned ms = (unsigned)(wall_ms % 1000);
    full[19] = '.';
    full[20] = (char)('0' + ms / 100);
    full[21] = (char)('0' + ms / 10 % 10);
    full[22] = (char)('0' + ms % 10);
    memcpy(full + 23, "+00", 4);
    util_copy_text(buf, len, full);
}

/* The overrides exactly as sent: only the keys present, null kept. */
static void overrides_json(const struct payload_result *p, char *buf, size_t len)
{
    size_t o = (size_t)snprintf(buf, len, "{");
    if (p && p->seconds_state != PAYLOAD_ABSENT) {
        if (p->seconds_state == PAYLOAD_NULL)
            o += (size_t)snprintf(buf + o, len - o, "\"overwriteSecondsSaved\": null");
        else
            o += (size_t)snprintf(buf + o, len - o, "\"overwriteSecondsSaved\": %" PRId32,
                                  p->seconds);
    }
    if (p && p->entries_state != PAYLOAD_ABSENT) {
        const char *sep = o > 1 ? ", " : "";
        if (p->entries_state == PAYLOAD_NULL)
            o += (size_t)snprintf(buf + o, len - o, "%s\"overwriteEntries\": null", sep);
        else
            o += (size_t)snprintf(buf + o, len - o, "%s\"overwriteEntries\": %" PRId32, sep,
                                  p->entries);
    }
    snprintf(buf + o, len - o, "}");
}

/* Field by field: the struct has padding, which a byte compare would read. */
static bool settings_equal(const struct kpi_settings *a, const struct kpi_settings *b)
{
    return a->tasks_enabled == b->tasks_enabled && a->seconds_per_run == b->seconds_per_run &&
           a->seconds_per_task == b->seconds_per_task && a->advanced_mode == b->advanced_mode &&
           a->default_entries == b->default_entries && a->seconds_per_entry == b->seconds_per_entry;
}

/* Texts of the KPI fields of an accepted record. */
struct kpi_texts {
    const char *rule, *entries, *seconds, *settings;
    char ent[24], sec[24], set[320];
};

static void kpi_texts(enum ledger_kind kind, const char *pk, const struct kpi_settings *st,
                      bool from_table, bool has_sec, int32_t sec, bool has_ent, int32_t ent,
                      struct kpi_texts *t)
{
    struct kpi_overrides ov = {
        .has_seconds = has_sec, .seconds = sec, .has_entries = has_ent, .entries = ent};
    struct kpi_result k;
    kpi_compute(kind == LEDGER_RUN ? KPI_RUN : KPI_TASK, pk, pk ? st : NULL, &ov, &k);
    t->rule = kpi_rule_name(k.rule);
    t->entries = t->seconds = t->settings = NULL;
    if (k.has_entries) {
        util_fmt_i64(t->ent, k.entries);
        t->entries = t->ent;
    }
    if (k.has_seconds) {
        util_fmt_i64(t->sec, k.seconds);
        t->seconds = t->sec;
    }
    /* The settings' text, kept per thread for the last settings seen: most rows in a row
     * value the same process. Every field compared: a hit is exact. */
    static __thread struct kpi_settings last_st;
    static __thread bool last_from_table, have_last;
    static __thread char last_set[sizeof(t->set)];
    if (pk && st && have_last && last_from_table == from_table && settings_equal(&last_st, st)) {
        memcpy(t->set, last_set, sizeof(t->set));
        t->settings = t->set;
    } else if (pk && st) {
        snprintf(t->set, sizeof(t->set),
                 "{\"source\": \"%s\", \"tasksEnabled\": %s, \"secondsPerRun\": %d, "
                 "\"secondsPerTask\": %d, \"advancedMode\": %s, \"defaultEntries\": %d, "
                 "\"secondsPerEntry\": %d}",
                 from_table ? "table" : "config", st->tasks_enabled ? "true" : "false",
                 st->seconds_per_run, st->seconds_per_task, st->advanced_mode ? "true" : "false",
                 st->default_entries, st->seconds_per_entry);
        t->settings = t->set;
        last_st = *st;
        last_from_table = from_table;
        memcpy(last_set, t->set, sizeof(last_set));
        have_last = true;
    }
}

struct ledger_rec *ledger_audit_record(const struct ledger_audit_in *in)
{
    char received[40], id[24], overrides[160], sec[24], ent[24], item[24];
    char ckey[IDENTITY_MAX], subject[IDENTITY_MAX], pk[256], reason_msg[256];
    const struct payload_result *p = in->payload;
    bool has_sec = p && p->seconds_state == PAYLOAD_VALUE;
    bool has_ent = p && p->entries_state == PAYLOAD_VALUE;
    ledger_time(in->received_wall_ms, received, sizeof(received));
    util_fmt_i64(id, in->id);
    overrides_json(p, overrides, sizeof(overrides));
    util_fmt_i64(sec, has_sec ? p->seconds : 0);
    util_fmt_i64(ent, has_ent ? p->entries : 0);
    util_fmt_i64(item, in->item);
    if (in->process_key)
        util_copy_text(pk, sizeof(pk), in->process_key);
    if (in->reason_message)
        util_copy_text(reason_msg, sizeof(reason_msg), in->reason_message);
    util_copy_text(ckey, sizeof(ckey), in->who ? in->who->customer_key : "");
    util_copy_text(subject, sizeof(subject), in->who ? in->who->subject : "");

    struct kpi_texts k = {0};
    if (in->accepted)
        kpi_texts(in->kind, in->process_key ? pk : NULL, in->settings, in->settings_from_table,
                  has_sec, has_sec ? p->seconds : 0, has_ent, has_ent ? p->entries : 0, &k);
    const char *v[LEDGER_MAX_FIELDS] = {
        [LF_REQUEST_ID] = in->request_id,
        [LF_RECEIVED_AT] = received,
        [LF_INSTANCE] = in->instance,
        [LF_CLIENT_ID] = in->client_id,
        [LF_CUSTOMER_KEY] = ckey[0] ? ckey : NULL,
        [LF_BOT_SUBJECT] = subject[0] ? subject : NULL,
        [LF_SOURCE_ADDR] = in->source_addr && in->source_addr[0] ? in->source_addr : NULL,
        [LF_ID] = in->have_id ? id : NULL,
        [LF_PROCESS_KEY] = in->process_key ? pk : NULL,
        [LF_OVERRIDES] = overrides,
        [LF_OVERWRITE_SECONDS] = has_sec ? sec : NULL,
        [LF_OVERWRITE_ENTRIES] = has_ent ? ent : NULL,
        [LF_KPI_RULE] = k.rule,
        [LF_KPI_ENTRIES] = k.entries,
        [LF_KPI_SECONDS] = k.seconds,
        [LF_KPI_SETTINGS] = k.settings,
        [LF_DECISION] = in->accepted ? "accepted" : "rejected",
        [LF_REASON_CODE] =
            in->accepted ? NULL : (in->reason_code ? in->reason_code : "gateway.internal"),
        [LF_REASON_MESSAGE] = in->accepted || !in->reason_message ? NULL : reason_msg,
        [LF_SPOOLED] = "false",
        [LF_ITEM] = item,
        [LF_ENDPOINT] = in->endpoint,
        [LF_ACTION] = in->action,
    };
    return ledger_rec_new(in->kind, v);
}

struct ledger_rec *ledger_revalue(const struct ledger_rec *r, const char *pk,
                                  const struct kpi_settings *settings, bool from_table)
{
    const char *v[LEDGER_MAX_FIELDS];
    ledger_values(r, v);
    const char *sec = v[LF_OVERWRITE_SECONDS], *ent = v[LF_OVERWRITE_ENTRIES];
    struct kpi_texts k;
    kpi_texts((enum ledger_kind)r->kind, pk, settings, from_table, sec != NULL,
              sec ? (int32_t)strtol(sec, NULL, 10) : 0, ent != NULL,
              ent ? (int32_t)strtol(ent, NULL, 10) : 0, &k);
    v[LF_PROCESS_KEY] = pk;
    v[LF_KPI_RULE] = k.rule;
    v[LF_KPI_ENTRIES] = k.entries;
    v[LF_KPI_SECONDS] = k.seconds;
    v[LF_KPI_SETTINGS] = k.settings;
    return ledger_rec_new((enum ledger_kind)r->kind, v);
}
