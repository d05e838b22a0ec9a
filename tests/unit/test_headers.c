/*
 * Unit tests for headers.c: framing refusals (request smuggling shapes), header validity,
 * size limit, and which headers cross the gateway in each direction.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <event2/http.h>
#include <event2/keyvalq_struct.h>
#include <stdlib.h>
#include <string.h>
#include <sys/queue.h>

#include "headers.h"

/* Build a header list from "Name", "value" pairs, NULL-terminated. */
static struct evkeyvalq *make(const char *first, ...)
{
    struct evkeyvalq *q = malloc(sizeof(*q));
    TAILQ_INIT(q);
    va_list ap;
    va_start(ap, first);
    for (const char *k = first; k; k = va_arg(ap, const char *)) {
        const char *v = va_arg(ap, const char *);
        /* evhttp_add_header refuses CR/LF only; insert raw to test names it would accept */
        struct evkeyval *h = calloc(1, sizeof(*h));
        h->key = strdup(k);
        h->value = strdup(v);
        TAILQ_INSERT_TAIL(q, h, next);
    }
    va_end(ap);
    return q;
}

static void drop(struct evkeyvalq *q)
{
    evhttp_clear_headers(q);
    free(q);
}

struct framing_case {
    const char *name;
    const char *k1, *v1, *k2, *v2;
    int expect; /* 0 ok, else enum gw_err */
};

static void test_framing_table(void **state)
{
    const struct framing_case cases[] = {
        {"plain content-length", "Content-Length", "13", NULL, NULL, 0},
        {"chunked alone", "Transfer-Encoding", "chunked", NULL, NULL, 0},
        {"chunked any case", "Transfer-Encoding", "Chunked", NULL, NULL, 0},
        {"no framing", "Accept", "*/*", NULL, NULL, 0},
        {"two content-length", "Content-Length", "13", "Content-Length", "5", GW_ERR_BAD_FRAMING},
        {"two equal content-length", "Content-Length", "5", "content-length", "5",
         GW_ERR_BAD_FRAMING},
        {"plus sign", "Content-Length", "+5", NULL, NULL, GW_ERR_BAD_FRAMING},
        {"leading space kept", "Content-Length", " 5", NULL, NULL, GW_ERR_BAD_FRAMING},
        {"list value", "Content-Length", "5, 5", NULL, NULL, GW_ERR_BAD_FRAMING},
        {"negative", "Content-Length", "-1", NULL, NULL, GW_ERR_BAD_FRAMING},
        {"empty", "Content-Length", "", NULL, NULL, GW_ERR_BAD_FRAMING},
        {"hex", "Content-Length", "0x10", NULL, NULL, GW_ERR_BAD_FRAMING},
        {"too long", "Content-Length", "1234567890123456789", NULL, NULL, GW_ERR_BAD_FRAMING},
        {"te and cl", "Transfer-Encoding", "chunked", "Content-Length", "5", GW_ERR_BAD_FRAMING},
        {"te list", "Transfer-Encoding", "gzip, chunked", NULL, NULL, GW_ERR_BAD_FRAMING},
        {"te unknown", "Transfer-Encoding", "identity", NULL, NULL, GW_ERR_BAD_FRAMING},
        {"two te", "Transfer-Encoding", "chunked", "Transfer-Encoding", "chunked",
         GW_ERR_BAD_FRAMING},
        {"space in name", "Content-Length ", "5", NULL, NULL, GW_ERR_BAD_HEADER},
        {"colon-ish name", "X(Bad)", "1", NULL, NULL, GW_ERR_BAD_HEADER},
        {"control char value", "X-A", "a\x01b", NULL, NULL, GW_ERR_BAD_HEADER},
        {"tab ok in value", "X-A", "a\tb", NULL, NULL, 0},
        {"DEL in value", "X-A", "a\x7f", NULL, NULL, GW_ERR_BAD_HEADER},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        const struct framing_case *c = &cases[i];
        struct evkeyvalq *q =
            c->k2 ? make(c->k1, c->v1, c->k2, c->v2, NULL) : make(c->k1, c->v1, NULL);
        enum gw_err err = GW_ERR_INTERNAL;
        const char *why = NULL;
        int rc = headers_check_request(q, 30, 16384, &err, &why);
        if (c->expect == 0) {
            if (rc != 0)
                fail_msg("case '%s' refused: %s", c->name, why ? why : "?");
        } else {
            if (rc == 0)
                fail_msg("case '%s' accepted", c->name);
            assert_int_equal(err, c->expect);
            assert_non_null(why);
        }
        drop(q);
    }
}

static void test_header_size_limit(void **state)
{
    char big[200];
    memset(big, 'a', sizeof(big) - 1);
    big[sizeof(big) - 1] = '\0';
    struct evkeyvalq *q = make("X-Big", big, NULL);
    enum gw_err err;
    const char *why;
    /* 30 (request line) + 5 + 199 + 4 = 238 */
    assert_int_equal(headers_check_request(q, 30, 238, &err, &why), 0);
    assert_int_equal(headers_check_request(q, 30, 237, &err, &why), -1);
    assert_int_equal(err, GW_ERR_HEADERS_TOO_LARGE);
    drop(q);
}

static bool has(struct evkeyvalq *q, const char *name)
{
    return evhttp_find_header(q, name) != NULL;
}

static void test_copy_request_drops_hop_by_hop(void **state)
{
    struct evkeyvalq *in = make(
        "Host", "gw", "Connection", "keep-alive, X-Hop", "Keep-Alive", "timeout=5", "X-Hop", "1",
        "TE", "trailers", "Trailer", "X", "Transfer-Encoding", "chunked", "Upgrade", "h2c",
        "Proxy-Authorization", "Basic x", "Proxy-Foo", "1", "Content-Length", "5", "Expect",
        "100-continue", "X-Request-Id", "abc", "X-Forwarded-For", "10.0.0.1", "Authorization",
        "Bearer t", "Content-Type", "application/json", "X-Custom", "kept", NULL);
    struct evkeyvalq out;
    TAILQ_INIT(&out);
    assert_int_equal(headers_copy(in, &out, true), 0);
    const char *gone[] = {"Host",
                          "Connection",
                          "Keep-Alive",
                          "X-Hop",
                          "TE",
                          "Trailer",
                          "Transfer-Encoding",
                          "Upgrade",
                          "Proxy-Authorization",
                          "Proxy-Foo",
                          "Content-Length",
                          "Expect",
                          "X-Request-Id",
                          "X-Forwarded-For"};
    for (size_t i = 0; i < sizeof(gone) / sizeof(gone[0]); i++)
        if (has(&out, gone[i]))
            fail_msg("%s was forwarded", gone[i]);
    assert_string_equal(evhttp_find_header(&out, "Authorization"), "Bearer t");
    assert_string_equal(evhttp_find_header(&out, "Content-Type"), "application/json");
    assert_string_equal(evhttp_find_header(&out, "X-Custom"), "kept");
    evhttp_clear_headers(&out);
    drop(in);
}

static void test_copy_response_keeps_end_to_end(void **state)
{
    struct evkeyvalq *in =
        make("Content-Type", "application/json", "Content-Length", "10", "Connection", "close",
             "Transfer-Encoding", "chunked", "Set-Cookie", "a=b", "X-Request-Id", "upstream-id",
             "WWW-Authenticate", "Bearer", NULL);
    struct evkeyvalq out;
    TAILQ_INIT(&out);
    assert_int_equal(headers_copy(in, &out, false), 0);
    assert_false(has(&out, "Content-Length"));
    assert_false(has(&out, "Connection"));
    assert_false(has(&out, "Transfer-Encoding"));
    assert_false(has(&out, "X-Request-Id"));
    assert_true(has(&out, "Set-Cookie"));
    assert_true(has(&out, "WWW-Authenticate"));
    assert_true(has(&out, "Content-Type"));
    evhttp_clear_headers(&out);
    drop(in);
}

static void test_hop_by_hop_names(void **state)
{
    assert_true(headers_is_hop_by_hop("connection"));
    assert_true(headers_is_hop_by_hop("PROXY-anything"));
    assert_true(headers_is_hop_by_hop("te"));
    assert_false(headers_is_hop_by_hop("Authorization"));
    assert_false(headers_is_hop_by_hop("Content-Type"));
    assert_false(headers_is_hop_by_hop("Tex"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_framing_table),
        cmocka_unit_test(test_header_size_limit),
        cmocka_unit_test(test_copy_request_drops_hop_by_hop),
        cmocka_unit_test(test_copy_response_keeps_end_to_end),
        cmocka_unit_test(test_hop_by_hop_names),
    };
    return cmocka_run_group_tests_name("headers", tests, NULL, NULL);
}
