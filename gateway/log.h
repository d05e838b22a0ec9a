/*
 * log: structured JSON log lines, one per event (access lines on standard output, the rest on
 * standard error, or files instead), written with a single write(2) so
 * lines from several threads never interleave.
 *
 * Worker threads never write themselves: after log_thread_start their lines go into a bounded
 * queue of their own, which the logging thread (log_start) empties into stderr. If the sink
 * stalls and a queue fills, further lines are dropped and counted, never waited for: the count
 * appears as "log_dropped" in that thread's next line that gets through, and in log_dropped().
 * Other threads (start-up, the main loop) write directly.
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

/* One access-log line: {"ts":...,"level":"info","msg":"access", ...FIELDS} on the access sink
 * (standard output or [log] access_log_file), whatever the level. Same FIELDS rules. */
void log_access(const char *fields, ...) __attribute__((format(printf, 1, 2)));

/* Send the access lines to ACCESS_PATH and the others to ERROR_PATH (NULL or "": keep standard
 * output / standard error), opened for appending onto descriptors 1 and 2. 0, or -1 with ERR
 * set ("cannot open PATH: why"). */
int log_open_files(const char *access_path, const char *error_path, char *err, size_t errlen);

/* Open the configured files again (SIGUSR1, after a rotation). 0, or -1 with ERR set (the
 * old file stays in use). */
int log_reopen(char *err, size_t errlen);

/*
 * Escape S as the inside of a JSON string into BUF (always NUL-terminated, truncated with
 * "..." when BUF is too small). Control characters become \u00XX; bytes >= 0x80 are kept.
 * Returns BUF.
 */
char *log_json_escape(const char *s, char *buf, size_t size);

/* Start the logging thread (0, or -1: lines are then written directly). */
int log_start(void);
/* Write out every queued line and stop the logging thread. Call after the workers ended. */
void log_stop(void);
/* The calling thread's lines go through a queue of its own from now on (INDEX names it). */
void log_thread_start(int index);
/* The calling thread stops logging through its queue (what it queued is still written). */
void log_thread_stop(void);
/* Lines dropped so far because a queue was full. */
unsigned long long log_dropped(void);

#define log_debug(...) log_msg(LOG_LEVEL_DEBUG, __VA_ARGS__)
#define log_info(...) log_msg(LOG_LEVEL_INFO, __VA_ARGS__)
#define log_warn(...) log_msg(LOG_LEVEL_WARN, __VA_ARGS__)
#define log_error(...) log_msg(LOG_LEVEL_ERROR, __VA_ARGS__)

#endif
