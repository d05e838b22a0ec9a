/*
 * Unit tests for identity.c: the bot identity from a bearer token's claims.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <string.h>

#include "identity.h"

/* base64url without padding */
static void b64url(const char *in, char *out)
{
    static const char a[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    size_t n = strlen(in), o = 0;
    for (size_t i = 0; i < n; i += 3) {
        uint32_t v = (uint32_t)(unsigned char)in[i] << 16;
        if (i + 1 < n)
            v |= (uint32_t)(unsigned char)in[i + 1] << 8;
        if (i + 2 < n)
            v |= (unsigned char)in[i + 2];
        out[o++] = a[(v >> 18) & 63];
        out[o++] = a[(v >> 12) & 63];
        if (i + 1 < n)
            out[o++] = a[(v >> 6) & 63];
        if (i + 2 < n)
            out[o++] = a[v & 63];
    }
    out[o] = '\0';
}

static void bearer(const char *claims, char *out, size_t cap)
{
    static char p[6000];
    b64url(claims, p);
    snprintf(out, cap, "Bearer eyJhbGciOiJSUzI1NiJ9.%s.c2ln", p);
}

static void test_claims(void **state)
{
    (void)state;
    char auth[8192];
    struct identity id;
    bearer("{\"auth.anymate.app/CustomerKey\":\"acme\",\"auth.anymate.app/UserName\":\"mate1\","
           "\"sub\":\"42\"}",
           auth, sizeof(auth));
    identity_from_authorization(auth, &id);
    assert_string_equal(id.customer_key, "acme");
    assert_string_equal(id.subject, "mate1");
    /* without a user name, the subject */
    bearer("{\"sub\":\"42\"}", auth, sizeof(auth));
    identity_from_authorization(auth, &id);
    assert_string_equal(id.customer_key, "");
    assert_string_equal(id.subject, "42");
    /* the scheme is case-insensitive; extra spaces before the token are skipped */
    bearer("{\"sub\":\"s\"}", auth, sizeof(auth));
    memcpy(auth, "bEARER", 6);
    identity_from_authorization(auth, &id);
    assert_string_equal(id.subject, "s");
}

static void test_unreadable_tokens_give_no_identity(void **state)
{
    (void)state;
    const char *bad[] = {NULL,
                         "",
                         "Basic dXNlcjpwYXNz",
                         "Bearer",
                         "Bearer abc",
                         "Bearer a.b",
                         "Bearer a.!!!!.c",
                         "Bearer a.bm90IGpzb24.c", /* "not json" */
                         "Bearer a.WzFd.c",        /* "[1]": not an object */
                         "Bearer a.eyJzdWIiOjV9.c" /* {"sub":5}: not a string */};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        struct identity id;
        memset(&id, 'x', sizeof(id));
        identity_from_authorization(bad[i], &id);
        assert_string_equal(id.customer_key, "");
        assert_string_equal(id.subject, "");
    }
}

static void test_long_claims_are_cut_at_a_character_boundary(void **state)
{
    (void)state;
    /* 200 x "é" (2 bytes each) = 400 bytes: cut to 255 bytes would split one; 254 do not */
    char claims[1024] = "{\"sub\":\"";
    for (int i = 0; i < 200; i++)
        strcat(claims, "\xc3\xa9");
    strcat(claims, "\"}");
    char auth[4096];
    bearer(claims, auth, sizeof(auth));
    struct identity id;
    identity_from_authorization(auth, &id);
    assert_int_equal(strlen(id.subject), 254);
    assert_int_equal((unsigned char)id.subject[253], 0xa9);
}

/* The cache: a hit is exact (the same identity as decoding), keyed by the claims segment. */
static void test_cache_hits_are_the_identity_of_the_same_claims(void **state)
{
    (void)state;
    struct identity_cache *c = identity_cache_new();
    assert_non_null(c);
    char auth[8192];
    struct identity id;
    bearer("{\"auth.anymate.app/CustomerKey\":\"acme\",\"sub\":\"bot-1\"}", auth, sizeof(auth));
    identity_cached(c, auth, &id);
    assert_string_equal(id.subject, "bot-1");
    assert_int_equal(c->misses, 1);
    memset(&id, 'x', sizeof(id));
    identity_cached(c, auth, &id);
    assert_string_equal(id.customer_key, "acme");
    assert_string_equal(id.subject, "bot-1");
    assert_int_equal(c->hits, 1);
    /* a renewed signature over the same claims: the same identity, from the cache */
    char *sig = strrchr(auth, '.');
    memcpy(sig + 1, "b3RoZXI", 8);
    identity_cached(c, auth, &id);
    assert_string_equal(id.subject, "bot-1");
    assert_int_equal(c->hits, 2);
    /* other claims: decoded */
    bearer("{\"sub\":\"bot-2\"}", auth, sizeof(auth));
    identity_cached(c, auth, &id);
    assert_string_equal(id.customer_key, "");
    assert_string_equal(id.subject, "bot-2");
    assert_int_equal(c->misses, 2);
    /* unreadable tokens: no identity, nothing cached, nothing counted */
    identity_cached(c, NULL, &id);
    assert_string_equal(id.subject, "");
    identity_cached(c, "Bearer a.WzFd.c", &id);
    identity_cached(c, "Bearer a.WzFd.c", &id);
    assert_string_equal(id.subject, "");
    assert_int_equal(c->hits, 3); /* "[1]" is cached as "no identity": still exact */
    identity_cache_free(c);
    identity_cache_free(NULL);
}

/* Many bots, claims of many lengths, slots overwritten and their buffers reused (shorter,
 * then longer keys): every answer equals decoding, whatever the cache held. */
static void test_cache_under_eviction_answers_exactly(void **state)
{
    (void)state;
    struct identity_cache *c = identity_cache_new();
    assert_non_null(c);
    static char auths[1000][1024];
    for (int i = 0; i < 1000; i++) {
        char claims[700];
        int pad = (i * 37) % 500;
        snprintf(claims, sizeof(claims),
                 "{\"auth.anymate.app/CustomerKey\":\"c%d\",\"sub\":\"bot-%d\",\"x\":\"%*s\"}",
                 i % 7, i, pad, "");
        bearer(claims, auths[i], sizeof(auths[i]));
    }
    uint32_t seed = 12345;
    for (int k = 0; k < 20000; k++) {
        seed = seed * 1103515245u + 12345u;
        int i = (int)((seed >> 8) % (k < 10000 ? 1000u : 100u)); /* then a hot set */
        struct identity want, got;
        identity_from_authorization(auths[i], &want);
        memset(&got, 'x', sizeof(got));
        identity_cached(c, auths[i], &got);
        assert_string_equal(got.customer_key, want.customer_key);
        assert_string_equal(got.subject, want.subject);
    }
    assert_int_equal(c->hits + c->misses, 20000);
    assert_true(c->hits > 5000); /* the hot set of 100 mostly fits in 256 slots */
    identity_cache_free(c);
}

/* Claims longer than the cache takes are decoded every time, correctly. */
static void test_cache_skips_very_long_claims(void **state)
{
    (void)state;
    struct identity_cache *c = identity_cache_new();
    assert_non_null(c);
    char claims[4200];
    snprintf(claims, sizeof(claims), "{\"sub\":\"long\",\"x\":\"%*s\"}", 3500, "");
    static char auth[8192];
    bearer(claims, auth, sizeof(auth));
    struct identity id;
    for (int i = 0; i < 3; i++) {
        identity_cached(c, auth, &id);
        assert_string_equal(id.subject, "long");
    }
    assert_int_equal(c->hits + c->misses, 0);
    identity_cache_free(c);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_claims),
        cmocka_unit_test(test_unreadable_tokens_give_no_identity),
        cmocka_unit_test(test_long_claims_are_cut_at_a_character_boundary),
        cmocka_unit_test(test_cache_hits_are_the_identity_of_the_same_claims),
        cmocka_unit_test(test_cache_under_eviction_answers_exactly),
        cmocka_unit_test(test_cache_skips_very_long_claims),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
