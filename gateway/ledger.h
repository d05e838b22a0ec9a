/*
 * ledger: the rows of the KPI ledger (design.md §5-6) as values, independent of how they reach
 * PostgreSQL: built from a request, inserted in batches (pgw, the replay), written to the spool
 * and read back from it.
 *
 * A record (struct ledger_rec) is one row of one table, as text values in the table's column
 * order (NULL = SQL NULL), immutable once built, in one allocation. Kinds and tables:
 *
 *   LEDGER_RUN       finishrun_audit     a FinishRun, accepted or rejected
 *   LEDGER_TASK      task_action_audit   a task action, or one item of a Return
 *   LEDGER_OUTCOME   audit_outcome       what Anymate (or the network) answered
 *   LEDGER_RUN_MAP   run_process         runId -> processKey learned from an answer
 *   LEDGER_TASK_MAP  task_process        taskId -> processKey (and its run)
 *   LEDGER_REFUSALS  refusal_summary     refusals counted beyond the per-thread record rate
 *
 * Every insert is idempotent on the row's key (the request id, receive time and item; the run
 * or task id; the summary id), so a row written live and again from the spool, or sent twice
 * after a lost connection, is one row.
 *
 * The statements (ledger_statements) are batched: each takes one array per column and inserts
 * every row of a batch with one execution (insert ... select ... from unnest(...)).
 *
 * Spool encoding (ledger_encode / ledger_decode): kind (1 byte), field count (1 byte), then per
 * field a 2-byte little-endian length (0xFFFF = NULL) and the bytes. The spool frames it.
 */
#ifndef GW_LEDGER_H
#define GW_LEDGER_H

#include <libpq-fe.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "kpi.h"

struct config;
struct identity;
struct payload_result;
struct pgw_statement;

enum ledger_kind {
    LEDGER_RUN,
    LEDGER_TASK,
    LEDGER_OUTCOME,
    LEDGER_RUN_MAP,
    LEDGER_TASK_MAP,
    LEDGER_REFUSALS,
    LEDGER_KINDS
};

/* Fields of LEDGER_RUN and LEDGER_TASK (task records have the last three too). */
enum {
    LF_REQUEST_ID,
    LF_RECEIVED_AT,
    LF_INSTANCE,
    LF_CLIENT_ID,
    LF_CUSTOMER_KEY,
    LF_BOT_SUBJECT,
    LF_SOURCE_ADDR,
    LF_ID, /* run_id or task_id */
    LF_PROCESS_KEY,
    LF_OVERRIDES,
    LF_OVERWRITE_SECONDS,
    LF_OVERWRITE_ENTRIES,
    LF_KPI_RULE,
    LF_KPI_ENTRIES,
    LF_KPI_SECONDS,
    LF_KPI_SETTINGS,
    LF_DECISION,
    LF_REASON_CODE,
    LF_REASON_MESSAGE,
    LF_SPOOLED,
    LF_ITEM,     /* task */
    LF_ENDPOINT, /* task */
    LF_ACTION,   /* task */
    LF_TASK_COUNT
};
#define LF_RUN_COUNT LF_ITEM

/* Fields of LEDGER_OUTCOME. */
enum {
    LO_REQUEST_ID,
    LO_RECEIVED_AT,
    LO_ENDPOINT,
    LO_INSTANCE,
    LO_UPSTREAM_STATUS,
    LO_SUCCEEDED,
    LO_MESSAGE,
    LO_FAILURE,
    LO_STATUS_SENT,
    LO_AUDIT_SECONDS,
    LO_UPSTREAM_SECONDS,
    LO_TOTAL_SECONDS,
    LO_COUNT
};

/* Fields of LEDGER_RUN_MAP and LEDGER_TASK_MAP. */
enum { LM_ID, LM_PROCESS_KEY, LM_SOURCE, LM_REQUEST_ID, LM_RUN_ID /* task map */, LM_TASK_COUNT };
#define LM_RUN_COUNT LM_RUN_ID

/* Fields of LEDGER_REFUSALS. */
enum {
    LS_SUMMARY_ID,
    LS_WINDOW_START,
    LS_WINDOW_END,
    LS_INSTANCE,
    LS_ENDPOINT,
    LS_REASON_CODE,
    LS_COUNT_VALUE,
    LS_COUNT
};

#define LEDGER_MAX_FIELDS LF_TASK_COUNT
#define LEDGER_MAX_BYTES 16384 /* a record's values together, at most (texts are cut to fit) */

struct ledger_rec {
    uint8_t kind;
    uint8_t nfields;
    uint16_t size;                   /* bytes of the block after the header */
    uint16_t off[LEDGER_MAX_FIELDS]; /* 0xFFFF = NULL */
    char data[];                     /* the values, each NUL-terminated */
};

/* Number of fields of KIND. */
unsigned ledger_nfields(enum ledger_kind kind);

/* Table name of KIND (for logs). */
const char *ledger_table(enum ledger_kind kind);

/* Build a record of KIND from VALUES (ledger_nfields(kind) entries, NULL = NULL), copied.
 * NULL when out of memory or the values are larger than LEDGER_MAX_BYTES. */
struct ledger_rec *ledger_rec_new(enum ledger_kind kind, const char *const *values);

/* Field I of R (NULL for SQL NULL or out of range). */
const char *ledger_get(const struct ledger_rec *r, unsigned i);

/* All fields of R into OUT[LEDGER_MAX_FIELDS]. */
void ledger_values(const struct ledger_rec *r, const char **out);

/* A copy of R with field I set to V (NULL: SQL NULL). NULL when out of memory. */
struct ledger_rec *ledger_with(const struct ledger_rec *r, unsigned i, const char *v);

/* Spool encoding: bytes needed; encode into BUF (ledger_encoded_size bytes); decode (a new
 * record, or NULL when BUF is not a valid encoding). */
size_t ledger_encoded_size(const struct ledger_rec *r);
void ledger_encode(const struct ledger_rec *r, unsigned char *buf);
struct ledger_rec *ledger_decode(const unsigned char *buf, size_t len);

/* ---- statements ---- */

/* Statement indexes: inserts first (index = kind), then the others. */
enum {
    LST_LOOKUP_RUN = LEDGER_KINDS, /* $1 run_id -> process_key */
    LST_LOOKUP_TASK,               /* $1 task_id -> process_key */
    LST_SETTINGS,                  /* every process_kpi_settings row */
    LST_PARTITIONS,                /* gateway_ensure_partitions($1 days ahead) */
    LST_COUNT
};

/* The statement table (LST_COUNT entries, built once; static). */
const struct pgw_statement *ledger_statements(void);

/* ---- KPI settings ---- */

struct ledger_settings; /* process key -> kpi_settings, from the table; immutable */

/* Parse the rows of LST_SETTINGS (NULL when out of memory). */
struct ledger_settings *ledger_settings_from(const PGresult *res);
void ledger_settings_free(struct ledger_settings *s);

/* The effective settings of process PK: the table's row (S may be NULL), else CFG's
 * [process "PK"] section. False when neither has any. *FROM_TABLE says which. */
bool ledger_settings_find(const struct ledger_settings *s, const struct config *cfg, const char *pk,
                          struct kpi_settings *out, bool *from_table);

/* ---- building records ---- */

/* What an audit record (LEDGER_RUN or LEDGER_TASK) is made of. */
struct ledger_audit_in {
    enum ledger_kind kind;
    const char *request_id;
    uint64_t received_wall_ms;
    const char *instance;
    const char *client_id; /* may be NULL */
    const struct identity *who;
    const char *source_addr; /* may be NULL */
    bool have_id;
    int64_t id;
    const char *process_key; /* NULL: unknown */
    /* the overrides as the bot sent them; NULL when the body was not read as valid */
    const struct payload_result *payload;
    bool accepted;
    const char *reason_code, *reason_message; /* rejected */
    unsigned item;                            /* task: 0, or the index in a Return */
    const char *endpoint, *action;            /* task */
    /* the KPI inputs: settings of process_key (NULL: none known) */
    const struct kpi_settings *settings;
    bool settings_from_table;
};

struct ledger_rec *ledger_audit_record(const struct ledger_audit_in *in);

/* A copy of the accepted audit record R whose process was unknown, now valued for process PK
 * with SETTINGS (NULL: none known): process_key and the kpi_* fields set. The replay uses it. */
struct ledger_rec *ledger_revalue(const struct ledger_rec *r, const char *pk,
                                  const struct kpi_settings *settings, bool from_table);

/* Wall-clock milliseconds as PostgreSQL timestamptz text ("2026-11-30 12:00:00.123+00"). */
void ledger_time(uint64_t wall_ms, char *buf, size_t len);

#endif
