/*
 * Unit tests for pool.c: connection reuse, the pool_size / pool_max split, the bounded FIFO
 * with its timeout, retiring connections, the retry rule, the response deadline, and that no
 * callback runs inside upstream_call_start. The upstream is a tiny HTTP server in the same
 * event loop on loopback (port 0), answering by path:
 *   /ok     200 at once        /slow  200 after 60 ms     /hang  never answers
 *   /drop   reads the request and closes the connection
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <event2/dns.h>
#include <event2/event.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "config.h"
#include "pool.h"
#include "stats.h"
#include "util.h"

/* ---- the fake upstream ---- */

struct up_conn {
    struct fake *f;
    int fd;
    struct event *ev, *later;
    char buf[4096];
    size_t len;
    int number, served;
};

struct fake {
    struct event_base *base;
    int lfd;
    uint16_t port;
    struct event *accept_ev;
    int accepted, open;
};

static void up_close(struct up_conn *c)
{
    c->f->open--;
    event_free(c->ev);
    if (c->later)
        event_free(c->later);
    close(c->fd);
    free(c);
}

static void up_reply(struct up_conn *c)
{
    char out[256];
    int n = snprintf(out, sizeof(out),
                     "HTTP/1.1 200 OK\r\nContent-Length: 8\r\nX-Conn: %d\r\n\r\nconn%04d",
                     c->number, c->number);
    if (write(c->fd, out, (size_t)n) != n)
        fail_msg("fake upstream could not write");
    c->served++;
}

static void up_later(evutil_socket_t fd, short what, void *arg)
{
    up_reply(arg);
}

static void up_read(evutil_socket_t fd, short what, void *arg)
{
    struct up_conn *c = arg;
    ssize_t r = read(fd, c->buf + c->len, sizeof(c->buf) - 1 - c->len);
    if (r <= 0) {
        up_close(c);
        return;
    }
    c->len += (size_t)r;
    c->buf[c->len] = '\0';
    char *end;
    while ((end = strstr(c->buf, "\r\n\r\n")) != NULL) {
        size_t used = (size_t)(end + 4 - c->buf);
        if (strncmp(c->buf, "GET /ok ", 8) == 0) {
            up_reply(c);
        } else if (strncmp(c->buf, "GET /slow ", 10) == 0) {
            struct timeval tv = {0, 60000};
            evtimer_add(c->later, &tv);
        } else if (strncmp(c->buf, "GET /drop ", 10) == 0) {
            up_close(c);
            return;
        } /* /hang: nothing */
        memmove(c->buf, c->buf + used, c->len - used + 1);
        c->len -= used;
    }
}

static void up_accept(evutil_socket_t lfd, short what, void *arg)
{
    struct fake *f = arg;
    int fd = accept(lfd, NULL, NULL);
    if (fd < 0)
        return;
    struct up_conn *c = calloc(1, sizeof(*c));
    c->f = f;
    c->fd = fd;
    c->number = ++f->accepted;
    f->open++;
    c->ev = event_new(f->base, fd, EV_READ | EV_PERSIST, up_read, c);
    c->later = evtimer_new(f->base, up_later, c);
    event_add(c->ev, NULL);
}

static void fake_start(struct fake *f, struct event_base *base)
{
    memset(f, 0, sizeof(*f));
    f->base = base;
    f->lfd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    assert_int_equal(bind(f->lfd, (struct sockaddr *)&a, sizeof(a)), 0);
    assert_int_equal(listen(f->lfd, 64), 0);
    socklen_t l = sizeof(a);
    getsockname(f->lfd, (struct sockaddr *)&a, &l);
    f->port = ntohs(a.sin_port);
    f->accept_ev = event_new(base, f->lfd, EV_READ | EV_PERSIST, up_accept, f);
    event_add(f->accept_ev, NULL);
}

/* ---- calls ---- */

struct call_rec {
    struct upstream_call *call;
    int done;
    int status;
    enum gw_err err;
    int attempts;
    char body[64];
    bool done_inside_start;
    bool starting;
};

static void c_done(void *arg)
{
    struct call_rec *r = arg;
    r->done++;
    if (r->starting)
        r->done_inside_start = true;
    r->status = upstream_call_status(r->call);
    r->err = upstream_call_error(r->call);
    r->attempts = upstream_call_attempts(r->call);
    size_t len = 0;
    const char *b = upstream_call_body(r->call, &len);
    snprintf(r->body, sizeof(r->body), "%.*s", (int)len, b ? b : "");
}

static const struct upstream_call_ops ops = {.done = c_done};

struct env {
    struct event_base *base;
    struct evdns_base *dns;
    struct fake f;
    struct config *cfg;
    struct pool *pool;
    struct gw_stats stats;
    char heads[8][64];
    struct iovec iov[8];
};

static void env_start(struct env *e, const char *upstream_extra, bool closed_port)
{
    memset(e, 0, sizeof(*e));
    e->base = event_base_new();
    e->dns = evdns_base_new(e->base, 0);
    fake_start(&e->f, e->base);
    uint16_t port = e->f.port;
    if (closed_port) {
        int s = socket(AF_INET, SOCK_STREAM, 0);
        struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
        bind(s, (struct sockaddr *)&a, sizeof(a));
        socklen_t l = sizeof(a);
        getsockname(s, (struct sockaddr *)&a, &l);
        port = ntohs(a.sin_port);
        close(s); /* nothing listens there now */
    }
    char text[1024];
    snprintf(text, sizeof(text),
             "[server]\nthreads = 1\nmax_connections = 100\n[upstream]\n"
             "api_url = http://127.0.0.1:%u\nauth_url = http://127.0.0.1:%u\n%s\n",
             port, port, upstream_extra);
    struct config_errors errs = {0};
    e->cfg = config_load_string("t.conf", text, &errs);
    if (!e->cfg)
        fail_msg("config: %s", errs.count ? errs.msgs[0] : "?");
    e->pool = pool_new(e->base, e->dns, NULL, &e->cfg->upstream.api, e->cfg, "api", &e->stats);
    assert_non_null(e->pool);
}

static void env_stop(struct env *e)
{
    pool_free(e->pool);
    for (int i = 0; i < 30; i++)
        event_base_loop(e->base, EVLOOP_NONBLOCK); /* the fake sees the closes */
    event_free(e->f.accept_ev);
    close(e->f.lfd);
    config_unref(e->cfg);
    evdns_base_free(e->dns, 0);
    event_base_free(e->base);
}

static void start(struct env *e, int slot, struct call_rec *r, const char *path)
{
    snprintf(e->heads[slot], sizeof(e->heads[slot]), "GET %s HTTP/1.1\r\nHost: up\r\n\r\n", path);
    e->iov[slot].iov_base = e->heads[slot];
    e->iov[slot].iov_len = strlen(e->heads[slot]);
    struct upstream_request req = {.iov = &e->iov[slot], .niov = 1};
    memset(r, 0, sizeof(*r));
    r->starting = true;
    r->call = upstream_call_start(e->pool, &req, &ops, r);
    r->starting = false;
    assert_non_null(r->call);
}

/* Run the loop until every call in RECS is done (or MS pass). */
static void wait_done(struct env *e, struct call_rec *recs, int n, int ms)
{
    uint64_t end = util_now_ms() + (uint64_t)ms;
    for (;;) {
        int done = 0;
        for (int i = 0; i < n; i++)
            done += recs[i].done > 0;
        if (done == n || util_now_ms() > end)
            return;
        event_base_loop(e->base, EVLOOP_ONCE | EVLOOP_NONBLOCK);
        struct timespec ts = {0, 200000};
        nanosleep(&ts, NULL);
    }
}

static void finish(struct call_rec *recs, int n)
{
    for (int i = 0; i < n; i++)
        upstream_call_free(recs[i].call);
}

static void test_reuse_most_recent_idle_connection(void **state)
{
    struct env e;
    env_start(&e, "", false);
    struct call_rec r[3];
    for (int i = 0; i < 3; i++) {
        start(&e, i, &r[i], "/ok");
        wait_done(&e, &r[i], 1, 2000);
        assert_int_equal(r[i].status, 200);
        assert_string_equal(r[i].body, "conn0001");
        assert_int_equal(upstream_call_reused(r[i].call), i > 0);
    }
    finish(r, 3);
    assert_int_equal(e.f.accepted, 1);
    env_stop(&e);
}

static void test_bursts_open_up_to_pool_max_and_keep_pool_size(void **state)
{
    struct env e;
    env_start(&e, "pool_size = 1\npool_max = 4\n", false);
    struct call_rec r[4];
    for (int i = 0; i < 4; i++)
        start(&e, i, &r[i], "/slow");
    wait_done(&e, r, 4, 3000);
    for (int i = 0; i < 4; i++)
        assert_int_equal(r[i].status, 200);
    assert_int_equal(e.f.accepted, 4); /* none waited: four connections */
    struct pool_stats st;
    pool_get_stats(e.pool, &st);
    assert_int_equal(st.idle, 1); /* only pool_size kept */
    assert_int_equal(st.open, 1);
    finish(r, 4);
    env_stop(&e);
}

static void test_queue_is_fifo_bounded_and_timed(void **state)
{
    struct env e;
    env_start(&e, "pool_size = 1\npool_max = 1\nqueue_size = 2\nqueue_timeout = 5s\n", false);
    struct call_rec r[4];
    for (int i = 0; i < 4; i++)
        start(&e, i, &r[i], "/slow");
    /* the fourth found the queue full: reported from the loop, not inside start */
    assert_false(r[3].done_inside_start);
    wait_done(&e, r, 4, 3000);
    assert_int_equal(r[3].status, 0);
    assert_int_equal(r[3].err, GW_ERR_QUEUE_FULL);
    for (int i = 0; i < 3; i++) {
        assert_int_equal(r[i].status, 200);
        assert_string_equal(r[i].body, "conn0001"); /* one connection, in turn */
    }
    finish(r, 4);
    env_stop(&e);

    env_start(&e, "pool_size = 1\npool_max = 1\nqueue_timeout = 20ms\n", false);
    start(&e, 0, &r[0], "/hang");
    start(&e, 1, &r[1], "/ok");
    wait_done(&e, &r[1], 1, 2000);
    assert_int_equal(r[1].status, 0);
    assert_int_equal(r[1].err, GW_ERR_QUEUE_TIMEOUT);
    finish(r, 2);
    env_stop(&e);
}

static void test_connections_retire_after_max_requests(void **state)
{
    struct env e;
    env_start(&e, "max_requests_per_conn = 2\n", false);
    struct call_rec r[5];
    for (int i = 0; i < 5; i++) {
        start(&e, i, &r[i], "/ok");
        wait_done(&e, &r[i], 1, 2000);
    }
    assert_string_equal(r[0].body, "conn0001");
    assert_string_equal(r[1].body, "conn0001");
    assert_string_equal(r[2].body, "conn0002");
    assert_string_equal(r[3].body, "conn0002");
    assert_string_equal(r[4].body, "conn0003");
    finish(r, 5);
    env_stop(&e);
}

static void test_retry_rule(void **state)
{
    /* Refused: nothing written, so tried once more on a fresh connection, then 502. */
    struct env e;
    env_start(&e, "", true);
    struct call_rec r[1];
    start(&e, 0, &r[0], "/ok");
    assert_false(r[0].done_inside_start);
    wait_done(&e, r, 1, 2000);
    assert_int_equal(r[0].status, 0);
    assert_int_equal(r[0].err, GW_ERR_UPSTREAM_CONNECT);
    assert_int_equal(r[0].attempts, 2);
    finish(r, 1);
    env_stop(&e);

    /* Written, then the server hung up: never retried. */
    env_start(&e, "", false);
    start(&e, 0, &r[0], "/drop");
    wait_done(&e, r, 1, 2000);
    assert_int_equal(r[0].status, 0);
    assert_int_equal(r[0].err, GW_ERR_UPSTREAM_PROTOCOL);
    assert_int_equal(r[0].attempts, 1);
    assert_int_equal(e.f.accepted, 1);
    finish(r, 1);
    env_stop(&e);
}

static void test_response_deadline(void **state)
{
    struct env e;
    env_start(&e, "response_timeout = 100ms\n", false);
    struct call_rec r[2];
    start(&e, 0, &r[0], "/hang");
    wait_done(&e, r, 1, 2000);
    assert_int_equal(r[0].status, 0);
    assert_int_equal(r[0].err, GW_ERR_UPSTREAM_TIMEOUT);
    /* the timed-out connection is not reused */
    start(&e, 1, &r[1], "/ok");
    wait_done(&e, &r[1], 1, 2000);
    assert_int_equal(r[1].status, 200);
    assert_string_equal(r[1].body, "conn0002");
    finish(r, 2);
    env_stop(&e);
}

static void test_freeing_a_queued_or_running_call(void **state)
{
    struct env e;
    env_start(&e, "pool_size = 1\npool_max = 1\n", false);
    struct call_rec r[3];
    start(&e, 0, &r[0], "/hang");
    start(&e, 1, &r[1], "/ok"); /* queued behind it */
    for (int i = 0; i < 10; i++)
        event_base_loop(e.base, EVLOOP_NONBLOCK);
    upstream_call_free(r[1].call); /* leaves the queue */
    upstream_call_free(r[0].call); /* closes its connection: the slot is free again */
    start(&e, 2, &r[2], "/ok");
    wait_done(&e, &r[2], 1, 2000);
    assert_int_equal(r[2].status, 200);
    assert_int_equal(r[0].done + r[1].done, 0); /* no callback after free */
    upstream_call_free(r[2].call);
    env_stop(&e);
}

/* The reload API: pool_quiet says when a retired pool may be freed (no call alive, no
 * connection in use; idle ones do not count), pool_set_config takes a new snapshot's limits
 * for the next calls, and the gauges follow every change and stop when detached. */
static void test_quiet_new_config_and_gauges(void **state)
{
    struct env e;
    env_start(&e, "pool_size = 1\npool_max = 2\n", false);
    struct gw_pool_gauges g = {0};
    pool_set_gauges(e.pool, &g);
    assert_true(pool_quiet(e.pool)); /* nothing yet */
    struct call_rec r[3];
    start(&e, 0, &r[0], "/hang");
    assert_false(pool_quiet(e.pool)); /* a call alive, even before it has a connection */
    for (int i = 0; i < 20; i++)
        event_base_loop(e.base, EVLOOP_NONBLOCK);
    assert_int_equal(atomic_load(&g.open), 1);
    assert_int_equal(atomic_load(&g.idle), 0);
    upstream_call_free(r[0].call); /* mid-exchange: its connection closes */
    assert_true(pool_quiet(e.pool));
    assert_int_equal(atomic_load(&g.open), 0);
    start(&e, 1, &r[1], "/ok");
    wait_done(&e, &r[1], 1, 2000);
    assert_int_equal(r[1].status, 200);
    assert_false(pool_quiet(e.pool)); /* done, but the call is not freed yet */
    upstream_call_free(r[1].call);
    assert_true(pool_quiet(e.pool)); /* an idle connection does not keep it busy */
    assert_int_equal(atomic_load(&g.idle), 1);

    /* a reloaded snapshot for the same upstream: its limits apply to the next calls */
    char text[512];
    snprintf(text, sizeof(text),
             "[server]\nthreads = 1\n[upstream]\napi_url = %s\nauth_url = %s\n"
             "pool_size = 1\npool_max = 1\nqueue_size = 1\nqueue_timeout = 5s\n",
             e.cfg->upstream.api.text, e.cfg->upstream.api.text);
    struct config_errors errs = {0};
    struct config *next = config_load_string("n.conf", text, &errs);
    assert_non_null(next);
    pool_set_config(e.pool, next, &next->upstream.api);
    config_unref(e.cfg); /* the pool must not reach the old snapshot any more (ASan) */
    e.cfg = next;
    struct call_rec q[3];
    start(&e, 2, &q[0], "/hang"); /* takes the one connection pool_max now allows */
    start(&e, 3, &q[1], "/ok");   /* waits: the queue holds one */
    start(&e, 4, &q[2], "/ok");   /* the queue is full under the new queue_size */
    wait_done(&e, &q[2], 1, 2000);
    assert_int_equal(q[2].err, GW_ERR_QUEUE_FULL);
    assert_int_equal(atomic_load(&g.waiting), 1);
    pool_set_gauges(e.pool, NULL); /* detached (a retired pool): no more updates */
    finish(q, 3);
    assert_int_equal(atomic_load(&g.waiting), 1);
    env_stop(&e);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_reuse_most_recent_idle_connection),
        cmocka_unit_test(test_bursts_open_up_to_pool_max_and_keep_pool_size),
        cmocka_unit_test(test_queue_is_fifo_bounded_and_timed),
        cmocka_unit_test(test_connections_retire_after_max_requests),
        cmocka_unit_test(test_retry_rule),
        cmocka_unit_test(test_response_deadline),
        cmocka_unit_test(test_freeing_a_queued_or_running_call),
        cmocka_unit_test(test_quiet_new_config_and_gauges),
    };
    return cmocka_run_group_tests_name("pool", tests, NULL, NULL);
}
