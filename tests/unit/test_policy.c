/*
 * Unit tests for the pure parts of policy.c: the bearer header and the JSON media type.
 * (The policy phase itself runs end to end in tests/integration/test_policy.py.)
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "policy.h"

static void test_bearer(void **state)
{
    const char *ok[] = {"Bearer abc",          "bearer abc",
                        "BEARER a.b.c",        "Bearer  eyJ0.eyJz.sig",
                        "Bearer a-b_c~d+e/f=", "Bearer abc=="};
    const char *bad[] = {NULL,        "",           "Bearer",      "Bearer ",
                         "Basic abc", "Bearerabc",  "Bearer a b",  "Bearer a,b",
                         "Bearer =a", "Bearer a=b", "Bearer a\"b", "Token abc"};
    for (size_t i = 0; i < sizeof(ok) / sizeof(ok[0]); i++)
        if (!policy_bearer_ok(ok[i]))
            fail_msg("refused: %s", ok[i]);
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        if (policy_bearer_ok(bad[i]))
            fail_msg("accepted: %s", bad[i] ? bad[i] : "(null)");
}

static void test_media_type(void **state)
{
    const char *ok[] = {"application/json",
                        "Application/JSON",
                        "application/json; charset=utf-8",
                        "application/json;charset=UTF-8",
                        "application/json; charset=\"utf-8\"",
                        "application/json; charset=utf8",
                        "application/json; odata=verbose"};
    const char *bad[] = {NULL,
                         "",
                         "text/plain",
                         "application/jsonx",
                         "application/json-patch+json",
                         "application/json; charset=latin1",
                         "application/json; charset=utf-16",
                         "application/json x",
                         "application/x-www-form-urlencoded",
                         "application/json; charset"};
    for (size_t i = 0; i < sizeof(ok) / sizeof(ok[0]); i++)
        if (!policy_media_type_json(ok[i]))
            fail_msg("refused: %s", ok[i]);
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        if (policy_media_type_json(bad[i]))
            fail_msg("accepted: %s", bad[i] ? bad[i] : "(null)");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_bearer),
        cmocka_unit_test(test_media_type),
    };
    return cmocka_run_group_tests_name("policy", tests, NULL, NULL);
}
