/*
 * Unit tests for errors.c (the one failure -> status mapping) and util.c (request ids).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <jansson.h>
#include <stdlib.h>
#include <string.h>

#include "errors.h"
#include "util.h"

static void test_mapping(void **state)
{
    const struct {
        enum gw_err err;
        int status;
        const char *code;
    } rows[] = {
        {GW_ERR_BAD_REQUEST, 400, "request.malformed"},
        {GW_ERR_BAD_FRAMING, 400, "request.ambiguous_framing"},
        {GW_ERR_BAD_HEADER, 400, "request.invalid_header"},
        {GW_ERR_BAD_TARGET, 400, "request.invalid_target"},
        {GW_ERR_NOT_FOUND, 404, "route.not_found"},
        {GW_ERR_METHOD, 405, "route.method_not_allowed"},
        {GW_ERR_CLIENT_TIMEOUT, 408, "request.timeout"},
        {GW_ERR_LENGTH_REQUIRED, 411, "request.length_required"},
        {GW_ERR_BODY_TOO_LARGE, 413, "request.body_too_large"},
        {GW_ERR_HEADERS_TOO_LARGE, 431, "request.headers_too_large"},
        {GW_ERR_INTERNAL, 500, "gateway.internal"},
        {GW_ERR_UPSTREAM_DNS, 502, "upstream.dns"},
        {GW_ERR_UPSTREAM_CONNECT, 502, "upstream.connect"},
        {GW_ERR_UPSTREAM_TLS, 502, "upstream.tls"},
        {GW_ERR_UPSTREAM_PROTOCOL, 502, "upstream.protocol"},
        {GW_ERR_QUEUE_FULL, 503, "upstream.queue_full"},
        {GW_ERR_SHUTTING_DOWN, 503, "gateway.shutting_down"},
        {GW_ERR_UPSTREAM_TIMEOUT, 504, "upstream.timeout"},
        {GW_ERR_REQUEST_TIMEOUT, 504, "request.deadline"},
        {GW_ERR_TOO_LARGE, 413, "request.too_large"},
        {GW_ERR_UNPARSABLE, 400, "request.unparsable"},
        {GW_ERR_BAD_CHUNK, 400, "request.invalid_chunked_body"},
        {GW_ERR_BAD_HOST, 400, "request.invalid_host"},
        {GW_ERR_EXPECTATION, 417, "request.expectation_failed"},
        {GW_ERR_OVERLOADED, 503, "gateway.overloaded"},
        {GW_ERR_QUEUE_TIMEOUT, 503, "upstream.queue_timeout"},
        {GW_ERR_CLIENT_CLOSED, 499, "client.closed"},
    };
    assert_int_equal(sizeof(rows) / sizeof(rows[0]), GW_ERR__COUNT);
    for (size_t i = 0; i < sizeof(rows) / sizeof(rows[0]); i++) {
        const struct gw_err_info *info = errors_info(rows[i].err);
        assert_int_equal(info->status, rows[i].status);
        assert_string_equal(info->code, rows[i].code);
        assert_non_null(info->message);
        assert_string_not_equal(errors_reason(info->status), "Unknown");
    }
    assert_int_equal(errors_info((enum gw_err)9999)->status, 500);
}

static void test_body_shape(void **state)
{
    char *s = errors_body("upstream.timeout", "say \"why\"\n", "0190-id");
    json_error_t e;
    json_t *o = json_loads(s, 0, &e);
    assert_non_null(o);
    assert_true(json_is_false(json_object_get(o, "succeeded")));
    assert_string_equal(json_string_value(json_object_get(o, "message")), "say \"why\"\n");
    assert_string_equal(json_string_value(json_object_get(o, "error")), "upstream.timeout");
    assert_string_equal(json_string_value(json_object_get(o, "requestId")), "0190-id");
    assert_int_equal(json_object_size(o), 4);
    json_decref(o);
    free(s);
}

static void test_uuid7(void **state)
{
    char prev[37] = "";
    for (int i = 0; i < 5000; i++) {
        char id[37];
        util_uuid7(id);
        assert_int_equal(strlen(id), 36);
        assert_int_equal(id[14], '7');
        assert_true(strchr("89ab", id[19]) != NULL);
        assert_true(id[8] == '-' && id[13] == '-' && id[18] == '-' && id[23] == '-');
        /* ids from one thread sort in mint order */
        assert_true(strcmp(prev, id) < 0);
        memcpy(prev, id, sizeof(prev));
    }
}

static void test_request_id_ok(void **state)
{
    assert_true(util_request_id_ok("abc", 3));
    assert_true(util_request_id_ok("0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b", 36));
    assert_true(util_request_id_ok("a.b:c_d-e", 9));
    assert_false(util_request_id_ok("", 0));
    assert_false(util_request_id_ok("a b", 3));
    assert_false(util_request_id_ok("a\"b", 3));
    assert_false(util_request_id_ok("a\\b", 3));
    char longid[66];
    memset(longid, 'a', 65);
    longid[65] = 0;
    assert_true(util_request_id_ok(longid, 64));
    assert_false(util_request_id_ok(longid, 65));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_mapping),
        cmocka_unit_test(test_body_shape),
        cmocka_unit_test(test_uuid7),
        cmocka_unit_test(test_request_id_ok),
    };
    return cmocka_run_group_tests_name("errors", tests, NULL, NULL);
}
