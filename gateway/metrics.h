/*
 * metrics: the pieces of the Prometheus exposition on the admin listener (GET /metrics).
 *
 * Counting. Every worker thread owns its counters (struct gw_stats, stats.h): histograms and
 * code tables below are written by that thread alone with relaxed atomics, nothing is locked
 * on the request path, and the admin thread sums all threads when it is scraped. A histogram's
 * buckets are stored per bucket (not cumulative), so an observation is one increment; the
 * renderer makes them cumulative.
 *
 * Rendering. metrics_text is a growable text buffer; metrics_family writes a family's HELP and
 * TYPE lines, metrics_sample one sample, metrics_hist_render a histogram summed over threads
 * (its _bucket lines with le="..." in seconds, _sum in seconds, _count). Label values are
 * escaped as the text format requires (backslash, double quote, newline).
 */
#ifndef GW_METRICS_H
#define GW_METRICS_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Upper bounds of the finite buckets, in seconds; the last bucket is +Inf. */
#define METRICS_NBUCKETS 15
extern const double metrics_bucket_le[METRICS_NBUCKETS - 1];

struct metrics_hist {
    atomic_uint_fast64_t bucket[METRICS_NBUCKETS]; /* per bucket, not cumulative */
    atomic_uint_fast64_t sum_us;
};

/* One observation of US microseconds (owner thread only). */
void metrics_observe(struct metrics_hist *h, uint64_t us);

/* Counts per code (refusal codes): a small table one thread writes and the admin thread
 * reads. CODE must be a string of static storage (the error tables' codes are); a code past
 * the table's room is counted under "other". */
#define METRICS_MAX_CODES 96
struct metrics_codes {
    _Atomic(const char *) code[METRICS_MAX_CODES];
    atomic_uint_fast64_t n[METRICS_MAX_CODES];
    atomic_uint_fast64_t other;
};
void metrics_code_inc(struct metrics_codes *t, const char *code);

/* Status codes counted one by one: 100..599; anything else is counted as 0 ("other"). */
#define METRICS_STATUS_MIN 100
#define METRICS_STATUS_SLOTS 501 /* 100..599, and the last slot for anything else */
static inline unsigned metrics_status_slot(int status)
{
    return status >= 100 && status <= 599 ? (unsigned)(status - 100) : METRICS_STATUS_SLOTS - 1;
}

/* ---- rendering ---- */

struct metrics_text {
    char *s;
    size_t len, cap;
    bool failed; /* out of memory: the text is incomplete */
};

void metrics_printf(struct metrics_text *t, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
void metrics_family(struct metrics_text *t, const char *name, const char *type, const char *help);

/* NAME{LABELS} VALUE; LABELS is the text between the braces (already escaped) or NULL. */
void metrics_sample(struct metrics_text *t, const char *name, const char *labels, double value);
void metrics_sample_u64(struct metrics_text *t, const char *name, const char *labels,
                        uint64_t value);

/* The sum of N histograms (one per thread) as NAME_bucket/_sum/_count with LABELS (or NULL)
 * in front of le. */
void metrics_hist_render(struct metrics_text *t, const char *name, const char *labels,
                         const struct metrics_hist *const *hs, size_t n);

/* Escape a label value into BUF (NUL-terminated, cut to SIZE). Returns BUF. */
char *metrics_label_escape(const char *v, char *buf, size_t size);

void metrics_text_free(struct metrics_text *t);

#endif
