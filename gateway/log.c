/*
 * log: JSON lines on stderr. Each line is formatted into a stack buffer and written with one
 * write(2), so concurrent threads never interleave within a line. A line that does not fit is
 * cut and closed with a "truncated" member rather than split.
 */
#include "log.h"

#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static atomic_int min_level = LOG_LEVEL_INFO;

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

void log_msg(int level, const char *msg, const char *fields, ...)
{
    if (level < atomic_load(&min_level))
        return;

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
        va_list ap;
        va_start(ap, fields);
        int m = vsnprintf(line + len, sizeof(line) - len, fields, ap);
        va_end(ap);
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
    if (len > sizeof(line) - 3)
        len = sizeof(line) - 3;
    line[len++] = '}';
    line[len++] = '\n';

    const char *p = line;
    while (len > 0) {
        ssize_t w = write(STDERR_FILENO, p, len);
        if (w <= 0)
            return;
        p += w;
        len -= (size_t)w;
    }
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
