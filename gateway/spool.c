/*
 * spool: segment files, their format, the writer thread and the workers' handles (see
 * spool.h for the design).
 *
 * Locking: one mutex (mu) guards the per-worker pending buffers and sequence numbers, the
 * segment table and the counters; the writer never holds it during I/O. A worker takes it for
 * the memcpy of one frame when it appends (only while records are being spooled), never
 * otherwise. Conditions: work (writer waits for frames), progress (a writer cycle ended: the
 * shutdown flush waits on it), closed (a segment was closed: the replay waits on it).
 */
#include "spool.h"

#include <dirent.h>
#include <errno.h>
#include <event2/event.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/queue.h>
#include <sys/stat.h>
#include <unistd.h>

#include "ledger.h"
#include "log.h"
#include "util.h"

#define FRAME_MARKER 0x4652474Cu /* "LGRF" little-endian */
#define FORMAT_VERSION 1
#define MAX_PAYLOAD (LEDGER_MAX_BYTES + 64 + LEDGER_MAX_FIELDS * 2)
#define MAX_WORKERS 256

/* ---- CRC32C (Castagnoli), table-driven ---- */

static uint32_t crc_table[256];
static pthread_once_t crc_once = PTHREAD_ONCE_INIT;

static void crc_init(void)
{
    for (uint32_t i = 0; i < 256; i++) {
        uint32_t c = i;
        for (int k = 0; k < 8; k++)
            c = (c & 1) ? (c >> 1) ^ 0x82F63B78u : c >> 1;
        crc_table[i] = c;
    }
}

uint32_t spool_crc32c(uint32_t crc, const void *data, size_t len)
{
    pthread_once(&crc_once, crc_init);
    const unsigned char *p = data;
    crc = ~crc;
    while (len--)
        crc = crc_table[(crc ^ *p++) & 0xFF] ^ (crc >> 8);
    return ~crc;
}

/* ---- format ---- */

static void put32(unsigned char *b, uint32_t v)
{
    for (int i = 0; i < 4; i++)
        b[i] = (unsigned char)(v >> (8 * i));
}

static void put64(unsigned char *b, uint64_t v)
{
    for (int i = 0; i < 8; i++)
        b[i] = (unsigned char)(v >> (8 * i));
}

static uint32_t get32(const unsigned char *b)
{
    return (uint32_t)b[0] | (uint32_t)b[1] << 8 | (uint32_t)b[2] << 16 | (uint32_t)b[3] << 24;
}

static uint64_t get64(const unsigned char *b)
{
    return (uint64_t)get32(b) | (uint64_t)get32(b + 4) << 32;
}

size_t spool_frame_size(const struct ledger_rec *r)
{
    return SPOOL_FRAME_HEADER + ledger_encoded_size(r);
}

void spool_frame(const struct ledger_rec *r, unsigned char *buf)
{
    size_t plen = ledger_encoded_size(r);
    put32(buf, FRAME_MARKER);
    put32(buf + 4, (uint32_t)plen);
    buf[12] = FORMAT_VERSION;
    ledger_encode(r, buf + 13);
    put32(buf + 8, spool_crc32c(0, buf + 12, plen + 1));
}

void spool_file_header(unsigned char *buf, uint32_t worker, uint64_t seq, uint64_t created_ms)
{
    memcpy(buf, "AMGWSPL\n", 8);
    put32(buf + 8, FORMAT_VERSION);
    put32(buf + 12, worker);
    put64(buf + 16, seq);
    put64(buf + 24, created_ms);
}

/* Is there a valid frame at POS? Its record (decoded) in *OUT. */
static bool frame_at(const unsigned char *buf, size_t len, size_t pos, size_t *frame_len,
                     struct ledger_rec **out, const char **why)
{
    *out = NULL;
    if (len - pos < SPOOL_FRAME_HEADER) {
        *why = "incomplete frame header";
        return false;
    }
    if (get32(buf + pos) != FRAME_MARKER) {
        *why = "no frame marker";
        return false;
    }
    uint32_t plen = get32(buf + pos + 4);
    if (plen == 0 || plen > MAX_PAYLOAD) {
        *why = "invalid frame length";
        return false;
    }
    if (plen > len - pos - SPOOL_FRAME_HEADER) {
        *why = "frame extends past the end of the file";
        return false;
    }
    if (get32(buf + pos + 8) != spool_crc32c(0, buf + pos + 12, (size_t)plen + 1)) {
        *why = "checksum mismatch";
        return false;
    }
    if (buf[pos + 12] != FORMAT_VERSION) {
        *why = "unknown format version";
        return false;
    }
    *out = ledger_decode(buf + pos + SPOOL_FRAME_HEADER, plen);
    if (!*out) {
        *why = "record does not decode";
        return false;
    }
    *frame_len = SPOOL_FRAME_HEADER + plen;
    return true;
}

int spool_scan(const unsigned char *buf, size_t len, const struct spool_scan_cb *cb,
               uint64_t *valid_end)
{
    *valid_end = 0;
    if (len < SPOOL_FILE_HEADER || memcmp(buf, "AMGWSPL\n", 8) != 0 ||
        get32(buf + 8) != FORMAT_VERSION)
        return -1;
    size_t pos = SPOOL_FILE_HEADER;
    *valid_end = pos;
    while (pos < len) {
        size_t flen;
        struct ledger_rec *r;
        const char *why;
        if (frame_at(buf, len, pos, &flen, &r, &why)) {
            cb->record(cb->arg, pos, r);
            pos += flen;
            *valid_end = pos;
            continue;
        }
        /* Resynchronise: the next position where a valid frame starts. */
        size_t next = pos + 1;
        for (; next + SPOOL_FRAME_HEADER <= len; next++) {
            size_t l2;
            struct ledger_rec *r2;
            const char *w2;
            if (get32(buf + next) == FRAME_MARKER && frame_at(buf, len, next, &l2, &r2, &w2)) {
                free(r2);
                break;
            }
        }
        if (next + SPOOL_FRAME_HEADER > len)
            next = len;
        cb->cut(cb->arg, pos, next - pos, why, next == len);
        pos = next;
    }
    return 0;
}

/* ---- the spool ---- */

struct segment {
    TAILQ_ENTRY(segment) link;
    uint64_t seq;
    int worker;
    char path[1024];
    uint64_t bytes, records, created_ms;
    bool closed;
};
TAILQ_HEAD(segment_list, segment);

struct failure {
    struct failure *next;
    uint64_t from, to; /* seqs that failed */
    char error[160];
};

/* What the writer and a worker share (under mu) and what only the writer uses. */
struct slot {
    /* shared */
    unsigned char *buf;
    size_t len, cap;
    uint64_t appended_seq; /* last seq appended (in buf or written) */
    uint64_t done_seq;     /* every seq <= this is finished (durable, or failed) */
    struct failure *failures;
    int efd;
    bool has_worker;
    /* writer only */
    int fd;
    struct segment *seg;
    uint64_t last_append_ms;
};

struct spool {
    struct spool_options opt;
    char dir[400];
    pthread_mutex_t mu;
    pthread_cond_t work, progress, closed;
    pthread_t writer;
    bool writer_started, stop, close_all;
    struct slot slots[MAX_WORKERS];
    struct segment_list segments;
    uint64_t next_seq;
    uint64_t bytes, reserved;
    struct spool_stats st;
    int refused_fd;
};

struct waiter {
    uint64_t seq;
    spool_done_fn done;
    void *arg;
};

struct spool_worker {
    struct spool *s;
    int index;
    struct event *ev;
    struct waiter *q; /* FIFO ring */
    size_t qcap, qhead, qlen;
};

static void fsync_dir(struct spool *s)
{
    int fd = open(s->dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd >= 0) {
        fsync(fd);
        close(fd);
    }
}

static void segment_path(struct spool *s, uint64_t seq, int worker, bool open_, char *out,
                         size_t len)
{
    snprintf(out, len, "%s/seg-%016" PRIx64 "-w%d.%s", s->dir, seq, worker, open_ ? "open" : "seg");
}

/* ---- start-up: scan and repair ---- */

struct repair {
    struct spool *s;
    const char *path;
    const unsigned char *buf;
    uint64_t records;
    uint64_t cut_bytes;
    bool middle_cut;
    unsigned char *keep; /* valid frames, when the file must be rewritten */
    size_t keep_len;
};

static void repair_record(void *arg, uint64_t offset, struct ledger_rec *r)
{
    struct repair *rp = arg;
    rp->records++;
    free(r);
}

static void repair_cut(void *arg, uint64_t offset, uint64_t len, const char *why, bool tail)
{
    struct repair *rp = arg;
    rp->cut_bytes += len;
    if (!tail)
        rp->middle_cut = true;
    char cutdir[1024], cutpath[1400];
    snprintf(cutdir, sizeof(cutdir), "%s/cut", rp->s->dir);
    mkdir(cutdir, 0700);
    const char *base = strrchr(rp->path, '/');
    snprintf(cutpath, sizeof(cutpath), "%s/%s.%" PRIu64 ".bin", cutdir, base ? base + 1 : rp->path,
             offset);
    int fd = open(cutpath, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd >= 0) {
        ssize_t w = write(fd, rp->buf + offset, (size_t)len);
        (void)w;
        fsync(fd);
        close(fd);
    }
    char p1[1400], p2[1800];
    log_error("spool: cut damaged bytes from a segment",
              "\"file\":\"%s\",\"offset\":%" PRIu64 ",\"bytes\":%" PRIu64
              ",\"reason\":\"%s\",\"where\":\"%s\",\"kept_in\":\"%s\"",
              log_json_escape(rp->path, p1, sizeof(p1)), offset, len, why,
              tail ? "tail (torn or trailing garbage)" : "middle (between valid records)",
              log_json_escape(cutpath, p2, sizeof(p2)));
}

/* Read the whole file at PATH into a malloc'd buffer. */
static unsigned char *read_file(const char *path, size_t *len)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return NULL;
    struct stat stt;
    if (fstat(fd, &stt) != 0) {
        close(fd);
        return NULL;
    }
    size_t n = (size_t)stt.st_size;
    unsigned char *buf = malloc(n > 0 ? n : 1);
    size_t got = 0;
    while (buf && got < n) {
        ssize_t r = read(fd, buf + got, n - got);
        if (r <= 0) {
            free(buf);
            buf = NULL;
            break;
        }
        got += (size_t)r;
    }
    close(fd);
    *len = n;
    return buf;
}

/* Rewrite PATH with only its valid frames (the header and every frame spool_scan accepts). */
static int rewrite_valid(const char *path, const unsigned char *buf, size_t len)
{
    struct keep {
        unsigned char *out;
        size_t o;
        const unsigned char *buf;
    } k = {malloc(len), SPOOL_FILE_HEADER, buf};
    if (!k.out)
        return -1;
    memcpy(k.out, buf, SPOOL_FILE_HEADER);
    /* second pass: copy the valid frames (their positions are where records were found) */
    size_t pos = SPOOL_FILE_HEADER;
    while (pos < len) {
        size_t flen;
        struct ledger_rec *r;
        const char *why;
        if (frame_at(buf, len, pos, &flen, &r, &why)) {
            free(r);
            memcpy(k.out + k.o, buf + pos, flen);
            k.o += flen;
            pos += flen;
        } else {
            pos++;
        }
    }
    char tmp[1100];
    snprintf(tmp, sizeof(tmp), "%s.tmp", path);
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    int rc = -1;
    if (fd >= 0) {
        size_t w = 0;
        while (w < k.o) {
            ssize_t n = write(fd, k.out + w, k.o - w);
            if (n <= 0)
                break;
            w += (size_t)n;
        }
        if (w == k.o && fdatasync(fd) == 0 && close(fd) == 0) {
            fd = -1;
            rc = rename(tmp, path);
        }
        if (fd >= 0)
            close(fd);
    }
    free(k.out);
    return rc;
}

static struct segment *segment_add(struct spool *s, uint64_t seq, int worker, const char *path,
                                   uint64_t bytes, uint64_t records, uint64_t created, bool closed)
{
    struct segment *g = calloc(1, sizeof(*g));
    if (!g)
        return NULL;
    g->seq = seq;
    g->worker = worker;
    snprintf(g->path, sizeof(g->path), "%s", path);
    g->bytes = bytes;
    g->records = records;
    g->created_ms = created;
    g->closed = closed;
    /* keep the list ordered by seq */
    struct segment *q;
    TAILQ_FOREACH(q, &s->segments, link)
    {
        if (q->seq > seq) {
            TAILQ_INSERT_BEFORE(q, g, link);
            return g;
        }
    }
    TAILQ_INSERT_TAIL(&s->segments, g, link);
    return g;
}

static int recover(struct spool *s, char *err, size_t errlen)
{
    DIR *d = opendir(s->dir);
    if (!d) {
        snprintf(err, errlen, "cannot read the spool directory %s: %s", s->dir, strerror(errno));
        return -1;
    }
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        uint64_t seq;
        int worker, consumed = 0;
        char ext[8] = "";
        if (sscanf(e->d_name, "seg-%16" SCNx64 "-w%d.%7s%n", &seq, &worker, ext, &consumed) != 3 ||
            (strcmp(ext, "open") != 0 && strcmp(ext, "seg") != 0))
            continue;
        char path[1024];
        snprintf(path, sizeof(path), "%s/%s", s->dir, e->d_name);
        size_t len;
        unsigned char *buf = read_file(path, &len);
        if (!buf) {
            snprintf(err, errlen, "cannot read the spool segment %s: %s", path, strerror(errno));
            closedir(d);
            return -1;
        }
        struct repair rp = {.s = s, .path = path, .buf = buf};
        struct spool_scan_cb cb = {repair_record, repair_cut, &rp};
        uint64_t valid_end;
        if (spool_scan(buf, len, &cb, &valid_end) != 0) {
            repair_cut(&rp, 0, len, "not a spool segment (bad header)", true);
            unlink(path);
            free(buf);
            s->st.cut_bytes += len;
            continue;
        }
        s->st.cut_bytes += rp.cut_bytes;
        if (rp.middle_cut) {
            if (rewrite_valid(path, buf, len) != 0) {
                snprintf(err, errlen, "cannot rewrite the damaged spool segment %s: %s", path,
                         strerror(errno));
                free(buf);
                closedir(d);
                return -1;
            }
        } else if (valid_end < len) {
            if (truncate(path, (off_t)valid_end) != 0) {
                snprintf(err, errlen, "cannot cut the torn tail of %s: %s", path, strerror(errno));
                free(buf);
                closedir(d);
                return -1;
            }
        }
        uint64_t created = get64(buf + 24);
        free(buf);
        if (rp.records == 0) {
            unlink(path);
            continue;
        }
        char closed_path[1024];
        segment_path(s, seq, worker, false, closed_path, sizeof(closed_path));
        if (strcmp(ext, "open") == 0 && rename(path, closed_path) != 0) {
            snprintf(err, errlen, "cannot close the spool segment %s: %s", path, strerror(errno));
            closedir(d);
            return -1;
        }
        struct stat stt;
        uint64_t size = stat(closed_path, &stt) == 0 ? (uint64_t)stt.st_size : valid_end;
        if (!segment_add(s, seq, worker, closed_path, size, rp.records, created, true)) {
            snprintf(err, errlen, "out of memory");
            closedir(d);
            return -1;
        }
        s->bytes += size;
        s->st.records += rp.records;
        if (seq >= s->next_seq)
            s->next_seq = seq + 1;
    }
    closedir(d);
    fsync_dir(s);
    if (!TAILQ_EMPTY(&s->segments))
        log_info("spool: records left by an earlier run will be replayed",
                 "\"records\":%" PRIu64 ",\"bytes\":%" PRIu64, s->st.records, s->bytes);
    return 0;
}

/* ---- the writer ---- */

/* Close the open segment of slot W (writer; mu held). */
static void close_segment_locked(struct spool *s, struct slot *w)
{
    if (w->fd < 0)
        return;
    close(w->fd);
    w->fd = -1;
    struct segment *g = w->seg;
    w->seg = NULL;
    if (!g)
        return;
    if (g->records == 0) {
        unlink(g->path);
        s->bytes -= g->bytes;
        TAILQ_REMOVE(&s->segments, g, link);
        free(g);
        return;
    }
    char closed[1024];
    segment_path(s, g->seq, g->worker, false, closed, sizeof(closed));
    if (rename(g->path, closed) == 0)
        snprintf(g->path, sizeof(g->path), "%s", closed);
    g->closed = true;
    fsync_dir(s);
    pthread_cond_broadcast(&s->closed);
}

/* Open a new segment for slot W (writer; mu held). 0, or -1 with ERROR set. */
static int open_segment_locked(struct spool *s, struct slot *w, int worker, char *error,
                               size_t errlen)
{
    uint64_t seq = s->next_seq++;
    char path[1024];
    segment_path(s, seq, worker, true, path, sizeof(path));
    int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_APPEND | O_CLOEXEC, 0600);
    if (fd < 0) {
        snprintf(error, errlen, "cannot create a spool segment: %s", strerror(errno));
        return -1;
    }
    unsigned char hdr[SPOOL_FILE_HEADER];
    uint64_t now = util_wall_ms();
    spool_file_header(hdr, (uint32_t)worker, seq, now);
    if (write(fd, hdr, sizeof(hdr)) != (ssize_t)sizeof(hdr)) {
        snprintf(error, errlen, "cannot write a spool segment header: %s", strerror(errno));
        close(fd);
        unlink(path);
        return -1;
    }
    struct segment *g = segment_add(s, seq, worker, path, SPOOL_FILE_HEADER, 0, now, false);
    if (!g) {
        snprintf(error, errlen, "out of memory");
        close(fd);
        unlink(path);
        return -1;
    }
    s->bytes += SPOOL_FILE_HEADER;
    w->fd = fd;
    w->seg = g;
    fsync_dir(s);
    return 0;
}

static int write_all(int fd, const unsigned char *buf, size_t len)
{
    size_t o = 0;
    while (o < len) {
        ssize_t n = write(fd, buf + o, len - o);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return -1;
        o += (size_t)n;
    }
    return 0;
}

static void add_failure(struct slot *w, uint64_t from, uint64_t to, const char *error)
{
    struct failure *f = calloc(1, sizeof(*f));
    if (!f)
        return; /* the worker then sees them as durable: cannot happen without memory anyway */
    f->from = from;
    f->to = to;
    snprintf(f->error, sizeof(f->error), "%s", error);
    struct failure **pp = &w->failures;
    while (*pp)
        pp = &(*pp)->next;
    *pp = f;
}

struct taken {
    unsigned char *buf;
    size_t len;
    uint64_t from, to; /* seqs in buf */
    bool failed;
    char error[160];
};

static void *writer_main(void *arg)
{
    struct spool *s = arg;
    int n = s->opt.nworkers;
    struct taken *t = calloc((size_t)n, sizeof(*t));
    pthread_mutex_lock(&s->mu);
    for (;;) {
        bool any = false;
        for (int i = 0; i < n; i++)
            any |= s->slots[i].len > 0;
        if (!any && !s->close_all) {
            if (s->stop)
                break;
            struct timespec ts;
            clock_gettime(CLOCK_REALTIME, &ts);
            ts.tv_nsec += 100 * 1000000L;
            if (ts.tv_nsec >= 1000000000L) {
                ts.tv_sec++;
                ts.tv_nsec -= 1000000000L;
            }
            pthread_cond_timedwait(&s->work, &s->mu, &ts);
        }
        bool close_all = s->close_all || s->stop;
        s->close_all = false;
        uint64_t now = util_now_ms();
        /* take every worker's pending frames; open segments where needed */
        for (int i = 0; i < n && t; i++) {
            struct slot *w = &s->slots[i];
            t[i] = (struct taken){0};
            if (w->len == 0)
                continue;
            t[i].buf = w->buf;
            t[i].len = w->len;
            t[i].from = w->done_seq + 1;
            t[i].to = w->appended_seq;
            w->buf = NULL;
            w->len = w->cap = 0;
            w->last_append_ms = now;
            if (w->fd < 0 && open_segment_locked(s, w, i, t[i].error, sizeof(t[i].error)) != 0)
                t[i].failed = true;
        }
        pthread_mutex_unlock(&s->mu);

        /* write, then sync: one fdatasync per segment for everything taken */
        for (int i = 0; i < n && t; i++) {
            struct slot *w = &s->slots[i];
            if (!t[i].buf || t[i].failed)
                continue;
            if (write_all(w->fd, t[i].buf, t[i].len) != 0 || fdatasync(w->fd) != 0) {
                t[i].failed = true;
                snprintf(t[i].error, sizeof(t[i].error), "spool write failed: %s", strerror(errno));
                /* leave no part of it behind: a request told "failed" must have no record */
                if (ftruncate(w->fd, (off_t)w->seg->bytes) != 0 || fdatasync(w->fd) != 0)
                    log_error("spool: cannot remove a failed write from its segment",
                              "\"error\":\"%s\"", strerror(errno));
            }
        }

        pthread_mutex_lock(&s->mu);
        for (int i = 0; i < n && t; i++) {
            struct slot *w = &s->slots[i];
            if (t[i].buf) {
                uint64_t count = t[i].to - t[i].from + 1;
                if (t[i].failed) {
                    add_failure(w, t[i].from, t[i].to, t[i].error);
                    s->bytes -= t[i].len;
                    s->st.write_errors += count;
                    log_error("spool: records could not be made durable",
                              "\"thread\":%d,\"records\":%" PRIu64 ",\"error\":\"%s\"", i, count,
                              t[i].error);
                    if (w->fd >= 0)
                        close_segment_locked(s, w); /* start afresh next time */
                } else {
                    w->seg->bytes += t[i].len;
                    w->seg->records += count;
                    s->st.records += count;
                    s->st.appended += count;
                    s->st.syncs++;
                }
                w->done_seq = t[i].to;
                free(t[i].buf);
                if (w->efd >= 0) {
                    uint64_t one = 1;
                    ssize_t wr = write(w->efd, &one, sizeof(one));
                    (void)wr;
                }
            }
            /* close full, idle, or all segments */
            if (w->fd >= 0 && (close_all || w->seg->bytes >= s->opt.segment_bytes ||
                               now - w->last_append_ms >= s->opt.idle_close_ms))
                close_segment_locked(s, w);
        }
        pthread_cond_broadcast(&s->progress);
    }
    for (int i = 0; i < n; i++)
        close_segment_locked(s, &s->slots[i]);
    pthread_cond_broadcast(&s->progress);
    pthread_mutex_unlock(&s->mu);
    free(t);
    return NULL;
}

struct spool *spool_open(const struct spool_options *opts, char *err, size_t errlen)
{
    if (opts->nworkers <= 0 || opts->nworkers > MAX_WORKERS) {
        snprintf(err, errlen, "spool: invalid number of workers");
        return NULL;
    }
    struct spool *s = calloc(1, sizeof(*s));
    if (!s) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    s->opt = *opts;
    snprintf(s->dir, sizeof(s->dir), "%s", opts->dir);
    s->opt.dir = s->dir;
    s->refused_fd = -1;
    s->next_seq = 1;
    TAILQ_INIT(&s->segments);
    for (int i = 0; i < MAX_WORKERS; i++) {
        s->slots[i].fd = -1;
        s->slots[i].efd = -1;
    }
    pthread_mutex_init(&s->mu, NULL);
    pthread_cond_init(&s->work, NULL);
    pthread_cond_init(&s->progress, NULL);
    pthread_cond_init(&s->closed, NULL);
    if (mkdir(s->dir, 0700) != 0 && errno != EEXIST) {
        snprintf(err, errlen, "cannot create the spool directory %s: %s", s->dir, strerror(errno));
        goto fail;
    }
    /* Is it writable? (a read-only mount would otherwise fail at the first outage) */
    char probe[500];
    snprintf(probe, sizeof(probe), "%s/.probe", s->dir);
    int pfd = open(probe, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (pfd < 0) {
        snprintf(err, errlen, "the spool directory %s is not writable: %s", s->dir,
                 strerror(errno));
        goto fail;
    }
    close(pfd);
    unlink(probe);
    if (recover(s, err, errlen) != 0)
        goto fail;
    if (pthread_create(&s->writer, NULL, writer_main, s) != 0) {
        snprintf(err, errlen, "cannot start the spool writer thread");
        goto fail;
    }
    s->writer_started = true;
    return s;
fail:
    spool_close(s);
    return NULL;
}

void spool_close(struct spool *s)
{
    if (!s)
        return;
    if (s->writer_started) {
        pthread_mutex_lock(&s->mu);
        s->stop = true;
        pthread_cond_broadcast(&s->work);
        pthread_cond_broadcast(&s->closed);
        pthread_mutex_unlock(&s->mu);
        pthread_join(s->writer, NULL);
    }
    struct segment *g;
    while ((g = TAILQ_FIRST(&s->segments)) != NULL) {
        TAILQ_REMOVE(&s->segments, g, link);
        free(g);
    }
    for (int i = 0; i < MAX_WORKERS; i++) {
        free(s->slots[i].buf);
        struct failure *f = s->slots[i].failures;
        while (f) {
            struct failure *next = f->next;
            free(f);
            f = next;
        }
    }
    if (s->refused_fd >= 0)
        close(s->refused_fd);
    pthread_mutex_destroy(&s->mu);
    pthread_cond_destroy(&s->work);
    pthread_cond_destroy(&s->progress);
    pthread_cond_destroy(&s->closed);
    free(s);
}

void spool_get_stats(struct spool *s, struct spool_stats *out)
{
    pthread_mutex_lock(&s->mu);
    *out = s->st;
    out->bytes = s->bytes;
    out->segments = 0;
    out->oldest_wall_ms = 0;
    struct segment *g;
    TAILQ_FOREACH(g, &s->segments, link)
    {
        out->segments++;
        if (g->records > 0 && (out->oldest_wall_ms == 0 || g->created_ms < out->oldest_wall_ms))
            out->oldest_wall_ms = g->created_ms;
    }
    pthread_mutex_unlock(&s->mu);
}

bool spool_has_room(struct spool *s, size_t bytes)
{
    pthread_mutex_lock(&s->mu);
    uint64_t limit = s->opt.max_bytes - s->opt.max_bytes / 16;
    bool ok = s->bytes + s->reserved + (uint64_t)s->opt.nworkers * SPOOL_FILE_HEADER + bytes +
                  SPOOL_OUTCOME_RESERVE <=
              limit;
    pthread_mutex_unlock(&s->mu);
    return ok;
}

/* ---- worker handles ---- */

static void worker_event_cb(evutil_socket_t fd, short what, void *arg);

struct spool_worker *spool_worker_new(struct spool *s, int index, struct event_base *base)
{
    if (index < 0 || index >= s->opt.nworkers)
        return NULL;
    struct spool_worker *w = calloc(1, sizeof(*w));
    if (!w)
        return NULL;
    w->s = s;
    w->index = index;
    int efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (efd < 0) {
        free(w);
        return NULL;
    }
    w->ev = event_new(base, efd, EV_READ | EV_PERSIST, worker_event_cb, w);
    if (!w->ev || event_add(w->ev, NULL) != 0) {
        if (w->ev)
            event_free(w->ev);
        close(efd);
        free(w);
        return NULL;
    }
    pthread_mutex_lock(&s->mu);
    s->slots[index].efd = efd;
    s->slots[index].has_worker = true;
    pthread_mutex_unlock(&s->mu);
    return w;
}

/* Run the callbacks of every finished append (mu not held). */
static void complete(struct spool_worker *w)
{
    struct spool *s = w->s;
    struct slot *sl = &s->slots[w->index];
    pthread_mutex_lock(&s->mu);
    uint64_t done = sl->done_seq;
    struct failure *fails = sl->failures;
    sl->failures = NULL;
    pthread_mutex_unlock(&s->mu);
    while (w->qlen > 0) {
        struct waiter *q = &w->q[w->qhead];
        if (q->seq > done)
            break;
        struct waiter x = *q;
        w->qhead = (w->qhead + 1) % w->qcap;
        w->qlen--;
        const char *error = NULL;
        for (struct failure *f = fails; f; f = f->next)
            if (x.seq >= f->from && x.seq <= f->to)
                error = f->error;
        if (x.done)
            x.done(x.arg, error == NULL, error);
    }
    while (fails) {
        struct failure *next = fails->next;
        free(fails);
        fails = next;
    }
}

static void worker_event_cb(evutil_socket_t fd, short what, void *arg)
{
    uint64_t v;
    while (read(fd, &v, sizeof(v)) > 0) {
    }
    complete(arg);
}

void spool_worker_free(struct spool_worker *w)
{
    if (!w)
        return;
    struct spool *s = w->s;
    struct slot *sl = &s->slots[w->index];
    pthread_mutex_lock(&s->mu);
    pthread_cond_signal(&s->work);
    while (sl->done_seq < sl->appended_seq && s->writer_started)
        pthread_cond_wait(&s->progress, &s->mu);
    pthread_mutex_unlock(&s->mu);
    complete(w);
    pthread_mutex_lock(&s->mu);
    int efd = sl->efd;
    sl->efd = -1;
    sl->has_worker = false;
    pthread_mutex_unlock(&s->mu);
    event_free(w->ev);
    close(efd);
    free(w->q);
    free(w);
}

size_t spool_worker_pending(const struct spool_worker *w)
{
    return w->qlen;
}

int spool_append(struct spool_worker *w, const struct ledger_rec *r, enum spool_class cls,
                 spool_done_fn done, void *arg)
{
    struct spool *s = w->s;
    size_t size = spool_frame_size(r);
    if (w->qlen == w->qcap) {
        size_t ncap = w->qcap ? w->qcap * 2 : 64;
        struct waiter *nq = malloc(sizeof(*nq) * ncap);
        if (!nq)
            return -1;
        for (size_t i = 0; i < w->qlen; i++)
            nq[i] = w->q[(w->qhead + i) % w->qcap];
        free(w->q);
        w->q = nq;
        w->qcap = ncap;
        w->qhead = 0;
    }
    struct slot *sl = &s->slots[w->index];
    pthread_mutex_lock(&s->mu);
    /* the writer may open a segment for every worker before these bytes land, each with its
     * header: keep room for those too, so that the files never exceed max_bytes */
    uint64_t used = s->bytes + s->reserved + (uint64_t)s->opt.nworkers * SPOOL_FILE_HEADER;
    bool ok;
    switch (cls) {
    case SPOOL_GATE:
        ok = used + size + SPOOL_OUTCOME_RESERVE <= s->opt.max_bytes - s->opt.max_bytes / 16;
        break;
    case SPOOL_OUTCOME:
        if (s->reserved >= SPOOL_OUTCOME_RESERVE) {
            s->reserved -= SPOOL_OUTCOME_RESERVE;
            ok = true; /* its room was set aside when its record was spooled */
            break;
        }
        /* fall through */
    default:
        ok = used + size <= s->opt.max_bytes;
        break;
    }
    if (ok && sl->len + size > sl->cap) {
        size_t ncap = sl->cap ? sl->cap : 16384;
        while (ncap < sl->len + size)
            ncap *= 2;
        unsigned char *nb = realloc(sl->buf, ncap);
        if (!nb) {
            ok = false;
        } else {
            sl->buf = nb;
            sl->cap = ncap;
        }
    }
    if (!ok) {
        s->st.refused_full++;
        pthread_mutex_unlock(&s->mu);
        return -1;
    }
    spool_frame(r, sl->buf + sl->len);
    sl->len += size;
    s->bytes += size;
    if (cls == SPOOL_GATE)
        s->reserved += SPOOL_OUTCOME_RESERVE;
    uint64_t seq = ++sl->appended_seq;
    pthread_cond_signal(&s->work);
    pthread_mutex_unlock(&s->mu);
    w->q[(w->qhead + w->qlen) % w->qcap] = (struct waiter){seq, done, arg};
    w->qlen++;
    return 0;
}

/* ---- replay side ---- */

size_t spool_closed_segments(struct spool *s, struct spool_segment *out, size_t max)
{
    size_t n = 0;
    pthread_mutex_lock(&s->mu);
    struct segment *g;
    TAILQ_FOREACH(g, &s->segments, link)
    {
        if (n >= max)
            break;
        if (!g->closed)
            continue;
        out[n].seq = g->seq;
        snprintf(out[n].path, sizeof(out[n].path), "%s", g->path);
        out[n].bytes = g->bytes;
        n++;
    }
    pthread_mutex_unlock(&s->mu);
    return n;
}

void spool_close_open_segments(struct spool *s)
{
    pthread_mutex_lock(&s->mu);
    bool any = false;
    struct segment *g;
    TAILQ_FOREACH(g, &s->segments, link)
    any |= !g->closed && g->records > 0;
    if (any) {
        s->close_all = true;
        pthread_cond_signal(&s->work);
    }
    pthread_mutex_unlock(&s->mu);
}

void spool_wait_closed(struct spool *s, uint32_t ms)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    ts.tv_sec += ms / 1000;
    ts.tv_nsec += (long)(ms % 1000) * 1000000L;
    if (ts.tv_nsec >= 1000000000L) {
        ts.tv_sec++;
        ts.tv_nsec -= 1000000000L;
    }
    pthread_mutex_lock(&s->mu);
    bool have = false;
    struct segment *g;
    TAILQ_FOREACH(g, &s->segments, link)
    have |= g->closed;
    if (!have && !s->stop)
        pthread_cond_timedwait(&s->closed, &s->mu, &ts);
    pthread_mutex_unlock(&s->mu);
}

int spool_segment_done(struct spool *s, const struct spool_segment *seg, uint64_t records)
{
    if (unlink(seg->path) != 0 && errno != ENOENT)
        return -1;
    fsync_dir(s);
    pthread_mutex_lock(&s->mu);
    struct segment *g;
    TAILQ_FOREACH(g, &s->segments, link)
    {
        if (g->seq == seg->seq) {
            TAILQ_REMOVE(&s->segments, g, link);
            s->bytes -= g->bytes;
            s->st.records -= g->records < s->st.records ? g->records : s->st.records;
            free(g);
            break;
        }
    }
    s->st.replayed += records;
    pthread_mutex_unlock(&s->mu);
    return 0;
}

void spool_keep_refused(struct spool *s, const struct ledger_rec *r)
{
    size_t size = spool_frame_size(r);
    unsigned char *buf = malloc(size);
    if (!buf)
        return;
    spool_frame(r, buf);
    pthread_mutex_lock(&s->mu);
    if (s->refused_fd < 0) {
        char path[500];
        snprintf(path, sizeof(path), "%s/refused.seg", s->dir);
        s->refused_fd = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
        struct stat stt;
        if (s->refused_fd >= 0 && fstat(s->refused_fd, &stt) == 0 && stt.st_size == 0) {
            unsigned char hdr[SPOOL_FILE_HEADER];
            spool_file_header(hdr, 0, 0, util_wall_ms());
            if (write_all(s->refused_fd, hdr, sizeof(hdr)) != 0)
                log_error("spool: cannot write refused.seg", "\"error\":\"%s\"", strerror(errno));
        }
    }
    if (s->refused_fd >= 0 &&
        (write_all(s->refused_fd, buf, size) != 0 || fdatasync(s->refused_fd) != 0))
        log_error("spool: cannot write refused.seg", "\"error\":\"%s\"", strerror(errno));
    s->st.replay_refused++;
    pthread_mutex_unlock(&s->mu);
    free(buf);
}
