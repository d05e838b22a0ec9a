/*
 * audit: the KPI ledger (design.md §5-6). Plugs into the request pipeline:
 *
 *   AUDIT phase     FinishRun and task actions: find the process of the runId / taskId (per-thread
 *                   cache, else the database), compute the KPI values (kpi.c), apply the
 *                   process's override bounds, write the record through the thread's pgw and
 *                   let the request go on only once the record is committed. Not committed within
 *                   [audit] commit_timeout (database down or slow): 503 with Retry-After, nothing
 *                   forwarded.
 *   RESPONSE phase  learn runId -> processKey and taskId -> processKey from the answers of
 *                   StartOrGetRun/StartRun, TakeNext, TakeMany, CreateAndTakeTask, CreateTask(s);
 *                   read Anymate's succeeded/message for the outcome.
 *   done            write the outcome row of an audited request, or the rejected record of a
 *                   refused FinishRun / task action; count every other request by endpoint.
 *
 * Everything runs on the worker's loop; the only I/O is the thread's own pgw connection.
 * Without [audit] database the ledger is off: nothing is recorded or held back, and /readyz
 * says so.
 */
#ifndef GW_AUDIT_H
#define GW_AUDIT_H

#include <stdbool.h>
#include <stddef.h>

struct gw_ctx;
struct audit_thread;
struct config;
struct spool;

/* Register the hooks. Once, before workers start. 0, or -1. */
int audit_init(void);

/* Per-worker state, created with the worker (NULL and no error when the ledger is off). SPOOL:
 * the process's spool, or NULL. Returns -1 with a message in ERRBUF on failure. */
int audit_thread_new(struct gw_ctx *ctx, struct spool *spool, struct audit_thread **out,
                     char *errbuf, size_t errlen);
void audit_thread_free(struct audit_thread *a);

/* A reloaded configuration (the worker has made CFG its ctx->cfg): the database writer's
 * batch size and delay, queue bound and reconnect ceiling follow it. A accepts NULL. */
void audit_thread_reconfigure(struct audit_thread *a, const struct config *cfg);

/* For /readyz: connected to the database (true when the ledger is off). */
bool audit_thread_ready(const struct audit_thread *a);

/* Shutdown: nothing left to write, or nothing can be written (the database is away); true
 * when the ledger is off. */
bool audit_thread_flushed(const struct audit_thread *a);

#endif
