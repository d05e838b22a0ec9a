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
        size_t max_header_size;            /* bytes, request line + headers */
        size_t max_body_size;              /* bytes */
        uint32_t client_timeout_ms;        /* read/write inactivity towards the bot */
        uint32_t request_timeout_ms;       /* whole request, head read to reply sent */
        uint32_t shutdown_timeout_ms;      /* SIGTERM: in-flight deadline */
        bool x_forwarded_for;              /* send X-Forwarded-For upstream (off: egress point) */
        uint32_t client_header_timeout_ms; /* first byte of a request head to its end (408) */
        uint32_t max_connections;          /* bots' connections at once, all threads */
        uint32_t client_body_timeout_ms;   /* a whole request body, once asked for (408) */
        size_t max_buffered_body;          /* request body bytes held in memory, all threads */
        char *tls_cert;                    /* PEM chain for TLS towards the bots, or NULL */
        char *tls_key;                     /* its private key; set together with tls_cert */
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
        uint32_t pool_size;             /* idle connections kept per thread per upstream host */
        uint32_t pool_max;              /* connections open at once per thread per host */
        uint32_t max_requests_per_conn; /* then the connection is retired */
        uint32_t queue_size;       /* requests waiting for a connection, per thread+host; 0: follows
                                      max_connections (its share per thread) */
        uint32_t queue_timeout_ms; /* longest wait for a connection (503) */
        uint32_t dns_refresh_ms;   /* re-resolve period for upstream host names */
    } upstream;

    struct {
        bool require_bearer;      /* /api/... without "Authorization: Bearer <token>" -> 401 */
        bool forward_unknown_api; /* unknown /api/... paths: forward (on) or 404 (off) */
        bool numeric_string_ids;  /* accept "runId":"123" (home-grown bots); off */
        uint32_t max_overwrite_seconds_saved; /* 0..2147483647; above -> 422 */
        uint32_t max_overwrite_entries;       /* 0..2147483647; above -> 422 */
        /* Default body limit of FinishRun and task actions; at most server.max_body_size (an
         * error when set larger; unset: 64k, or max_body_size when that is smaller). */
        size_t validated_body_size;
    } policy;

    /* [endpoint "NAME"] sections in file order, NAME an endpoint of the router table
     * (case-insensitive, stored as the table spells it), each at most once. Endpoints without
     * a section use the defaults. See config_endpoint_find. */
    struct config_endpoint *endpoints;
    size_t nendpoints;

    /* [process "KEY"] sections in file order, each KEY (case-sensitive) at most once: KPI
     * settings and per-process policy (issue 4). See config_process_find. */
    struct config_process *processes;
    size_t nprocesses;

    struct {
        /* libpq conninfo or URI, 1..4096 characters, owned; NULL: the audit ledger is off. May
         * hold a password: config never puts it in a message, and neither may its users. */
        char *database;
        bool auto_migrate;          /* apply sql/migrations at start-up */
        uint32_t commit_timeout_ms; /* record not committed by then -> 503, not forwarded */
        uint32_t batch_size;        /* flush after this many records ... */
        uint32_t batch_delay_ms;    /* ... or this long after the first one (0: at once) */
        uint32_t pipeline_depth;    /* batches on the wire per connection at once */
        uint32_t queue_size;        /* records waiting per thread; beyond -> 503 */
        /* Gateway instance name in records, 1..128 characters, owned, never NULL: when not in
         * the file, the host name (gethostname) at load time. */
        char *instance;
        uint32_t reconnect_max_ms;    /* backoff ceiling between reconnect attempts */
        uint32_t settings_refresh_ms; /* re-read process_kpi_settings (NOTIFY is faster) */
        uint32_t partitions_ahead;    /* days of partitions created ahead */
        uint32_t map_cache_size;      /* runId/taskId -> processKey entries cached per thread */
        char *spool_dir;              /* the local spool's directory, owned; NULL: no spool */
        size_t spool_max_bytes;       /* bound on the spool's files */
        uint32_t spool_replay_rate;   /* rows per second the replay inserts at most (0: any) */
        uint32_t refusal_records_per_second; /* per thread; beyond: counted in summaries */
    } audit;

    struct {
        int level;             /* LOG_LEVEL_* from log.h: 0 debug, 1 info, 2 warn, 3 error */
        bool access_log;       /* one JSON line per request */
        char *access_log_file; /* NULL: standard output */
        char *error_log_file;  /* NULL: standard error */
    } log;
};

struct config_endpoint {
    const char *name;       /* the router table's spelling (static: struct route's name) */
    int line;               /* where the section starts, for messages */
    bool enabled;           /* default on; off: 404 route.disabled */
    bool has_max_body_size; /* max_body_size set in the file */
    size_t max_body_size;   /* 1..64m, at most server.max_body_size (checked at load) */
};

/* A process's KPI settings ("Finish and Reporting" in Anymate) and policy. A field not set in
 * the file has its has_ flag false (and value 0). Integers are 0..2147483647 (.NET Int32). */
struct config_process {
    char *key; /* owned; the process key, case-sensitive as Anymate stores it */
    int line;
    bool has_tasks_enabled, tasks_enabled;
    bool has_seconds_per_run;
    int32_t seconds_per_run;
    bool has_seconds_per_task;
    int32_t seconds_per_task;
    bool has_advanced_mode, advanced_mode;
    bool has_default_entries;
    int32_t default_entries;
    bool has_seconds_per_entry;
    int32_t seconds_per_entry;
    bool has_max_overwrite_seconds_saved;
    uint32_t max_overwrite_seconds_saved;
    bool has_max_overwrite_entries;
    uint32_t max_overwrite_entries;
};

/*
 * Lookups over a snapshot (linear); NULL when there is no section for it, or CFG or the name is
 * NULL. The result lives as long as the snapshot. Endpoint names match case-insensitively (as
 * router_find); process keys exactly.
 */
const struct config_endpoint *config_endpoint_find(const struct config *cfg, const char *name);
const struct config_process *config_process_find(const struct config *cfg, const char *key);

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
 * table (listen addresses, threads, upstream identity and trust, pool size, audit database and
 * instance) take effect only at a restart; [endpoint] and [process] sections always reload.
 * Returns 0 when none of them differ, else -1 with one "FILE:0: ..." message per changed key
 * appended to ERRS (NULL: not reported; the database value is never shown). Neither snapshot
 * is modified.
 */
int config_reload_check(const struct config *old, const struct config *next,
                        struct config_errors *errs);

/* Give NEXT the values OLD has for every key that does not reload (after config_reload_check
 * reported them), so that NEXT can run in OLD's place: those keep their running value. Copies
 * what it owns (strings); 0, or -1 when out of memory (NEXT is then unusable). */
int config_keep_restart_values(struct config *next, const struct config *old);

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
