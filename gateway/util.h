/*
 * util: small helpers without I/O beyond the clock and the kernel's random source: request ids
 * (UUIDv7), monotonic time, socket address formatting, cutting UTF-8 text.
 */
#ifndef GW_UTIL_H
#define GW_UTIL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#define UTIL_REQUEST_ID_MAX 64 /* longest accepted X-Request-Id, without the NUL */

/* Write a new UUIDv7 (RFC 9562) as 36 characters + NUL into OUT[37]. Thread-safe: the random
 * state is per thread; ids minted by one thread within one millisecond are strictly ordered. */
void util_uuid7(char out[37]);

/* True when S (length LEN) is acceptable as a caller-supplied X-Request-Id: 1..64 characters
 * from [A-Za-z0-9._:-]. Anything else is replaced by a minted id, never forwarded. */
bool util_request_id_ok(const char *s, size_t len);

/* Monotonic milliseconds (CLOCK_MONOTONIC) and wall-clock milliseconds since the epoch. */
uint64_t util_now_ms(void);
uint64_t util_now_us(void); /* monotonic microseconds; util_now_ms() == util_now_us() / 1000 */
uint64_t util_wall_ms(void);

/* Format SA as "1.2.3.4:80" or "[::1]:80" into BUF; returns BUF ("?" when unknown). */
char *util_sockaddr_str(const struct sockaddr *sa, char *buf, size_t size);

/* The longest prefix of S (LEN bytes of UTF-8) that is at most MAX bytes and does not end in
 * the middle of a character: where a text must be cut to fit a column or a buffer, it is cut
 * here, so that what is stored stays valid UTF-8. */
size_t util_utf8_prefix(const char *s, size_t len, size_t max);

/* Copy the NUL-terminated SRC into DST (CAP bytes, CAP > 0), cut at a character boundary to
 * fit; always NUL-terminates. Returns DST. */
char *util_copy_text(char *dst, size_t cap, const char *src);

/*
 * How many CPUs this process may use: the CPUs of its affinity mask, capped by the CPU quota of
 * its cgroup (a container's --cpus): cgroup v2 CGROUP_DIR/cpu.max ("max 100000" or "150000
 * 100000": 1.5 CPUs, rounded up), else v1 CGROUP_DIR/cpu/cpu.cfs_quota_us and cpu.cfs_period_us
 * (quota -1: none). CGROUP_DIR is /sys/fs/cgroup in production (a container sees its own
 * cgroup there), a test directory in tests. At least 1, at most MAX.
 */
int util_cpus_available(const char *cgroup_dir, int max);

/* Decimal text of V into BUF (at least 21 bytes), NUL-terminated; returns its length. What
 * snprintf("%lld") writes, without its format interpreter (ledger rows carry several numbers
 * per request: the formatting showed in profiles). */
size_t util_fmt_i64(char *buf, int64_t v);

/* MS milliseconds as seconds with three decimals ("12.345") into BUF (at least 25 bytes);
 * returns the length. */
size_t util_fmt_millis(char *buf, uint64_t ms);

/* Set TCP_NODELAY on FD; returns 0 or -1 with errno. */
int util_set_nodelay(int fd);

#endif
