/*
 * util: request ids, clocks and socket helpers shared by the I/O modules.
 */
#include "util.h"

#include <arpa/inet.h>
#include <inttypes.h>
#include <sched.h>
#include <stdlib.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>

uint64_t util_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

uint64_t util_now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

size_t util_fmt_i64(char *buf, int64_t v)
{
    char tmp[24];
    size_t n = 0;
    /* through the unsigned magnitude: -INT64_MIN does not fit an int64_t */
    uint64_t u = v < 0 ? (uint64_t)0 - (uint64_t)v : (uint64_t)v;
    do {
        tmp[n++] = (char)('0' + u % 10);
        u /= 10;
    } while (u);
    size_t o = 0;
    if (v < 0)
        buf[o++] = '-';
    while (n)
        buf[o++] = tmp[--n];
    buf[o] = '\0';
    return o;
}

size_t util_fmt_millis(char *buf, uint64_t ms)
{
    size_t o = util_fmt_i64(buf, (int64_t)(ms / 1000));
    unsigned f = (unsigned)(ms % 1000);
    buf[o++] = '.';
    buf[o++] = (char)('0' + f / 100);
    buf[o++] = (char)('0' + f / 10 % 10);
    buf[o++] = (char)('0' + f % 10);
    buf[o] = '\0';
    return o;
}

uint64_t util_wall_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

/* Per-thread state: a small buffer of kernel randomness, refilled with one getrandom(2) call,
 * and the last millisecond / sequence used so ids from one thread sort in mint order. */
static _Thread_local struct {
    unsigned char pool[256];
    size_t used;
    uint64_t last_ms;
    uint16_t seq;
} rnd = {.used = sizeof(rnd.pool)};

static void random_bytes(unsigned char *out, size_t n)
{
    while (n > 0) {
        if (rnd.used == sizeof(rnd.pool)) {
            size_t got = 0;
            while (got < sizeof(rnd.pool)) {
                ssize_t r = getrandom(rnd.pool + got, sizeof(rnd.pool) - got, 0);
                if (r > 0)
                    got += (size_t)r;
            }
            rnd.used = 0;
        }
        size_t take = sizeof(rnd.pool) - rnd.used;
        if (take > n)
            take = n;
        memcpy(out, rnd.pool + rnd.used, take);
        rnd.used += take;
        out += take;
        n -= take;
    }
}

void util_uuid7(char out[37])
{
    unsigned char b[16];
    uint64_t ms = util_wall_ms();

    random_bytes(b + 6, 10);
    /* rand_a (12 bits) is a per-millisecond counter seeded randomly (RFC 9562 §6.2, method 3
     * "replace leftmost random bits with increased clock precision" is not available, so use
     * a monotonic counter): ids minted in the same millisecond stay ordered. */
    if (ms <= rnd.last_ms) {
        ms = rnd.last_ms;
        rnd.seq++;
        if (rnd.seq > 0x0fff) { /* counter exhausted: borrow the next millisecond */
            ms++;
            rnd.seq = (uint16_t)(b[6] & 0x03);
        }
    } else {
        rnd.seq = (uint16_t)(((b[6] << 8) | b[7]) & 0x01ff); /* leave headroom to count up */
    }
    rnd.last_ms = ms;

    b[0] = (unsigned char)(ms >> 40);
    b[1] = (unsigned char)(ms >> 32);
    b[2] = (unsigned char)(ms >> 24);
    b[3] = (unsigned char)(ms >> 16);
    b[4] = (unsigned char)(ms >> 8);
    b[5] = (unsigned char)ms;
    b[6] = (unsigned char)(0x70 | ((rnd.seq >> 8) & 0x0f));
    b[7] = (unsigned char)(rnd.seq & 0xff);
    b[8] = (unsigned char)(0x80 | (b[8] & 0x3f));

    static const char hex[] = "0123456789abcdef";
    size_t o = 0;
    for (int i = 0; i < 16; i++) {
        if (i == 4 || i == 6 || i == 8 || i == 10)
            out[o++] = '-';
        out[o++] = hex[b[i] >> 4];
        out[o++] = hex[b[i] & 15];
    }
    out[o] = '\0';
}

bool util_request_id_ok(const char *s, size_t len)
{
    if (len == 0 || len > UTIL_REQUEST_ID_MAX)
        return false;
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)s[i];
        bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                  c == '.' || c == '_' || c == ':' || c == '-';
        if (!ok)
            return false;
    }
    return true;
}

char *util_sockaddr_str(const struct sockaddr *sa, char *buf, size_t size)
{
    char host[INET6_ADDRSTRLEN];
    if (sa && sa->sa_family == AF_INET) {
        const struct sockaddr_in *in = (const struct sockaddr_in *)sa;
        inet_ntop(AF_INET, &in->sin_addr, host, sizeof(host));
        snprintf(buf, size, "%s:%u", host, ntohs(in->sin_port));
    } else if (sa && sa->sa_family == AF_INET6) {
        const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)sa;
        inet_ntop(AF_INET6, &in6->sin6_addr, host, sizeof(host));
        snprintf(buf, size, "[%s]:%u", host, ntohs(in6->sin6_port));
    } else {
        snprintf(buf, size, "?");
    }
    return buf;
}

int util_set_nodelay(int fd)
{
    int one = 1;
    return setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
}

size_t util_utf8_prefix(const char *s, size_t len, size_t max)
{
    if (len <= max)
        return len;
    size_t n = max;
    /* back over continuation bytes (10xxxxxx) to the start of the character cut in two */
    while (n > 0 && ((unsigned char)s[n] & 0xC0) == 0x80)
        n--;
    return n;
}

char *util_copy_text(char *dst, size_t cap, const char *src)
{
    size_t n = util_utf8_prefix(src, strlen(src), cap - 1);
    memcpy(dst, src, n);
    dst[n] = '\0';
    return dst;
}

/* The first line of DIR/NAME into BUF; false when it cannot be read. */
static bool read_line(const char *dir, const char *name, char *buf, size_t size)
{
    char path[512];
    snprintf(path, sizeof(path), "%s/%s", dir, name);
    FILE *f = fopen(path, "re");
    if (!f)
        return false;
    bool ok = fgets(buf, (int)size, f) != NULL;
    fclose(f);
    return ok;
}

/* CPUs allowed by a quota of QUOTA microseconds per PERIOD, rounded up; 0: no quota. */
static int quota_cpus(long long quota, long long period)
{
    if (quota <= 0 || period <= 0)
        return 0;
    return (int)((quota + period - 1) / period);
}

int util_cpus_available(const char *cgroup_dir, int max)
{
    int n = 0;
    cpu_set_t set;
    if (sched_getaffinity(0, sizeof(set), &set) == 0)
        n = CPU_COUNT(&set);
    if (n < 1)
        n = 1;
    char line[128];
    int q = 0;
    if (read_line(cgroup_dir, "cpu.max", line, sizeof(line))) {
        long long quota, period;
        if (strncmp(line, "max", 3) != 0 && sscanf(line, "%lld %lld", &quota, &period) == 2)
            q = quota_cpus(quota, period);
    } else if (read_line(cgroup_dir, "cpu/cpu.cfs_quota_us", line, sizeof(line))) {
        long long quota = strtoll(line, NULL, 10), period = 100000;
        if (read_line(cgroup_dir, "cpu/cpu.cfs_period_us", line, sizeof(line)))
            period = strtoll(line, NULL, 10);
        q = quota_cpus(quota, period);
    }
    if (q > 0 && q < n)
        n = q;
    return n > max ? max : n;
}
