/*
 * metrics: histograms, code tables and the text exposition format (see metrics.h).
 */
#include "metrics.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* From half a millisecond (a cached pass-through on loopback) to ten seconds (the default
 * request_timeout is 30 s; slower requests land in +Inf). */
const double metrics_bucket_le[METRICS_NBUCKETS - 1] = {
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10};

void metrics_observe(struct metrics_hist *h, uint64_t us)
{
    size_t i = 0;
    while (i < METRICS_NBUCKETS - 1 && (double)us > metrics_bucket_le[i] * 1e6)
        i++;
    atomic_fetch_add_explicit(&h->bucket[i], 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&h->sum_us, us, memory_order_relaxed);
}

void metrics_code_inc(struct metrics_codes *t, const char *code)
{
    for (size_t i = 0; i < METRICS_MAX_CODES; i++) {
        const char *c = atomic_load_explicit(&t->code[i], memory_order_relaxed);
        if (c == NULL) {
            /* claim the slot: the count first, then the code, so a reader that sees the code
             * sees a count that belongs to it */
            atomic_store_explicit(&t->n[i], 1, memory_order_relaxed);
            atomic_store_explicit(&t->code[i], code, memory_order_release);
            return;
        }
        if (c == code || strcmp(c, code) == 0) {
            atomic_fetch_add_explicit(&t->n[i], 1, memory_order_relaxed);
            return;
        }
    }
    atomic_fetch_add_explicit(&t->other, 1, memory_order_relaxed);
}

/* ---- text ---- */

static bool grow(struct metrics_text *t, size_t need)
{
    if (t->failed)
        return false;
    if (t->len + need + 1 <= t->cap)
        return true;
    size_t cap = t->cap ? t->cap : 16384;
    while (cap < t->len + need + 1)
        cap *= 2;
    char *s = realloc(t->s, cap);
    if (!s) {
        t->failed = true;
        return false;
    }
    t->s = s;
    t->cap = cap;
    return true;
}

void metrics_printf(struct metrics_text *t, const char *fmt, ...)
{
    for (int attempt = 0; attempt < 2; attempt++) {
        size_t room = t->cap > t->len ? t->cap - t->len : 0;
        va_list ap;
        va_start(ap, fmt);
        int n = vsnprintf(t->s ? t->s + t->len : NULL, room, fmt, ap);
        va_end(ap);
        if (n < 0) {
            t->failed = true;
            return;
        }
        if ((size_t)n < room) {
            t->len += (size_t)n;
            return;
        }
        if (!grow(t, (size_t)n))
            return;
    }
}

void metrics_family(struct metrics_text *t, const char *name, const char *type, const char *help)
{
    metrics_printf(t, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

void metrics_sample(struct metrics_text *t, const char *name, const char *labels, double value)
{
    if (labels && labels[0])
        metrics_printf(t, "%s{%s} %.17g\n", name, labels, value);
    else
        metrics_printf(t, "%s %.17g\n", name, value);
}

void metrics_sample_u64(struct metrics_text *t, const char *name, const char *labels,
                        uint64_t value)
{
    if (labels && labels[0])
        metrics_printf(t, "%s{%s} %llu\n", name, labels, (unsigned long long)value);
    else
        metrics_printf(t, "%s %llu\n", name, (unsigned long long)value);
}

void metrics_hist_render(struct metrics_text *t, const char *name, const char *labels,
                         const struct metrics_hist *const *hs, size_t n)
{
    uint64_t b[METRICS_NBUCKETS] = {0}, sum_us = 0;
    for (size_t k = 0; k < n; k++) {
        for (size_t i = 0; i < METRICS_NBUCKETS; i++)
            b[i] += atomic_load_explicit(&hs[k]->bucket[i], memory_order_relaxed);
        sum_us += atomic_load_explicit(&hs[k]->sum_us, memory_order_relaxed);
    }
    const char *sep = labels && labels[0] ? "," : "";
    const char *lb = labels ? labels : "";
    uint64_t cum = 0;
    for (size_t i = 0; i < METRICS_NBUCKETS; i++) {
        cum += b[i];
        if (i < METRICS_NBUCKETS - 1)
            metrics_printf(t, "%s_bucket{%s%sle=\"%g\"} %llu\n", name, lb, sep,
                           metrics_bucket_le[i], (unsigned long long)cum);
        else
            metrics_printf(t, "%s_bucket{%s%sle=\"+Inf\"} %llu\n", name, lb, sep,
                           (unsigned long long)cum);
    }
    if (lb[0]) {
        metrics_printf(t, "%s_sum{%s} %.6f\n", name, lb, (double)sum_us / 1e6);
        metrics_printf(t, "%s_count{%s} %llu\n", name, lb, (unsigned long long)cum);
    } else {
        metrics_printf(t, "%s_sum %.6f\n", name, (double)sum_us / 1e6);
        metrics_printf(t, "%s_count %llu\n", name, (unsigned long long)cum);
    }
}

char *metrics_label_escape(const char *v, char *buf, size_t size)
{
    size_t o = 0;
    if (size == 0)
        return buf;
    for (; v && *v && o + 2 < size; v++) {
        if (*v == '\\' || *v == '"') {
            buf[o++] = '\\';
            buf[o++] = *v;
        } else if (*v == '\n') {
            buf[o++] = '\\';
            buf[o++] = 'n';
        } else {
            buf[o++] = *v;
        }
    }
    buf[o] = 0;
    return buf;
}

void metrics_text_free(struct metrics_text *t)
{
    free(t->s);
    t->s = NULL;
    t->len = t->cap = 0;
}
