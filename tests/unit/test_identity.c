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
    char p[4096];
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

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_claims),
        cmocka_unit_test(test_unreadable_tokens_give_no_identity),
        cmocka_unit_test(test_long_claims_are_cut_at_a_character_boundary),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
