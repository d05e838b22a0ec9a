/*
 * idmap: a bounded runId/taskId -> processKey cache, one per worker thread per kind (no locks).
 *
 * Fixed capacity chosen at creation ([audit] map_cache_size); when full, the oldest entry is
 * evicted (a ring over the nodes, chained hash buckets). The database's run_process and
 * task_process tables are the truth shared by every thread and replica; this only saves the
 * lookup for runs and tasks the thread has seen. A process key is at most IDMAP_KEY_MAX - 1
 * bytes (longer keys are not cached). Keys are interned (a company has tens or hundreds of
 * processes, not millions of runs' worth): at most IDMAP_MAX_KEYS distinct keys are held, runs
 * of further processes are simply not cached.
 */
#ifndef GW_IDMAP_H
#define GW_IDMAP_H

#include <stdint.h>

#define IDMAP_KEY_MAX 256
#define IDMAP_MAX_KEYS 8192

struct idmap_node;

struct idmap {
    uint32_t cap, nbuckets, ring, count;
    int32_t *buckets;
    struct idmap_node *nodes;
    char **keys; /* interned process keys: open addressing, 2 x IDMAP_MAX_KEYS slots */
    uint32_t nkeys;
};

/* Capacity CAP (0: caching off, every get misses). 0, or -1 when out of memory. */
int idmap_init(struct idmap *m, uint32_t cap);
void idmap_clear(struct idmap *m);

/* The process key of ID, or NULL. Valid until the next put. */
const char *idmap_get(const struct idmap *m, int64_t id);

/* Remember ID -> PK (copied). An id already present keeps its key: a run or task belongs to
 * one process for its whole life. */
void idmap_put(struct idmap *m, int64_t id, const char *pk);

#endif
