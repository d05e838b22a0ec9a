/*
 * Unit tests for headers.c: the copy of a parsed head into C strings, lookups, and which
 * headers cross the gateway in each direction. (Framing refusals are http1.c's: test_http1.)
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdlib.h>
#include <strings.h>
#include <string.h>

#include "headers.h"
#include "http1.h"

struct parsed {
    struct http1_head h;
    char copy[4096];
    struct hfield f[HTTP1_MAX_FIELDS];
    const char *method, *target;
};

static void parse(enum http1_type type, const char *raw, struct parsed *out)
{
    struct http1_parser p;
    http1_init(&p, type, &out->h, 4096);
    assert_int_equal(http1_parse_head(&p, raw, strlen(raw)), HTTP1_DONE);
    headers_copy_head(&out->h, raw, out->copy, out->f, type == HTTP1_REQUEST ? &out->method : NULL,
                      type == HTTP1_REQUEST ? &out->target : NULL);
}

static void test_copy_makes_strings(void **state)
{
    static struct parsed p;
    parse(HTTP1_REQUEST,
          "POST /api/FinishRun/?x=1 HTTP/1.1\r\nHost: gw:8080\r\nX-Empty:\r\nX-Spaces:  a b \t\r\n"
          "Content-Type: application/json\r\n\r\n",
          &p);
    assert_string_equal(p.method, "POST");
    assert_string_equal(p.target, "/api/FinishRun/?x=1");
    assert_int_equal(p.h.nfields, 4);
    assert_string_equal(p.f[0].name, "Host");
    assert_string_equal(p.f[0].value, "gw:8080");
    assert_string_equal(p.f[1].name, "X-Empty");
    assert_string_equal(p.f[1].value, "");
    assert_string_equal(p.f[2].value, "a b");
    assert_string_equal(headers_get(p.f, p.h.nfields, "content-TYPE"), "application/json");
    assert_null(headers_get(p.f, p.h.nfields, "Content-Length"));
    assert_int_equal(headers_count(p.f, p.h.nfields, "host"), 1);
}

static bool forwarded(const struct parsed *p, const char *name, bool request)
{
    for (unsigned i = 0; i < p->h.nfields; i++)
        if (strcasecmp(p->f[i].name, name) == 0)
            return headers_forward(p->f, p->h.nfields, i, request);
    fail_msg("no field %s", name);
    return false;
}

static void test_request_drops_hop_by_hop(void **state)
{
    static struct parsed p;
    parse(
        HTTP1_REQUEST,
        "POST / HTTP/1.1\r\nHost: gw\r\nConnection: keep-alive, X-Hop\r\nKeep-Alive: timeout=5\r\n"
        "X-Hop: 1\r\nTE: trailers\r\nTrailer: X\r\nTransfer-Encoding: chunked\r\n"
        "Upgrade: h2c\r\nProxy-Authorization: Basic x\r\nProxy-Foo: 1\r\n"
        "Expect: 100-continue\r\nX-Request-Id: abc\r\nX-Forwarded-For: 10.0.0.1\r\n"
        "Authorization: Bearer t\r\nContent-Type: application/json\r\nX-Custom: kept\r\n\r\n",
        &p);
    const char *gone[] = {"Host",
                          "Connection",
                          "Keep-Alive",
                          "X-Hop",
                          "TE",
                          "Trailer",
                          "Transfer-Encoding",
                          "Upgrade",
                          "Expect",
                          "Proxy-Foo",
                          "X-Request-Id",
                          "X-Forwarded-For",
                          "Proxy-Authorization"};
    for (size_t i = 0; i < sizeof(gone) / sizeof(gone[0]); i++)
        if (forwarded(&p, gone[i], true))
            fail_msg("%s would be forwarded", gone[i]);
    assert_true(forwarded(&p, "Authorization", true));
    assert_true(forwarded(&p, "Content-Type", true));
    assert_true(forwarded(&p, "X-Custom", true));
}

static void test_response_keeps_end_to_end(void **state)
{
    static struct parsed p;
    parse(HTTP1_RESPONSE,
          "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nConnection: close, X-Hop\r\n"
          "X-Hop: 1\r\nSet-Cookie: a=b\r\nX-Request-Id: upstream-id\r\nWWW-Authenticate: Bearer\r\n"
          "Keep-Alive: timeout=5\r\nContent-Length: 0\r\n\r\n",
          &p);
    assert_false(forwarded(&p, "Content-Length", false));
    assert_false(forwarded(&p, "Connection", false));
    assert_false(forwarded(&p, "X-Hop", false));
    assert_false(forwarded(&p, "X-Request-Id", false));
    assert_false(forwarded(&p, "Keep-Alive", false));
    assert_true(forwarded(&p, "Set-Cookie", false));
    assert_true(forwarded(&p, "WWW-Authenticate", false));
    assert_true(forwarded(&p, "Content-Type", false));
}

static void test_hop_by_hop_names(void **state)
{
    assert_true(headers_is_hop_by_hop("connection", false));
    assert_true(headers_is_hop_by_hop("PROXY-anything", false));
    assert_true(headers_is_hop_by_hop("te", true));
    assert_true(headers_is_hop_by_hop("Host", true));
    assert_false(headers_is_hop_by_hop("Host", false));
    assert_false(headers_is_hop_by_hop("Authorization", true));
    assert_false(headers_is_hop_by_hop("Content-Type", true));
    assert_false(headers_is_hop_by_hop("Tex", true));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_copy_makes_strings),
        cmocka_unit_test(test_request_drops_hop_by_hop),
        cmocka_unit_test(test_response_keeps_end_to_end),
        cmocka_unit_test(test_hop_by_hop_names),
    };
    return cmocka_run_group_tests_name("headers", tests, NULL, NULL);
}
