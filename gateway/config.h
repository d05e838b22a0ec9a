/*
 * config: the gateway's configuration file (INI, parsed with libinih) turned into one immutable,
 * typed snapshot.
 *
 * Every key lives in one table (section, name, type, bounds, default, reloadable) in config.c;
 * the table is the single source of truth for parsing, defaults, bounds and `-t` checking.
 * Unknown sections or keys, values that do not parse and values out of bounds are errors,
 * reported as "FILE:LINE: message" (all of them, not only the first).
 *
 * A snapshot is reference counted: worker threads hold a reference for as long as they use it,
 * and a reload (SIGHUP, later) swaps in a new snapshot; a failed reload keeps the old one.
 */
#ifndef GW_CONFIG_H
#define GW_CONFIG_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* A parsed "HOST:PORT" or "[V6]:PORT". port 0 means "any free port" (tests). */
struct config_hostport {
    char *host; /* owned by the snapshot; IPv6 without brackets */
    uint16_t port;
};

/* A parsed upstream base URL: scheme://host[:port][/], no path, query or userinfo. */
struct config_url {
    char *text;    /* the URL as configured, owned */
    char *host;    /* owned; IPv6 without brackets */
    uint16_t port; /* explicit, or 443 for https / 80 for http */
    bool tls;      /* https */
};

struct config {
    atomic_int refs; /* see config_ref / config_unref */
    char *path;

    struct {
        struct config_hostport listen;
        int threads; /* resolved: 0 in the file means the number of online CPUs (at most 256) */
        size_t max_header_size;       /* bytes, request line + headers */
        size_t max_body_size;         /* bytes */
        uint32_t client_timeout_ms;   /* read/write inactivity towards the bot */
        uint32_t request_timeout_ms;  /* whole request, head read to reply sent */
        uint32_t shutdown_timeout_ms; /* SIGTERM: in-flight deadline */
        bool x_forwarded_for;         /* send X-Forwarded-For upstream (off: egress point) */
    } server;

    struct {
        struct config_hostport listen;
    } admin;

    struct {
        char *client_id;        /* NULL when api_url and auth_url are both given */
        struct config_url api;  /* from api_url, or https://CLIENT_ID.anymate.app */
        struct config_url auth; /* from auth_url, or https://CLIENT_ID.auth.anymate.app */
        char *ca_file; /* NULL: the system trust store; relative in the file: to its directory */
        uint32_t connect_timeout_ms;
        uint32_t tls_handshake_timeout_ms;
        uint32_t response_timeout_ms;   /* request sent to response complete */
        uint32_t idle_timeout_ms;       /* pooled keep-alive connection lifetime when idle */
        uint32_t pool_size;             /* connections per thread per upstream host */
        uint32_t max_requests_per_conn; /* then the connection is retired */
        uint32_t queue_size;            /* requests waiting for a connection, per thread+host */
        uint32_t dns_refresh_ms;        /* re-resolve period for upstream host names */
    } upstream;

    struct {
        int level;       /* LOG_LEVEL_* from log.h: 0 debug, 1 info, 2 warn, 3 error */
        bool access_log; /* one JSON line per request */
    } log;
};

/*
 * Errors collected while loading: each entry is a complete "FILE:LINE: message" string
 * (LINE is 0 for whole-file problems such as a missing required key or an unreadable file).
 * Owned by the caller: free with config_errors_free.
 */
struct config_errors {
    char **msgs;
    size_t count;
};

/*
 * Load and validate PATH. Returns a new snapshot with one reference, or NULL with at least one
 * message appended to ERRS (NULL: messages are dropped, the result is the same). Never logs,
 * never exits.
 */
struct config *config_load(const char *path, struct config_errors *errs);

/* Same, from a string (unit tests); NAME is used as FILE in messages. */
struct config *config_load_string(const char *name, const char *text, struct config_errors *errs);

/*
 * config_ref adds a reference (any thread) and returns CFG; config_unref drops one and frees the
 * snapshot with the last. Both accept NULL.
 */
struct config *config_ref(struct config *cfg);
void config_unref(struct config *cfg);

/* Free the messages in ERRS and reset it to empty; ERRS itself is not freed. Accepts NULL. */
void config_errors_free(struct config_errors *errs);

/*
 * Reload (SIGHUP): can NEXT replace OLD in a running process? Keys marked not reloadable in the
 * table (listen addresses, threads, upstream identity and trust, pool size) take effect only at
 * a restart. Returns 0 when none of them differ, else -1 with one "FILE:0: ..." message per
 * changed key appended to ERRS (NULL: not reported). Neither snapshot is modified.
 */
int config_reload_check(const struct config *old, const struct config *next,
                        struct config_errors *errs);

/*
 * Value parsers shared with the rest of the gateway; each returns 0, or -1 with a static
 * message in *WHY. No allocation except where an out-parameter is documented as owned.
 *   size:     "16384", "16k", "1m", "1g" (binary units, case-insensitive)
 *   duration: "250ms", "5s", "2m", "1h"; a bare number is seconds
 *   bool:     on/off, yes/no, true/false, 1/0
 *   hostport: "127.0.0.1:8080", "[::1]:8080", "localhost:0" (host owned by the caller)
 *   url:      "https://host[:port][/]" or http (fields owned by the caller; free with
 *             config_url_clear)
 */
int config_parse_size(const char *s, uint64_t *out, const char **why);
int config_parse_duration_ms(const char *s, uint64_t *out, const char **why);
int config_parse_bool(const char *s, bool *out, const char **why);
int config_parse_hostport(const char *s, struct config_hostport *out, const char **why);
int config_parse_url(const char *s, struct config_url *out, const char **why);
void config_url_clear(struct config_url *u);

#endif
