/*
 * Unit tests for conn.c, the bots' side of the HTTP layer, over socketpairs: no network, the
 * real event loop. A small echo handler plays the request layer: it attaches a sink, asks for
 * the body and answers with what it saw, at once or later (a timer), so keep-alive,
 * pipelining, 100-continue, back-pressure, deadlines, refusals and a bot that disappears are
 * all exercised against the connection code itself.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <event2/event.h>
#include <fcntl.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "conn.h"
#include "stats.h"
#include "util.h"

/* ---- a scripted request handler ---- */

struct exchange {
    struct conn *c;
    struct test_server *t;
    char text[8192]; /* what the handler saw: "METHOD target|body" */
    size_t len;
    bool gone, body_done, errored;
    enum gw_err err;
    struct event *later;
};

struct test_server {
    struct event_base *base;
    struct conn_server *srv;
    struct gw_stats stats;
    bool ask_body;     /* ask for the body (else answer at once) */
    bool answer_later; /* answer from a timer, not from the callback */
    int answer_ms;
    bool pause_body; /* pause after the first body piece */
    int heads, refusals, gones, body_errors;
    enum gw_err last_refusal;
    struct exchange *current;
};

static void answer(struct exchange *x)
{
    char head[256];
    int n = snprintf(head, sizeof(head), "HTTP/1.1 200 OK\r\nContent-Length: %zu\r\n%s\r\n", x->len,
                     conn_must_close(x->c) ? "Connection: close\r\n" : "");
    struct iovec iov[2] = {{head, (size_t)n}, {x->text, x->len}};
    conn_send(x->c, iov, 2, CONN_END);
    if (x->t->current == x)
        x->t->current = NULL;
    if (x->later)
        event_free(x->later);
    free(x);
}

static void later_cb(evutil_socket_t fd, short what, void *arg)
{
    answer(arg);
}

static void answer_or_wait(struct exchange *x)
{
    if (!x->t->answer_later) {
        answer(x);
        return;
    }
    x->later = evtimer_new(x->t->base, later_cb, x);
    struct timeval tv = {x->t->answer_ms / 1000, (x->t->answer_ms % 1000) * 1000};
    evtimer_add(x->later, &tv);
}

static int s_body(void *arg, const char *data, size_t len)
{
    struct exchange *x = arg;
    if (x->len + len < sizeof(x->text)) {
        memcpy(x->text + x->len, data, len);
        x->len += len;
    }
    if (x->t->pause_body)
        conn_pause_body(x->c);
    return 0;
}

static void s_body_end(void *arg)
{
    struct exchange *x = arg;
    x->body_done = true;
    answer_or_wait(x);
}

static void s_body_error(void *arg, enum gw_err err, const char *why)
{
    struct exchange *x = arg;
    x->t->body_errors++;
    x->t->last_refusal = err;
    char body[128];
    int n = snprintf(body, sizeof(body), "error %d", (int)err);
    char head[128];
    int h = snprintf(head, sizeof(head),
                     "HTTP/1.1 %d X\r\nContent-Length: %d\r\nConnection: "
                     "close\r\n\r\n",
                     errors_info(err)->status, n);
    struct iovec iov[2] = {{head, (size_t)h}, {body, (size_t)n}};
    conn_send(x->c, iov, 2, CONN_END | CONN_CLOSE);
    if (x->t->current == x)
        x->t->current = NULL;
    if (x->later)
        event_free(x->later);
    free(x);
}

static void s_gone(void *arg)
{
    struct exchange *x = arg;
    x->t->gones++;
    if (x->t->current == x)
        x->t->current = NULL;
    if (x->later)
        event_free(x->later);
    free(x);
}

static const struct conn_sink test_sink = {
    .body = s_body, .body_end = s_body_end, .body_error = s_body_error, .gone = s_gone};

static void on_head(void *arg, struct conn *c, const struct http1_head *h, const char *hbuf,
                    enum gw_err err, const char *why)
{
    struct test_server *t = arg;
    if (!h) {
        t->refusals++;
        t->last_refusal = err;
        char head[160];
        int n = snprintf(head, sizeof(head),
                         "HTTP/1.1 %d Refused\r\nContent-Length: 0\r\n"
                         "Connection: close\r\n\r\n",
                         errors_info(err)->status);
        struct iovec iov = {head, (size_t)n};
        conn_send(c, &iov, 1, CONN_END | CONN_CLOSE);
        return;
    }
    t->heads++;
    struct exchange *x = calloc(1, sizeof(*x));
    x->c = c;
    x->t = t;
    x->len = (size_t)snprintf(x->text, sizeof(x->text), "%.*s %.*s|", (int)h->method.len,
                              hbuf + h->method.off, (int)h->target.len, hbuf + h->target.off);
    t->current = x;
    conn_attach(c, &test_sink, x);
    if (h->body != HTTP1_BODY_NONE && t->ask_body) {
        conn_read_body(c);
        return;
    }
    answer_or_wait(x);
}

static struct conn_limits limits = {
    .max_header_size = 2048,
    .header_timeout_ms = 300,
    .body_timeout_ms = 300,
    .idle_timeout_ms = 400,
    .send_timeout_ms = 400,
    .max_connections = 16,
};

/* A server and one bot connected to it through a socketpair; returns the bot's end. */
static int start(struct test_server *t)
{
    memset(t, 0, sizeof(*t));
    t->base = event_base_new();
    t->ask_body = true;
    char err[128];
    t->srv = conn_server_new(t->base, -1, &limits, NULL, on_head, t, &t->stats, err, sizeof(err));
    assert_non_null(t->srv);
    int sv[2];
    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, sv), 0);
    conn_server_adopt(t->srv, sv[0]);
    return sv[1];
}

static void stop(struct test_server *t, int bot)
{
    if (bot >= 0)
        close(bot);
    event_base_loop(t->base, EVLOOP_NONBLOCK);
    conn_server_free(t->srv);
    event_base_free(t->base);
}

/* Run the loop until nothing is ready (and for at least MS milliseconds). */
static void pump(struct test_server *t, int ms)
{
    uint64_t end = util_now_ms() + (uint64_t)ms;
    do {
        event_base_loop(t->base, EVLOOP_NONBLOCK);
        if (ms > 0) {
            struct timespec ts = {0, 1000000};
            nanosleep(&ts, NULL);
        }
    } while (util_now_ms() < end);
    event_base_loop(t->base, EVLOOP_NONBLOCK);
}

static void send_all(int fd, const char *p, size_t n)
{
    while (n > 0) {
        ssize_t w = write(fd, p, n);
        if (w < 0 && errno == EAGAIN) {
            struct pollfd pf = {fd, POLLOUT, 0};
            poll(&pf, 1, 100);
            continue;
        }
        assert_true(w > 0);
        p += w;
        n -= (size_t)w;
    }
}

/* Everything the bot can read now, and whether the server closed its end. */
static size_t drain(struct test_server *t, int fd, char *buf, size_t cap, bool *closed)
{
    size_t n = 0;
    *closed = false;
    for (int round = 0; round < 50; round++) {
        pump(t, 0);
        for (;;) {
            ssize_t r = read(fd, buf + n, cap - 1 - n);
            if (r > 0) {
                n += (size_t)r;
                continue;
            }
            if (r == 0)
                *closed = true;
            break;
        }
        if (*closed)
            break;
    }
    buf[n] = '\0';
    return n;
}

/* ---- the shapes the SDKs and the end-to-end suites send ---- */

static const char *const shapes[] = {
    "POST /api/FinishRun/ HTTP/1.1\r\nHost: 127.0.0.1:8080\r\nUser-Agent: python-requests/2.31.0"
    "\r\nAccept-Encoding: gzip, deflate\r\nAccept: */*\r\nConnection: keep-alive\r\n"
    "Authorization: Bearer a.b.c\r\nContent-type: application/json\r\nContent-Length: 68\r\n\r\n"
    "{\"runId\": 501, \"overwriteSecondsSaved\": null, \"overwriteEntries\": 5}",
    "POST /api/Solved/ HTTP/1.1\r\nHost: gw\r\nAccept: application/json\r\nAuthorization: Bearer "
    "t\r\nContent-Type: application/json; charset=utf-8\r\nContent-Length: 15\r\n\r\n"
    "{\"TaskId\":1002}",
    "GET /api/OkToRun/pk1/ HTTP/1.1\r\nHost: gw\r\nAuthorization: Bearer t\r\nAccept: */*\r\n\r\n",
    "POST /connect/token HTTP/1.1\r\nHost: gw\r\nContent-Type: application/x-www-form-urlencoded"
    "\r\nContent-Length: 82\r\n\r\nclient_id=acme&client_secret=secret&grant_type=password&"
    "username=mate1&password=pw",
    "POST /api/CreateTasks/pk1 HTTP/1.1\r\nHost: gw\r\nTransfer-Encoding: chunked\r\n\r\n"
    "1f\r\n[{\"k\":\"A2\"},{\"k\":\"A3\"},{\"x\":1}]\r\n0\r\n\r\n",
    "GET /api/TakeNext/pk1 HTTP/1.0\r\n\r\n",
};

static const char *const expected_echo[] = {
    "POST /api/FinishRun/|{\"runId\": 501, \"overwriteSecondsSaved\": null, \"overwriteEntries\": "
    "5}",
    "POST /api/Solved/|{\"TaskId\":1002}",
    "GET /api/OkToRun/pk1/|",
    "POST /connect/token|client_id=acme&client_secret=secret&grant_type=password&username=mate1&"
    "password=pw",
    "POST /api/CreateTasks/pk1|[{\"k\":\"A2\"},{\"k\":\"A3\"},{\"x\":1}]",
    "GET /api/TakeNext/pk1|",
};

/* Send RAW in pieces (cut after every offset in CUTS), expect the echo of the request. */
static void one_shape(const char *raw, const char *echo, const size_t *cuts, size_t ncuts)
{
    struct test_server t;
    int bot = start(&t);
    size_t len = strlen(raw), at = 0;
    for (size_t i = 0; i <= ncuts; i++) {
        size_t end = i < ncuts ? cuts[i] : len;
        send_all(bot, raw + at, end - at);
        at = end;
        pump(&t, 0);
    }
    char buf[16384];
    bool closed;
    drain(&t, bot, buf, sizeof(buf), &closed);
    char *body = strstr(buf, "\r\n\r\n");
    if (!body || strcmp(body + 4, echo) != 0)
        fail_msg("sent %.40s... (%zu cuts): got %s", raw, ncuts, buf);
    assert_int_equal(t.heads, 1);
    stop(&t, bot);
}

static void test_shapes_whole_bytewise_and_split_everywhere(void **state)
{
    for (size_t s = 0; s < sizeof(shapes) / sizeof(shapes[0]); s++) {
        size_t len = strlen(shapes[s]);
        one_shape(shapes[s], expected_echo[s], NULL, 0);
        size_t *cuts = malloc(sizeof(size_t) * len);
        for (size_t i = 0; i + 1 < len; i++)
            cuts[i] = i + 1;
        one_shape(shapes[s], expected_echo[s], cuts, len - 1);
        for (size_t k = 1; k < len; k++)
            one_shape(shapes[s], expected_echo[s], &k, 1);
        free(cuts);
    }
}

static void test_pipelined_replies_in_order(void **state)
{
    struct test_server t;
    int bot = start(&t);
    t.answer_later = true;
    t.answer_ms = 30;
    const char *three = "GET /one HTTP/1.1\r\nHost: g\r\n\r\n"
                        "POST /two HTTP/1.1\r\nHost: g\r\nContent-Length: 3\r\n\r\nabc"
                        "GET /three HTTP/1.1\r\nHost: g\r\n\r\n";
    send_all(bot, three, strlen(three));
    pump(&t, 10);
    assert_int_equal(t.heads, 1); /* the next head waits for the reply to the first */
    pump(&t, 200);
    assert_int_equal(t.heads, 3);
    char buf[4096];
    bool closed;
    drain(&t, bot, buf, sizeof(buf), &closed);
    const char *one = strstr(buf, "GET /one|"), *two = strstr(buf, "POST /two|abc"),
               *three_ = strstr(buf, "GET /three|");
    assert_non_null(one);
    assert_non_null(two);
    assert_non_null(three_);
    assert_true(one < two && two < three_);
    assert_false(closed);
    stop(&t, bot);
}

static void test_framing_refusals_answer_and_close(void **state)
{
    const char *bad[] = {
        "POST / HTTP/1.1\r\nHost: g\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n",
        "POST / HTTP/1.1\r\nHost: g\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\nhello",
        "POST / HTTP/1.1\r\nHost: g\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
        "GET / HTTP/1.1\r\n\r\n",
        "GET / HTTP/1.1\r\nHost: a\r\nHost: a\r\n\r\n",
        "GET / HTTP/1.1\r\nHost: g\r\nX-A: a\r\n b\r\n\r\n",
        "GET / HTTP/1.1\r\nHost : g\r\n\r\n",
        "GET / HTTP/2.0\r\nHost: g\r\n\r\n",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        struct test_server t;
        int bot = start(&t);
        send_all(bot, bad[i], strlen(bad[i]));
        char buf[2048];
        bool closed;
        drain(&t, bot, buf, sizeof(buf), &closed);
        if (strncmp(buf, "HTTP/1.1 400 ", 13) != 0 || !closed)
            fail_msg("case %zu: %s (closed %d)", i, buf, closed);
        assert_int_equal(t.heads, 0);
        stop(&t, bot);
    }
    /* A malformed chunked body is the request's to answer, with 400 and a close. */
    struct test_server t;
    int bot = start(&t);
    const char *chunk = "POST / HTTP/1.1\r\nHost: g\r\nTransfer-Encoding: chunked\r\n\r\n0x5\r\n";
    send_all(bot, chunk, strlen(chunk));
    char buf[2048];
    bool closed;
    drain(&t, bot, buf, sizeof(buf), &closed);
    assert_int_equal(t.body_errors, 1);
    assert_int_equal(t.last_refusal, GW_ERR_BAD_CHUNK);
    assert_true(strncmp(buf, "HTTP/1.1 400 ", 13) == 0);
    assert_true(closed);
    stop(&t, bot);
}

static void test_head_too_large_is_431_at_any_size(void **state)
{
    for (size_t size = 2100; size <= 12000; size += 4950) {
        struct test_server t;
        int bot = start(&t);
        char *raw = malloc(size + 64);
        int n = snprintf(raw, size + 64, "GET / HTTP/1.1\r\nHost: g\r\nX-Big: ");
        memset(raw + n, 'a', size);
        send_all(bot, raw, (size_t)n + size);
        char buf[2048];
        bool closed;
        drain(&t, bot, buf, sizeof(buf), &closed);
        assert_true(strncmp(buf, "HTTP/1.1 431 ", 13) == 0);
        assert_true(closed);
        free(raw);
        stop(&t, bot);
    }
}

static void test_deadlines(void **state)
{
    /* A head trickled too slowly: 408 and a close. */
    struct test_server t;
    int bot = start(&t);
    const char *part = "GET / HTTP/1.1\r\nHost: g\r\nX: ";
    send_all(bot, part, strlen(part));
    for (int i = 0; i < 40 && t.refusals == 0; i++) {
        send_all(bot, "a", 1);
        pump(&t, 20);
    }
    assert_int_equal(t.refusals, 1);
    assert_int_equal(t.last_refusal, GW_ERR_CLIENT_TIMEOUT);
    char buf[2048];
    bool closed;
    drain(&t, bot, buf, sizeof(buf), &closed);
    assert_true(strncmp(buf, "HTTP/1.1 408 ", 13) == 0);
    stop(&t, bot);

    /* A body that stops coming: the request hears CLIENT_TIMEOUT. */
    bot = start(&t);
    const char *head = "POST / HTTP/1.1\r\nHost: g\r\nContent-Length: 10\r\n\r\nabc";
    send_all(bot, head, strlen(head));
    pump(&t, 450);
    assert_int_equal(t.body_errors, 1);
    assert_int_equal(t.last_refusal, GW_ERR_CLIENT_TIMEOUT);
    stop(&t, bot);

    /* An idle keep-alive connection closes quietly; a slow answer is not the head's. */
    bot = start(&t);
    t.answer_later = true;
    t.answer_ms = 500; /* longer than the head and body deadlines */
    const char *get = "GET / HTTP/1.1\r\nHost: g\r\n\r\n";
    send_all(bot, get, strlen(get));
    pump(&t, 600);
    drain(&t, bot, buf, sizeof(buf), &closed);
    assert_true(strncmp(buf, "HTTP/1.1 200 ", 13) == 0);
    assert_false(closed);
    assert_int_equal(t.refusals, 0);
    pump(&t, 500); /* idle_timeout */
    drain(&t, bot, buf, sizeof(buf), &closed);
    assert_true(closed);
    assert_int_equal(strlen(buf), 0);
    stop(&t, bot);
}

static void test_pipelined_head_trickled_across_a_slow_reply(void **state)
{
    /* The second head's bytes arrive while the first reply is pending, its last byte after
     * the head deadline has passed since its first byte: it is served, not 408ed. */
    struct test_server t;
    int bot = start(&t);
    t.answer_later = true;
    t.answer_ms = 500;
    const char *first = "GET /one HTTP/1.1\r\nHost: g\r\n\r\nGET /two HTTP/1.1\r\nHo";
    send_all(bot, first, strlen(first));
    pump(&t, 400);
    send_all(bot, "st: g\r\n", 7);
    pump(&t, 200);
    send_all(bot, "\r\n", 2);
    pump(&t, 700);
    char buf[2048];
    bool closed;
    drain(&t, bot, buf, sizeof(buf), &closed);
    assert_non_null(strstr(buf, "GET /one|"));
    assert_non_null(strstr(buf, "GET /two|"));
    assert_int_equal(t.refusals, 0);
    stop(&t, bot);
}

static void test_expect_continue(void **state)
{
    struct test_server t;
    int bot = start(&t);
    const char *head = "POST /x HTTP/1.1\r\nHost: g\r\nExpect: 100-continue\r\n"
                       "Content-Length: 2\r\n\r\n";
    send_all(bot, head, strlen(head));
    char buf[2048];
    bool closed;
    drain(&t, bot, buf, sizeof(buf), &closed);
    assert_string_equal(buf, "HTTP/1.1 100 Continue\r\n\r\n");
    send_all(bot, "ok", 2);
    drain(&t, bot, buf, sizeof(buf), &closed);
    assert_non_null(strstr(buf, "POST /x|ok"));
    stop(&t, bot);

    /* The body came with the head: no 100 Continue. */
    bot = start(&t);
    const char *all = "POST /x HTTP/1.1\r\nHost: g\r\nExpect: 100-continue\r\n"
                      "Content-Length: 2\r\n\r\nok";
    send_all(bot, all, strlen(all));
    drain(&t, bot, buf, sizeof(buf), &closed);
    assert_null(strstr(buf, "100 Continue"));
    assert_non_null(strstr(buf, "POST /x|ok"));
    stop(&t, bot);
}

static void test_bot_leaving_tells_the_request_once(void **state)
{
    /* Waiting for the body, waiting for the answer. */
    for (int phase = 0; phase < 2; phase++) {
        struct test_server t;
        int bot = start(&t);
        t.answer_later = true;
        t.answer_ms = 200;
        const char *raw = phase == 0 ? "POST / HTTP/1.1\r\nHost: g\r\nContent-Length: 10\r\n\r\nab"
                                     : "GET / HTTP/1.1\r\nHost: g\r\n\r\n";
        send_all(bot, raw, strlen(raw));
        pump(&t, 20);
        assert_int_equal(t.heads, 1);
        close(bot);
        pump(&t, 300);
        assert_int_equal(t.gones, 1);
        assert_null(t.current);
        assert_int_equal(conn_server_count(t.srv), 0);
        stop(&t, -1);
    }
}

static void test_body_back_pressure(void **state)
{
    /* A pause takes effect within one parser step (at most 16 KiB more); nothing is lost. */
    struct test_server t;
    int bot = start(&t);
    t.pause_body = true;
    size_t big = 6000;
    char *raw = malloc(big + 128);
    int n = snprintf(raw, 128, "POST / HTTP/1.1\r\nHost: g\r\nContent-Length: %zu\r\n\r\n", big);
    for (size_t i = 0; i < big; i++)
        raw[n + (int)i] = (char)('a' + i % 26);
    send_all(bot, raw, (size_t)n);
    pump(&t, 10);
    struct exchange *x = t.current;
    assert_non_null(x);
    size_t before = x->len;
    send_all(bot, raw + n, 100); /* the first piece: delivered, then paused */
    pump(&t, 20);
    size_t seen = x->len;
    assert_true(seen > before);
    send_all(bot, raw + n + 100, big - 100);
    pump(&t, 50);
    assert_int_equal(x->len, seen); /* paused: the rest waits in the buffer */
    assert_false(x->body_done);
    t.pause_body = false;
    conn_read_body(x->c);
    pump(&t, 20);
    char buf[16384];
    bool closed;
    drain(&t, bot, buf, sizeof(buf), &closed);
    char *body = strstr(buf, "POST /|");
    assert_non_null(body);
    assert_memory_equal(body + 7, raw + n, big);
    free(raw);
    stop(&t, bot);
}

static void test_body_in_later_reads_after_the_buffer_emptied(void **state)
{
    /* The connection gives its read buffer back whenever it is empty, also in the middle of
     * a body (a grown one to the allocator, a small one to the cache); the rest of the body
     * must parse without the head that lived in it (a use-after-free once lived here; ASan
     * runs this too). The padding makes the buffer grow. */
    char pad[5000];
    memset(pad, 'p', sizeof(pad) - 1);
    pad[sizeof(pad) - 1] = '\0';
    size_t saved = limits.max_header_size;
    limits.max_header_size = 8192; /* a head over the first buffer's 4 KiB */
    for (int i = 0; i < 4; i++) {
        bool chunked = i % 2 == 0, grown = i < 2;
        char first[8192];
        snprintf(first, sizeof(first), "POST /x HTTP/1.1\r\nHost: g\r\nX-Pad: %s\r\n%s\r\n%s",
                 grown ? pad : "p",
                 chunked ? "Transfer-Encoding: chunked\r\n" : "Content-Length: 6\r\n",
                 chunked ? "3\r\nabc\r\n" : "ab");
        const char *rest[2] = {chunked ? "3\r\ndef\r\n" : "cd", chunked ? "0\r\n\r\n" : "ef"};
        struct test_server t;
        int bot = start(&t);
        send_all(bot, first, strlen(first));
        pump(&t, 10);
        for (int k = 0; k < 2; k++) {
            send_all(bot, rest[k], strlen(rest[k]));
            pump(&t, 10);
        }
        char buf[2048];
        bool closed;
        drain(&t, bot, buf, sizeof(buf), &closed);
        assert_non_null(strstr(buf, "POST /x|abcdef"));
        stop(&t, bot);
    }
    limits.max_header_size = saved;
}

static void test_large_reply_to_a_slow_reader_arrives_whole(void **state)
{
    struct test_server t;
    int bot = start(&t);
    struct exchange *x;
    const char *get = "GET / HTTP/1.1\r\nHost: g\r\nConnection: close\r\n\r\n";
    send_all(bot, get, strlen(get));
    t.answer_later = true;
    t.answer_ms = 1000000; /* the test answers itself */
    pump(&t, 10);
    x = t.current;
    assert_non_null(x);
    size_t big = 3 * 1024 * 1024;
    char *body = malloc(big);
    for (size_t i = 0; i < big; i++)
        body[i] = (char)('a' + i % 26);
    char head[128];
    int n = snprintf(head, sizeof(head), "HTTP/1.1 200 OK\r\nContent-Length: %zu\r\n\r\n", big);
    struct iovec iov[2] = {{head, (size_t)n}, {body, big}};
    event_free(x->later);
    x->later = NULL;
    t.current = NULL;
    conn_send(x->c, iov, 2, CONN_END | CONN_CLOSE); /* far more than the socket takes */
    free(x);
    char *got = malloc(big + 256);
    size_t total = 0;
    bool closed = false;
    for (int i = 0; i < 2000 && !closed; i++) {
        pump(&t, 0);
        ssize_t r = read(bot, got + total, big + 256 - total);
        if (r > 0)
            total += (size_t)r;
        else if (r == 0)
            closed = true;
    }
    assert_true(closed);
    assert_int_equal(total, (size_t)n + big);
    assert_memory_equal(got + n, body, big);
    free(got);
    free(body);
    stop(&t, bot);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_shapes_whole_bytewise_and_split_everywhere),
        cmocka_unit_test(test_pipelined_replies_in_order),
        cmocka_unit_test(test_framing_refusals_answer_and_close),
        cmocka_unit_test(test_head_too_large_is_431_at_any_size),
        cmocka_unit_test(test_deadlines),
        cmocka_unit_test(test_pipelined_head_trickled_across_a_slow_reply),
        cmocka_unit_test(test_expect_continue),
        cmocka_unit_test(test_bot_leaving_tells_the_request_once),
        cmocka_unit_test(test_body_back_pressure),
        cmocka_unit_test(test_body_in_later_reads_after_the_buffer_emptied),
        cmocka_unit_test(test_large_reply_to_a_slow_reader_arrives_whole),
    };
    return cmocka_run_group_tests_name("conn", tests, NULL, NULL);
}
