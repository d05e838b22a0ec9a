/*
 * Unit tests for ledger.c's texts: the record times (formatted once per second per thread,
 * then reused), against gmtime + strftime for times across second, day and year boundaries.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <string.h>
#include <time.h>

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

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_record_times),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
