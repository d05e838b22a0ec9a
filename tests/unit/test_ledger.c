/*
 * Unit tests for ledger.c's texts: the record times (formatted once per second per thread,
 * then reused), against gmtime + strftime for times across second, day and year boundaries;
 * the KPI settings' text (kept for the last settings seen), which must follow every field.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "identity.h"
#include "kpi.h"
#include "ledger.h"

static void expect_time(uint64_t ms)
{
    time_t s = (time_t)(ms / 1000);
    struct tm tm;
    gmtime_r(&s, &tm);
    char want[64], date[32], got[40];
    strftime(date, sizeof(date), "%Y-%m-%d %H:%M:%S", &tm);
    snprintf(want, sizeof(want), "%s.%03u+00", date, (unsigned)(ms % 1000));
    ledger_time(ms, got, sizeof(got));
    assert_string_equal(got, want);
}

static void test_record_times(void **state)
{
    (void)state;
    /* 2026-12-31 23:59:58.000 UTC, stepping 7 ms across the new year: the cached second
     * changes every ~143 calls, the date and the year with it */
    uint64_t t0 = 1798761598000ull;
    for (uint64_t ms = t0; ms < t0 + 4000; ms += 7)
        expect_time(ms);
    /* back and forth between seconds (the cache is not only moving forward) */
    for (int i = 0; i < 10; i++) {
        expect_time(t0 + (uint64_t)(i % 2) * 1000 + 999);
        expect_time(86400000ull * 365 * (uint64_t)(i + 1) + 1);
    }
    expect_time(0);
    /* a buffer too small for the text: cut, still terminated */
    char small[8];
    ledger_time(t0, small, sizeof(small));
    assert_string_equal(small, "2026-12");
}

/* The kpi_settings text of an accepted FinishRun valued with ST (FROM_TABLE: its source). */
static void settings_text(const struct kpi_settings *st, bool from_table, char *out, size_t len)
{
    struct identity who = {"acme", "bot"};
    struct ledger_audit_in in = {
        .kind = LEDGER_RUN,
        .request_id = "r1",
        .received_wall_ms = 1798761598000ull,
        .instance = "gw",
        .who = &who,
        .have_id = true,
        .id = 501,
        .process_key = "pk1",
        .accepted = true,
        .settings = st,
        .settings_from_table = from_table,
    };
    struct ledger_rec *r = ledger_audit_record(&in);
    assert_non_null(r);
    const char *t = ledger_get(r, LF_KPI_SETTINGS);
    assert_non_null(t);
    snprintf(out, len, "%s", t);
    free(r);
}

/* Each field changed alone, and the source, change the text; the same settings again give
 * the same text (the kept one). */
static void test_settings_text_follows_every_field(void **state)
{
    (void)state;
    const struct kpi_settings base = {.tasks_enabled = false,
                                      .seconds_per_run = 60,
                                      .seconds_per_task = 30,
                                      .advanced_mode = false,
                                      .default_entries = 2,
                                      .seconds_per_entry = 5};
    char first[512], again[512], other[512];
    settings_text(&base, true, first, sizeof(first));
    assert_non_null(strstr(first, "\"secondsPerRun\": 60"));
    assert_non_null(strstr(first, "\"source\": \"table\""));
    settings_text(&base, true, again, sizeof(again));
    assert_string_equal(first, again);
    settings_text(&base, false, other, sizeof(other));
    assert_non_null(strstr(other, "\"source\": \"config\""));
    for (int f = 0; f < 6; f++) {
        struct kpi_settings st = base;
        switch (f) {
        case 0:
            st.tasks_enabled = true;
            break;
        case 1:
            st.seconds_per_run = 61;
            break;
        case 2:
            st.seconds_per_task = 31;
            break;
        case 3:
            st.advanced_mode = true;
            break;
        case 4:
            st.default_entries = 3;
            break;
        default:
            st.seconds_per_entry = 6;
            break;
        }
        settings_text(&base, true, again, sizeof(again)); /* keep BASE's text */
        settings_text(&st, true, other, sizeof(other));
        assert_string_not_equal(first, other);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_record_times),
        cmocka_unit_test(test_settings_text_follows_every_field),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
