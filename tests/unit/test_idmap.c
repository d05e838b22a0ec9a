/*
 * Unit tests for idmap.c: hits, misses, the first key kept, eviction of the oldest entry when
 * full (and its bucket chain intact), caching off, the interned key table's bound.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <string.h>

#include "idmap.h"

static void test_get_put(void **state)
{
    (void)state;
    struct idmap m;
    assert_int_equal(idmap_init(&m, 4), 0);
    assert_null(idmap_get(&m, 1));
    idmap_put(&m, 1, "pk1");
    idmap_put(&m, -5, "pk2");
    assert_string_equal(idmap_get(&m, 1), "pk1");
    assert_string_equal(idmap_get(&m, -5), "pk2");
    idmap_put(&m, 1, "other"); /* a run belongs to one process: the first key stays */
    assert_string_equal(idmap_get(&m, 1), "pk1");
    /* interned: the same key text is one copy */
    idmap_put(&m, 2, "pk1");
    assert_ptr_equal(idmap_get(&m, 1), idmap_get(&m, 2));
    idmap_clear(&m);
}

static void test_eviction_of_the_oldest(void **state)
{
    (void)state;
    struct idmap m;
    assert_int_equal(idmap_init(&m, 3), 0);
    /* 3 slots, 4 buckets: ids 0..99 collide in chains; evictions must keep chains intact */
    for (int64_t id = 0; id < 100; id++) {
        char pk[16];
        snprintf(pk, sizeof(pk), "p%d", (int)(id % 5));
        idmap_put(&m, id, pk);
        assert_non_null(idmap_get(&m, id));
        if (id >= 3)
            assert_null(idmap_get(&m, id - 3)); /* the oldest is gone */
        for (int64_t k = id - 2; k <= id; k++)
            if (k >= 0) {
                char want[16];
                snprintf(want, sizeof(want), "p%d", (int)(k % 5));
                assert_string_equal(idmap_get(&m, k), want);
            }
    }
    assert_int_equal(m.count, 3);
    idmap_clear(&m);
}

static void test_off_and_bounds(void **state)
{
    (void)state;
    struct idmap m;
    assert_int_equal(idmap_init(&m, 0), 0);
    idmap_put(&m, 1, "pk");
    assert_null(idmap_get(&m, 1));
    idmap_clear(&m);

    assert_int_equal(idmap_init(&m, 20000), 0);
    char longkey[IDMAP_KEY_MAX + 1];
    memset(longkey, 'k', IDMAP_KEY_MAX);
    longkey[IDMAP_KEY_MAX] = '\0';
    idmap_put(&m, 7, longkey); /* too long: not cached */
    assert_null(idmap_get(&m, 7));
    /* more distinct keys than the interned table holds: the rest are not cached */
    for (int i = 0; i < IDMAP_MAX_KEYS + 10; i++) {
        char pk[16];
        snprintf(pk, sizeof(pk), "k%d", i);
        idmap_put(&m, i + 100, pk);
    }
    assert_non_null(idmap_get(&m, 100));
    assert_null(idmap_get(&m, 100 + IDMAP_MAX_KEYS + 5));
    idmap_put(&m, 99999, "k0"); /* a known key still caches */
    assert_string_equal(idmap_get(&m, 99999), "k0");
    idmap_clear(&m);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_get_put),
        cmocka_unit_test(test_eviction_of_the_oldest),
        cmocka_unit_test(test_off_and_bounds),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
