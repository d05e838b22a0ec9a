/*
 * config: the gateway's INI configuration file turned into one immutable, typed, reference
 * counted snapshot (see config.h).
 *
 * libinih does the INI syntax. Debian builds it without INI_HANDLER_LINENO, so we feed it through
 * our own line reader (ini_parse_stream) which counts lines; the handler reads the current line
 * from that counter. The reader also checks each line's shape before inih sees it, so that every
 * syntax error is reported (inih itself only returns the first) and inih never guesses: leading
 * whitespace is stripped (no accidental multi-line continuation values), comments are blanked
 * (a long comment is never "too long") and section headers are checked and handed on
 * normalised. inih's line buffer is 200 bytes and its size is a process-wide run-time option we
 * leave alone, so a key line that does not fit (a long [audit] database connection string) is
 * split here, exactly as inih splits lines, and handed to the handler directly.
 *
 * Named sections ([endpoint "FinishRun"], [process "KEY"]) are an array of objects each; their
 * keys are rows of the same table, with offsets into the object instead of struct config.
 *
 * Every key is a row of `keys` below. Defaults are strings parsed by the same code as the file,
 * so a default can never bypass validation. This module is pure apart from reading the file
 * (and checking that ca_file is readable, and reading the host name for [audit] instance): it
 * never logs, never exits and mutates no global, including inih's run-time options.
 */
#include "config.h"
#include "log.h"
#include "router.h"
#include "util.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <ini.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#define KIB (UINT64_C(1) << 10)
#define MIB (UINT64_C(1) << 20)
#define GIB (UINT64_C(1) << 30)
#define MS_SEC UINT64_C(1000)
#define MS_MIN (60 * MS_SEC)
#define MS_HOUR (60 * MS_MIN)
#define MS_DAY (24 * MS_HOUR)

/* A configuration file is a few kilobytes; anything near this is a wrong path. */
#define MAX_FILE_SIZE (1024 * 1024)

/* Longest line, comments aside: room for a 4096-character [audit] database and a comment. */
#define MAX_LINE 8192

/* [endpoint "NAME"], [process "KEY"]: longest NAME, in bytes. */
#define MAX_SECTION_NAME 200

enum key_type {
    T_STRING,   /* char *, owned; min..max is the length; `check` validates further */
    T_SECRET,   /* like T_STRING, but the value never appears in a message (passwords) */
    T_PATH,     /* char *, owned; a readable file, relative to the config file's directory */
    T_DIR,      /* char *, owned; a directory (made at start if missing; its parent must exist),
                   relative to the config file's directory */
    T_OUTFILE,  /* char *, owned; a file the gateway appends to (created if missing): it may be
                   opened for writing now, relative to the config file's directory */
    T_HOSTPORT, /* struct config_hostport */
    T_URL,      /* struct config_url */
    T_SIZE,     /* size_t, bytes */
    T_DURATION, /* uint32_t, milliseconds */
    T_BOOL,     /* bool */
    T_INT,      /* int or uint32_t (by `size`), a non-negative count */
    T_ENUM,     /* int, index into log_levels */
};

struct key {
    const char *section;
    const char *name;
    enum key_type type;
    uint64_t min, max; /* bytes, milliseconds, count or string length */
    const char *def;   /* parsed like a value from the file; NULL: unset unless derived */
    bool reloadable;   /* may change on SIGHUP; otherwise only at a restart */
    size_t offset;     /* of the field in struct config, or in a named section's object */
    size_t size;       /* of that field */
    size_t has;        /* named sections: offset of the has_ flag set when present; NO_FLAG */
    const char *note;  /* appended to the expected-value text */
    int (*check)(const char *value, const char **why); /* T_STRING, T_SECRET only */
};

static int check_dns_label(const char *value, const char **why);

#define NO_FLAG SIZE_MAX
#define FIELD(m) offsetof(struct config, m), sizeof(((struct config *)0)->m), NO_FLAG
#define ENDPOINT_FIELD(m)                                                                          \
    offsetof(struct config_endpoint, m), sizeof(((struct config_endpoint *)0)->m), NO_FLAG
#define ENDPOINT_FIELD_HAS(m)                                                                      \
    offsetof(struct config_endpoint, m), sizeof(((struct config_endpoint *)0)->m),                 \
        offsetof(struct config_endpoint, has_##m)
#define PROCESS_FIELD_HAS(m)                                                                       \
    offsetof(struct config_process, m), sizeof(((struct config_process *)0)->m),                   \
        offsetof(struct config_process, has_##m)

/* Anymate's KPI fields are .NET Int32: seconds and entries 0..2^31-1. */
#define INT32_LIMIT UINT64_C(2147483647)

/* The single source of truth: parsing, bounds, defaults, gateway.conf, reload checks. */
static const struct key keys[] = {
    {"server", "listen", T_HOSTPORT, 0, 0, "127.0.0.1:8080", false, FIELD(server.listen), NULL,
     NULL},
    {"server", "threads", T_INT, 0, 256, "0", false, FIELD(server.threads),
     "0 = one per CPU the process may use", NULL},
    {"server", "max_header_size", T_SIZE, 1 * KIB, 1 * MIB, "16k", true,
     FIELD(server.max_header_size), NULL, NULL},
    {"server", "max_body_size", T_SIZE, 1 * KIB, 64 * MIB, "1m", true, FIELD(server.max_body_size),
     NULL, NULL},
    {"server", "client_timeout", T_DURATION, 100, MS_HOUR, "30s", true,
     FIELD(server.client_timeout_ms), NULL, NULL},
    {"server", "request_timeout", T_DURATION, 100, MS_HOUR, "60s", true,
     FIELD(server.request_timeout_ms), NULL, NULL},
    {"server", "shutdown_timeout", T_DURATION, 0, 10 * MS_MIN, "10s", true,
     FIELD(server.shutdown_timeout_ms), NULL, NULL},
    {"server", "x_forwarded_for", T_BOOL, 0, 1, "off", true, FIELD(server.x_forwarded_for), NULL,
     NULL},
    {"server", "client_header_timeout", T_DURATION, 100, MS_HOUR, "10s", true,
     FIELD(server.client_header_timeout_ms), NULL, NULL},
    {"server", "max_connections", T_INT, 1, 1000000, "10000", false, FIELD(server.max_connections),
     "bots' connections open at once, all threads together", NULL},
    {"server", "client_body_timeout", T_DURATION, 100, MS_HOUR, "30s", true,
     FIELD(server.client_body_timeout_ms), NULL, NULL},
    {"server", "max_buffered_body", T_SIZE, 64 * KIB, 64 * GIB, "256m", true,
     FIELD(server.max_buffered_body), NULL, NULL},
    /* Both or neither (check_server_tls). */
    {"server", "tls_cert", T_PATH, 0, 0, NULL, false, FIELD(server.tls_cert),
     "a readable PEM file: the certificate for TLS towards the bots, leaf first; with tls_key",
     NULL},
    {"server", "tls_key", T_PATH, 0, 0, NULL, false, FIELD(server.tls_key),
     "a readable PEM file: the private key of tls_cert", NULL},

    {"admin", "listen", T_HOSTPORT, 0, 0, "127.0.0.1:9090", false, FIELD(admin.listen), NULL, NULL},

    {"upstream", "client_id", T_STRING, 1, 63, NULL, true, FIELD(upstream.client_id),
     "your Anymate client id: 1..63 letters, digits or '-', not starting or ending with '-'",
     check_dns_label},
    {"upstream", "api_url", T_URL, 0, 0, NULL, true, FIELD(upstream.api),
     "default https://CLIENT_ID.anymate.app", NULL},
    {"upstream", "auth_url", T_URL, 0, 0, NULL, true, FIELD(upstream.auth),
     "default https://CLIENT_ID.auth.anymate.app", NULL},
    {"upstream", "ca_file", T_PATH, 0, 0, NULL, true, FIELD(upstream.ca_file),
     "a readable PEM file of CA certificates; leave unset for the system trust store", NULL},
    {"upstream", "connect_timeout", T_DURATION, 10, 5 * MS_MIN, "5s", true,
     FIELD(upstream.connect_timeout_ms), NULL, NULL},
    {"upstream", "tls_handshake_timeout", T_DURATION, 10, 5 * MS_MIN, "5s", true,
     FIELD(upstream.tls_handshake_timeout_ms), NULL, NULL},
    {"upstream", "response_timeout", T_DURATION, 100, MS_HOUR, "30s", true,
     FIELD(upstream.response_timeout_ms), NULL, NULL},
    {"upstream", "idle_timeout", T_DURATION, MS_SEC, MS_HOUR, "30s", true,
     FIELD(upstream.idle_timeout_ms), NULL, NULL},
    {"upstream", "pool_size", T_INT, 1, 10000, "64", false, FIELD(upstream.pool_size),
     "idle connections kept per thread per host", NULL},
    {"upstream", "pool_max", T_INT, 1, 100000, "256", true, FIELD(upstream.pool_max),
     "connections open at once per thread per host (at least pool_size)", NULL},
    {"upstream", "max_requests_per_conn", T_INT, 1, 1000000, "1000", true,
     FIELD(upstream.max_requests_per_conn), NULL, NULL},
    {"upstream", "queue_size", T_INT, 0, 1000000, "0", true, FIELD(upstream.queue_size),
     "0 = each thread's share of [server] max_connections", NULL},
    {"upstream", "queue_timeout", T_DURATION, 10, MS_HOUR, "10s", true,
     FIELD(upstream.queue_timeout_ms), NULL, NULL},
    {"upstream", "dns_refresh", T_DURATION, MS_SEC, MS_DAY, "60s", true,
     FIELD(upstream.dns_refresh_ms), NULL, NULL},

    {"policy", "require_bearer", T_BOOL, 0, 1, "on", true, FIELD(policy.require_bearer), NULL,
     NULL},
    {"policy", "forward_unknown_api", T_BOOL, 0, 1, "off", true, FIELD(policy.forward_unknown_api),
     NULL, NULL},
    {"policy", "numeric_string_ids", T_BOOL, 0, 1, "off", true, FIELD(policy.numeric_string_ids),
     NULL, NULL},
    {"policy", "max_overwrite_seconds_saved", T_INT, 0, INT32_LIMIT, "2147483647", true,
     FIELD(policy.max_overwrite_seconds_saved), NULL, NULL},
    {"policy", "max_overwrite_entries", T_INT, 0, INT32_LIMIT, "2147483647", true,
     FIELD(policy.max_overwrite_entries), NULL, NULL},
    /* Also at most [server] max_body_size (check_body_sizes). */
    {"policy", "validated_body_size", T_SIZE, 1 * KIB, 64 * MIB, "64k", true,
     FIELD(policy.validated_body_size), NULL, NULL},

    {"audit", "database", T_SECRET, 1, 4096, NULL, false, FIELD(audit.database),
     "a libpq connection string (host=... dbname=...) or a postgresql:// URI, 1..4096 "
     "characters; leave unset to turn the audit ledger off",
     NULL},
    {"audit", "auto_migrate", T_BOOL, 0, 1, "off", false, FIELD(audit.auto_migrate), NULL, NULL},
    {"audit", "commit_timeout", T_DURATION, 10, 60 * MS_SEC, "2s", true,
     FIELD(audit.commit_timeout_ms), NULL, NULL},
    {"audit", "batch_size", T_INT, 1, 10000, "512", true, FIELD(audit.batch_size), NULL, NULL},
    {"audit", "pipeline_depth", T_INT, 1, 16, "4", true, FIELD(audit.pipeline_depth), NULL, NULL},
    {"audit", "batch_delay", T_DURATION, 0, MS_SEC, "0", true, FIELD(audit.batch_delay_ms), NULL,
     NULL},
    {"audit", "queue_size", T_INT, 1, 1000000, "10000", true, FIELD(audit.queue_size), NULL, NULL},
    /* No default in the table: the host name, read at load time (default_instance). */
    {"audit", "instance", T_STRING, 1, 128, NULL, false, FIELD(audit.instance),
     "a name of 1..128 characters for this gateway in audit records; default: the host name", NULL},
    {"audit", "reconnect_max", T_DURATION, 100, 5 * MS_MIN, "5s", true,
     FIELD(audit.reconnect_max_ms), NULL, NULL},
    {"audit", "settings_refresh", T_DURATION, MS_SEC, MS_HOUR, "30s", true,
     FIELD(audit.settings_refresh_ms), NULL, NULL},
    {"audit", "partitions_ahead", T_INT, 1, 366, "7", true, FIELD(audit.partitions_ahead), NULL,
     NULL},
    {"audit", "map_cache_size", T_INT, 0, 100000000, "100000", false, FIELD(audit.map_cache_size),
     NULL, NULL},
    {"audit", "spool_dir", T_DIR, 0, 0, NULL, false, FIELD(audit.spool_dir),
     "a directory for the ledger's local spool (made if missing; its parent must exist); leave "
     "unset for no spool",
     NULL},
    {"audit", "spool_max_bytes", T_SIZE, 1 * MIB, 1024 * GIB, "1g", true,
     FIELD(audit.spool_max_bytes), NULL, NULL},
    {"audit", "spool_replay_rate", T_INT, 0, 10000000, "5000", false,
     FIELD(audit.spool_replay_rate), "rows per second, 0 for no limit", NULL},
    {"audit", "refusal_records_per_second", T_INT, 0, 1000000, "100", true,
     FIELD(audit.refusal_records_per_second), NULL, NULL},

    {"log", "level", T_ENUM, LOG_LEVEL_DEBUG, LOG_LEVEL_ERROR, "info", true, FIELD(log.level), NULL,
     NULL},
    {"log", "access_log", T_BOOL, 0, 1, "on", true, FIELD(log.access_log), NULL, NULL},
    {"log", "access_log_file", T_OUTFILE, 0, 0, NULL, false, FIELD(log.access_log_file),
     "a file the access lines are appended to (reopened on SIGUSR1); unset: standard output", NULL},
    {"log", "error_log_file", T_OUTFILE, 0, 0, NULL, false, FIELD(log.error_log_file),
     "a file the other log lines are appended to (reopened on SIGUSR1); unset: standard error",
     NULL},

    /*
     * Named sections: offsets into struct config_endpoint / struct config_process, applied to
     * the section's object; all reloadable, and none may own memory (config_free does not look
     * at them). Defaults are applied when the section opens.
     */
    {"endpoint", "enabled", T_BOOL, 0, 1, "on", true, ENDPOINT_FIELD(enabled), NULL, NULL},
    /* Also at most [server] max_body_size (check_body_sizes). */
    {"endpoint", "max_body_size", T_SIZE, 1, 64 * MIB, NULL, true,
     ENDPOINT_FIELD_HAS(max_body_size), NULL, NULL},

    {"process", "tasks_enabled", T_BOOL, 0, 1, NULL, true, PROCESS_FIELD_HAS(tasks_enabled), NULL,
     NULL},
    {"process", "seconds_per_run", T_INT, 0, INT32_LIMIT, NULL, true,
     PROCESS_FIELD_HAS(seconds_per_run), NULL, NULL},
    {"process", "seconds_per_task", T_INT, 0, INT32_LIMIT, NULL, true,
     PROCESS_FIELD_HAS(seconds_per_task), NULL, NULL},
    {"process", "default_entries", T_INT, 0, INT32_LIMIT, NULL, true,
     PROCESS_FIELD_HAS(default_entries), NULL, NULL},
    {"process", "seconds_per_entry", T_INT, 0, INT32_LIMIT, NULL, true,
     PROCESS_FIELD_HAS(seconds_per_entry), NULL, NULL},
    {"process", "advanced_mode", T_BOOL, 0, 1, NULL, true, PROCESS_FIELD_HAS(advanced_mode), NULL,
     NULL},
    {"process", "max_overwrite_seconds_saved", T_INT, 0, INT32_LIMIT, NULL, true,
     PROCESS_FIELD_HAS(max_overwrite_seconds_saved), NULL, NULL},
    {"process", "max_overwrite_entries", T_INT, 0, INT32_LIMIT, NULL, true,
     PROCESS_FIELD_HAS(max_overwrite_entries), NULL, NULL},
};

#define NKEYS (sizeof(keys) / sizeof(keys[0]))

/* A section of the file. A named one is written [NAME "ARG"] and makes one object per ARG. */
struct section {
    const char *name;
    const char *arg; /* named sections: what ARG is, in messages; NULL: a plain section */
};

static const struct section sections[] = {
    {"server", NULL}, {"admin", NULL}, {"upstream", NULL},   {"policy", NULL},
    {"audit", NULL},  {"log", NULL},   {"endpoint", "NAME"}, {"process", "KEY"},
};
#define NSECTIONS (sizeof(sections) / sizeof(sections[0]))

/* Indexed by LOG_LEVEL_* (log.h). */
static const char *const log_levels[] = {"debug", "info", "warn", "error"};
_Static_assert(LOG_LEVEL_DEBUG == 0 && LOG_LEVEL_INFO == 1 && LOG_LEVEL_WARN == 2 &&
                   LOG_LEVEL_ERROR == 3,
               "log_levels[] is indexed by LOG_LEVEL_*");

enum { SECTION_NONE = -1, SECTION_BAD = -2 };

/* State of one load: the text, the reader's cursor and what has been seen so far. */
struct load {
    const char *file;     /* FILE in messages */
    const char *base_dir; /* relative paths start here; NULL: the working directory */
    struct config *cfg;
    struct config_errors *errs;
    int nerr; /* errors found by this load, whether or not their message could be stored */

    const char *p, *end; /* reader cursor */
    int line;            /* line most recently handed to inih */
    int section;         /* index into sections[], SECTION_NONE or SECTION_BAD */
    int section_line[NSECTIONS];
    char label[MAX_SECTION_NAME + 32]; /* the section in messages: server, endpoint "FinishRun" */
    void *base; /* where the section's fields are: cfg, or the named section's object (valid
                 * until the next header: only opening a named section moves the arrays) */

    int set_line[NKEYS];       /* line that set the key; 0: not in the file */
    bool bad[NKEYS];           /* in the file, but rejected */
    int named_set_line[NKEYS]; /* the same for the current named section only */
    int *endpoint_size_line;   /* per cfg->endpoints[i]: line of its max_body_size, or 0 */
};

/* ---------------------------------------------------------------- errors */

static int errors_push(struct config_errors *errs, char *msg)
{
    char **msgs;

    if (!errs || !msg)
        return -1;
    msgs = realloc(errs->msgs, (errs->count + 1) * sizeof(*msgs));
    if (!msgs)
        return -1;
    msgs[errs->count++] = msg;
    errs->msgs = msgs;
    return 0;
}

__attribute__((format(printf, 3, 0))) static char *vformat(const char *prefix_file, int line,
                                                           const char *fmt, va_list ap)
{
    char head[64];
    va_list ap2;
    int hlen, blen;
    char *msg;

    hlen = snprintf(head, sizeof(head), ":%d: ", line);
    va_copy(ap2, ap);
    blen = vsnprintf(NULL, 0, fmt, ap2);
    va_end(ap2);
    if (hlen < 0 || blen < 0)
        return NULL;
    msg = malloc(strlen(prefix_file) + (size_t)hlen + (size_t)blen + 1);
    if (!msg)
        return NULL;
    strcpy(msg, prefix_file);
    strcat(msg, head);
    vsnprintf(msg + strlen(msg), (size_t)blen + 1, fmt, ap);
    return msg;
}

/* Append "FILE:LINE: message" to ERRS (when it can). */
__attribute__((format(printf, 4, 5))) static void
push_error(struct config_errors *errs, const char *file, int line, const char *fmt, ...)
{
    va_list ap;
    char *msg;

    va_start(ap, fmt);
    msg = vformat(file, line, fmt, ap);
    va_end(ap);
    if (errors_push(errs, msg) < 0)
        free(msg);
}

__attribute__((format(printf, 3, 4))) static void add_error(struct load *ld, int line,
                                                            const char *fmt, ...)
{
    va_list ap;
    char *msg;

    ld->nerr++;
    va_start(ap, fmt);
    msg = vformat(ld->file, line, fmt, ap);
    va_end(ap);
    if (errors_push(ld->errs, msg) < 0)
        free(msg);
}

/* Copy S (LEN bytes) into BUF for a message: control bytes become '?', long text is cut. */
static const char *show_n(const char *s, size_t len, char *buf, size_t size)
{
    size_t i, n = 0;

    for (i = 0; i < len && n + 4 < size; i++)
        buf[n++] = iscntrl((unsigned char)s[i]) ? '?' : s[i];
    if (i < len) {
        memcpy(buf + n, "...", 3);
        n += 3;
    }
    buf[n] = '\0';
    return buf;
}

static const char *show(const char *s, char *buf, size_t size)
{
    return show_n(s, strlen(s), buf, size);
}

static const char *errstr(int err, char *buf, size_t size)
{
#if defined(__GLIBC__) && defined(_GNU_SOURCE)
    return strerror_r(err, buf, size);
#else
    if (strerror_r(err, buf, size) != 0)
        snprintf(buf, size, "error %d", err);
    return buf;
#endif
}

/* ---------------------------------------------------------------- value parsers */

/* Decimal digits only (no sign, no space); -1 with *WHY when empty, not a number or too big. */
static int parse_digits(const char **sp, uint64_t *out, const char **why)
{
    const char *s = *sp;
    uint64_t v = 0;

    if (!isdigit((unsigned char)*s)) {
        *why = "not a number";
        return -1;
    }
    for (; isdigit((unsigned char)*s); s++) {
        unsigned d = (unsigned)(*s - '0');
        if (v > (UINT64_MAX - d) / 10) {
            *why = "number too large";
            return -1;
        }
        v = v * 10 + d;
    }
    *sp = s;
    *out = v;
    return 0;
}

static int scale(uint64_t v, uint64_t unit, uint64_t *out, const char **why)
{
    if (unit && v > UINT64_MAX / unit) {
        *why = "number too large";
        return -1;
    }
    *out = v * unit;
    return 0;
}

int config_parse_size(const char *s, uint64_t *out, const char **why)
{
    uint64_t v, unit;

    if (!s || !*s) {
        *why = "empty value";
        return -1;
    }
    if (parse_digits(&s, &v, why) < 0)
        return -1;
    if (*s == '\0')
        unit = 1;
    else if (s[1] == '\0' && (*s == 'k' || *s == 'K'))
        unit = KIB;
    else if (s[1] == '\0' && (*s == 'm' || *s == 'M'))
        unit = MIB;
    else if (s[1] == '\0' && (*s == 'g' || *s == 'G'))
        unit = GIB;
    else {
        *why = "unknown unit (use k, m or g, or none for bytes)";
        return -1;
    }
    return scale(v, unit, out, why);
}

int config_parse_duration_ms(const char *s, uint64_t *out, const char **why)
{
    uint64_t v, unit;

    if (!s || !*s) {
        *why = "empty value";
        return -1;
    }
    if (parse_digits(&s, &v, why) < 0)
        return -1;
    if (*s == '\0' || strcasecmp(s, "s") == 0)
        unit = MS_SEC;
    else if (strcasecmp(s, "ms") == 0)
        unit = 1;
    else if (strcasecmp(s, "m") == 0)
        unit = MS_MIN;
    else if (strcasecmp(s, "h") == 0)
        unit = MS_HOUR;
    else {
        *why = "unknown unit (use ms, s, m or h; a bare number is seconds)";
        return -1;
    }
    return scale(v, unit, out, why);
}

int config_parse_bool(const char *s, bool *out, const char **why)
{
    static const char *const yes[] = {"on", "yes", "true", "1"};
    static const char *const no[] = {"off", "no", "false", "0"};
    size_t i;

    for (i = 0; s && i < sizeof(yes) / sizeof(yes[0]); i++) {
        if (strcasecmp(s, yes[i]) == 0) {
            *out = true;
            return 0;
        }
        if (strcasecmp(s, no[i]) == 0) {
            *out = false;
            return 0;
        }
    }
    *why = "not a boolean";
    return -1;
}

/* A host name or IPv4 address: letters, digits, '.', '-', '_'. */
static bool host_name_ok(const char *s, size_t len)
{
    size_t i;

    if (len == 0 || len > 253)
        return false;
    for (i = 0; i < len; i++) {
        unsigned char c = (unsigned char)s[i];
        if (!isalnum(c) && c != '.' && c != '-' && c != '_')
            return false;
    }
    return true;
}

/*
 * Split the host part at S: "[V6]" or a name, ending at the first char in STOP (or NUL). Sets
 * *HOST and *HLEN (IPv6 without brackets) and *REST to what follows.
 */
static int split_host(const char *s, const char *stop, const char **host, size_t *hlen,
                      const char **rest, const char **why)
{
    char v6[INET6_ADDRSTRLEN];
    unsigned char bin[sizeof(struct in6_addr)];
    const char *close, *colon;

    if (*s == '[') {
        close = strchr(s, ']');
        if (!close) {
            *why = "missing ']' after the IPv6 address";
            return -1;
        }
        *host = s + 1;
        *hlen = (size_t)(close - s - 1);
        if (*hlen == 0 || *hlen >= sizeof(v6)) {
            *why = "invalid IPv6 address";
            return -1;
        }
        memcpy(v6, *host, *hlen);
        v6[*hlen] = '\0';
        if (inet_pton(AF_INET6, v6, bin) != 1) {
            *why = "invalid IPv6 address";
            return -1;
        }
        *rest = close + 1;
        return 0;
    }
    *host = s;
    *hlen = strcspn(s, stop);
    *rest = s + *hlen;
    colon = memchr(s, ':', strcspn(s, "/?#"));
    if (colon && memchr(colon + 1, ':', strcspn(colon + 1, "/?#"))) {
        *why = "an IPv6 address must be in brackets, e.g. [::1]:8080";
        return -1;
    }
    if (*hlen == 0) {
        *why = "missing host";
        return -1;
    }
    if (!host_name_ok(*host, *hlen)) {
        *why = "invalid host name (letters, digits, '.', '-' and '_' only)";
        return -1;
    }
    return 0;
}

/* S is the whole port: digits, MIN_PORT..65535. */
static int parse_port(const char *s, int min_port, uint16_t *out, const char **why)
{
    uint64_t v;

    if (parse_digits(&s, &v, why) < 0) {
        *why = "port is not a number";
        return -1;
    }
    if (*s != '\0') {
        *why = "port is not a number";
        return -1;
    }
    if (v < (uint64_t)min_port || v > 65535) {
        *why = min_port ? "port out of range (1..65535)" : "port out of range (0..65535)";
        return -1;
    }
    *out = (uint16_t)v;
    return 0;
}

int config_parse_hostport(const char *s, struct config_hostport *out, const char **why)
{
    const char *host, *rest;
    size_t hlen;
    uint16_t port;
    char *copy;

    if (!s || !*s) {
        *why = "empty value";
        return -1;
    }
    if (*s != '[' && !strchr(s, ':')) {
        *why = "missing ':PORT'";
        return -1;
    }
    if (*s != '[' && strstr(s, "://")) {
        *why = "a URL, not HOST:PORT";
        return -1;
    }
    if (*s != '[' && strchr(s, ':') != strrchr(s, ':')) {
        *why = "an IPv6 address must be in brackets, e.g. [::1]:8080";
        return -1;
    }
    if (split_host(s, ":", &host, &hlen, &rest, why) < 0)
        return -1;
    if (*rest != ':') {
        *why = *rest ? "unexpected text after the host (expected ':PORT')" : "missing ':PORT'";
        return -1;
    }
    if (parse_port(rest + 1, 0, &port, why) < 0)
        return -1;
    copy = strndup(host, hlen);
    if (!copy) {
        *why = "out of memory";
        return -1;
    }
    out->host = copy;
    out->port = port;
    return 0;
}

/* config_parse_url, also telling where the offending part starts (*AT, or NULL). */
static int parse_url_at(const char *s, struct config_url *out, const char **why, const char **at)
{
    const char *p, *host, *rest;
    size_t hlen, alen;
    uint16_t port;
    bool tls;
    char portbuf[8];

    *at = NULL;
    if (!s || !*s) {
        *why = "empty value";
        return -1;
    }
    if (strncasecmp(s, "https://", 8) == 0) {
        tls = true;
        p = s + 8;
    } else if (strncasecmp(s, "http://", 7) == 0) {
        tls = false;
        p = s + 7;
    } else {
        *why = strstr(s, "://") ? "unsupported scheme (use http:// or https://)"
                                : "missing scheme (use http:// or https://)";
        return -1;
    }
    alen = strcspn(p, "/?#");
    if (memchr(p, '@', alen)) {
        *why = "must not have userinfo (user@)";
        return -1;
    }
    if (split_host(p, ":/?#", &host, &hlen, &rest, why) < 0)
        return -1;
    port = tls ? 443 : 80;
    if (*rest == ':') {
        size_t plen = strcspn(rest + 1, "/?#");
        if (plen == 0 || plen >= sizeof(portbuf)) {
            *why = plen ? "port out of range (1..65535)" : "port is not a number";
            return -1;
        }
        memcpy(portbuf, rest + 1, plen);
        portbuf[plen] = '\0';
        if (parse_port(portbuf, 1, &port, why) < 0)
            return -1;
        rest += 1 + plen;
    } else if (*rest && !strchr("/?#", *rest)) {
        *why = "unexpected text after the host";
        *at = rest;
        return -1;
    }
    if (*rest == '/' && rest[1] == '\0')
        rest++;
    if (*rest) {
        *at = rest;
        if (*rest == '?')
            *why = "must not have a query";
        else if (*rest == '#')
            *why = "must not have a fragment";
        else {
            /* "/?x" is a query after the allowed '/'. */
            if (rest[1] == '?' || rest[1] == '#') {
                *at = rest + 1;
                *why = rest[1] == '?' ? "must not have a query" : "must not have a fragment";
            } else {
                *why = "must not have a path";
            }
        }
        return -1;
    }
    out->text = strdup(s);
    out->host = strndup(host, hlen);
    if (!out->text || !out->host) {
        config_url_clear(out);
        *why = "out of memory";
        return -1;
    }
    out->port = port;
    out->tls = tls;
    return 0;
}

int config_parse_url(const char *s, struct config_url *out, const char **why)
{
    const char *at;

    return parse_url_at(s, out, why, &at);
}

void config_url_clear(struct config_url *u)
{
    if (!u)
        return;
    free(u->text);
    free(u->host);
    memset(u, 0, sizeof(*u));
}

static int check_dns_label(const char *value, const char **why)
{
    size_t i, len = strlen(value);

    for (i = 0; i < len; i++) {
        unsigned char c = (unsigned char)value[i];
        if (!isalnum(c) && c != '-') {
            *why = "invalid character (letters, digits and '-' only)";
            return -1;
        }
    }
    if (value[0] == '-' || value[len - 1] == '-') {
        *why = "must not start or end with '-'";
        return -1;
    }
    return 0;
}

/* ---------------------------------------------------------------- the key table */

/* Format V with the largest unit that divides it exactly, in the syntax the parser accepts. */
static const char *fmt_size(uint64_t v, char *buf, size_t size)
{
    if (v && v % GIB == 0)
        snprintf(buf, size, "%llug", (unsigned long long)(v / GIB));
    else if (v && v % MIB == 0)
        snprintf(buf, size, "%llum", (unsigned long long)(v / MIB));
    else if (v && v % KIB == 0)
        snprintf(buf, size, "%lluk", (unsigned long long)(v / KIB));
    else
        snprintf(buf, size, "%llu", (unsigned long long)v);
    return buf;
}

static const char *fmt_duration(uint64_t ms, char *buf, size_t size)
{
    if (ms && ms % MS_HOUR == 0)
        snprintf(buf, size, "%lluh", (unsigned long long)(ms / MS_HOUR));
    else if (ms && ms % MS_MIN == 0)
        snprintf(buf, size, "%llum", (unsigned long long)(ms / MS_MIN));
    else if (ms && ms % MS_SEC == 0)
        snprintf(buf, size, "%llus", (unsigned long long)(ms / MS_SEC));
    else if (ms)
        snprintf(buf, size, "%llums", (unsigned long long)ms);
    else
        snprintf(buf, size, "0");
    return buf;
}

/* What a valid value of K looks like, for "(expected ...)". */
static const char *describe(const struct key *k, char *buf, size_t size)
{
    char lo[32], hi[32];

    switch (k->type) {
    case T_SIZE:
        snprintf(buf, size, "a size %s..%s; bytes, or with suffix k, m or g",
                 fmt_size(k->min, lo, sizeof(lo)), fmt_size(k->max, hi, sizeof(hi)));
        break;
    case T_DURATION:
        snprintf(buf, size, "a duration %s..%s; with suffix ms, s, m or h, bare number = seconds",
                 fmt_duration(k->min, lo, sizeof(lo)), fmt_duration(k->max, hi, sizeof(hi)));
        break;
    case T_INT:
        snprintf(buf, size, "an integer %llu..%llu%s%s", (unsigned long long)k->min,
                 (unsigned long long)k->max, k->note ? ", " : "", k->note ? k->note : "");
        break;
    case T_BOOL:
        snprintf(buf, size, "on/off, yes/no, true/false or 1/0");
        break;
    case T_ENUM:
        snprintf(buf, size, "one of debug, info, warn, error");
        break;
    case T_HOSTPORT:
        snprintf(buf, size, "HOST:PORT or [IPV6]:PORT, port 0..65535");
        break;
    case T_URL:
        snprintf(buf, size,
                 "http(s)://HOST[:PORT] with at most a trailing '/', no path, query or user%s%s",
                 k->note ? "; " : "", k->note ? k->note : "");
        break;
    case T_STRING:
    case T_SECRET:
    case T_PATH:
    case T_DIR:
    case T_OUTFILE:
        snprintf(buf, size, "%s", k->note ? k->note : "a string");
        break;
    }
    return buf;
}

/* Is K a key of a named section (its offset is into that section's object)? */
static bool key_named(const struct key *k)
{
    size_t i;

    for (i = 0; i < NSECTIONS; i++) {
        if (strcmp(sections[i].name, k->section) == 0)
            return sections[i].arg != NULL;
    }
    return false;
}

/* K's field in BASE: struct config, or the named section's object. */
static void *field(void *base, const struct key *k)
{
    return (char *)base + k->offset;
}

static const void *cfield(const struct config *cfg, const struct key *k)
{
    return (const char *)cfg + k->offset;
}

/* Integer fields are uint32_t, int (non-negative values only) or size_t. */
static void store_uint(void *p, size_t size, uint64_t v)
{
    if (size == sizeof(uint32_t)) {
        uint32_t x = (uint32_t)v;
        memcpy(p, &x, sizeof(x));
    } else {
        size_t x = (size_t)v;
        memcpy(p, &x, sizeof(x));
    }
}

static uint64_t load_uint(const void *p, size_t size)
{
    uint32_t x;
    size_t y;

    if (size == sizeof(uint32_t)) {
        memcpy(&x, p, sizeof(x));
        return x;
    }
    memcpy(&y, p, sizeof(y));
    return y;
}

/* Join a relative PATH to BASE_DIR; NULL when out of memory. */
static char *resolve_path(const char *base_dir, const char *path)
{
    char *out;
    size_t blen;

    if (path[0] == '/' || !base_dir)
        return strdup(path);
    blen = strlen(base_dir);
    out = malloc(blen + 1 + strlen(path) + 1);
    if (!out)
        return NULL;
    memcpy(out, base_dir, blen);
    out[blen] = '/';
    strcpy(out + blen + 1, path);
    return out;
}

/*
 * Report "[SEC] key: 'value': WHY[: 'AT'] (expected ...)"; SEC is the section as messages name
 * it (ld->label). A T_SECRET value is never shown: "the value" stands for it.
 */
static void value_error(struct load *ld, int line, const struct key *k, const char *sec,
                        const char *value, const char *why, const char *at)
{
    char vbuf[256], abuf[256], dbuf[256];
    const char *hint = "";

    /* Only ';' starts an inline comment; "30s # half a minute" would otherwise be puzzling. */
    for (const char *h = strchr(value, '#'); h; h = strchr(h + 1, '#')) {
        if (h > value && isspace((unsigned char)h[-1])) {
            hint = "; inline comments start with ' ;', not '#'";
            break;
        }
    }
    if (k->type == T_SECRET) {
        add_error(ld, line, "[%s] %s: the value: %s (expected %s%s)", sec, k->name, why,
                  describe(k, dbuf, sizeof(dbuf)), hint);
        return;
    }
    if (line == 0) {
        add_error(ld, 0, "[%s] %s: built-in default '%s' is invalid: %s", sec, k->name,
                  show(value, vbuf, sizeof(vbuf)), why);
        return;
    }
    add_error(ld, line, "[%s] %s: '%s': %s%s%s%s (expected %s%s)", sec, k->name,
              show(value, vbuf, sizeof(vbuf)), why, at ? ": '" : "",
              at ? show(at, abuf, sizeof(abuf)) : "", at ? "'" : "",
              describe(k, dbuf, sizeof(dbuf)), hint);
}

/*
 * Parse VALUE for key K into BASE (the snapshot, or the named section's object; SEC names the
 * section in messages). LINE is 0 for a built-in default. Returns 0, or -1 with the error
 * reported.
 */
static int set_value(struct load *ld, const struct key *k, void *base, const char *sec,
                     const char *value, int line)
{
    void *p = field(base, k);
    const char *why = NULL, *at = NULL;
    char buf[256];
    uint64_t v = 0;
    bool b;

    if (*value == '\0') {
        add_error(ld, line, "[%s] %s: missing value (expected %s; %s)", sec, k->name,
                  describe(k, buf, sizeof(buf)),
                  k->def ? "comment the line out for the default" : "comment the line out");
        return -1;
    }
    switch (k->type) {
    case T_SIZE:
    case T_DURATION:
    case T_INT:
        if (k->type == T_SIZE && config_parse_size(value, &v, &why) < 0)
            break;
        if (k->type == T_DURATION && config_parse_duration_ms(value, &v, &why) < 0)
            break;
        if (k->type == T_INT) {
            const char *s = value;
            if (parse_digits(&s, &v, &why) < 0)
                break;
            if (*s) {
                why = "not a whole non-negative number";
                break;
            }
        }
        if (v < k->min || v > k->max) {
            why = "out of range";
            break;
        }
        store_uint(p, k->size, v);
        return 0;
    case T_BOOL:
        if (config_parse_bool(value, &b, &why) < 0)
            break;
        *(bool *)p = b;
        return 0;
    case T_ENUM:
        for (v = k->min; v <= k->max; v++) {
            if (strcasecmp(value, log_levels[v]) == 0) {
                *(int *)p = (int)v;
                return 0;
            }
        }
        why = "unknown value";
        break;
    case T_HOSTPORT: {
        struct config_hostport hp;
        if (config_parse_hostport(value, &hp, &why) < 0)
            break;
        free(((struct config_hostport *)p)->host);
        *(struct config_hostport *)p = hp;
        return 0;
    }
    case T_URL: {
        struct config_url u = {0};
        if (parse_url_at(value, &u, &why, &at) < 0)
            break;
        config_url_clear(p);
        *(struct config_url *)p = u;
        return 0;
    }
    case T_STRING:
    case T_SECRET: {
        size_t len = strlen(value);
        char *copy;
        if (len < k->min || len > k->max) {
            why = len < k->min ? "too short" : "too long";
            break;
        }
        if (k->check && k->check(value, &why) < 0)
            break;
        copy = strdup(value);
        if (!copy) {
            why = "out of memory";
            break;
        }
        free(*(char **)p);
        *(char **)p = copy;
        return 0;
    }
    case T_PATH:
    case T_OUTFILE: {
        char *path = resolve_path(ld->base_dir, value);
        char ebuf[128];
        const char *problem = NULL;
        struct stat st;
        bool out = k->type == T_OUTFILE;
        if (!path) {
            why = "out of memory";
            break;
        }
        /* Open it as the gateway will (read: the TLS code; append, create: the log), since
         * access(2) would answer for the real uid. */
        int fd = out ? open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC | O_NOCTTY, 0640)
                     : open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY);
        if (fd < 0 || fstat(fd, &st) < 0)
            problem = errstr(errno, ebuf, sizeof(ebuf));
        else if (out ? !S_ISREG(st.st_mode) && !S_ISFIFO(st.st_mode) && !S_ISCHR(st.st_mode)
                     : !S_ISREG(st.st_mode))
            problem = S_ISDIR(st.st_mode) ? "is a directory" : "not a regular file";
        if (fd >= 0)
            close(fd);
        if (problem) {
            add_error(ld, line, "[%s] %s: cannot %s '%s': %s (expected %s)", sec, k->name,
                      out ? "write" : "read", show(path, buf, sizeof(buf)), problem, k->note);
            free(path);
            return -1;
        }
        free(*(char **)p);
        *(char **)p = path;
        return 0;
    }
    case T_DIR: {
        char *path = resolve_path(ld->base_dir, value);
        char ebuf[128];
        const char *problem = NULL;
        struct stat st;
        if (!path) {
            why = "out of memory";
            break;
        }
        if (stat(path, &st) == 0) {
            if (!S_ISDIR(st.st_mode))
                problem = "exists and is not a directory";
        } else if (errno != ENOENT) {
            problem = errstr(errno, ebuf, sizeof(ebuf));
        } else {
            /* missing: made at start, so its parent must be there */
            char *parent = strdup(path);
            char *slash = parent ? strrchr(parent, '/') : NULL;
            if (slash && slash != parent)
                *slash = '\0';
            if (!parent || stat(slash ? parent : ".", &st) != 0 || !S_ISDIR(st.st_mode))
                problem = "neither it nor its parent directory exists";
            free(parent);
        }
        if (problem) {
            add_error(ld, line, "[%s] %s: '%s' %s (expected %s)", sec, k->name,
                      show(path, buf, sizeof(buf)), problem, k->note);
            free(path);
            return -1;
        }
        free(*(char **)p);
        *(char **)p = path;
        return 0;
    }
    }
    value_error(ld, line, k, sec, value, why ? why : "invalid value", at);
    return -1;
}

/* Free what K's field in CFG owns (keys of struct config only). */
static void clear_value(struct config *cfg, const struct key *k)
{
    void *p = field(cfg, k);

    switch (k->type) {
    case T_STRING:
    case T_SECRET:
    case T_PATH:
    case T_DIR:
    case T_OUTFILE:
        free(*(char **)p);
        *(char **)p = NULL;
        break;
    case T_HOSTPORT:
        free(((struct config_hostport *)p)->host);
        ((struct config_hostport *)p)->host = NULL;
        break;
    case T_URL:
        config_url_clear(p);
        break;
    default:
        break;
    }
}

/*
 * Render K's value in CFG as it would be written in the file (for reload messages); a T_SECRET
 * is not shown.
 */
static const char *fmt_value(const struct config *cfg, const struct key *k, char *buf, size_t size)
{
    const void *p = cfield(cfg, k);

    switch (k->type) {
    case T_STRING:
    case T_PATH:
    case T_DIR:
    case T_OUTFILE: {
        const char *s = *(char *const *)p;
        snprintf(buf, size, "%s", s ? s : "(unset)");
        break;
    }
    case T_SECRET:
        snprintf(buf, size, "%s", *(char *const *)p ? "(not shown)" : "(unset)");
        break;
    case T_HOSTPORT: {
        const struct config_hostport *hp = p;
        bool v6 = hp->host && strchr(hp->host, ':');
        snprintf(buf, size, "%s%s%s:%u", v6 ? "[" : "", hp->host ? hp->host : "", v6 ? "]" : "",
                 hp->port);
        break;
    }
    case T_URL: {
        const struct config_url *u = p;
        snprintf(buf, size, "%s", u->text ? u->text : "(unset)");
        break;
    }
    case T_SIZE:
        fmt_size(load_uint(p, k->size), buf, size);
        break;
    case T_DURATION:
        fmt_duration(load_uint(p, k->size), buf, size);
        break;
    case T_INT:
        snprintf(buf, size, "%llu", (unsigned long long)load_uint(p, k->size));
        break;
    case T_BOOL:
        snprintf(buf, size, "%s", *(const bool *)p ? "on" : "off");
        break;
    case T_ENUM: {
        int v = *(const int *)p;
        snprintf(buf, size, "%s", v >= 0 && v <= LOG_LEVEL_ERROR ? log_levels[v] : "?");
        break;
    }
    }
    return buf;
}

static bool same_str(const char *a, const char *b)
{
    return (!a && !b) || (a && b && strcmp(a, b) == 0);
}

static bool same_value(const struct config *a, const struct config *b, const struct key *k)
{
    const void *pa = cfield(a, k), *pb = cfield(b, k);

    switch (k->type) {
    case T_STRING:
    case T_SECRET:
    case T_PATH:
    case T_DIR:
    case T_OUTFILE:
        return same_str(*(char *const *)pa, *(char *const *)pb);
    case T_HOSTPORT: {
        const struct config_hostport *x = pa, *y = pb;
        return x->port == y->port && same_str(x->host, y->host);
    }
    case T_URL: {
        const struct config_url *x = pa, *y = pb;
        return x->port == y->port && x->tls == y->tls && same_str(x->host, y->host);
    }
    case T_BOOL:
        return *(const bool *)pa == *(const bool *)pb;
    case T_ENUM:
        return *(const int *)pa == *(const int *)pb;
    default:
        return load_uint(pa, k->size) == load_uint(pb, k->size);
    }
}

/* ---------------------------------------------------------------- the INI file */

static const struct key *find_key(const char *section, const char *name)
{
    size_t i;

    for (i = 0; i < NKEYS; i++) {
        if (strcmp(keys[i].section, section) == 0 && strcmp(keys[i].name, name) == 0)
            return &keys[i];
    }
    return NULL;
}

static int find_section(const char *name, size_t len)
{
    size_t i;

    for (i = 0; i < NSECTIONS; i++) {
        if (strlen(sections[i].name) == len && memcmp(sections[i].name, name, len) == 0)
            return (int)i;
    }
    return SECTION_NONE;
}

/* How section IDX is written: "[server]", "[endpoint \"NAME\"]". */
static const char *section_form(int idx, char *buf, size_t size)
{
    const struct section *sc = &sections[idx];

    if (sc->arg)
        snprintf(buf, size, "[%s \"%s\"]", sc->name, sc->arg);
    else
        snprintf(buf, size, "[%s]", sc->name);
    return buf;
}

/* "[server], [admin], ..., [process \"KEY\"]" */
static const char *section_list(char *buf, size_t size)
{
    char form[64];
    size_t i, n = 0;

    buf[0] = '\0';
    for (i = 0; i < NSECTIONS && n < size; i++) {
        int w = snprintf(buf + n, size - n, "%s%s", n ? ", " : "",
                         section_form((int)i, form, sizeof(form)));
        if (w < 0)
            break;
        n += (size_t)w;
    }
    return buf;
}

/* "a, b, c" of the keys in SECTION. */
static const char *key_list(const char *section, char *buf, size_t size)
{
    size_t i, n = 0;

    buf[0] = '\0';
    for (i = 0; i < NKEYS && n < size; i++) {
        if (strcmp(keys[i].section, section) != 0)
            continue;
        int w = snprintf(buf + n, size - n, "%s%s", n ? ", " : "", keys[i].name);
        if (w < 0)
            break;
        n += (size_t)w;
    }
    return buf;
}

/* "Token, OkToRun, ..." of the router table: the names [endpoint "NAME"] accepts. */
static const char *endpoint_list(char *buf, size_t size)
{
    size_t i, count, n = 0;
    const struct route *table = router_table(&count);

    buf[0] = '\0';
    for (i = 0; i < count && n < size; i++) {
        int w = snprintf(buf + n, size - n, "%s%s", n ? ", " : "", table[i].name);
        if (w < 0)
            break;
        n += (size_t)w;
    }
    return buf;
}

/* strcspn over LEN bytes that need not be NUL-terminated. */
static size_t span(const char *s, size_t len, const char *reject)
{
    size_t i;

    for (i = 0; i < len && !strchr(reject, s[i]); i++)
        ;
    return i;
}

/* Index of a ';' that starts an inline comment (whitespace before it), or LEN. */
static size_t comment_start(const char *s, size_t from, size_t len)
{
    size_t i;

    for (i = from; i < len; i++) {
        if (s[i] == ';' && i > 0 && isspace((unsigned char)s[i - 1]))
            return i;
    }
    return len;
}

/* Make the plain section IDX current. */
static void open_plain(struct load *ld, int idx)
{
    ld->section = idx;
    ld->base = ld->cfg;
    snprintf(ld->label, sizeof(ld->label), "%s", sections[idx].name);
    if (!ld->section_line[idx])
        ld->section_line[idx] = ld->line;
}

/*
 * Add the object of [endpoint "NAME"]: NAME must be a row of the router table (any case) and
 * have no section yet. Returns the new object, or NULL with the error reported.
 */
static struct config_endpoint *add_endpoint(struct load *ld, const char *name)
{
    struct config *cfg = ld->cfg;
    const struct route *r = router_find(name);
    struct config_endpoint *eps;
    char list[1024];
    int *lines;
    size_t i;

    if (!r) {
        add_error(ld, ld->line, "[endpoint \"%s\"]: unknown endpoint (expected one of: %s)", name,
                  endpoint_list(list, sizeof(list)));
        return NULL;
    }
    for (i = 0; i < cfg->nendpoints; i++) {
        if (cfg->endpoints[i].name == r->name) {
            add_error(ld, ld->line,
                      "[endpoint \"%s\"]: duplicate section (first defined on line %d)", r->name,
                      cfg->endpoints[i].line);
            return NULL;
        }
    }
    eps = realloc(cfg->endpoints, (cfg->nendpoints + 1) * sizeof(*eps));
    if (eps)
        cfg->endpoints = eps;
    lines = realloc(ld->endpoint_size_line, (cfg->nendpoints + 1) * sizeof(*lines));
    if (lines)
        ld->endpoint_size_line = lines;
    if (!eps || !lines) {
        add_error(ld, ld->line, "out of memory");
        return NULL;
    }
    lines[cfg->nendpoints] = 0;
    memset(&eps[cfg->nendpoints], 0, sizeof(*eps));
    eps[cfg->nendpoints].name = r->name;
    eps[cfg->nendpoints].line = ld->line;
    return &eps[cfg->nendpoints++];
}

/* Add the object of [process "KEY"], a KEY (case-sensitive) with no section yet; or NULL. */
static struct config_process *add_process(struct load *ld, const char *key)
{
    struct config *cfg = ld->cfg;
    struct config_process *ps;
    char *copy;
    size_t i;

    for (i = 0; i < cfg->nprocesses; i++) {
        if (strcmp(cfg->processes[i].key, key) == 0) {
            add_error(ld, ld->line,
                      "[process \"%s\"]: duplicate section (first defined on line %d)", key,
                      cfg->processes[i].line);
            return NULL;
        }
    }
    ps = realloc(cfg->processes, (cfg->nprocesses + 1) * sizeof(*ps));
    if (ps)
        cfg->processes = ps;
    copy = strdup(key);
    if (!ps || !copy) {
        free(copy);
        add_error(ld, ld->line, "out of memory");
        return NULL;
    }
    memset(&ps[cfg->nprocesses], 0, sizeof(*ps));
    ps[cfg->nprocesses].key = copy;
    ps[cfg->nprocesses].line = ld->line;
    return &ps[cfg->nprocesses++];
}

/* Make the named section IDX current, with a new object called NAME (LEN bytes, checked). */
static void open_named(struct load *ld, int idx, const char *name, size_t len)
{
    const char *kind = sections[idx].name;
    char copy[MAX_SECTION_NAME + 1];
    void *obj;
    size_t i;

    memcpy(copy, name, len);
    copy[len] = '\0';
    if (strcmp(kind, "endpoint") == 0) {
        struct config_endpoint *ep = add_endpoint(ld, copy);
        obj = ep;
        if (ep)
            snprintf(ld->label, sizeof(ld->label), "endpoint \"%s\"", ep->name);
    } else {
        struct config_process *pr = add_process(ld, copy);
        obj = pr;
        if (pr)
            snprintf(ld->label, sizeof(ld->label), "process \"%s\"", pr->key);
    }
    if (!obj)
        return; /* reported; the section's keys are skipped */
    ld->section = idx;
    ld->base = obj;
    memset(ld->named_set_line, 0, sizeof(ld->named_set_line));
    for (i = 0; i < NKEYS; i++) {
        if (keys[i].def && strcmp(keys[i].section, kind) == 0)
            set_value(ld, &keys[i], obj, ld->label, keys[i].def, 0);
    }
}

/*
 * Check a named section header S (LEN bytes, trimmed; QUOTE is its first '"', before any ']'):
 * exactly [KIND "NAME"] with one space, NAME 1..MAX_SECTION_NAME bytes without control
 * characters or '"', then at most a comment. Opens the section and returns KIND, or returns NULL
 * with the line reported.
 */
static const char *named_section_line(struct load *ld, const char *s, size_t len, const char *quote)
{
    char buf[256], form[64], list[256];
    const char *word = s + 1, *name = quote + 1, *close, *what = NULL;
    size_t wlen = (size_t)(quote - word), klen = wlen, nlen = 0, i;
    int idx;

    while (klen && isspace((unsigned char)word[klen - 1]))
        klen--;
    idx = find_section(word, klen);
    if (idx < 0) {
        add_error(ld, ld->line, "[%s]: unknown section (expected one of %s)",
                  show_n(word, klen, buf, sizeof(buf)), section_list(list, sizeof(list)));
        return NULL;
    }
    section_form(idx, form, sizeof(form));
    close = memchr(name, '"', (size_t)(s + len - name));
    if (close)
        nlen = (size_t)(close - name);
    if (!sections[idx].arg)
        what = "this section takes no name";
    else if (wlen != klen + 1 || word[klen] != ' ')
        what = "one space must separate the section from its quoted name";
    else if (!close)
        what = "missing '\"' after the name";
    else if (nlen == 0)
        what = "empty name";
    else if (nlen > MAX_SECTION_NAME)
        what = "name longer than 200 bytes";
    else if (close + 1 == s + len)
        what = "missing ']' at the end of the section header";
    else if (close[1] != ']')
        what = "unexpected text after the closing '\"'";
    for (i = 0; !what && i < nlen; i++) {
        if (iscntrl((unsigned char)name[i]))
            what = "control character in the name";
    }
    if (!what) {
        for (i = (size_t)(close + 2 - s); i < len && isspace((unsigned char)s[i]); i++)
            ;
        if (i < len && s[i] != ';' && s[i] != '#')
            what = "unexpected text after ']'";
    }
    if (what) {
        add_error(ld, ld->line, "syntax error: '%s': %s (expected %s)",
                  show_n(s, len, buf, sizeof(buf)), what, form);
        return NULL;
    }
    open_named(ld, idx, name, nlen);
    return sections[idx].name;
}

/*
 * Check a "[section]" or "[section \"NAME\"]" line S (LEN bytes, trimmed) and switch to that
 * section. Returns the section's name (the header inih gets), or NULL when the line is rejected
 * (reported; keys below it are skipped).
 */
static const char *section_line(struct load *ld, const char *s, size_t len)
{
    char buf[256], form[64], list[256];
    size_t i, end = comment_start(s, 1, len);
    const char *close = memchr(s, ']', end);
    const char *quote = memchr(s, '"', end);
    int idx;

    ld->section = SECTION_BAD;
    if (quote && (!close || quote < close))
        return named_section_line(ld, s, len, quote);
    if (!close) {
        add_error(ld, ld->line, "syntax error: '%s': missing ']' at the end of the section header",
                  show_n(s, len, buf, sizeof(buf)));
        return NULL;
    }
    for (i = (size_t)(close - s) + 1; i < len && isspace((unsigned char)s[i]); i++)
        ;
    if (i < len && s[i] != ';' && s[i] != '#') {
        add_error(ld, ld->line, "syntax error: '%s': unexpected text after ']'",
                  show_n(s, len, buf, sizeof(buf)));
        return NULL;
    }
    len = (size_t)(close - s) - 1;
    idx = find_section(s + 1, len);
    if (idx >= 0 && !sections[idx].arg) {
        open_plain(ld, idx);
        return sections[idx].name;
    }
    /* [endpoint] or [endpoint FinishRun]: a named section without its quoted name. */
    i = span(s + 1, len, " \t");
    if (idx < 0)
        idx = find_section(s + 1, i);
    if (idx >= 0 && sections[idx].arg) {
        add_error(ld, ld->line, "syntax error: '%s': %s (expected %s)",
                  show_n(s, len + 2, buf, sizeof(buf)),
                  i < len ? "the name must be in double quotes" : "missing name",
                  section_form(idx, form, sizeof(form)));
        return NULL;
    }
    add_error(ld, ld->line, "[%s]: unknown section (expected one of %s)",
              show_n(s + 1, len, buf, sizeof(buf)), section_list(list, sizeof(list)));
    return NULL;
}

static int handle_key(void *user, const char *section, const char *name, const char *value);

/*
 * A key line S (LEN bytes, trimmed, with a '=' or ':' before any inline comment) too long for
 * inih's buffer: split it exactly as inih does (the name up to the first '=' or ':'; the value
 * up to a ';' that follows whitespace; both trimmed) and call the handler here.
 */
static void long_key_line(struct load *ld, const char *s, size_t len)
{
    size_t eq = span(s, len, "=:"), nend = eq, vstart = eq + 1;
    size_t vend = comment_start(s, eq + 1, len);
    char *copy;

    while (nend && isspace((unsigned char)s[nend - 1]))
        nend--;
    while (vstart < vend && isspace((unsigned char)s[vstart]))
        vstart++;
    while (vend > vstart && isspace((unsigned char)s[vend - 1]))
        vend--;
    copy = malloc(len + 2);
    if (!copy) {
        add_error(ld, ld->line, "out of memory");
        return;
    }
    memcpy(copy, s, nend);
    copy[nend] = '\0';
    memcpy(copy + nend + 1, s + vstart, vend - vstart);
    copy[nend + 1 + vend - vstart] = '\0';
    handle_key(ld, NULL, copy, copy + nend + 1);
    free(copy);
}

/*
 * The ini_reader: hands inih one line at a time, counting lines (ld->line is the line of every
 * handler call that follows). Blank and comment lines go out empty, section headers normalised,
 * key lines trimmed; a line that is malformed or longer than MAX_LINE is reported here and goes
 * out empty, so inih's own error return should stay 0. A key line too long for inih's buffer
 * (NUM) is handled here and goes out empty too.
 */
static char *read_line(char *str, int num, void *stream)
{
    struct load *ld = stream;
    const char *s, *nl, *section;
    size_t len, cap;
    char buf[256];

    if (ld->p >= ld->end || num < 4)
        return NULL;
    s = ld->p;
    nl = memchr(s, '\n', (size_t)(ld->end - s));
    len = (size_t)((nl ? nl : ld->end) - s);
    ld->p = nl ? nl + 1 : ld->end;
    ld->line++;
    cap = (size_t)num - 2; /* room for '\n' and NUL */
    strcpy(str, "\n");

    if (ld->line == 1 && len >= 3 && memcmp(s, "\xEF\xBB\xBF", 3) == 0) {
        s += 3;
        len -= 3;
    }
    if (memchr(s, '\0', len)) {
        add_error(ld, ld->line, "syntax error: the line contains a NUL byte");
        return str;
    }
    while (len && isspace((unsigned char)*s)) {
        s++;
        len--;
    }
    while (len && isspace((unsigned char)s[len - 1]))
        len--;
    if (len == 0 || *s == ';' || *s == '#')
        return str;
    if (len > MAX_LINE) {
        if (*s == '[')
            ld->section = SECTION_BAD;
        add_error(ld, ld->line, "syntax error: line too long (%zu characters, at most %d)", len,
                  MAX_LINE);
        return str;
    }
    if (*s == '[') {
        section = section_line(ld, s, len);
        if (section && strlen(section) + 2 <= cap)
            snprintf(str, (size_t)num, "[%s]\n", section);
        return str;
    }
    if (span(s, len, "=:") >= comment_start(s, 0, len)) {
        add_error(ld, ld->line,
                  "syntax error: '%s' is not 'key = value', a [section] header or a comment",
                  show_n(s, len, buf, sizeof(buf)));
        return str;
    }
    if (len > cap) {
        long_key_line(ld, s, len);
        return str;
    }
    memcpy(str, s, len);
    memcpy(str + len, "\n", 2);
    return str;
}

/* The ini_handler: one "name = value" of the current section, at line ld->line. */
static int handle_key(void *user, const char *section, const char *name, const char *value)
{
    struct load *ld = user;
    const struct key *k;
    char nbuf[128], lbuf[512], form[64];
    bool named;
    int line = ld->line, *set;
    size_t i;

    (void)section; /* the reader tracks it; inih's copy may be truncated */
    if (ld->section == SECTION_BAD)
        return 1;
    if (*name == '\0') {
        add_error(ld, line, "syntax error: missing key name before '='");
        return 1;
    }
    if (ld->section == SECTION_NONE) {
        add_error(ld, line, "%s: key outside any section (expected a [section] header above it)",
                  show(name, nbuf, sizeof(nbuf)));
        return 1;
    }
    named = sections[ld->section].arg != NULL;
    k = find_key(sections[ld->section].name, name);
    if (!k) {
        for (i = 0; i < NKEYS && strcmp(keys[i].name, name) != 0; i++)
            ;
        if (i < NKEYS)
            add_error(ld, line, "[%s] %s: unknown key in this section (it belongs in %s)",
                      ld->label, name,
                      section_form(find_section(keys[i].section, strlen(keys[i].section)), form,
                                   sizeof(form)));
        else
            add_error(ld, line, "[%s] %s: unknown key (expected one of: %s)", ld->label,
                      show(name, nbuf, sizeof(nbuf)),
                      key_list(sections[ld->section].name, lbuf, sizeof(lbuf)));
        return 1;
    }
    i = (size_t)(k - keys);
    set = named ? ld->named_set_line : ld->set_line;
    if (set[i]) {
        add_error(ld, line, "[%s] %s: duplicate key (first set on line %d)", ld->label, name,
                  set[i]);
        return 1;
    }
    set[i] = line;
    if (set_value(ld, k, ld->base, ld->label, value, line) < 0) {
        if (!named)
            ld->bad[i] = true;
        return 1;
    }
    if (k->has != NO_FLAG)
        *(bool *)((char *)ld->base + k->has) = true;
    if (strcmp(k->section, "endpoint") == 0 && strcmp(k->name, "max_body_size") == 0)
        ld->endpoint_size_line[ld->cfg->nendpoints - 1] = line;
    return 1;
}

/* ---------------------------------------------------------------- loading */

static size_t key_index(const char *section, const char *name)
{
    return (size_t)(find_key(section, name) - keys);
}

/* api and auth from client_id where not given; an error when neither can decide. */
static void derive_upstreams(struct load *ld)
{
    size_t id = key_index("upstream", "client_id");
    size_t api = key_index("upstream", "api_url");
    size_t auth = key_index("upstream", "auth_url");
    struct config_url *urls[2] = {&ld->cfg->upstream.api, &ld->cfg->upstream.auth};
    const char *suffix[2] = {"anymate.app", "auth.anymate.app"};
    size_t idx[2] = {api, auth};
    int line = ld->section_line[find_section("upstream", strlen("upstream"))];
    char text[128];
    const char *why, *at;

    if (ld->bad[id] || ld->bad[api] || ld->bad[auth])
        return; /* already reported; a guess here would only add noise */
    if (!ld->cfg->upstream.client_id) {
        if (!urls[0]->text && !urls[1]->text)
            add_error(ld, line,
                      "[upstream] client_id: missing (expected client_id = YOUR_CLIENT_ID, or "
                      "both api_url and auth_url)");
        else if (!urls[0]->text || !urls[1]->text)
            add_error(ld, line,
                      "[upstream] %s: missing, and no client_id to derive it from (expected "
                      "client_id, or both api_url and auth_url)",
                      urls[0]->text ? "auth_url" : "api_url");
        return;
    }
    for (int i = 0; i < 2; i++) {
        if (urls[i]->text)
            continue;
        snprintf(text, sizeof(text), "https://%s.%s", ld->cfg->upstream.client_id, suffix[i]);
        if (parse_url_at(text, urls[i], &why, &at) < 0)
            add_error(ld, ld->set_line[id], "[upstream] %s: derived '%s' is invalid: %s",
                      keys[idx[i]].name, text, why);
    }
}

/* threads = 0: the CPUs this process may use, its cgroup's quota included (a container). */
static int online_cpus(void)
{
    return util_cpus_available("/sys/fs/cgroup", 256);
}

/* [audit] instance not in the file: the host name, read now. */
static void default_instance(struct load *ld)
{
    size_t i = key_index("audit", "instance");
    char host[256], ebuf[128];

    if (ld->set_line[i])
        return;
    if (gethostname(host, sizeof(host)) < 0) {
        add_error(ld, 0,
                  "[audit] instance: cannot read the host name for the default: %s "
                  "(expected instance = NAME)",
                  errstr(errno, ebuf, sizeof(ebuf)));
        return;
    }
    host[sizeof(host) - 1] = '\0';
    if (host[0] == '\0') {
        add_error(ld, 0,
                  "[audit] instance: the host name is empty, no default (expected "
                  "instance = NAME)");
        return;
    }
    set_value(ld, &keys[i], ld->cfg, "audit", host, 0);
}

/*
 * Body limits below [server] max_body_size, which the HTTP layer enforces first: a larger
 * validated_body_size or endpoint max_body_size could never apply. An unset
 * validated_body_size is its default or max_body_size, whichever is smaller.
 */
/* TLS towards the bots needs both the certificate and its key. */
static void check_server_tls(struct load *ld)
{
    size_t cert = key_index("server", "tls_cert"), key = key_index("server", "tls_key");
    if (ld->bad[cert] || ld->bad[key])
        return;
    if (ld->set_line[cert] && !ld->set_line[key])
        add_error(ld, ld->set_line[cert],
                  "[server] tls_cert: set without tls_key (expected both, or neither for plain "
                  "HTTP)");
    else if (ld->set_line[key] && !ld->set_line[cert])
        add_error(ld, ld->set_line[key],
                  "[server] tls_key: set without tls_cert (expected both, or neither for plain "
                  "HTTP)");
}

static void check_body_sizes(struct load *ld)
{
    struct config *cfg = ld->cfg;
    size_t srv = key_index("server", "max_body_size");
    size_t val = key_index("policy", "validated_body_size");
    size_t limit = cfg->server.max_body_size;
    char a[32], b[32], where[32];

    if (ld->bad[srv])
        return; /* already reported; its limit is unknown */
    if (ld->set_line[srv])
        snprintf(where, sizeof(where), "line %d", ld->set_line[srv]);
    else
        snprintf(where, sizeof(where), "the default");
    if (!ld->set_line[val] && cfg->policy.validated_body_size > limit)
        cfg->policy.validated_body_size = limit;
    if (!ld->bad[val] && cfg->policy.validated_body_size > limit)
        add_error(ld, ld->set_line[val],
                  "[policy] validated_body_size: %s exceeds [server] max_body_size = %s (%s) "
                  "(expected at most %s: larger bodies get 413 before validation)",
                  fmt_size(cfg->policy.validated_body_size, a, sizeof(a)),
                  fmt_size(limit, b, sizeof(b)), where, b);
    for (size_t i = 0; i < cfg->nendpoints; i++) {
        const struct config_endpoint *ep = &cfg->endpoints[i];
        if (ep->has_max_body_size && ep->max_body_size > limit)
            add_error(ld, ld->endpoint_size_line[i],
                      "[endpoint \"%s\"] max_body_size: %s exceeds [server] max_body_size = %s "
                      "(%s) (expected at most %s: larger bodies get 413 first)",
                      ep->name, fmt_size(ep->max_body_size, a, sizeof(a)),
                      fmt_size(limit, b, sizeof(b)), where, b);
    }
}

/* A spool without a database has nothing to replay into. */
static void check_spool(struct load *ld)
{
    size_t dir = key_index("audit", "spool_dir");
    if (ld->cfg->audit.spool_dir && !ld->cfg->audit.database)
        add_error(ld, ld->set_line[dir],
                  "[audit] spool_dir: set without [audit] database (expected both: the spool "
                  "keeps records for the database while it is unavailable)");
}

/* Free everything the snapshot owns, the table's fields and the named sections included. */
static void config_free(struct config *cfg)
{
    size_t i;

    for (i = 0; i < NKEYS; i++) {
        if (!key_named(&keys[i]))
            clear_value(cfg, &keys[i]);
    }
    for (i = 0; i < cfg->nprocesses; i++)
        free(cfg->processes[i].key);
    free(cfg->processes);
    free(cfg->endpoints);
    free(cfg->path);
    free(cfg);
}

static struct config *load_text(const char *file, const char *base_dir, const char *text,
                                size_t len, struct config_errors *errs)
{
    struct load ld;
    size_t i;
    int rc;

    memset(&ld, 0, sizeof(ld));
    ld.file = file;
    ld.base_dir = base_dir;
    ld.errs = errs;
    ld.p = text;
    ld.end = text + len;
    ld.section = SECTION_NONE;
    ld.cfg = calloc(1, sizeof(*ld.cfg));
    if (!ld.cfg || !(ld.cfg->path = strdup(file))) {
        free(ld.cfg);
        push_error(errs, file, 0, "out of memory");
        return NULL;
    }
    atomic_init(&ld.cfg->refs, 1);

    rc = ini_parse_stream(read_line, &ld, handle_key, &ld);
    if (rc < 0) {
        add_error(&ld, 0, "cannot parse: %s", rc == -2 ? "out of memory" : "inih error");
    } else if (rc > 0) {
        /*
         * The reader blanks every line it reports and passes on only lines inih accepts, so this
         * is a case it did not foresee: never on a line already reported.
         */
        add_error(&ld, rc, "syntax error (expected 'key = value', a [section] or a comment)");
    }

    for (i = 0; i < NKEYS; i++) {
        if (!ld.set_line[i] && keys[i].def && !key_named(&keys[i]))
            set_value(&ld, &keys[i], ld.cfg, keys[i].section, keys[i].def, 0);
    }
    derive_upstreams(&ld);
    if (ld.cfg->server.threads == 0)
        ld.cfg->server.threads = online_cpus();
    default_instance(&ld);
    check_body_sizes(&ld);
    check_server_tls(&ld);
    check_spool(&ld);
    free(ld.endpoint_size_line);

    if (ld.nerr) {
        config_free(ld.cfg);
        return NULL;
    }
    return ld.cfg;
}

struct config *config_load_string(const char *name, const char *text, struct config_errors *errs)
{
    if (!name)
        name = "(string)";
    if (!text) {
        push_error(errs, name, 0, "no text");
        return NULL;
    }
    return load_text(name, NULL, text, strlen(text), errs);
}

struct config *config_load(const char *path, struct config_errors *errs)
{
    struct config *cfg = NULL;
    char ebuf[128], *text = NULL, *dir = NULL, *slash;
    size_t len = 0, n;
    FILE *f;
    int err = 0;

    if (!path || !*path) {
        push_error(errs, path ? path : "(null)", 0, "cannot read: no file name");
        return NULL;
    }
    f = fopen(path, "rbe");
    if (!f) {
        push_error(errs, path, 0, "cannot read: %s", errstr(errno, ebuf, sizeof(ebuf)));
        return NULL;
    }
    text = malloc(MAX_FILE_SIZE + 1);
    if (!text) {
        push_error(errs, path, 0, "out of memory");
        goto close_file;
    }
    while ((n = fread(text + len, 1, MAX_FILE_SIZE + 1 - len, f)) > 0 && len + n <= MAX_FILE_SIZE)
        len += n;
    if (ferror(f)) {
        err = errno;
        push_error(errs, path, 0, "cannot read: %s", errstr(err ? err : EIO, ebuf, sizeof(ebuf)));
        goto free_text;
    }
    if (n > 0) {
        push_error(errs, path, 0, "cannot read: larger than %d bytes; is this the right file?",
                   MAX_FILE_SIZE);
        goto free_text;
    }
    text[len] = '\0';
    /* Relative paths in the file (ca_file) are relative to the file, not to the process. */
    slash = strrchr(path, '/');
    if (slash) {
        dir = strndup(path, slash == path ? 1 : (size_t)(slash - path));
        if (!dir) {
            push_error(errs, path, 0, "out of memory");
            goto free_text;
        }
    }
    cfg = load_text(path, dir, text, len, errs);
    free(dir);
free_text:
    free(text);
close_file:
    fclose(f);
    return cfg;
}

struct config *config_ref(struct config *cfg)
{
    if (cfg)
        atomic_fetch_add_explicit(&cfg->refs, 1, memory_order_relaxed);
    return cfg;
}

void config_unref(struct config *cfg)
{
    if (cfg && atomic_fetch_sub_explicit(&cfg->refs, 1, memory_order_acq_rel) == 1)
        config_free(cfg);
}

void config_errors_free(struct config_errors *errs)
{
    size_t i;

    if (!errs)
        return;
    for (i = 0; i < errs->count; i++)
        free(errs->msgs[i]);
    free(errs->msgs);
    errs->msgs = NULL;
    errs->count = 0;
}

int config_reload_check(const struct config *old, const struct config *next,
                        struct config_errors *errs)
{
    char a[256], b[256];
    size_t i;
    int rc = 0;

    for (i = 0; i < NKEYS; i++) {
        const struct key *k = &keys[i];
        if (k->reloadable || key_named(k) || same_value(old, next, k))
            continue;
        if (k->type == T_SECRET) {
            push_error(errs, next->path, 0,
                       "[%s] %s: changed (values not shown), which takes effect only after a "
                       "restart",
                       k->section, k->name);
            rc = -1;
            continue;
        }
        push_error(errs, next->path, 0,
                   "[%s] %s: changed from %s to %s, which takes effect only after a restart",
                   k->section, k->name, fmt_value(old, k, a, sizeof(a)),
                   fmt_value(next, k, b, sizeof(b)));
        rc = -1;
    }
    return rc;
}

static int copy_str(char **dst, const char *src)
{
    char *c = src ? strdup(src) : NULL;
    if (src && !c)
        return -1;
    free(*dst);
    *dst = c;
    return 0;
}

int config_keep_restart_values(struct config *next, const struct config *old)
{
    for (size_t i = 0; i < NKEYS; i++) {
        const struct key *k = &keys[i];
        if (k->reloadable || key_named(k) || same_value(old, next, k))
            continue;
        void *d = field(next, k);
        const void *o = cfield(old, k);
        switch (k->type) {
        case T_STRING:
        case T_SECRET:
        case T_PATH:
        case T_DIR:
        case T_OUTFILE:
            if (copy_str((char **)d, *(char *const *)o) != 0)
                return -1;
            break;
        case T_HOSTPORT: {
            struct config_hostport *dh = d;
            const struct config_hostport *oh = o;
            if (copy_str(&dh->host, oh->host) != 0)
                return -1;
            dh->port = oh->port;
            break;
        }
        case T_URL: {
            struct config_url *du = d;
            const struct config_url *ou = o;
            if (copy_str(&du->text, ou->text) != 0 || copy_str(&du->host, ou->host) != 0)
                return -1;
            du->port = ou->port;
            du->tls = ou->tls;
            break;
        }
        case T_BOOL:
            *(bool *)d = *(const bool *)o;
            break;
        case T_ENUM:
            *(int *)d = *(const int *)o;
            break;
        default:
            memcpy(d, o, k->size);
            break;
        }
    }
    return 0;
}

const struct config_endpoint *config_endpoint_find(const struct config *cfg, const char *name)
{
    size_t i;

    if (!cfg || !name)
        return NULL;
    for (i = 0; i < cfg->nendpoints; i++) {
        if (strcasecmp(cfg->endpoints[i].name, name) == 0)
            return &cfg->endpoints[i];
    }
    return NULL;
}

const struct config_process *config_process_find(const struct config *cfg, const char *key)
{
    size_t i;

    if (!cfg || !key)
        return NULL;
    for (i = 0; i < cfg->nprocesses; i++) {
        if (strcmp(cfg->processes[i].key, key) == 0)
            return &cfg->processes[i];
    }
    return NULL;
}
