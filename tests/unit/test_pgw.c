/*
 * Unit tests for pgw.c, the ledger's asynchronous PostgreSQL writer: pipelined batches (several
 * on the wire, each with its own Sync), the rule that a further batch waits for 8 statements,
 * a statement PostgreSQL refuses in a middle batch (only its batch is rolled back; its rows go
 * again one by one, only the bad one fails), the connection lost with batches on the wire
 * (every row sent again after the reconnect, each callback once), and that no callback runs
 * inside pgw_submit; batched lookups (one execution for the batch, each submission its own row
 * of the answer, a wrong row count failing only the lookups).
 *
 * The database is a fake PostgreSQL in the same event loop, on a Unix socket in a temporary
 * directory (libpq needs no SSL or GSS negotiation there). It speaks just enough of protocol 3
 * for libpq's pipeline mode: the start-up handshake, then Parse -> ParseComplete, Bind ->
 * BindComplete, Describe -> NoData, Execute -> CommandComplete (or ErrorResponse when the
 * bound values contain "poison"; then it skips to the Sync, as PostgreSQL does), Sync ->
 * ReadyForQuery. The statement "look" is a batched lookup: Describe answers a RowDescription,
 * Execute one DataRow per id of its array, "proc-ID" for an even id and NULL for an odd one
 * (one row fewer while `short_rows` is set). While `hold` is set it reads and counts everything but
 * keeps its answers, as a database busy with the first batch would; `drop` closes the connection at
 * once.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <event2/event.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "pgw.h"
#include "util.h"

/* ---- the fake database ---- */

struct fake {
    struct event_base *base;
    char dir[64];
    int lfd;
    struct event *accept_ev;
    int fd;
    struct event *ev;
    bool started; /* start-up message seen */
    unsigned char in[1 << 16];
    size_t inlen;
    unsigned char *out;
    size_t outlen, outcap;
    bool hold;        /* keep the answers */
    bool failed;      /* an Execute failed: skip to the Sync */
    bool bind_poison; /* the last Bind carried a poisoned value */
    int conns;        /* connections accepted */
    int syncs;        /* Sync messages read on the current connection */
    int executes, refused;
    int looks;          /* executions of the lookup */
    bool bound_look;    /* the last Bind was of the lookup */
    char look_ids[512]; /* its array parameter */
    bool short_rows;    /* answer a lookup with one row too few */
};

static void put(struct fake *f, char type, const void *body, size_t len)
{
    if (f->outlen + len + 5 > f->outcap) {
        f->outcap = (f->outlen + len + 5) * 2;
        f->out = realloc(f->out, f->outcap);
        assert_non_null(f->out);
    }
    unsigned char *o = f->out + f->outlen;
    uint32_t n = (uint32_t)len + 4;
    o[0] = (unsigned char)type;
    o[1] = (unsigned char)(n >> 24);
    o[2] = (unsigned char)(n >> 16);
    o[3] = (unsigned char)(n >> 8);
    o[4] = (unsigned char)n;
    if (len)
        memcpy(o + 5, body, len);
    f->outlen += len + 5;
}

static void put_param(struct fake *f, const char *k, const char *v)
{
    char b[128];
    size_t kl = strlen(k) + 1, vl = strlen(v) + 1;
    memcpy(b, k, kl);
    memcpy(b + kl, v, vl);
    put(f, 'S', b, kl + vl);
}

static void flush_out(struct fake *f)
{
    if (f->hold || f->fd < 0)
        return;
    size_t off = 0;
    while (off < f->outlen) {
        ssize_t w = write(f->fd, f->out + off, f->outlen - off);
        assert_true(w > 0); /* a few KiB at most: the socket buffer takes them */
        off += (size_t)w;
    }
    f->outlen = 0;
}

static void fake_close(struct fake *f)
{
    if (f->fd < 0)
        return;
    event_free(f->ev);
    close(f->fd);
    f->fd = -1;
    f->inlen = 0;
    f->outlen = 0;
    f->started = false;
    f->failed = false;
}

/* A Bind: note whether it binds "look", and its one parameter (a text array of ids). */
static void bind_lookup(struct fake *f, const unsigned char *body, size_t len)
{
    const unsigned char *end = body + len;
    const unsigned char *stmt = memchr(body, 0, len); /* after the portal name */
    assert_non_null(stmt);
    stmt++;
    f->bound_look = strcmp((const char *)stmt, "look") == 0;
    if (!f->bound_look)
        return;
    const unsigned char *o = stmt + strlen((const char *)stmt) + 1;
    unsigned nfmt = (unsigned)(o[0] << 8 | o[1]);
    o += 2 + 2 * nfmt;
    assert_int_equal(o[0] << 8 | o[1], 1); /* one parameter */
    o += 2;
    uint32_t plen = (uint32_t)o[0] << 24 | (uint32_t)o[1] << 16 | (uint32_t)o[2] << 8 | o[3];
    o += 4;
    assert_true(o + plen <= end && plen < sizeof(f->look_ids));
    memcpy(f->look_ids, o, plen);
    f->look_ids[plen] = '\0';
}

/* Execute of "look": a DataRow per id of {"1","2",...}, then CommandComplete. */
static void answer_lookup(struct fake *f)
{
    int rows = 0;
    const char *c = f->look_ids;
    while ((c = strchr(c, '"')) != NULL) {
        long id = strtol(c + 1, NULL, 10);
        c = strchr(c + 1, '"') + 1;
        if (f->short_rows && strchr(c, '"') == NULL)
            break; /* the last id gets no row */
        unsigned char row[64] = {0, 1};
        size_t n = 2;
        if (id % 2 == 0) {
            int len = snprintf((char *)row + 6, sizeof(row) - 6, "proc-%ld", id);
            row[2] = row[3] = row[4] = 0;
            row[5] = (unsigned char)len;
            n = 6 + (size_t)len;
        } else {
            memset(row + 2, 0xFF, 4); /* NULL */
            n = 6;
        }
        put(f, 'D', row, n);
        rows++;
    }
    char tag[32];
    int tl = snprintf(tag, sizeof(tag), "SELECT %d", rows);
    put(f, 'C', tag, (size_t)tl + 1);
}

/* One message from the client: TYPE and its BODY of LEN bytes. */
static void on_message(struct fake *f, char type, const unsigned char *body, size_t len)
{
    static const char error[] = "SERROR\0VERROR\0C23514\0Mpoisoned row\0";
    static const char insert[] = "INSERT 0 1";
    static const char idle = 'I';
    if (type == 'S') {
        f->syncs++;
        f->failed = false;
        put(f, 'Z', &idle, 1);
        return;
    }
    if (type == 'X') {
        fake_close(f);
        return;
    }
    if (f->failed || type == 'H')
        return;
    switch (type) {
    case 'P':
        put(f, '1', NULL, 0);
        break;
    case 'B':
        f->bind_poison = memmem(body, len, "poison", 6) != NULL;
        bind_lookup(f, body, len);
        put(f, '2', NULL, 0);
        break;
    case 'D':
        if (f->bound_look) {
            /* one text column, process_key */
            static const unsigned char desc[] = {0,    1,                /* fields */
                                                 'p',  'k',  0,          /* name */
                                                 0,    0,    0,    0,    /* table */
                                                 0,    0,                /* column */
                                                 0,    0,    0,    25,   /* type: text */
                                                 0xFF, 0xFF,             /* size: variable */
                                                 0xFF, 0xFF, 0xFF, 0xFF, /* modifier: none */
                                                 0,    0};               /* format: text */
            put(f, 'T', desc, sizeof(desc));
        } else {
            put(f, 'n', NULL, 0);
        }
        break;
    case 'E':
        f->executes++;
        if (f->bound_look) {
            f->looks++;
            answer_lookup(f);
        } else if (f->bind_poison) {
            f->refused++;
            f->failed = true;
            put(f, 'E', error, sizeof(error)); /* the fields and the final NUL */
        } else {
            put(f, 'C', insert, sizeof(insert));
        }
        break;
    default:
        fail_msg("unexpected message '%c'", type);
    }
}

static void on_readable(evutil_socket_t fd, short what, void *arg)
{
    struct fake *f = arg;
    ssize_t r = read(fd, f->in + f->inlen, sizeof(f->in) - f->inlen);
    if (r <= 0) {
        fake_close(f);
        return;
    }
    f->inlen += (size_t)r;
    size_t off = 0;
    for (;;) {
        size_t hdr = f->started ? 5 : 4;
        if (f->inlen - off < hdr)
            break;
        const unsigned char *m = f->in + off + (f->started ? 1 : 0);
        uint32_t n = (uint32_t)m[0] << 24 | (uint32_t)m[1] << 16 | (uint32_t)m[2] << 8 | m[3];
        size_t total = n + (f->started ? 1 : 0);
        if (f->inlen - off < total)
            break;
        if (!f->started) {
            /* StartupMessage: authentication OK, a few parameters, key data, ready */
            static const unsigned char auth_ok[4] = {0, 0, 0, 0};
            static const unsigned char key[8] = {0, 0, 0, 1, 0, 0, 0, 2};
            static const char idle = 'I';
            f->started = true;
            put(f, 'R', auth_ok, 4);
            put_param(f, "server_version", "15.0");
            put_param(f, "server_encoding", "UTF8");
            put_param(f, "client_encoding", "UTF8");
            put_param(f, "standard_conforming_strings", "on");
            put_param(f, "integer_datetimes", "on");
            put(f, 'K', key, 8);
            put(f, 'Z', &idle, 1);
            bool held = f->hold;
            f->hold = false; /* the handshake is never held */
            flush_out(f);
            f->hold = held;
        } else {
            on_message(f, (char)f->in[off], f->in + off + 5, n - 4);
            if (f->fd < 0)
                return;
        }
        off += total;
    }
    memmove(f->in, f->in + off, f->inlen - off);
    f->inlen -= off;
    flush_out(f);
}

static void on_accept(evutil_socket_t lfd, short what, void *arg)
{
    struct fake *f = arg;
    int fd = accept(lfd, NULL, NULL);
    if (fd < 0)
        return;
    fake_close(f);
    evutil_make_socket_nonblocking(fd);
    f->fd = fd;
    f->conns++;
    f->syncs = 0;
    f->ev = event_new(f->base, fd, EV_READ | EV_PERSIST, on_readable, f);
    event_add(f->ev, NULL);
}

static void fake_start(struct fake *f, struct event_base *base)
{
    memset(f, 0, sizeof(*f));
    f->base = base;
    f->fd = -1;
    snprintf(f->dir, sizeof(f->dir), "/tmp/gwpgw-XXXXXX");
    assert_non_null(mkdtemp(f->dir));
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    snprintf(sa.sun_path, sizeof(sa.sun_path), "%s/.s.PGSQL.5432", f->dir);
    f->lfd = socket(AF_UNIX, SOCK_STREAM, 0);
    assert_true(f->lfd >= 0);
    assert_int_equal(bind(f->lfd, (struct sockaddr *)&sa, sizeof(sa)), 0);
    assert_int_equal(listen(f->lfd, 4), 0);
    evutil_make_socket_nonblocking(f->lfd);
    f->accept_ev = event_new(base, f->lfd, EV_READ | EV_PERSIST, on_accept, f);
    event_add(f->accept_ev, NULL);
}

static void fake_release(struct fake *f)
{
    f->hold = false;
    flush_out(f);
}

static void fake_stop(struct fake *f)
{
    char path[128];
    fake_close(f);
    event_free(f->accept_ev);
    close(f->lfd);
    snprintf(path, sizeof(path), "%s/.s.PGSQL.5432", f->dir);
    unlink(path);
    rmdir(f->dir);
    free(f->out);
}

/* ---- the writer under test ---- */

#define MAX_ROWS 64

struct env {
    struct event_base *base;
    struct fake db;
    struct pgw *p;
    char conninfo[160];
    int done[MAX_ROWS];               /* callbacks per row */
    enum pgw_status status[MAX_ROWS]; /* the last one's status */
    char value[MAX_ROWS][32];         /* a lookup's answer: its row's value, or "NULL" */
    char error[MAX_ROWS][256];
    int order[MAX_ROWS * 4], norder; /* rows in callback order */
    bool in_submit;
    int connected, downs;
    uint32_t max_in_flight, batches_ended;
};

static const struct pgw_statement statements[] = {
    {.name = "ins",
     .sql = "insert into t (v) select * from unnest($1::text[])",
     .nparams = 1,
     .batched = true},
    {.name = "look",
     .sql = "select m.pk from unnest($1::bigint[]) with ordinality as u(id, ord) "
            "left join m on m.id = u.id order by u.ord",
     .nparams = 1,
     .batched = true,
     .row_results = true},
};

static struct env *E;

static void row_done(void *arg, enum pgw_status st, const PGresult *res, int row, const char *error)
{
    int i = (int)(intptr_t)arg;
    assert_false(E->in_submit); /* never from within pgw_submit */
    E->done[i]++;
    E->status[i] = st;
    snprintf(E->error[i], sizeof(E->error[i]), "%s", error ? error : "");
    if (res && PQnfields(res) == 1) {
        assert_true(row >= 0 && row < PQntuples(res));
        snprintf(E->value[i], sizeof(E->value[i]), "%s",
                 PQgetisnull(res, row, 0) ? "NULL" : PQgetvalue(res, row, 0));
    }
    E->order[E->norder++] = i;
}

static void on_connected(void *arg)
{
    ((struct env *)arg)->connected++;
}

static void on_down(void *arg)
{
    ((struct env *)arg)->downs++;
}

static void on_batch(void *arg, uint32_t in_flight, bool committed)
{
    struct env *e = arg;
    if (in_flight > e->max_in_flight)
        e->max_in_flight = in_flight;
    if (committed)
        e->batches_ended++;
}

/* Turn the loop until COND(E) holds (true) or MS milliseconds have passed (false). */
static bool run_until(bool (*cond)(struct env *), uint64_t ms)
{
    uint64_t end = util_now_ms() + ms;
    while (!cond(E)) {
        if (util_now_ms() > end)
            return false;
        struct timeval tv = {0, 2000};
        event_base_loopexit(E->base, &tv);
        event_base_dispatch(E->base);
    }
    return true;
}

static void settle(uint64_t ms)
{
    uint64_t end = util_now_ms() + ms;
    while (util_now_ms() < end) {
        struct timeval tv = {0, 2000};
        event_base_loopexit(E->base, &tv);
        event_base_dispatch(E->base);
    }
}

static bool is_connected(struct env *e)
{
    return pgw_connected(e->p);
}

static int setup_depth(void **state, uint32_t depth)
{
    struct env *e = calloc(1, sizeof(*e));
    assert_non_null(e);
    E = e;
    e->base = event_base_new();
    fake_start(&e->db, e->base);
    snprintf(e->conninfo, sizeof(e->conninfo), "host=%s port=5432 dbname=x user=y", e->db.dir);
    struct pgw_options o = {
        .conninfo = e->conninfo,
        .name = "test",
        .statements = statements,
        .nstatements = 2,
        .batch_size = 8,
        .batch_delay_ms = 0,
        .pipeline_depth = depth,
        .queue_size = 1000,
        .reconnect_max_ms = 200,
        .on_connected = on_connected,
        .on_down = on_down,
        .on_batch = on_batch,
        .arg = e,
    };
    char err[256];
    e->p = pgw_new(e->base, NULL, &o, err, sizeof(err));
    assert_non_null(e->p);
    assert_true(run_until(is_connected, 5000));
    *state = e;
    return 0;
}

static int setup4(void **state)
{
    return setup_depth(state, 4);
}

static int setup1(void **state)
{
    return setup_depth(state, 1);
}

static int teardown(void **state)
{
    struct env *e = *state;
    pgw_free(e->p);
    fake_stop(&e->db);
    event_base_free(e->base);
    free(e);
    return 0;
}

static void submit(struct env *e, int i, const char *value)
{
    const char *v[1] = {value};
    e->in_submit = true;
    assert_non_null(pgw_submit(e->p, 0, v, row_done, (void *)(intptr_t)i));
    e->in_submit = false;
}

static void submit_rows(struct env *e, int from, int to)
{
    char v[32];
    for (int i = from; i < to; i++) {
        snprintf(v, sizeof(v), "row-%d", i);
        submit(e, i, v);
    }
}

static int want_syncs;
static bool syncs_reached(struct env *e)
{
    return e->db.syncs >= want_syncs;
}

static int want_done;
static bool all_done(struct env *e)
{
    int n = 0;
    for (int i = 0; i < MAX_ROWS; i++)
        n += e->done[i] > 0;
    return n >= want_done;
}

/* Turn the loop until the database has read N Syncs (batches), or fail. */
static void wait_syncs(int n)
{
    want_syncs = n;
    assert_true(run_until(syncs_reached, 2000));
}

/* The database holds its answers; row 0 goes alone as the first batch. Returns the Syncs the
 * connection had read before it (the prepares'). */
static int hold_first_batch(struct env *e)
{
    e->db.hold = true;
    int base_syncs = e->db.syncs;
    submit_rows(e, 0, 1);
    wait_syncs(base_syncs + 1);
    return base_syncs;
}

/* ---- tests ---- */

/* Row 0 goes alone and is held by the database; rows 1-8, 9-16 and 17-24 go as three more
 * batches behind it without waiting; rows 25-32 wait, four being on the wire. */
static void test_four_batches_on_the_wire_then_the_fifth(void **state)
{
    struct env *e = *state;
    int base_syncs = hold_first_batch(e);
    submit_rows(e, 1, 33);
    wait_syncs(base_syncs + 4);
    settle(50);
    assert_int_equal(e->db.syncs, base_syncs + 4);
    assert_int_equal(e->max_in_flight, 4);
    assert_int_equal(pgw_queued(e->p), 8);
    assert_int_equal(pgw_pending(e->p), 33);
    assert_int_equal(e->norder, 0);

    fake_release(&e->db);
    want_done = 33;
    assert_true(run_until(all_done, 2000));
    for (int i = 0; i < 33; i++) {
        assert_int_equal(e->done[i], 1);
        assert_int_equal(e->status[i], PGW_OK);
        assert_int_equal(e->order[i], i); /* batches commit, and call back, in order */
    }
    assert_int_equal(e->db.syncs, base_syncs + 5);
    assert_int_equal(e->batches_ended, 5);
    assert_int_equal(e->db.executes, 5); /* one statement per batch: rows travel as arrays */
    assert_int_equal(pgw_pending(e->p), 0);
}

/* With one batch on the wire a further one waits for 8 statements: 7 wait, the 8th sends. */
static void test_a_further_batch_waits_for_eight_statements(void **state)
{
    struct env *e = *state;
    int base_syncs = hold_first_batch(e);
    submit_rows(e, 1, 8);
    settle(50);
    assert_int_equal(e->db.syncs, base_syncs + 1);
    assert_int_equal(pgw_queued(e->p), 7);
    submit_rows(e, 8, 9);
    wait_syncs(base_syncs + 2);
    assert_int_equal(pgw_queued(e->p), 0);
    fake_release(&e->db);
    want_done = 9;
    assert_true(run_until(all_done, 2000));
}

/* A poisoned row in the second of three batches on the wire: batches 1 and 3 commit; batch 2
 * is rolled back, its rows go again one per statement, and only the poisoned one fails. */
static void test_a_refused_row_fails_alone_the_batches_around_it_commit(void **state)
{
    struct env *e = *state;
    int base_syncs = hold_first_batch(e);
    submit_rows(e, 1, 4);
    submit(e, 4, "poison-4");
    submit_rows(e, 5, 17);
    wait_syncs(base_syncs + 3);
    fake_release(&e->db);
    want_done = 17;
    assert_true(run_until(all_done, 3000));
    for (int i = 0; i < 17; i++) {
        assert_int_equal(e->done[i], 1);
        assert_int_equal(e->status[i], i == 4 ? PGW_FAILED : PGW_OK);
    }
    /* once in its batch of 8, once alone (the rows sent alone after it, again) */
    assert_int_equal(e->db.refused, 2);
    /* batch 3 (rows 9-16) did not wait for batch 2's rows to be sorted out */
    int pos9 = -1, pos1 = -1;
    for (int k = 0; k < e->norder; k++) {
        if (e->order[k] == 9 && pos9 < 0)
            pos9 = k;
        if (e->order[k] == 1 && pos1 < 0)
            pos1 = k;
    }
    assert_true(pos9 >= 0 && pos1 >= 0 && pos9 < pos1);
    assert_int_equal(pgw_pending(e->p), 0);
}

static bool reconnected(struct env *e)
{
    return e->connected >= 2 && pgw_connected(e->p);
}

/* The connection drops with three batches on the wire: nothing is called back as failed;
 * after the reconnect every row is sent again and called back exactly once, in order. */
static void test_connection_lost_with_batches_on_the_wire(void **state)
{
    struct env *e = *state;
    int base_syncs = hold_first_batch(e);
    submit_rows(e, 1, 17);
    wait_syncs(base_syncs + 3);
    e->db.hold = false;
    e->db.outlen = 0; /* the held answers are lost with the connection */
    fake_close(&e->db);
    assert_true(run_until(reconnected, 5000));
    assert_int_equal(e->downs, 1);
    want_done = 17;
    assert_true(run_until(all_done, 3000));
    for (int i = 0; i < 17; i++) {
        assert_int_equal(e->done[i], 1);
        assert_int_equal(e->status[i], PGW_OK);
        assert_int_equal(e->order[i], i);
    }
    assert_int_equal(e->db.conns, 2);
}

/* pipeline_depth = 1: one batch at a time, whatever waits. */
static void test_depth_one_sends_one_batch_at_a_time(void **state)
{
    struct env *e = *state;
    int base_syncs = hold_first_batch(e);
    submit_rows(e, 1, 25);
    settle(50);
    assert_int_equal(e->db.syncs, base_syncs + 1);
    assert_int_equal(e->max_in_flight, 1);
    fake_release(&e->db);
    want_done = 25;
    assert_true(run_until(all_done, 2000));
    assert_int_equal(e->max_in_flight, 1);
    /* 1, then the 24 that waited in batches of 8 */
    assert_int_equal(e->batches_ended, 4);
}

static void submit_lookup(struct env *e, int i, long id)
{
    char v[24];
    snprintf(v, sizeof(v), "%ld", id);
    const char *vals[1] = {v};
    e->in_submit = true;
    assert_non_null(pgw_submit(e->p, 1, vals, row_done, (void *)(intptr_t)i));
    e->in_submit = false;
}

/* Seven lookups and a row wait behind a held batch: they go as one batch of two executions
 * (the lookups' and the row's), and each lookup gets its own id's answer. */
static void test_lookups_of_a_batch_are_one_execution_each_gets_its_row(void **state)
{
    struct env *e = *state;
    int base_syncs = hold_first_batch(e);
    int base_exec = e->db.executes;
    for (int i = 1; i < 8; i++)
        submit_lookup(e, i, 100 + (i * 7) % 10); /* ids out of order, some answered NULL */
    submit_rows(e, 8, 9);
    wait_syncs(base_syncs + 2);
    fake_release(&e->db);
    want_done = 9;
    assert_true(run_until(all_done, 2000));
    assert_int_equal(e->db.executes - base_exec, 2); /* the lookups; row 8 */
    for (int i = 1; i < 8; i++) {
        long id = 100 + (i * 7) % 10;
        char want[32];
        snprintf(want, sizeof(want), id % 2 == 0 ? "proc-%ld" : "NULL", id);
        assert_int_equal(e->status[i], PGW_OK);
        assert_string_equal(e->value[i], want);
    }
    assert_int_equal(e->status[8], PGW_OK);
    assert_int_equal(pgw_pending(e->p), 0);
}

/* An answer with a row missing fails every lookup of that execution, with the counts in the
 * error; PostgreSQL refused nothing, so the row written in the same batch commits with it and
 * is not sent again. */
static void test_a_lookup_answer_of_the_wrong_size_fails_its_lookups(void **state)
{
    struct env *e = *state;
    int base_exec = e->db.executes;
    e->db.short_rows = true;
    for (int i = 0; i < 4; i++)
        submit_lookup(e, i, 10 + i);
    submit_rows(e, 4, 5);
    want_done = 5;
    assert_true(run_until(all_done, 2000));
    for (int i = 0; i < 4; i++) {
        assert_int_equal(e->done[i], 1);
        assert_int_equal(e->status[i], PGW_FAILED);
        assert_non_null(strstr(e->error[i], "answered 3 rows for the 4 rows"));
    }
    assert_int_equal(e->done[4], 1);
    assert_int_equal(e->status[4], PGW_OK);
    assert_int_equal(e->db.executes - base_exec, 2); /* the lookups; row 4, once */
    assert_int_equal(pgw_pending(e->p), 0);
}

/* Lookups answered in a batch that PostgreSQL then rolls back (a refused row behind them): the
 * answers are dropped with the batch, the lookups asked again, and each called back once with
 * its own row. Under ASan this also proves each shared answer is freed exactly once. */
static void test_lookups_answered_in_a_rolled_back_batch_are_asked_again(void **state)
{
    struct env *e = *state;
    int base_syncs = hold_first_batch(e);
    for (int i = 1; i < 5; i++)
        submit_lookup(e, i, 20 + i);
    submit(e, 5, "poison-5");
    submit_rows(e, 6, 9);
    wait_syncs(base_syncs + 2);
    fake_release(&e->db);
    want_done = 9;
    assert_true(run_until(all_done, 3000));
    /* Answered in the batch of 8, rolled back; answered again in the batch that carries the
     * refused row alone, rolled back again; answered a third time and committed. A lookup's
     * answer is never kept from a rolled-back transaction: it may have read a map row of the
     * same batch that never commits. */
    assert_int_equal(e->db.looks, 3);
    assert_int_equal(e->db.refused, 2);
    for (int i = 1; i < 9; i++) {
        assert_int_equal(e->done[i], 1);
        assert_int_equal(e->status[i], i == 5 ? PGW_FAILED : PGW_OK);
    }
    for (int i = 1; i < 5; i++) {
        char want[32];
        snprintf(want, sizeof(want), (20 + i) % 2 == 0 ? "proc-%d" : "NULL", 20 + i);
        assert_string_equal(e->value[i], want);
    }
    assert_int_equal(pgw_pending(e->p), 0);
}

/* Two of four lookups cancelled while their execution is on the wire: the other two get their
 * rows, the cancelled ones no callback, and the shared answer is freed with the last holder
 * (ASan would report a leak or a double free). */
static void test_cancelled_lookups_in_flight_get_no_callback(void **state)
{
    struct env *e = *state;
    int base_syncs = hold_first_batch(e);
    struct pgw_item *items[4];
    for (int i = 0; i < 4; i++) {
        char v[24];
        snprintf(v, sizeof(v), "%d", 30 + i);
        const char *vals[1] = {v};
        e->in_submit = true;
        items[i] = pgw_submit(e->p, 1, vals, row_done, (void *)(intptr_t)(i + 1));
        e->in_submit = false;
        assert_non_null(items[i]);
    }
    submit_rows(e, 5, 9);
    wait_syncs(base_syncs + 2);
    assert_false(pgw_item_cancel(items[1])); /* in flight: not dropped, finished silently */
    assert_false(pgw_item_cancel(items[2]));
    fake_release(&e->db);
    want_done = 7; /* row 0, lookups 1 and 4, rows 5-8 */
    assert_true(run_until(all_done, 2000));
    settle(50);
    assert_int_equal(e->done[2], 0);
    assert_int_equal(e->done[3], 0);
    assert_int_equal(e->done[1], 1);
    assert_string_equal(e->value[1], "proc-30");
    assert_int_equal(e->done[4], 1);
    assert_string_equal(e->value[4], "NULL");
    assert_int_equal(pgw_pending(e->p), 0);
}

/* pgw_stalled: the oldest batch on the wire is the one that counts. */
static void test_stalled_counts_from_the_oldest_batch(void **state)
{
    struct env *e = *state;
    int base_syncs = hold_first_batch(e);
    settle(120);
    submit_rows(e, 1, 9);
    wait_syncs(base_syncs + 2);
    assert_true(pgw_stalled(e->p, 100)); /* batch 1 went 120+ ms ago */
    assert_false(pgw_stalled(e->p, 5000));
    fake_release(&e->db);
    want_done = 9;
    assert_true(run_until(all_done, 2000));
    assert_false(pgw_stalled(e->p, 0));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_four_batches_on_the_wire_then_the_fifth, setup4,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_a_further_batch_waits_for_eight_statements, setup4,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_a_refused_row_fails_alone_the_batches_around_it_commit,
                                        setup4, teardown),
        cmocka_unit_test_setup_teardown(test_connection_lost_with_batches_on_the_wire, setup4,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_depth_one_sends_one_batch_at_a_time, setup1, teardown),
        cmocka_unit_test_setup_teardown(test_stalled_counts_from_the_oldest_batch, setup4,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_lookups_of_a_batch_are_one_execution_each_gets_its_row,
                                        setup4, teardown),
        cmocka_unit_test_setup_teardown(test_a_lookup_answer_of_the_wrong_size_fails_its_lookups,
                                        setup4, teardown),
        cmocka_unit_test_setup_teardown(
            test_lookups_answered_in_a_rolled_back_batch_are_asked_again, setup4, teardown),
        cmocka_unit_test_setup_teardown(test_cancelled_lookups_in_flight_get_no_callback, setup4,
                                        teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
