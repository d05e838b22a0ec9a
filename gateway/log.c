/*
 * log: JSON lines on stderr. Each line is formatted into a stack buffer and written with one
 * write(2), so concurrent threads never interleave within a line. A line that does not fit is
 * cut and closed with a "truncated" member rather than split.
 *
 * The queues. One single-producer single-consumer byte ring per worker thread: records of a
 * 4-byte length and the line, head advanced by the worker (release), tail by the logging
 * thread (release); each side reads the other's index with acquire. The logging thread polls
 * the rings, sleeping longer while they stay empty (1 ms up to 20 ms), so a worker never makes
 * a system call to log. A full ring drops the line.
 *
 * Two sinks. Access lines (log_access) go to standard output, everything else to standard
 * error; either may be a file instead ([log] access_log_file, error_log_file), opened onto
 * descriptor 1 or 2 with dup2, so that a reopen (SIGUSR1, after logrotate moved the file) is
 * one dup2 under out_mu and nothing else holds the old descriptor. A ring record's length
 * carries its sink in the top bit.
 *
 * One writer at a time. A thread without a ring (the main thread, the spool's and the replay's
 * threads, any thread started before the logging thread) writes its line itself. The logging
 * thread writes batches of up to 64 KiB, and a pipe keeps only writes of PIPE_BUF bytes or less
 * whole, so both take out_mu around their writes: a direct line never lands inside a batch
 * (found when a replay thread's line, written in the middle of a batch of access lines, made
 * both unreadable).
 */
#include "log.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define RING_SIZE (256 * 1024)
#define MAX_QUEUES 512
#define BATCH (64 * 1024)

static atomic_int min_level = LOG_LEVEL_INFO;

struct logq {
    _Alignas(64) atomic_size_t head;    /* bytes produced */
    _Alignas(64) atomic_size_t tail;    /* bytes consumed */
    unsigned long long pending_dropped; /* producer only: dropped since its last line got in */
    char buf[RING_SIZE];
};

static struct logq *queues[MAX_QUEUES];
static atomic_int nqueues;
static pthread_mutex_t reg_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_t logger;
static atomic_bool logger_on, logger_stop;
static atomic_ullong dropped_total;
static _Thread_local struct logq *my_queue;
static pthread_mutex_t out_mu = PTHREAD_MUTEX_INITIALIZER;

static void ring_put(struct logq *q, size_t at, const void *p, size_t n)
{
    size_t off = at % RING_SIZE, first = RING_SIZE - off < n ? RING_SIZE - off : n;
    memcpy(q->buf + off, p, first);
    memcpy(q->buf, (const char *)p + first, n - first);
}

static void ring_get(const struct logq *q, size_t at, void *p, size_t n)
{
    size_t off = at % RING_SIZE, first = RING_SIZE - off < n ? RING_SIZE - off : n;
    memcpy(p, q->buf + off, first);
    memcpy((char *)p + first, q->buf, n - first);
}

#define SINK_BIT 0x80000000u
static const int sink_fd[2] = {STDERR_FILENO, STDOUT_FILENO};
static char *sink_path[2]; /* the configured files, for log_reopen; NULL: the standard stream */

static bool enqueue(struct logq *q, int sink, const char *line, size_t len)
{
    size_t head = atomic_load_explicit(&q->head, memory_order_relaxed);
    size_t tail = atomic_load_explicit(&q->tail, memory_order_acquire);
    if (head - tail + sizeof(uint32_t) + len > RING_SIZE)
        return false;
    uint32_t l = (uint32_t)len | (sink ? SINK_BIT : 0);
    ring_put(q, head, &l, sizeof(l));
    ring_put(q, head + sizeof(l), line, len);
    atomic_store_explicit(&q->head, head + sizeof(l) + len, memory_order_release);
    return true;
}

static void write_all(int sink, const char *p, size_t len)
{
    pthread_mutex_lock(&out_mu);
    while (len > 0) {
        ssize_t w = write(sink_fd[sink], p, len);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            break;
        p += w;
        len -= (size_t)w;
    }
    pthread_mutex_unlock(&out_mu);
}

/* Move what the rings hold to their sinks; returns the bytes written. */
static size_t drain(void)
{
    static char batch[2][BATCH];
    size_t used[2] = {0, 0}, total = 0;
    int n = atomic_load_explicit(&nqueues, memory_order_acquire);
    for (int i = 0; i < n; i++) {
        struct logq *q = queues[i];
        size_t head = atomic_load_explicit(&q->head, memory_order_acquire);
        size_t tail = atomic_load_explicit(&q->tail, memory_order_relaxed);
        while (tail < head) {
            uint32_t l;
            ring_get(q, tail, &l, sizeof(l));
            int sink = (l & SINK_BIT) ? 1 : 0;
            l &= ~SINK_BIT;
            if (used[sink] + l > sizeof(batch[sink])) {
                write_all(sink, batch[sink], used[sink]);
                total += used[sink];
                used[sink] = 0;
            }
            if (l <= sizeof(batch[sink])) {
                ring_get(q, tail + sizeof(l), batch[sink] + used[sink], l);
                used[sink] += l;
            }
            tail += sizeof(l) + l;
            atomic_store_explicit(&q->tail, tail, memory_order_release);
        }
    }
    for (int k = 0; k < 2; k++)
        if (used[k] > 0)
            write_all(k, batch[k], used[k]);
    return total + used[0] + used[1];
}

static void *logger_main(void *arg)
{
    unsigned nap_us = 1000;
    while (!atomic_load(&logger_stop)) {
        if (drain() > 0) {
            nap_us = 1000;
        } else if (nap_us < 20000) {
            nap_us *= 2;
        }
        struct timespec ts = {0, (long)nap_us * 1000};
        nanosleep(&ts, NULL);
    }
    drain();
    return NULL;
}

int log_start(void)
{
    if (atomic_load(&logger_on))
        return 0;
    atomic_store(&logger_stop, false);
    if (pthread_create(&logger, NULL, logger_main, NULL) != 0)
        return -1;
    atomic_store(&logger_on, true);
    return 0;
}

void log_stop(void)
{
    if (!atomic_load(&logger_on))
        return;
    atomic_store(&logger_stop, true);
    pthread_join(logger, NULL);
    atomic_store(&logger_on, false);
    pthread_mutex_lock(&reg_lock);
    int n = atomic_load(&nqueues);
    for (int i = 0; i < n; i++) {
        free(queues[i]);
        queues[i] = NULL;
    }
    atomic_store(&nqueues, 0);
    pthread_mutex_unlock(&reg_lock);
}

void log_thread_start(int index)
{
    (void)index;
    if (!atomic_load(&logger_on) || my_queue)
        return;
    struct logq *q = calloc(1, sizeof(*q));
    if (!q)
        return;
    pthread_mutex_lock(&reg_lock);
    int n = atomic_load(&nqueues);
    if (n < MAX_QUEUES) {
        queues[n] = q;
        atomic_store_explicit(&nqueues, n + 1, memory_order_release);
        my_queue = q;
    } else {
        free(q);
    }
    pthread_mutex_unlock(&reg_lock);
}

void log_thread_stop(void)
{
    my_queue = NULL; /* the ring stays registered (and drained) until log_stop */
}

unsigned long long log_dropped(void)
{
    return atomic_load(&dropped_total);
}

void log_set_level(int level)
{
    atomic_store(&min_level, level);
}

int log_get_level(void)
{
    return atomic_load(&min_level);
}

static const char *level_name(int level)
{
    switch (level) {
    case LOG_LEVEL_DEBUG:
        return "debug";
    case LOG_LEVEL_INFO:
        return "info";
    case LOG_LEVEL_WARN:
        return "warn";
    default:
        return "error";
    }
}

static void log_vmsg(int sink, int level, const char *msg, const char *fields, va_list ap)
    __attribute__((format(printf, 4, 0)));

static void log_vmsg(int sink, int level, const char *msg, const char *fields, va_list ap)
{
    char line[4096];
    struct timespec ts;
    struct tm tm;
    clock_gettime(CLOCK_REALTIME, &ts);
    gmtime_r(&ts.tv_sec, &tm);

    int n =
        snprintf(line, sizeof(line),
                 "{\"ts\":\"%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ\",\"level\":\"%s\",\"msg\":\"%s\"",
                 tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec,
                 ts.tv_nsec / 1000000, level_name(level), msg);
    if (n < 0)
        return;
    size_t len = (size_t)n < sizeof(line) ? (size_t)n : sizeof(line) - 1;

    if (fields && fields[0] && len < sizeof(line) - 2) {
        line[len++] = ',';
        int m = vsnprintf(line + len, sizeof(line) - len, fields, ap);
        if (m < 0) {
            len--;
        } else if ((size_t)m >= sizeof(line) - len) {
            /* Cut at a safe place: drop the partial member and say so. */
            static const char cut[] = "\"truncated\":true";
            char *comma = memrchr(line, ',', sizeof(line) - 1);
            len = comma ? (size_t)(comma - line) + 1 : len;
            if (len + sizeof(cut) < sizeof(line)) {
                memcpy(line + len, cut, sizeof(cut) - 1);
                len += sizeof(cut) - 1;
            }
        } else {
            len += (size_t)m;
        }
    }
    struct logq *q = my_queue;
    if (q && q->pending_dropped > 0 && len < sizeof(line) - 48)
        len += (size_t)snprintf(line + len, sizeof(line) - len, ",\"log_dropped\":%llu",
                                q->pending_dropped);
    if (len > sizeof(line) - 3)
        len = sizeof(line) - 3;
    line[len++] = '}';
    line[len++] = '\n';

    if (q) {
        if (enqueue(q, sink, line, len)) {
            q->pending_dropped = 0;
        } else {
            q->pending_dropped++;
            atomic_fetch_add(&dropped_total, 1);
        }
        return;
    }
    write_all(sink, line, len);
}

void log_msg(int level, const char *msg, const char *fields, ...)
{
    if (level < atomic_load(&min_level))
        return;
    va_list ap;
    va_start(ap, fields);
    log_vmsg(0, level, msg, fields, ap);
    va_end(ap);
}

void log_access(const char *fields, ...)
{
    va_list ap;
    va_start(ap, fields);
    log_vmsg(1, LOG_LEVEL_INFO, "access", fields, ap);
    va_end(ap);
}

/* Open PATH for appending onto SINK's descriptor. 0, or -1 with ERR set. */
static int open_onto(int sink, const char *path, char *err, size_t errlen)
{
    int fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0640);
    if (fd < 0) {
        snprintf(err, errlen, "cannot open %s: %s", path, strerror(errno));
        return -1;
    }
    pthread_mutex_lock(&out_mu);
    int rc = dup2(fd, sink_fd[sink]);
    pthread_mutex_unlock(&out_mu);
    int saved = errno;
    close(fd);
    if (rc < 0) {
        snprintf(err, errlen, "cannot use %s as the log: %s", path, strerror(saved));
        return -1;
    }
    return 0;
}

int log_open_files(const char *access_path, const char *error_path, char *err, size_t errlen)
{
    const char *paths[2] = {error_path, access_path};
    for (int k = 0; k < 2; k++) {
        if (!paths[k] || !paths[k][0])
            continue;
        if (open_onto(k, paths[k], err, errlen) != 0)
            return -1;
        free(sink_path[k]);
        sink_path[k] = strdup(paths[k]);
    }
    return 0;
}

int log_reopen(char *err, size_t errlen)
{
    int rc = 0;
    for (int k = 0; k < 2; k++)
        if (sink_path[k] && open_onto(k, sink_path[k], err, errlen) != 0)
            rc = -1;
    return rc;
}

char *log_json_escape(const char *s, char *buf, size_t size)
{
    size_t o = 0;
    if (size == 0)
        return buf;
    for (; s && *s; s++) {
        unsigned char c = (unsigned char)*s;
        char tmp[8];
        size_t tl;
        if (c == '"' || c == '\\') {
            tmp[0] = '\\';
            tmp[1] = (char)c;
            tl = 2;
        } else if (c < 0x20 || c == 0x7f) {
            tl = (size_t)snprintf(tmp, sizeof(tmp), "\\u%04x", c);
        } else {
            tmp[0] = (char)c;
            tl = 1;
        }
        if (o + tl + 4 > size) {
            if (o + 4 <= size) {
                memcpy(buf + o, "...", 3);
                o += 3;
            }
            break;
        }
        memcpy(buf + o, tmp, tl);
        o += tl;
    }
    buf[o] = '\0';
    return buf;
}
