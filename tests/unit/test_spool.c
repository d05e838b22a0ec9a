/*
 * Unit tests for spool.c and the record encoding of ledger.c: the segment format (framing,
 * CRC32C, records of every kind round-tripping), a torn write at every byte offset, damage in
 * the middle of a segment, and the stateful parts with real files in a temporary directory and
 * a real event loop: the writer thread's group commit and completions, the space classes, the
 * repair of segments an earlier process left (torn tail, damaged middle, not a segment), a
 * write that fails (RLIMIT_FSIZE) leaving nothing behind, the replay side's listing and
 * deletion.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <dirent.h>
#include <event2/event.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include "ledger.h"
#include "spool.h"

/* ---- helpers ---- */

#define LONG_TEXT                                                                                  \
    "a reason long enough that ten records fill more than one 4 KiB segment: "                     \
    "0123456789012345678901234567890123456789012345678901234567890123456789012345678901234567890"  \
    "0123456789012345678901234567890123456789012345678901234567890123456789012345678901234567890"  \
    "0123456789012345678901234567890123456789012345678901234567890123456789012345678901234567890"

static struct ledger_rec *sample(enum ledger_kind kind, int n)
{
    char id[32], t[40];
    snprintf(id, sizeof(id), "req-%d", n);
    snprintf(t, sizeof(t), "2026-11-30 12:00:%02d.000+00", n % 60);
    const char *v[LEDGER_MAX_FIELDS] = {0};
    switch (kind) {
    case LEDGER_RUN:
    case LEDGER_TASK:
        v[LF_REQUEST_ID] = id;
        v[LF_RECEIVED_AT] = t;
        v[LF_INSTANCE] = "gw";
        v[LF_ID] = "501";
        v[LF_OVERRIDES] = "{\"overwriteEntries\": 5}";
        v[LF_OVERWRITE_ENTRIES] = "5";
        v[LF_KPI_RULE] = "unknown_process";
        v[LF_DECISION] = "accepted";
        v[LF_SPOOLED] = "false";
        v[LF_REASON_MESSAGE] = n % 2 ? "quote \" backslash \\ and \xc3\xa9" : NULL;
        if (kind == LEDGER_TASK) {
            v[LF_ITEM] = "0";
            v[LF_ENDPOINT] = "Solved";
            v[LF_ACTION] = "Solved";
        }
        break;
    case LEDGER_OUTCOME:
        v[LO_REQUEST_ID] = id;
        v[LO_RECEIVED_AT] = t;
        v[LO_ENDPOINT] = "FinishRun";
        v[LO_INSTANCE] = "gw";
        v[LO_UPSTREAM_STATUS] = "200";
        v[LO_STATUS_SENT] = "200";
        v[LO_TOTAL_SECONDS] = "0.001";
        break;
    case LEDGER_RUN_MAP:
    case LEDGER_TASK_MAP:
        v[LM_ID] = "501";
        v[LM_PROCESS_KEY] = "pk";
        v[LM_SOURCE] = "StartOrGetRun";
        v[LM_REQUEST_ID] = id;
        break;
    case LEDGER_REFUSALS:
        v[LS_SUMMARY_ID] = id;
        v[LS_WINDOW_START] = t;
        v[LS_WINDOW_END] = t;
        v[LS_INSTANCE] = "gw";
        v[LS_ENDPOINT] = "FinishRun";
        v[LS_REASON_CODE] = "finishrun.runid_missing";
        v[LS_COUNT_VALUE] = "7";
        break;
    default:
        break;
    }
    struct ledger_rec *r = ledger_rec_new(kind, v);
    assert_non_null(r);
    return r;
}

static bool same_rec(const struct ledger_rec *a, const struct ledger_rec *b)
{
    if (a->kind != b->kind || a->nfields != b->nfields)
        return false;
    for (unsigned i = 0; i < a->nfields; i++) {
        const char *x = ledger_get(a, i), *y = ledger_get(b, i);
        if ((x == NULL) != (y == NULL) || (x && strcmp(x, y) != 0))
            return false;
    }
    return true;
}

/* A segment of N frames (records sample(kind i % kinds, i)) in a malloc'd buffer. */
static unsigned char *segment(int n, size_t *len, size_t *frame_end)
{
    size_t cap = SPOOL_FILE_HEADER;
    struct ledger_rec *recs[16];
    for (int i = 0; i < n; i++) {
        recs[i] = sample((enum ledger_kind)(i % LEDGER_KINDS), i);
        cap += spool_frame_size(recs[i]);
    }
    unsigned char *buf = malloc(cap);
    spool_file_header(buf, 0, 1, 1000);
    size_t o = SPOOL_FILE_HEADER;
    for (int i = 0; i < n; i++) {
        spool_frame(recs[i], buf + o);
        o += spool_frame_size(recs[i]);
        if (frame_end)
            frame_end[i] = o;
        free(recs[i]);
    }
    *len = o;
    return buf;
}

struct scan_out {
    int records;
    struct ledger_rec *recs[16];
    int cuts;
    uint64_t cut_off[8], cut_len[8];
    bool cut_tail[8];
};

static void on_record(void *arg, uint64_t offset, struct ledger_rec *r)
{
    struct scan_out *o = arg;
    if (o->records < 16)
        o->recs[o->records] = r;
    else
        free(r);
    o->records++;
}

static void on_cut(void *arg, uint64_t offset, uint64_t len, const char *why, bool tail)
{
    struct scan_out *o = arg;
    assert_non_null(why);
    if (o->cuts < 8) {
        o->cut_off[o->cuts] = offset;
        o->cut_len[o->cuts] = len;
        o->cut_tail[o->cuts] = tail;
    }
    o->cuts++;
}

static void scan_out_free(struct scan_out *o)
{
    for (int i = 0; i < o->records && i < 16; i++)
        free(o->recs[i]);
}

/* ---- format ---- */

static void test_crc32c(void **state)
{
    (void)state;
    assert_int_equal(spool_crc32c(0, "123456789", 9), 0xE3069283u); /* the check value */
    assert_int_equal(spool_crc32c(0, "", 0), 0);
    /* incremental = whole */
    uint32_t c = spool_crc32c(0, "1234", 4);
    assert_int_equal(spool_crc32c(c, "56789", 5), 0xE3069283u);
}

static void test_records_round_trip(void **state)
{
    (void)state;
    for (int k = 0; k < LEDGER_KINDS; k++) {
        for (int n = 0; n < 2; n++) {
            struct ledger_rec *r = sample((enum ledger_kind)k, n);
            size_t len = ledger_encoded_size(r);
            unsigned char *buf = malloc(len);
            ledger_encode(r, buf);
            struct ledger_rec *back = ledger_decode(buf, len);
            assert_non_null(back);
            assert_true(same_rec(r, back));
            /* every truncation and a byte too many are refused */
            for (size_t cut = 0; cut < len; cut++)
                assert_null(ledger_decode(buf, cut));
            free(back);
            free(buf);
            free(r);
        }
    }
    /* a field with a NUL inside does not decode (it could not be a text) */
    struct ledger_rec *r = sample(LEDGER_RUN_MAP, 1);
    size_t len = ledger_encoded_size(r);
    unsigned char *buf = malloc(len);
    ledger_encode(r, buf);
    buf[6] = 0;
    assert_null(ledger_decode(buf, len));
    free(buf);
    free(r);
}

static void test_scan_whole_segment(void **state)
{
    (void)state;
    size_t len, ends[16];
    unsigned char *buf = segment(6, &len, ends);
    struct scan_out o = {0};
    struct spool_scan_cb cb = {on_record, on_cut, &o};
    uint64_t end;
    assert_int_equal(spool_scan(buf, len, &cb, &end), 0);
    assert_int_equal(o.records, 6);
    assert_int_equal(o.cuts, 0);
    assert_int_equal(end, len);
    for (int i = 0; i < 6; i++) {
        struct ledger_rec *want = sample((enum ledger_kind)(i % LEDGER_KINDS), i);
        assert_true(same_rec(o.recs[i], want));
        free(want);
    }
    scan_out_free(&o);
    /* not a segment */
    buf[0] = 'X';
    assert_int_equal(spool_scan(buf, len, &cb, &end), -1);
    free(buf);
}

static void test_torn_write_at_every_offset(void **state)
{
    (void)state;
    size_t len, ends[16];
    unsigned char *buf = segment(4, &len, ends);
    for (size_t cut = SPOOL_FILE_HEADER; cut <= len; cut++) {
        int whole = 0;
        while (whole < 4 && ends[whole] <= cut)
            whole++;
        size_t valid = whole ? ends[whole - 1] : SPOOL_FILE_HEADER;
        struct scan_out o = {0};
        struct spool_scan_cb cb = {on_record, on_cut, &o};
        uint64_t end;
        assert_int_equal(spool_scan(buf, cut, &cb, &end), 0);
        assert_int_equal(o.records, whole); /* every complete frame, nothing else */
        assert_int_equal(end, valid);
        if (cut == valid) {
            assert_int_equal(o.cuts, 0);
        } else { /* the torn rest is one tail cut, exactly */
            assert_int_equal(o.cuts, 1);
            assert_int_equal(o.cut_off[0], valid);
            assert_int_equal(o.cut_len[0], cut - valid);
            assert_true(o.cut_tail[0]);
        }
        scan_out_free(&o);
    }
    free(buf);
}

static void test_damage_in_the_middle_loses_only_that_frame(void **state)
{
    (void)state;
    size_t len, ends[16];
    /* at every byte of frame 2 (of 5): its payload, CRC, length or marker changed */
    unsigned char *orig = segment(5, &len, ends);
    for (size_t at = ends[1]; at < ends[2]; at++) {
        unsigned char *buf = malloc(len);
        memcpy(buf, orig, len);
        buf[at] ^= 0x5A;
        struct scan_out o = {0};
        struct spool_scan_cb cb = {on_record, on_cut, &o};
        uint64_t end;
        assert_int_equal(spool_scan(buf, len, &cb, &end), 0);
        assert_int_equal(o.records, 4);
        assert_int_equal(o.cuts, 1);
        assert_int_equal(o.cut_off[0], ends[1]);
        assert_int_equal(o.cut_len[0], ends[2] - ends[1]);
        assert_false(o.cut_tail[0]);
        assert_int_equal(end, len);
        /* the records around it are intact */
        struct ledger_rec *want = sample((enum ledger_kind)(3 % LEDGER_KINDS), 3);
        assert_true(same_rec(o.recs[2], want));
        free(want);
        scan_out_free(&o);
        free(buf);
    }
    free(orig);
}

/* ---- files, the writer, the workers' handles ---- */

static char dir[256];

static void make_dir(void)
{
    snprintf(dir, sizeof(dir), "/tmp/gwspool-test-XXXXXX");
    assert_non_null(mkdtemp(dir));
}

static void remove_dir(const char *d)
{
    DIR *dd = opendir(d);
    if (!dd)
        return;
    struct dirent *e;
    while ((e = readdir(dd)) != NULL) {
        if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0)
            continue;
        char p[600];
        snprintf(p, sizeof(p), "%s/%s", d, e->d_name);
        struct stat st;
        if (stat(p, &st) == 0 && S_ISDIR(st.st_mode))
            remove_dir(p);
        else
            unlink(p);
    }
    closedir(dd);
    rmdir(d);
}

static int count_files(const char *d, const char *suffix)
{
    DIR *dd = opendir(d);
    int n = 0;
    struct dirent *e;
    while (dd && (e = readdir(dd)) != NULL) {
        size_t l = strlen(e->d_name), s = strlen(suffix);
        n += l > s && strcmp(e->d_name + l - s, suffix) == 0;
    }
    if (dd)
        closedir(dd);
    return n;
}

/* Bytes of the regular files directly in D (the segments). */
static long long dir_bytes(const char *d)
{
    DIR *dd = opendir(d);
    long long n = 0;
    struct dirent *e;
    while (dd && (e = readdir(dd)) != NULL) {
        char p[600];
        struct stat st;
        snprintf(p, sizeof(p), "%s/%s", d, e->d_name);
        if (stat(p, &st) == 0 && S_ISREG(st.st_mode))
            n += st.st_size;
    }
    if (dd)
        closedir(dd);
    return n;
}

struct done_log {
    int ok, failed;
};

static void done_cb(void *arg, bool ok, const char *error)
{
    struct done_log *d = arg;
    if (ok)
        d->ok++;
    else
        d->failed++;
}

static struct spool *open_spool(uint64_t max)
{
    struct spool_options o = {
        .dir = dir, .max_bytes = max, .segment_bytes = 4096, .idle_close_ms = 200, .nworkers = 2};
    char err[256];
    struct spool *s = spool_open(&o, err, sizeof(err));
    if (!s)
        print_error("spool_open: %s\n", err);
    assert_non_null(s);
    return s;
}

/* Run BASE until D has seen WANT completions (bounded). */
static void run_until(struct event_base *base, struct done_log *d, int want)
{
    for (int i = 0; i < 500 && d->ok + d->failed < want; i++) {
        struct timeval tv = {0, 10000};
        event_base_loopexit(base, &tv);
        event_base_dispatch(base);
    }
}

static void test_append_sync_and_replay_listing(void **state)
{
    (void)state;
    make_dir();
    struct event_base *base = event_base_new();
    struct spool *s = open_spool(64 * 1024 * 1024);
    struct spool_worker *w = spool_worker_new(s, 0, base);
    assert_non_null(w);
    struct done_log d = {0};
    /* four rounds of ten: each round is written (and synced) at once, and a segment closes
     * once it is past 4 KiB */
    for (int round = 0; round < 4; round++) {
        for (int i = round * 10; i < round * 10 + 10; i++) {
            struct ledger_rec *r = sample(LEDGER_RUN, i);
            struct ledger_rec *big = ledger_with(r, LF_REASON_MESSAGE, LONG_TEXT);
            assert_int_equal(spool_append(w, big, SPOOL_GATE, done_cb, &d), 0);
            free(big);
            free(r);
        }
        /* a completion never runs inside the call that started it */
        assert_int_equal(d.ok, round * 10);
        assert_int_equal(spool_worker_pending(w), 10);
        run_until(base, &d, round * 10 + 10);
    }
    assert_int_equal(d.ok, 40);
    assert_int_equal(d.failed, 0);
    struct spool_stats st;
    spool_get_stats(s, &st);
    assert_int_equal(st.appended, 40);
    assert_int_equal(st.records, 40);
    assert_true(st.syncs >= 1 && st.syncs < 40); /* group commit: shared syncs */
    assert_true(st.oldest_wall_ms > 0);
    /* segments close when full (4 KiB) or idle (200 ms): all closed soon */
    struct spool_segment segs[64];
    size_t n = 0;
    for (int i = 0; i < 100; i++) {
        spool_close_open_segments(s);
        spool_wait_closed(s, 50);
        n = spool_closed_segments(s, segs, 64);
        spool_get_stats(s, &st);
        uint64_t in_closed = 0;
        for (size_t k = 0; k < n; k++)
            in_closed += segs[k].bytes;
        if (n > 0 && in_closed == st.bytes)
            break;
    }
    assert_true(n >= 4); /* each round closed the segment it filled past 4 KiB */
    for (size_t k = 1; k < n; k++)
        assert_true(segs[k].seq > segs[k - 1].seq);
    /* every record is in the closed segments, in order */
    int seen = 0;
    for (size_t k = 0; k < n; k++) {
        FILE *f = fopen(segs[k].path, "rb");
        assert_non_null(f);
        unsigned char buf[65536];
        size_t len = fread(buf, 1, sizeof(buf), f);
        fclose(f);
        struct scan_out o = {0};
        struct spool_scan_cb cb = {on_record, on_cut, &o};
        uint64_t end;
        assert_int_equal(spool_scan(buf, len, &cb, &end), 0);
        assert_int_equal(o.cuts, 0);
        for (int i = 0; i < o.records; i++) {
            char want[32];
            snprintf(want, sizeof(want), "req-%d", seen++);
            assert_string_equal(ledger_get(o.recs[i], LF_REQUEST_ID), want);
        }
        scan_out_free(&o);
        assert_int_equal(spool_segment_done(s, &segs[k], (uint64_t)o.records), 0);
    }
    assert_int_equal(seen, 40);
    spool_get_stats(s, &st);
    assert_int_equal(st.records, 0);
    assert_int_equal(st.replayed, 40);
    assert_int_equal(count_files(dir, ".seg"), 0);
    spool_worker_free(w);
    spool_close(s);
    event_base_free(base);
    remove_dir(dir);
}

static void test_space_classes(void **state)
{
    (void)state;
    make_dir();
    struct event_base *base = event_base_new();
    /* 1 MiB: GATE records stop within 1/16 of it, each reserving room for its outcome */
    struct spool *s = open_spool(1024 * 1024);
    struct spool_worker *w = spool_worker_new(s, 1, base);
    struct done_log d = {0};
    int gates = 0;
    struct ledger_rec *r = sample(LEDGER_RUN, 1);
    while (spool_append(w, r, SPOOL_GATE, done_cb, &d) == 0)
        gates++;
    assert_true(gates > 100);
    assert_false(spool_has_room(s, spool_frame_size(r)));
    /* every admitted record still finds room for its outcome */
    struct ledger_rec *out = sample(LEDGER_OUTCOME, 1);
    for (int i = 0; i < gates; i++)
        assert_int_equal(spool_append(w, out, SPOOL_OUTCOME, done_cb, &d), 0);
    /* maps use what is left, up to the limit */
    struct ledger_rec *map = sample(LEDGER_RUN_MAP, 1);
    int maps = 0;
    while (spool_append(w, map, SPOOL_OTHER, done_cb, &d) == 0)
        maps++;
    struct spool_stats st;
    spool_get_stats(s, &st);
    assert_true(st.bytes <= 1024 * 1024);
    assert_true(st.refused_full >= 2);
    run_until(base, &d, 2 * gates + maps);
    assert_int_equal(d.ok, 2 * gates + maps);
    /* written, segment headers and all: the files stay within max_bytes */
    spool_get_stats(s, &st);
    assert_true(st.bytes <= 1024 * 1024);
    assert_true(dir_bytes(dir) <= 1024 * 1024);
    free(r);
    free(out);
    free(map);
    spool_worker_free(w);
    spool_close(s);
    event_base_free(base);
    remove_dir(dir);
}

static void write_file(const char *path, const unsigned char *buf, size_t len)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, buf, len), (ssize_t)len);
    close(fd);
}

static void test_recovery_repairs_what_an_earlier_run_left(void **state)
{
    (void)state;
    make_dir();
    size_t len, ends[16];
    unsigned char *buf = segment(5, &len, ends);
    char p[600];
    /* an open segment with a torn tail (the last frame half written) */
    snprintf(p, sizeof(p), "%s/seg-0000000000000005-w0.open", dir);
    write_file(p, buf, ends[3] + 7);
    /* a closed segment with frame 2 damaged */
    unsigned char *bad = malloc(len);
    memcpy(bad, buf, len);
    bad[ends[1] + 20] ^= 0xFF;
    snprintf(p, sizeof(p), "%s/seg-0000000000000003-w1.seg", dir);
    write_file(p, bad, len);
    /* not a segment at all */
    snprintf(p, sizeof(p), "%s/seg-0000000000000009-w0.seg", dir);
    write_file(p, (const unsigned char *)"garbage", 7);

    struct spool *s = open_spool(64 * 1024 * 1024);
    struct spool_stats st;
    spool_get_stats(s, &st);
    assert_int_equal(st.records, 4 + 4);
    assert_int_equal(st.cut_bytes, 7 + (ends[2] - ends[1]) + 7);
    struct spool_segment segs[8];
    size_t n = spool_closed_segments(s, segs, 8);
    assert_int_equal(n, 2);
    assert_int_equal(segs[0].seq, 3); /* in order, whatever the directory order */
    assert_int_equal(segs[1].seq, 5);
    assert_int_equal(count_files(dir, ".open"), 0);
    /* the repaired files hold exactly their valid frames */
    struct stat stt;
    assert_int_equal(stat(segs[1].path, &stt), 0);
    assert_int_equal((size_t)stt.st_size, ends[3]);
    assert_int_equal(stat(segs[0].path, &stt), 0);
    assert_int_equal((size_t)stt.st_size, len - (ends[2] - ends[1]));
    /* the cut bytes are kept */
    char cut[600];
    snprintf(cut, sizeof(cut), "%s/cut", dir);
    assert_int_equal(count_files(cut, ".bin"), 3);
    /* new segments get higher numbers than anything left */
    struct event_base *base = event_base_new();
    struct spool_worker *w = spool_worker_new(s, 0, base);
    struct done_log d = {0};
    struct ledger_rec *r = sample(LEDGER_RUN, 1);
    assert_int_equal(spool_append(w, r, SPOOL_GATE, done_cb, &d), 0);
    run_until(base, &d, 1);
    free(r);
    spool_worker_free(w);
    spool_close(s); /* closes the open segment */
    s = open_spool(64 * 1024 * 1024);
    n = spool_closed_segments(s, segs, 8);
    assert_int_equal(n, 3);
    assert_true(segs[2].seq > 5); /* after every segment left */
    spool_close(s);
    event_base_free(base);
    free(bad);
    free(buf);
    remove_dir(dir);
}

static void test_failed_write_leaves_nothing_behind(void **state)
{
    (void)state;
    make_dir();
    struct event_base *base = event_base_new();
    struct spool *s = open_spool(64 * 1024 * 1024);
    struct spool_worker *w = spool_worker_new(s, 0, base);
    struct done_log d = {0};
    struct ledger_rec *r = sample(LEDGER_RUN, 1);
    assert_int_equal(spool_append(w, r, SPOOL_GATE, done_cb, &d), 0);
    run_until(base, &d, 1);
    assert_int_equal(d.ok, 1);
    /* files may not grow past 400 bytes now: the next batch cannot be written */
    signal(SIGXFSZ, SIG_IGN);
    struct rlimit old, lim = {400, 400};
    getrlimit(RLIMIT_FSIZE, &old);
    lim.rlim_max = old.rlim_max;
    assert_int_equal(setrlimit(RLIMIT_FSIZE, &lim), 0);
    for (int i = 0; i < 10; i++)
        assert_int_equal(spool_append(w, r, SPOOL_GATE, done_cb, &d), 0);
    run_until(base, &d, 11);
    setrlimit(RLIMIT_FSIZE, &old);
    assert_true(d.failed > 0);
    assert_int_equal(d.ok + d.failed, 11);
    struct spool_stats st;
    spool_get_stats(s, &st);
    assert_int_equal(st.write_errors, (uint64_t)d.failed);
    /* what was reported durable is on disk, what failed is not */
    assert_int_equal(st.records, (uint64_t)d.ok);
    spool_worker_free(w);
    spool_close(s);
    s = open_spool(64 * 1024 * 1024);
    spool_get_stats(s, &st);
    assert_int_equal(st.records, (uint64_t)d.ok);
    assert_int_equal(st.cut_bytes, 0); /* nothing torn was left */
    spool_close(s);
    free(r);
    event_base_free(base);
    remove_dir(dir);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_crc32c),
        cmocka_unit_test(test_records_round_trip),
        cmocka_unit_test(test_scan_whole_segment),
        cmocka_unit_test(test_torn_write_at_every_offset),
        cmocka_unit_test(test_damage_in_the_middle_loses_only_that_frame),
        cmocka_unit_test(test_append_sync_and_replay_listing),
        cmocka_unit_test(test_space_classes),
        cmocka_unit_test(test_recovery_repairs_what_an_earlier_run_left),
        cmocka_unit_test(test_failed_write_leaves_nothing_behind),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
