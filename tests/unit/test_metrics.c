/*
 * Unit tests for metrics.c: bucket boundaries (le is inclusive), histograms summed over
 * threads and rendered cumulative, the per-thread code table (and its overflow), label
 * escaping and the text buffer's growth.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "metrics.h"

static uint64_t bucket(const struct metrics_hist *h, size_t i)
{
    return atomic_load(&h->bucket[i]);
}

static void test_observe_boundaries(void **state)
{
    struct metrics_hist h;
    memset(&h, 0, sizeof(h));
    metrics_observe(&h, 0);          /* le 0.0005 */
    metrics_observe(&h, 500);        /* exactly 0.0005: still the first bucket */
    metrics_observe(&h, 501);        /* le 0.001 */
    metrics_observe(&h, 10000000);   /* exactly 10 s: the last finite bucket */
    metrics_observe(&h, 10000001);   /* +Inf */
    metrics_observe(&h, UINT32_MAX); /* +Inf */
    assert_int_equal(bucket(&h, 0), 2);
    assert_int_equal(bucket(&h, 1), 1);
    assert_int_equal(bucket(&h, METRICS_NBUCKETS - 2), 1);
    assert_int_equal(bucket(&h, METRICS_NBUCKETS - 1), 2);
    assert_int_equal(atomic_load(&h.sum_us),
                     (uint64_t)500 + 501 + 10000000 + 10000001 + UINT32_MAX);
}

static void test_histogram_renders_cumulative_over_threads(void **state)
{
    struct metrics_hist a, b;
    memset(&a, 0, sizeof(a));
    memset(&b, 0, sizeof(b));
    metrics_observe(&a, 300);      /* 0.0003 s */
    metrics_observe(&b, 2000);     /* 0.002 s */
    metrics_observe(&b, 20000000); /* 20 s */
    const struct metrics_hist *hs[2] = {&a, &b};
    struct metrics_text t = {0};
    metrics_hist_render(&t, "x_seconds", "route=\"R\"", hs, 2);
    assert_false(t.failed);
    assert_non_null(strstr(t.s, "x_seconds_bucket{route=\"R\",le=\"0.0005\"} 1\n"));
    assert_non_null(strstr(t.s, "x_seconds_bucket{route=\"R\",le=\"0.001\"} 1\n"));
    assert_non_null(strstr(t.s, "x_seconds_bucket{route=\"R\",le=\"0.0025\"} 2\n"));
    assert_non_null(strstr(t.s, "x_seconds_bucket{route=\"R\",le=\"10\"} 2\n"));
    assert_non_null(strstr(t.s, "x_seconds_bucket{route=\"R\",le=\"+Inf\"} 3\n"));
    assert_non_null(strstr(t.s, "x_seconds_sum{route=\"R\"} 20.002300\n"));
    assert_non_null(strstr(t.s, "x_seconds_count{route=\"R\"} 3\n"));
    metrics_text_free(&t);

    metrics_hist_render(&t, "y", NULL, hs, 1);
    assert_non_null(strstr(t.s, "y_bucket{le=\"+Inf\"} 1\ny_sum 0.000300\ny_count 1\n"));
    metrics_text_free(&t);
}

static void test_code_table(void **state)
{
    static struct metrics_codes t; /* zeroed */
    char *dyn = strdup("a.b");     /* the same text at another address counts as the same code */
    metrics_code_inc(&t, "a.b");
    metrics_code_inc(&t, dyn);
    metrics_code_inc(&t, "c.d");
    assert_string_equal(atomic_load(&t.code[0]), "a.b");
    assert_int_equal(atomic_load(&t.n[0]), 2);
    assert_string_equal(atomic_load(&t.code[1]), "c.d");
    assert_int_equal(atomic_load(&t.n[1]), 1);
    free(dyn);
    static char names[METRICS_MAX_CODES + 5][16];
    for (int i = 0; i < METRICS_MAX_CODES + 5; i++) {
        snprintf(names[i], sizeof(names[i]), "code.%d", i);
        metrics_code_inc(&t, names[i]);
    }
    /* two slots were taken before: 7 codes did not fit */
    assert_int_equal(atomic_load(&t.other), 7);
}

static void test_text_grows_and_escapes(void **state)
{
    struct metrics_text t = {0};
    char big[5000];
    memset(big, 'x', sizeof(big) - 1);
    big[sizeof(big) - 1] = 0;
    for (int i = 0; i < 20; i++)
        metrics_printf(&t, "%s\n", big);
    assert_false(t.failed);
    assert_int_equal(t.len, 20 * 5000);
    assert_int_equal(strlen(t.s), t.len);
    metrics_text_free(&t);

    char esc[64];
    assert_string_equal(metrics_label_escape("a\"b\\c\nd", esc, sizeof(esc)), "a\\\"b\\\\c\\nd");
    assert_string_equal(metrics_label_escape("abcdef", esc, 4), "ab"); /* cut, still a string */

    metrics_family(&t, "m_total", "counter", "Help.");
    metrics_sample_u64(&t, "m_total", "code=\"200\"", 7);
    metrics_sample(&t, "g", NULL, 1.5);
    assert_string_equal(t.s, "# HELP m_total Help.\n# TYPE m_total counter\nm_total{code=\"200\"} "
                             "7\ng 1.5\n");
    metrics_text_free(&t);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_observe_boundaries),
        cmocka_unit_test(test_histogram_renders_cumulative_over_threads),
        cmocka_unit_test(test_code_table),
        cmocka_unit_test(test_text_grows_and_escapes),
    };
    return cmocka_run_group_tests_name("metrics", tests, NULL, NULL);
}
