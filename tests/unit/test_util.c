/*
 * Unit tests for util.c: cutting UTF-8 text at character boundaries (a cut in the middle of a
 * character made PostgreSQL refuse the whole audit record), request ids.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <inttypes.h>
#include <stdbool.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "util.h"

/* Is S[0..N) valid UTF-8 (well-formed sequences only)? */
static bool valid_utf8(const unsigned char *s, size_t n)
{
    size_t i = 0;
    while (i < n) {
        unsigned char c = s[i];
        size_t k = c < 0x80 ? 1 : (c >> 5) == 6 ? 2 : (c >> 4) == 14 ? 3 : (c >> 3) == 30 ? 4 : 0;
        if (k == 0 || i + k > n)
            return false;
        for (size_t j = 1; j < k; j++)
            if ((s[i + j] & 0xC0) != 0x80)
                return false;
        i += k;
    }
    return true;
}

static void test_utf8_prefix_never_splits_a_character(void **state)
{
    (void)state;
    /* 1, 2, 3 and 4 byte characters: a, é, €, 😀 */
    const char *text = "a\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80z\xc3\xa9";
    size_t len = strlen(text);
    for (size_t max = 0; max <= len + 2; max++) {
        size_t n = util_utf8_prefix(text, len, max);
        assert_true(n <= max && n <= len);
        assert_true(valid_utf8((const unsigned char *)text, n));
        /* the longest such prefix: one more character would not fit */
        if (n < len && n < max) {
            size_t next = n + 1;
            while (next < len && ((unsigned char)text[next] & 0xC0) == 0x80)
                next++;
            assert_true(next > max);
        }
    }
    assert_int_equal(util_utf8_prefix(text, len, 2), 1);      /* not half of é */
    assert_int_equal(util_utf8_prefix(text, len, 5), 3);      /* not two thirds of € */
    assert_int_equal(util_utf8_prefix(text, len, 9), 10 - 4); /* not three quarters of 😀 */
    assert_int_equal(util_utf8_prefix(text, len, 10), 10);
}

static void test_copy_text_cuts_to_fit(void **state)
{
    (void)state;
    char buf[5];
    assert_string_equal(util_copy_text(buf, sizeof(buf), "abc"), "abc");
    assert_string_equal(util_copy_text(buf, sizeof(buf), "abcdef"), "abcd");
    /* "ab€" is 5 bytes: the euro sign does not fit whole and is left out */
    assert_string_equal(util_copy_text(buf, sizeof(buf), "ab\xe2\x82\xac"), "ab");
    char one[1];
    assert_string_equal(util_copy_text(one, sizeof(one), "x"), "");
}

static void test_request_ids(void **state)
{
    (void)state;
    char a[37], b[37];
    util_uuid7(a);
    util_uuid7(b);
    assert_int_equal(strlen(a), 36);
    assert_true(strcmp(a, b) < 0); /* ordered within a thread */
    assert_true(util_request_id_ok(a, 36));
    assert_false(util_request_id_ok("a b", 3));
    assert_false(util_request_id_ok("", 0));
}

/* util_cpus_available against fake cgroup directories: v2 cpu.max, v1 cfs files, none. */
static void write_file(const char *dir, const char *name, const char *text)
{
    char path[512];
    snprintf(path, sizeof(path), "%s/%s", dir, name);
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs(text, f);
    fclose(f);
}

static void test_cpus_available_honours_the_cgroup_quota(void **state)
{
    char dir[] = "/tmp/gw-cgroup-XXXXXX";
    assert_non_null(mkdtemp(dir));
    cpu_set_t set;
    assert_int_equal(sched_getaffinity(0, sizeof(set), &set), 0);
    int affinity = CPU_COUNT(&set);

    /* no cgroup files: the affinity mask */
    assert_int_equal(util_cpus_available(dir, 256), affinity);
    assert_int_equal(util_cpus_available(dir, 1), 1); /* capped by MAX */
    /* v2, no quota */
    write_file(dir, "cpu.max", "max 100000\n");
    assert_int_equal(util_cpus_available(dir, 256), affinity);
    /* v2, half a CPU: rounded up to 1 */
    write_file(dir, "cpu.max", "50000 100000\n");
    assert_int_equal(util_cpus_available(dir, 256), 1);
    /* v2, a quota above the machine's CPUs: the affinity mask wins */
    write_file(dir, "cpu.max", "100000000 100000\n");
    assert_int_equal(util_cpus_available(dir, 256), affinity);
    char path[600];
    snprintf(path, sizeof(path), "%s/cpu.max", dir);
    unlink(path);
    /* v1 */
    char sub[600];
    snprintf(sub, sizeof(sub), "%s/cpu", dir);
    assert_int_equal(mkdir(sub, 0700), 0);
    write_file(dir, "cpu/cpu.cfs_quota_us", "-1\n");
    write_file(dir, "cpu/cpu.cfs_period_us", "100000\n");
    assert_int_equal(util_cpus_available(dir, 256), affinity);
    write_file(dir, "cpu/cpu.cfs_quota_us", "100000\n");
    assert_int_equal(util_cpus_available(dir, 256), 1);
    snprintf(path, sizeof(path), "%s/cpu/cpu.cfs_quota_us", dir);
    unlink(path);
    snprintf(path, sizeof(path), "%s/cpu/cpu.cfs_period_us", dir);
    unlink(path);
    rmdir(sub);
    rmdir(dir);
}

/* The number formatters write what snprintf writes. */
static void test_number_formatting_matches_snprintf(void **state)
{
    (void)state;
    const int64_t vals[] = {0,
                            1,
                            -1,
                            9,
                            10,
                            99,
                            100,
                            12345,
                            -12345,
                            2147483647,
                            -2147483648LL,
                            INT64_MAX,
                            INT64_MIN,
                            1000000000000LL};
    for (size_t i = 0; i < sizeof(vals) / sizeof(vals[0]); i++) {
        char got[24], want[24];
        size_t n = util_fmt_i64(got, vals[i]);
        snprintf(want, sizeof(want), "%" PRId64, vals[i]);
        assert_string_equal(got, want);
        assert_int_equal(n, strlen(want));
    }
    const uint64_t ms[] = {0, 1, 9, 10, 99, 100, 999, 1000, 1001, 12345, 3600000, 86399999};
    for (size_t i = 0; i < sizeof(ms) / sizeof(ms[0]); i++) {
        char got[32], want[32];
        size_t n = util_fmt_millis(got, ms[i]);
        snprintf(want, sizeof(want), "%" PRIu64 ".%03u", ms[i] / 1000, (unsigned)(ms[i] % 1000));
        assert_string_equal(got, want);
        assert_int_equal(n, strlen(want));
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_utf8_prefix_never_splits_a_character),
        cmocka_unit_test(test_copy_text_cuts_to_fit),
        cmocka_unit_test(test_request_ids),
        cmocka_unit_test(test_cpus_available_honours_the_cgroup_quota),
        cmocka_unit_test(test_number_formatting_matches_snprintf),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
