/*
 * pgw: one asynchronous PostgreSQL connection per worker thread, driven by the worker's event
 * loop: non-blocking libpq (PQconnectStartParams/PQconnectPoll, PQsetnonblocking), prepared
 * statements, pipeline mode, group commit.
 *
 * Group commit. Submitted statements wait in a FIFO. A batch (at most batch_size statements, or
 * whatever arrived within batch_delay of the first) is sent as one pipeline ending with one
 * Sync: PostgreSQL runs it as one implicit transaction, so the batch costs one round trip and
 * one commit, and every statement in it is durable when the Sync's result arrives. Only then
 * are the statements' callbacks called. One batch is in flight at a time; what arrives
 * meanwhile forms the next batch, so under load batches grow by themselves.
 *
 * Failures. If a statement fails, PostgreSQL aborts the rest of the batch and rolls the
 * transaction back: the failing statement's callback gets the error, the others are sent again
 * in the next batch. If the connection breaks with a batch in flight, whether it committed is
 * unknown; the batch is sent again after reconnecting, which is safe because every write the
 * gateway makes is idempotent (INSERT ... ON CONFLICT DO NOTHING on the record's key).
 * Reconnects back off exponentially up to reconnect_max; statements are prepared again on each
 * new connection.
 *
 * Never blocks: host names in the connection string are resolved with evdns and passed to
 * libpq as hostaddr, because libpq's own lookup blocks.
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

struct pgw_statement {
    const char *name; /* prepared statement name */
    const char *sql;  /* with $1.. placeholders */
    int nparams;
};

struct pgw_options {
    const char *conninfo; /* libpq connection string or URI (borrowed for the pgw's life) */
    const char *name;     /* for logs, e.g. "thread 0" */
    const struct pgw_statement *statements; /* prepared on every (re)connect; borrowed */
    size_t nstatements;
    uint32_t batch_size;
    uint32_t batch_delay_ms;
    uint32_t queue_size; /* statements waiting; pgw_submit refuses beyond */
    uint32_t reconnect_max_ms;
    const char *listen_channel; /* LISTEN on connect, or NULL */
    /* Called (on the loop) after each successful (re)connect, and for each NOTIFY. */
    void (*on_connected)(void *arg);
    void (*on_notify)(void *arg, const char *channel, const char *payload);
    void *arg;
};

/*
 * Callback of a submitted statement: OK true when its batch committed (RES then holds its
 * result: rows for a SELECT; borrowed, cleared after the callback), false when PostgreSQL
 * refused this very statement, or pgw_free dropped it unwritten (ERROR says which; RES may be
 * NULL). Never called after pgw_item_cancel.
 */
typedef void (*pgw_done_fn)(void *arg, bool ok, const PGresult *res, const char *error);

/* Start connecting at once. Returns NULL when out of memory or CONNINFO does not parse
 * (message in ERRBUF). */
struct pgw *pgw_new(struct event_base *base, struct evdns_base *dns, const struct pgw_options *opts,
                    char *errbuf, size_t errlen);

/* Close the connection; statements not yet committed are dropped, their callbacks called with
 * OK false (not those of cancelled items). */
void pgw_free(struct pgw *p);

/*
 * Queue statement STMT (index into opts->statements) with NPARAMS text VALUES (copied; NULL
 * entries are SQL NULL). DONE may be NULL (pgw logs a refused statement itself). Returns a handle,
 * or NULL when the queue is full or out of memory.
 */
struct pgw_item *pgw_submit(struct pgw *p, size_t stmt, const char *const *values, pgw_done_fn done,
                            void *arg);

/*
 * The submitter lost interest (e.g. its request timed out). A statement not yet sent is
 * dropped; one already in flight still completes (its write may commit) but no callback runs.
 * Returns true when the statement was dropped before being sent.
 */
bool pgw_item_cancel(struct pgw_item *item);

bool pgw_connected(const struct pgw *p); /* connected and statements prepared */

/* Statements submitted and not yet finished (queued or in the batch in flight). */
size_t pgw_pending(const struct pgw *p);

#endif
