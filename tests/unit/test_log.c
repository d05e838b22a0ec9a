/*
 * Unit tests for log.c's JSON escaping (every log line is JSON; a value must never break it),
 * for its output (lines from ring threads and from threads that write themselves never mix
 * on a pipe) and for tls.c's per-connection set-up (SNI and the peer-name check).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <jansson.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

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

/* ---- output: every line whole, on a pipe, with batches far over PIPE_BUF ---- */

#define LINES_PER_THREAD 3000

struct pipe_reader {
    int fd;
    char *buf;
    size_t len, cap;
};

static void *read_pipe(void *arg)
{
    struct pipe_reader *r = arg;
    for (;;) {
        if (r->cap - r->len < 65536) {
            r->cap = r->cap ? r->cap * 2 : 1 << 20;
            r->buf = realloc(r->buf, r->cap);
        }
        ssize_t n = read(r->fd, r->buf + r->len, r->cap - r->len);
        if (n <= 0)
            return NULL;
        r->len += (size_t)n;
        usleep(200); /* a slow reader, as a test harness is: the pipe fills, writes are partial */
    }
}

static void *ring_thread(void *arg)
{
    log_thread_start(1);
    char pad[1500];
    memset(pad, 'r', sizeof(pad) - 1);
    pad[sizeof(pad) - 1] = 0;
    for (int i = 0; i < LINES_PER_THREAD; i++) {
        log_info("from a ring", "\"i\":%d,\"pad\":\"%s\"", i, pad);
        if (i % 64 == 0)
            usleep(1000); /* let the ring drain so few lines are dropped */
    }
    log_thread_stop();
    return arg;
}

static void *direct_thread(void *arg)
{
    char pad[700];
    memset(pad, 'd', sizeof(pad) - 1);
    pad[sizeof(pad) - 1] = 0;
    for (int i = 0; i < LINES_PER_THREAD / 10; i++) {
        log_info("direct", "\"i\":%d,\"pad\":\"%s\"", i, pad);
        usleep(300);
    }
    return arg;
}

static void test_lines_never_mix_on_a_pipe(void **state)
{
    int p[2];
    assert_int_equal(pipe(p), 0);
    int saved = dup(STDERR_FILENO);
    assert_int_equal(dup2(p[1], STDERR_FILENO), STDERR_FILENO);
    close(p[1]);
    struct pipe_reader rd = {.fd = p[0]};
    pthread_t reader, ring, direct;
    assert_int_equal(pthread_create(&reader, NULL, read_pipe, &rd), 0);
    unsigned long long dropped0 = log_dropped();
    assert_int_equal(log_start(), 0);
    assert_int_equal(pthread_create(&ring, NULL, ring_thread, NULL), 0);
    assert_int_equal(pthread_create(&direct, NULL, direct_thread, NULL), 0);
    pthread_join(ring, NULL);
    pthread_join(direct, NULL);
    log_stop();
    unsigned long long dropped = log_dropped() - dropped0;
    dup2(saved, STDERR_FILENO); /* the last write end closes: the reader sees EOF */
    close(saved);
    pthread_join(reader, NULL);
    close(p[0]);

    size_t ring_lines = 0, direct_lines = 0, bad = 0;
    char *line = rd.buf, *end = rd.buf + rd.len;
    while (line < end) {
        char *nl = memchr(line, '\n', (size_t)(end - line));
        assert_non_null(nl);
        json_error_t e;
        json_t *j = json_loadb(line, (size_t)(nl - line), 0, &e);
        const char *msg = j ? json_string_value(json_object_get(j, "msg")) : NULL;
        if (msg && strcmp(msg, "from a ring") == 0)
            ring_lines++;
        else if (msg && strcmp(msg, "direct") == 0)
            direct_lines++;
        else
            bad++;
        json_decref(j);
        line = nl + 1;
    }
    free(rd.buf);
    assert_int_equal(bad, 0);
    assert_int_equal(direct_lines, LINES_PER_THREAD / 10);    /* a direct line is never dropped */
    assert_int_equal(ring_lines + dropped, LINES_PER_THREAD); /* a dropped one is counted */
    assert_true(ring_lines > 0);
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
        cmocka_unit_test(test_lines_never_mix_on_a_pipe),
        cmocka_unit_test(test_tls_client_names_and_addresses),
    };
    return cmocka_run_group_tests_name("log+tls", tests, NULL, NULL);
}
