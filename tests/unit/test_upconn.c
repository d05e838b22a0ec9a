/*
 * Unit tests for upconn.c, one upstream client connection, over socketpairs: the test plays
 * the upstream server on the other end. Every response framing, delivered whole and byte by
 * byte; the request bytes as the server sees them (head, whole body, streamed body); failures
 * and what they say about bytes sent (the retry rule depends on it); back-pressure; an idle
 * connection closed by the server; callbacks only from the loop, and freeing from inside one.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <event2/event.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "upconn.h"

struct rec {
    struct upconn *u;
    int connected, ready, heads, dones, fails, drains;
    int status;
    enum http1_body body_kind;
    bool keep_alive;
    enum gw_err err;
    char detail[200];
    char body[65536];
    size_t body_len;
    bool pause;      /* body returns 1 */
    bool free_in_cb; /* upconn_free from done/failed */
};

static void r_connected(void *arg)
{
    ((struct rec *)arg)->connected++;
}

static void r_ready(void *arg)
{
    ((struct rec *)arg)->ready++;
}

static void r_head(void *arg, const struct http1_head *h, const char *hbuf)
{
    struct rec *r = arg;
    r->heads++;
    r->status = h->status;
    r->body_kind = h->body;
}

static int r_body(void *arg, const char *data, size_t len)
{
    struct rec *r = arg;
    if (r->body_len + len <= sizeof(r->body)) {
        memcpy(r->body + r->body_len, data, len);
        r->body_len += len;
    }
    return r->pause ? 1 : 0;
}

static void r_done(void *arg, bool keep_alive)
{
    struct rec *r = arg;
    r->dones++;
    r->keep_alive = keep_alive;
    if (r->free_in_cb) {
        upconn_free(r->u);
        r->u = NULL;
    }
}

static void r_failed(void *arg, enum gw_err err, const char *detail)
{
    struct rec *r = arg;
    r->fails++;
    r->err = err;
    snprintf(r->detail, sizeof(r->detail), "%s", detail);
    if (r->free_in_cb) {
        upconn_free(r->u);
        r->u = NULL;
    }
}

static void r_drained(void *arg)
{
    ((struct rec *)arg)->drains++;
}

static const struct upconn_cb cb = {r_connected, r_ready,  r_head,   r_body,
                                    r_done,      r_failed, r_drained};

struct env {
    struct event_base *base;
    int server; /* the test's end */
    struct rec r;
};

static void setup(struct env *e)
{
    memset(e, 0, sizeof(*e));
    e->base = event_base_new();
    int sv[2];
    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, sv), 0);
    e->server = sv[1];
    e->r.u = upconn_new(e->base, sv[0], NULL, false, &cb, &e->r);
    assert_non_null(e->r.u);
    /* Nothing is reported from inside upconn_new. */
    assert_int_equal(e->r.connected + e->r.ready, 0);
}

static void teardown(struct env *e)
{
    if (e->r.u)
        upconn_free(e->r.u);
    if (e->server >= 0)
        close(e->server);
    event_base_free(e->base);
}

static void pump(struct env *e)
{
    for (int i = 0; i < 20; i++)
        event_base_loop(e->base, EVLOOP_NONBLOCK);
}

static size_t server_read(struct env *e, char *buf, size_t cap)
{
    size_t n = 0;
    for (;;) {
        ssize_t r = read(e->server, buf + n, cap - 1 - n);
        if (r <= 0)
            break;
        n += (size_t)r;
    }
    buf[n] = '\0';
    return n;
}

static void server_send(struct env *e, const char *p, size_t n, bool bytewise)
{
    size_t step = bytewise ? 1 : n;
    for (size_t at = 0; at < n; at += step) {
        size_t k = n - at < step ? n - at : step;
        assert_int_equal(write(e->server, p + at, k), (ssize_t)k);
        pump(e);
    }
}

static const char head_get[] = "GET /api/OkToRun/pk1 HTTP/1.1\r\nHost: up\r\n\r\n";

static void start_get(struct env *e, struct upx *x, bool head_request)
{
    static struct iovec iov;
    iov.iov_base = (void *)head_get;
    iov.iov_len = sizeof(head_get) - 1;
    memset(x, 0, sizeof(*x));
    x->iov = &iov;
    x->niov = 1;
    x->body_end = true;
    x->head_request = head_request;
    upconn_start(e->r.u, x);
}

static void test_response_framings(void **state)
{
    const struct {
        const char *raw;
        int status;
        const char *body;
        bool keep_alive;
        bool head_request;
        bool server_closes;
    } cases[] = {
        {"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello", 200, "hello", true, false, false},
        {"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n3\r\n!!!\r\n"
         "0\r\n\r\n",
         200, "hello!!!", true, false, false},
        {"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\nto the end", 200, "to the end", false,
         false, true},
        {"HTTP/1.1 204 No Content\r\n\r\n", 204, "", true, false, false},
        {"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n", 200, "", true, true, false},
        {"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 201 Created\r\nContent-Length: 2\r\n\r\nok", 201,
         "ok", true, false, false},
        {"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nok", 200, "ok", false,
         false, false},
        {"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok", 200, "ok", false, false, false},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        for (int bytewise = 0; bytewise < 2; bytewise++) {
            struct env e;
            struct upx x;
            setup(&e);
            start_get(&e, &x, cases[i].head_request);
            pump(&e);
            assert_int_equal(e.r.connected, 1);
            assert_int_equal(e.r.ready, 1);
            char req[512];
            server_read(&e, req, sizeof(req));
            assert_string_equal(req, head_get);
            assert_int_equal(x.sent, sizeof(head_get) - 1);
            server_send(&e, cases[i].raw, strlen(cases[i].raw), bytewise);
            if (cases[i].server_closes) {
                close(e.server);
                e.server = -1;
                pump(&e);
            }
            if (e.r.dones != 1)
                fail_msg("case %zu bytewise %d: dones %d fails %d (%s)", i, bytewise, e.r.dones,
                         e.r.fails, e.r.detail);
            assert_int_equal(e.r.heads, 1);
            assert_int_equal(e.r.status, cases[i].status);
            assert_int_equal(e.r.body_len, strlen(cases[i].body));
            assert_memory_equal(e.r.body, cases[i].body, e.r.body_len);
            assert_int_equal(e.r.keep_alive, cases[i].keep_alive);
            teardown(&e);
        }
    }
}

static void test_keep_alive_carries_a_second_exchange(void **state)
{
    struct env e;
    struct upx x;
    setup(&e);
    start_get(&e, &x, false);
    pump(&e);
    char buf[512];
    server_read(&e, buf, sizeof(buf));
    server_send(&e, "HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\na", 39, false);
    assert_int_equal(e.r.dones, 1);
    assert_true(e.r.keep_alive);
    struct upx y;
    e.r.body_len = 0;
    start_get(&e, &y, false);
    pump(&e);
    server_read(&e, buf, sizeof(buf));
    assert_string_equal(buf, head_get);
    server_send(&e, "HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nb", 39, false);
    assert_int_equal(e.r.dones, 2);
    assert_int_equal(upconn_requests(e.r.u), 2);
    assert_memory_equal(e.r.body, "b", 1);
    teardown(&e);
}

static void test_streamed_request_body(void **state)
{
    struct env e;
    setup(&e);
    static const char head[] = "POST /api/CreateTask/pk HTTP/1.1\r\nHost: up\r\n"
                               "Transfer-Encoding: chunked\r\n\r\n";
    struct iovec iov = {(void *)head, sizeof(head) - 1};
    struct upx x;
    memset(&x, 0, sizeof(x));
    x.iov = &iov;
    x.niov = 1;
    upconn_start(e.r.u, &x);
    pump(&e);
    outq_add(&x.body, "3\r\nabc\r\n", 8);
    upconn_kick(e.r.u);
    outq_add(&x.body, "0\r\n\r\n", 5);
    x.body_end = true;
    upconn_kick(e.r.u);
    pump(&e);
    char buf[512];
    server_read(&e, buf, sizeof(buf));
    char want[512];
    snprintf(want, sizeof(want), "%s3\r\nabc\r\n0\r\n\r\n", head);
    assert_string_equal(buf, want);
    assert_int_equal(x.sent, strlen(want));
    assert_int_equal(x.body.bytes, 0);
    outq_clear(&x.body);
    teardown(&e);
}

static void test_failures_say_what_was_sent(void **state)
{
    /* An invalid response after the request went out. */
    struct env e;
    struct upx x;
    setup(&e);
    start_get(&e, &x, false);
    pump(&e);
    char buf[512];
    server_read(&e, buf, sizeof(buf));
    server_send(&e, "HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n", 56, false);
    assert_int_equal(e.r.fails, 1);
    assert_int_equal(e.r.err, GW_ERR_UPSTREAM_PROTOCOL);
    assert_true(x.sent > 0);
    teardown(&e);

    /* The server closes before answering: a protocol failure, the request was sent. */
    setup(&e);
    start_get(&e, &x, false);
    pump(&e);
    server_read(&e, buf, sizeof(buf));
    server_send(&e, "HTTP/1.1 200 OK\r\nContent-Len", 28, false);
    close(e.server);
    e.server = -1;
    pump(&e);
    assert_int_equal(e.r.fails, 1);
    assert_int_equal(e.r.dones, 0);
    assert_non_null(strstr(e.r.detail, "before a complete response"));
    teardown(&e);

    /* Freeing the connection from inside its failure callback is allowed. */
    setup(&e);
    e.r.free_in_cb = true;
    start_get(&e, &x, false);
    pump(&e);
    close(e.server);
    e.server = -1;
    pump(&e);
    assert_int_equal(e.r.fails, 1);
    assert_null(e.r.u);
    teardown(&e);
}

static void test_idle_connection_closed_by_the_server(void **state)
{
    struct env e;
    struct upx x;
    setup(&e);
    start_get(&e, &x, false);
    pump(&e);
    char buf[512];
    server_read(&e, buf, sizeof(buf));
    e.r.free_in_cb = true; /* the pool frees it from the callback */
    server_send(&e, "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", 38, false);
    assert_int_equal(e.r.dones, 1);
    assert_null(e.r.u); /* freed inside done: nothing touched it afterwards (ASan) */
    teardown(&e);

    setup(&e);
    start_get(&e, &x, false);
    pump(&e);
    server_read(&e, buf, sizeof(buf));
    server_send(&e, "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", 38, false);
    assert_int_equal(e.r.dones, 1);
    close(e.server); /* idle now */
    e.server = -1;
    pump(&e);
    assert_int_equal(e.r.fails, 1);
    assert_non_null(strstr(e.r.detail, "closed by the server"));
    teardown(&e);
}

static void test_response_back_pressure(void **state)
{
    struct env e;
    struct upx x;
    setup(&e);
    start_get(&e, &x, false);
    pump(&e);
    char buf[512];
    server_read(&e, buf, sizeof(buf));
    e.r.pause = true;
    static char resp[40000];
    int n = snprintf(resp, sizeof(resp), "HTTP/1.1 200 OK\r\nContent-Length: 30000\r\n\r\n");
    memset(resp + n, 'z', 30000);
    server_send(&e, resp, (size_t)n + 30000, false);
    size_t seen = e.r.body_len;
    assert_true(seen > 0 && seen < 30000);
    pump(&e);
    assert_int_equal(e.r.body_len, seen); /* paused */
    e.r.pause = false;
    upconn_resume_read(e.r.u);
    pump(&e);
    assert_int_equal(e.r.body_len, 30000);
    assert_int_equal(e.r.dones, 1);
    teardown(&e);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_response_framings),
        cmocka_unit_test(test_keep_alive_carries_a_second_exchange),
        cmocka_unit_test(test_streamed_request_body),
        cmocka_unit_test(test_failures_say_what_was_sent),
        cmocka_unit_test(test_idle_connection_closed_by_the_server),
        cmocka_unit_test(test_response_back_pressure),
    };
    return cmocka_run_group_tests_name("upconn", tests, NULL, NULL);
}
