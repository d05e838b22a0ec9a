/*
 * log: structured JSON log lines on stderr, one per event, written with a single write(2) so
 * lines from several threads never interleave.
 *
 * Only I/O modules log; pure modules return errors to their caller. Never pass a bearer token,
 * a password or a request body to these functions: the log is read by people who must not see
 * them.
 */
#ifndef GW_LOG_H
#define GW_LOG_H

#include <stdarg.h>
#include <stddef.h>

enum { LOG_LEVEL_DEBUG = 0, LOG_LEVEL_INFO = 1, LOG_LEVEL_WARN = 2, LOG_LEVEL_ERROR = 3 };

/* Minimum level written; set from the configuration (default info). */
void log_set_level(int level);
int log_get_level(void);

/*
 * Write {"ts":...,"level":...,"msg":MSG, ...FIELDS}. FIELDS is printf-formatted and, when
 * non-empty, must expand to further JSON members without the leading comma, e.g.
 * log_msg(LOG_LEVEL_INFO, "listening", "\"addr\":\"%s\"", addr). Strings placed in FIELDS must
 * be escaped with log_json_escape first unless they are known to be safe.
 */
void log_msg(int level, const char *msg, const char *fields, ...)
    __attribute__((format(printf, 3, 4)));

/*
 * Escape S as the inside of a JSON string into BUF (always NUL-terminated, truncated with
 * "..." when BUF is too small). Control characters become \u00XX; bytes >= 0x80 are kept.
 * Returns BUF.
 */
char *log_json_escape(const char *s, char *buf, size_t size);

#define log_debug(...) log_msg(LOG_LEVEL_DEBUG, __VA_ARGS__)
#define log_info(...) log_msg(LOG_LEVEL_INFO, __VA_ARGS__)
#define log_warn(...) log_msg(LOG_LEVEL_WARN, __VA_ARGS__)
#define log_error(...) log_msg(LOG_LEVEL_ERROR, __VA_ARGS__)

#endif
