/*
 * Unit tests for util.c: cutting UTF-8 text at character boundaries (a cut in the middle of a
 * character made PostgreSQL refuse the whole audit record), request ids.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdbool.h>
#include <string.h>

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

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_utf8_prefix_never_splits_a_character),
        cmocka_unit_test(test_copy_text_cuts_to_fit),
        cmocka_unit_test(test_request_ids),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
