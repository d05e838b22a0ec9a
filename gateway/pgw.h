/*
 * pgw: one asynchronous PostgreSQL connection per worker thread, driven by the worker's event
 * loop: non-blocking libpq (PQconnectStartParams/PQconnectPoll, PQsetnonblocking), prepared
 * statements, pipeline mode, group commit, batched rows.
 *
 * Group commit. Submitted statements wait in a FIFO. A batch (at most batch_size statements, or
 * whatever arrived within batch_delay of the first) is sent as one pipeline ending with one
 * Sync: PostgreSQL runs it as one implicit transaction, so the batch costs one round trip and
 * one commit, and every statement in it is durable when the Sync's result arrives. Only then
 * are the statements' callbacks called. What arrives while a batch is on the wire forms the
 * next batch, so under load batches grow by themselves.
 *
 * Pipelined batches. Up to pipeline_depth batches may be on the wire at once, each closed by
 * its own Sync, so each is its own transaction: PostgreSQL runs them one after the other, and
 * their Sync results arrive in order. The first batch goes whenever statements wait; a further
 * one only once PIPELINE_MIN (8) statements wait. So a database a round trip away is not left
 * idle for a round trip per batch, while a database that is merely busy keeps getting batches
 * of a useful size (a batch's fixed cost - parse-bind-execute per statement, executor start,
 * constraint set-up, commit - is paid per batch, not per row). A failed statement aborts only
 * its own batch (PostgreSQL skips to that batch's Sync); the batches behind it commit.
 *
 * Batched rows. A statement marked `batched` takes one array per column (e.g. insert ... select
 * ... from unnest($1::text[], $2::timestamptz[], ...)): its submissions are rows, and all rows
 * of one batch go to PostgreSQL as a single execution of it, so a batch of 500 records costs a
 * handful of statements, not 500. A batched statement marked `row_results` is a query that
 * answers one row per row it was given, in the same order (e.g. select ... from unnest($1)
 * with ordinality u left join ... order by u.ordinality): the lookups of a batch are one
 * execution too, and each submission's callback gets the shared result and its own row in it.
 * A different row count fails each of that execution's submissions; PostgreSQL refused nothing,
 * so the rest of the batch commits. An answer from a batch that is rolled back is dropped and
 * the lookup asked again. Other statements run once per submission.
 *
 * Failures. If a statement fails, PostgreSQL aborts the rest of the batch and rolls the
 * transaction back. A failed batched statement that carried several rows does not know which
 * row was at fault: its rows are sent again one per statement ("solo"), so only the bad row
 * fails. A failed single statement's callback gets the error; every other statement of the
 * batch is sent again in the next batch. If the connection breaks with a batch in flight,
 * whether it committed is unknown; it is sent again after reconnecting, which is safe because
 * every write the gateway makes is idempotent (INSERT ... ON CONFLICT on the record's key).
 * Reconnects back off exponentially up to reconnect_max; statements are prepared again on each
 * new connection.
 *
 * Diverting. The owner can take back every statement not known to be committed
 * (pgw_divert): each gets its callback with PGW_DIVERTED, for the owner to keep elsewhere (the
 * ledger's spool). pgw_stalled tells when the batch in flight has waited too long (a frozen
 * or overloaded database), on_down when the connection was lost.
 *
 * Never blocks: host names in the connection string (one or a comma-separated list) are
 * resolved with evdns, and every address of every name is handed to libpq as a host/hostaddr
 * pair, in order, so libpq tries them all without a lookup of its own (which would block).
 */
#ifndef GW_PGW_H
#define GW_PGW_H

#include <libpq-fe.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct event_base;
struct evdns_base;
struct pgw;
struct pgw_item;

#define PGW_MAX_DEPTH 16

struct pgw_statement {
    const char *name; /* prepared statement name */
    const char *sql;  /* with $1.. placeholders; for a batched statement each is an array */
    int nparams;
    bool batched;     /* rows: one submission is one row, one execution carries a batch of them */
    bool row_results; /* batched query answering one row per row given, in order */
};

struct pgw_options {
    const char *conninfo; /* libpq connection string or URI (borrowed for the pgw's life) */
    const char *name;     /* for logs, e.g. "thread 0" */
    const struct pgw_statement *statements; /* prepared on every (re)connect; borrowed */
    size_t nstatements;
    uint32_t batch_size;     /* statements or rows per batch */
    uint32_t pipeline_depth; /* batches on the wire at once, 1..PGW_MAX_DEPTH */
    uint32_t batch_delay_ms;
    uint32_t queue_size; /* statements waiting; pgw_submit refuses beyond */
    uint32_t reconnect_max_ms;
    const char *listen_channel; /* LISTEN on connect, or NULL */
    /* Called (on the loop) after each successful (re)connect, each NOTIFY, and when a
     * connection that was up is lost (its statements are queued again, see pgw_divert). */
    void (*on_connected)(void *arg);
    void (*on_notify)(void *arg, const char *channel, const char *payload);
    void (*on_down)(void *arg);
    /* Called (on the loop) when a batch goes on the wire and when one ends (COMMITTED: its
     * Sync arrived, whether or not a statement in it failed); IN_FLIGHT is the new count of
     * batches on the wire. May be NULL. */
    void (*on_batch)(void *arg, uint32_t in_flight, bool committed);
    void *arg;
};

enum pgw_status {
    PGW_OK,       /* its batch committed; RES holds its result (rows of a SELECT) */
    PGW_FAILED,   /* PostgreSQL refused this very statement (ERROR says why) */
    PGW_DIVERTED, /* handed back unwritten by pgw_divert or pgw_free: maybe not committed
                     (it may have been in a batch whose fate is unknown) */
};

/*
 * Callback of a submitted statement. RES is borrowed and cleared after the callback; it may be
 * NULL (always for batched statements without row_results). ROW is this submission's row in
 * RES: 0 for a statement run alone, its place in the execution for row_results (RES is then
 * shared by every submission of that execution). Never called after pgw_item_cancel, and never
 * from within pgw_submit.
 */
typedef void (*pgw_done_fn)(void *arg, enum pgw_status status, const PGresult *res, int row,
                            const char *error);

/* Start connecting at once. Returns NULL when out of memory or CONNINFO does not parse
 * (message in ERRBUF). */
struct pgw *pgw_new(struct event_base *base, struct evdns_base *dns, const struct pgw_options *opts,
                    char *errbuf, size_t errlen);

/* Close the connection; every statement not yet committed gets PGW_DIVERTED first (not the
 * cancelled ones). */
void pgw_free(struct pgw *p);

/*
 * Queue statement STMT (index into opts->statements) with its NPARAMS text VALUES (copied;
 * NULL entries are SQL NULL; for a batched statement, one row). DONE may be NULL (pgw logs a
 * refused statement itself). Returns a handle, or NULL when the queue is full or out of memory.
 */
struct pgw_item *pgw_submit(struct pgw *p, size_t stmt, const char *const *values, pgw_done_fn done,
                            void *arg);

/*
 * The submitter lost interest (e.g. its request timed out). A statement not yet sent is
 * dropped; one already in flight still completes (its write may commit) but no callback runs.
 * Returns true when the statement was dropped before being sent.
 */
bool pgw_item_cancel(struct pgw_item *item);

/* Hand back every queued statement (not the batch in flight, whose outcome is awaited; but
 * after a lost connection that batch is queued again and is handed back too): each callback
 * runs with PGW_DIVERTED, in submission order. Returns how many. */
size_t pgw_divert(struct pgw *p);

bool pgw_connected(const struct pgw *p); /* connected and statements prepared */

/* Connected, but the batch in flight was sent more than MS milliseconds ago and has not
 * committed: the database is frozen or far too slow. */
bool pgw_stalled(const struct pgw *p, uint64_t ms);

/* Statements submitted and not yet finished (queued or in the batch in flight). */
size_t pgw_pending(const struct pgw *p);

/* Statements waiting to be sent (not in flight). */
size_t pgw_queued(const struct pgw *p);

/*
 * Exposed for tests: the PostgreSQL array literal of N values (NULL entries are NULL elements)
 * into a malloc'd NUL-terminated string, or NULL when out of memory.
 */
char *pgw_array_literal(const char *const *values, size_t n);

/* A reloaded configuration's batch size, batch delay, queue bound and reconnect ceiling; they
 * apply from the next batch (what is queued stays queued). */
void pgw_set_tuning(struct pgw *p, uint32_t batch_size, uint32_t batch_delay_ms,
                    uint32_t pipeline_depth, uint32_t queue_size, uint32_t reconnect_max_ms);

/* Route CONN's server messages (warnings; notices are filtered out below WARNING) to the JSON
 * log instead of libpq's default, a raw line on stderr. WHO names the connection's owner. */
void pgw_log_notices(PGconn *conn, const char *who);

#endif
