/*
 * Unit tests for log.c's JSON escaping (every log line is JSON; a value must never break it)
 * and for tls.c's per-connection set-up (SNI and the peer-name check, for names and IPs).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <jansson.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>
#include <stdio.h>
#include <string.h>

#include "log.h"
#include "tls.h"

static void test_escape(void **state)
{
    char buf[64];
    assert_string_equal(log_json_escape("plain", buf, sizeof(buf)), "plain");
    assert_string_equal(log_json_escape("a\"b\\c", buf, sizeof(buf)), "a\\\"b\\\\c");
    assert_string_equal(log_json_escape("l1\nl2\t\x01", buf, sizeof(buf)),
                        "l1\\u000al2\\u0009\\u0001");
    assert_string_equal(log_json_escape(NULL, buf, sizeof(buf)), "");
    /* the result is always valid inside a JSON string */
    const char *nasty = "\"}\n{\"level\":\"error\"";
    char line[160];
    snprintf(line, sizeof(line), "{\"v\":\"%s\"}", log_json_escape(nasty, buf, sizeof(buf)));
    json_error_t e;
    json_t *j = json_loads(line, 0, &e);
    assert_non_null(j);
    assert_string_equal(json_string_value(json_object_get(j, "v")), nasty);
    json_decref(j);
}

static void test_escape_truncates_safely(void **state)
{
    char buf[12];
    log_json_escape("\"\"\"\"\"\"\"\"\"\"", buf, sizeof(buf)); /* each becomes two bytes */
    assert_true(strlen(buf) < sizeof(buf));
    assert_non_null(strstr(buf, "..."));
    /* never cut an escape in half: no trailing lone backslash before the dots */
    const char *dots = strstr(buf, "...");
    size_t backslashes = 0;
    for (const char *p = dots - 1; p >= buf && *p == '\\'; p--)
        backslashes++;
    assert_int_equal(backslashes % 2, 0);
}

static void test_tls_client_names_and_addresses(void **state)
{
    char err[256];
    SSL_CTX *bad = tls_client_ctx_new("/nonexistent/ca.pem", err, sizeof(err));
    assert_null(bad);
    assert_non_null(strstr(err, "/nonexistent/ca.pem"));

    SSL_CTX *ctx = tls_client_ctx_new(NULL, err, sizeof(err));
    assert_non_null(ctx);
    assert_int_equal(SSL_CTX_get_min_proto_version(ctx), TLS1_2_VERSION);
    assert_int_equal(SSL_CTX_get_verify_mode(ctx) & SSL_VERIFY_PEER, SSL_VERIFY_PEER);

    SSL *byname = tls_client_new(ctx, "acme.anymate.app", NULL);
    assert_non_null(byname);
    assert_string_equal(SSL_get_servername(byname, TLSEXT_NAMETYPE_host_name), "acme.anymate.app");
    assert_string_equal(X509_VERIFY_PARAM_get0_host(SSL_get0_param(byname), 0),
                        "acme.anymate.app"); /* the certificate must name this host */
    assert_int_equal(SSL_get_verify_mode(byname) & SSL_VERIFY_PEER, SSL_VERIFY_PEER);

    /* RFC 6066: no SNI for an IP literal; the address is checked against iPAddress SANs */
    SSL *byip = tls_client_new(ctx, "127.0.0.1", NULL);
    assert_non_null(byip);
    assert_null(SSL_get_servername(byip, TLSEXT_NAMETYPE_host_name));
    assert_null(X509_VERIFY_PARAM_get0_host(SSL_get0_param(byip), 0));
    SSL *byip6 = tls_client_new(ctx, "::1", NULL);
    assert_non_null(byip6);
    assert_null(SSL_get_servername(byip6, TLSEXT_NAMETYPE_host_name));

    assert_null(tls_verify_error(byname)); /* nothing verified yet: X509_V_OK */
    SSL_free(byname);
    SSL_free(byip);
    SSL_free(byip6);
    SSL_CTX_free(ctx);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_escape),
        cmocka_unit_test(test_escape_truncates_safely),
        cmocka_unit_test(test_tls_client_names_and_addresses),
    };
    return cmocka_run_group_tests_name("log+tls", tests, NULL, NULL);
}
