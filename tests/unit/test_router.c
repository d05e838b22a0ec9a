/*
 * Unit tests for router.c: every endpoint of anymate-api.md §2.3 with and without a trailing
 * slash, any ASCII case, the processKey segment, methods, and what is not routed.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <string.h>

#include "router.h"

struct route_case {
    unsigned method;
    const char *target;
    int rc;
    const char *name;
    bool method_ok;
    const char *key;
};

static void test_table(void **state)
{
    const struct route_case cases[] = {
        {ROUTE_POST, "/connect/token", 0, "Token", true, NULL},
        {ROUTE_POST, "/connect/token/", 0, "Token", true, NULL},
        {ROUTE_GET, "/connect/token", 0, "Token", false, NULL},
        {ROUTE_GET, "/api/OkToRun/pk1", 0, "OkToRun", true, "pk1"},
        {ROUTE_GET, "/api/OkToRun/pk1/", 0, "OkToRun", true, "pk1"},
        {ROUTE_GET, "/API/oktorun/pk1/", 0, "OkToRun", true, "pk1"},
        {ROUTE_GET, "/api/StartOrGetRun/my%20key", 0, "StartOrGetRun", true, "my%20key"},
        {ROUTE_GET, "/api/StartRun/pk", 0, "StartRun", true, "pk"},
        {ROUTE_POST, "/api/FinishRun/", 0, "FinishRun", true, NULL},
        {ROUTE_POST, "/api/FinishRun", 0, "FinishRun", true, NULL},
        {ROUTE_POST, "/api/finishrun/?x=1", 0, "FinishRun", true, NULL},
        {ROUTE_GET, "/api/FinishRun/", 0, "FinishRun", false, NULL},
        {ROUTE_POST, "/api/Failure/", 0, "Failure", true, NULL},
        {ROUTE_GET, "/api/GetRules/pk", 0, "GetRules", true, "pk"},
        {ROUTE_GET, "/api/TakeNext/pk", 0, "TakeNext", true, "pk"},
        {ROUTE_GET, "/api/TakeMany/pk/", 0, "TakeMany", true, "pk"},
        {ROUTE_POST, "/api/CreateTask/pk2/", 0, "CreateTask", true, "pk2"},
        {ROUTE_POST, "/api/CreateTasks/pk2", 0, "CreateTasks", true, "pk2"},
        {ROUTE_POST, "/api/CreateAndTakeTask/pk2", 0, "CreateAndTakeTask", true, "pk2"},
        {ROUTE_POST, "/api/UpdateTask/", 0, "UpdateTask", true, NULL},
        {ROUTE_POST, "/api/Solved/", 0, "Solved", true, NULL},
        {ROUTE_POST, "/api/Manual/", 0, "Manual", true, NULL},
        {ROUTE_POST, "/api/Retry/", 0, "Retry", true, NULL},
        {ROUTE_POST, "/api/Error/", 0, "Error", true, NULL},
        {ROUTE_POST, "/api/SolvedAsync/", 0, "SolvedAsync", true, NULL},
        {ROUTE_POST, "/api/ManualAsync/", 0, "ManualAsync", true, NULL},
        {ROUTE_POST, "/api/RetryAsync/", 0, "RetryAsync", true, NULL},
        {ROUTE_POST, "/api/ErrorAsync/", 0, "ErrorAsync", true, NULL},
        {ROUTE_POST, "/api/Return/", 0, "Return", true, NULL},
        /* a processKey route without a key, or with two segments: not that endpoint */
        {ROUTE_GET, "/api/OkToRun/", 0, "api.other", true, NULL},
        {ROUTE_GET, "/api/OkToRun/a/b", 0, "api.other", true, NULL},
        /* a longer name is another endpoint, not a prefix match */
        {ROUTE_POST, "/api/SolvedX/", 0, "api.other", true, NULL},
        {ROUTE_POST, "/api/Solved//", 0, "api.other", true, NULL},
        {ROUTE_GET, "/api/Something/new", 0, "api.other", true, NULL},
        {ROUTE_GET, "/", -1, NULL, false, NULL},
        {ROUTE_GET, "/api", -1, NULL, false, NULL},
        {ROUTE_GET, "/apix/OkToRun/pk", -1, NULL, false, NULL},
        {ROUTE_POST, "/connect/authorize", -1, NULL, false, NULL},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        const struct route_case *c = &cases[i];
        struct route_match m;
        int rc = router_match(c->method, c->target, &m);
        if (rc != c->rc)
            fail_msg("%s: rc %d, expected %d", c->target, rc, c->rc);
        if (rc != 0)
            continue;
        if (strcmp(m.route->name, c->name) != 0)
            fail_msg("%s: route %s, expected %s", c->target, m.route->name, c->name);
        if (m.method_ok != c->method_ok)
            fail_msg("%s: method_ok %d", c->target, m.method_ok);
        if (c->key) {
            assert_non_null(m.key);
            if (m.key_len != strlen(c->key) || strncmp(m.key, c->key, m.key_len) != 0)
                fail_msg("%s: key '%.*s'", c->target, (int)m.key_len, m.key);
        } else {
            assert_null(m.key);
        }
    }
}

struct canon_case {
    const char *target;
    const char *path; /* expected canonical path, NULL when refused */
};

static void test_canonical_path(void **state)
{
    const struct canon_case cases[] = {
        {"/api/FinishRun/", "/api/FinishRun/"},
        {"/api/FinishRun/?a=b", "/api/FinishRun/"},
        {"/api/Fin%69shRun/", "/api/FinishRun/"}, /* decoded, so validated as FinishRun */
        {"/api/%46inishRun", "/api/FinishRun"},
        {"/%61pi/FinishRun/", "/api/FinishRun/"},
        {"/api/OkToRun/my%20key/", "/api/OkToRun/my key/"},
        {"/api/OkToRun/a%2Fb", "/api/OkToRun/a%2Fb"}, /* %2F stays encoded, as in Kestrel */
        {"/api/OkToRun/a%2fb", "/api/OkToRun/a%2Fb"},
        {"/api/OkToRun/%C3%A9t%C3%A9", "/api/OkToRun/\xc3\xa9t\xc3\xa9"}, /* non-ASCII key ok */
        {"/api/FinishRun%2F", "/api/FinishRun%2F"}, /* not FinishRun for Anymate either */
        {"/api/F%C4%B1nishRun/", NULL},             /* dotless i: .NET ignore-case -> I */
        {"/api/\xe2\x84\xaaill", NULL},             /* raw non-ASCII in the endpoint name */
        {"/api/./FinishRun/", NULL},
        {"/api/x/../FinishRun/", NULL},
        {"/api/%2E%2E/api/FinishRun/", NULL},
        {"/api/%2e/FinishRun", NULL},
        {"/api//FinishRun/", NULL},
        {"//api/FinishRun/", NULL},
        {"/api/FinishRun//", NULL},
        {"/api\\FinishRun/", NULL},
        {"/api%5CFinishRun/", NULL},
        {"/api/FinishRun%00/", NULL},
        {"/api/FinishRun%0A/", NULL},
        {"/api/FinishRun%/", NULL},
        {"/api/FinishRun%4/", NULL},
        {"/api/FinishRun%zz/", NULL},
        {"/api/OkToRun/%C3", NULL},       /* truncated UTF-8 */
        {"/api/OkToRun/%C0%AF", NULL},    /* overlong */
        {"/api/OkToRun/%ED%A0%80", NULL}, /* UTF-8 encoded surrogate */
        {"/api/FinishRun#frag", NULL},
        {"%2Fapi/FinishRun", NULL},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        char out[256];
        const char *why = NULL;
        int rc = router_canonical_path(cases[i].target, out, sizeof(out), &why);
        if (cases[i].path) {
            if (rc != 0)
                fail_msg("%s refused: %s", cases[i].target, why);
            if (strcmp(out, cases[i].path) != 0)
                fail_msg("%s -> %s, expected %s", cases[i].target, out, cases[i].path);
        } else {
            if (rc == 0)
                fail_msg("%s accepted as %s", cases[i].target, out);
            assert_non_null(why);
        }
    }
    /* the output buffer is checked */
    char small[4];
    const char *why;
    assert_int_equal(router_canonical_path("/api/FinishRun", small, sizeof(small), &why), -1);
}

static void test_table_rows_are_consistent(void **state)
{
    size_t n;
    const struct route *t = router_table(&n);
    assert_true(n >= 21);
    for (size_t i = 0; i < n; i++) {
        assert_non_null(t[i].allow);
        assert_true(t[i].path[0] == '/');
        assert_true(t[i].path[strlen(t[i].path) - 1] != '/');
        if (t[i].audit == ROUTE_AUDIT_FINISHRUN)
            assert_int_equal(t[i].body, ROUTE_BODY_FINISHRUN);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_table),
        cmocka_unit_test(test_table_rows_are_consistent),
        cmocka_unit_test(test_canonical_path),
    };
    return cmocka_run_group_tests_name("router", tests, NULL, NULL);
}
