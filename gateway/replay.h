/*
 * replay: puts the spool's records into PostgreSQL (design.md §5), on a thread of its own with
 * its own blocking libpq connection (never a worker loop).
 *
 * It works whenever closed segments exist and the database answers: at start-up for what an
 * earlier process left, and once the database is back after an outage. A pass takes the closed
 * segments oldest first and makes two sweeps over them:
 *   1. the learned runId/taskId maps of every segment, so that
 *   2. each segment's records can be valued: an accepted FinishRun or task action spooled while
 *      its process was unknown is looked up again (run_process, task_process) and, if the map
 *      knows the process by now, gets its process key and KPI values (kpi.c, with the settings
 *      of that moment); then every record of the segment is inserted - in batches, one
 *      statement per table per batch, spooled = true, ON CONFLICT DO NOTHING on the same keys
 *      as live inserts, so a record that was also committed live stays one row - and committed
 *      in one transaction, after which the segment file is deleted.
 * Within a segment a request's record precedes its outcome, and segments go in order, so an
 * outcome is never replayed before its record.
 *
 * A batch PostgreSQL refuses is retried row by row (a savepoint each); a row refused alone is
 * kept in the spool's refused.seg, logged and counted, and the replay goes on. A lost
 * connection leaves the segment in place; the pass resumes after a backoff.
 *
 * Rate: at most rows_per_second rows (sleeping between batches), so that live traffic keeps
 * its share of the database.
 */
#ifndef GW_REPLAY_H
#define GW_REPLAY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct spool;
struct config;
struct replay;

struct replay_options {
    const char *conninfo;      /* borrowed for the replay's life */
    struct config *cfg;        /* [process] sections for KPI settings (a reference is taken) */
    uint32_t rows_per_second;  /* 0: no limit */
    uint32_t batch_rows;       /* rows per statement */
    uint32_t reconnect_max_ms; /* backoff ceiling */
    bool migrate_first;        /* apply migrations before the first replay (start-up missed it) */
};

struct replay *replay_start(struct spool *s, const struct replay_options *o, char *err,
                            size_t errlen);

/* Stop after the batch in hand (a segment half replayed stays and is replayed again later:
 * idempotent). */
void replay_stop(struct replay *r);

/* A reloaded configuration: its [process] sections value the records replayed from now on
 * (takes a reference to CFG; the previous one is dropped). Any thread. */
void replay_set_config(struct replay *r, struct config *cfg);

/* Replaying right now (a pass is under way). */
bool replay_active(const struct replay *r);

#endif
