/*
 * main: command line, start-up and shutdown of anymate-gateway.
 *
 *   anymate-gateway -c FILE        run
 *   anymate-gateway -t -c FILE     check FILE, print every error as FILE:LINE: message
 *   anymate-gateway migrate -c FILE  apply the SQL migrations to [audit] database
 *   anymate-gateway --version | --help
 *
 * Start-up does everything that can fail before any thread starts (configuration, trust store,
 * listening sockets), so a bad configuration never leaves a half-running gateway. The main
 * thread then runs its own loop for signals and the admin listener; the workers serve bots.
 */
#include <event2/event.h>
#include <event2/thread.h>
#include <openssl/ssl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/resource.h>
#include <unistd.h>

#include "admin.h"
#include "audit.h"
#include "config.h"
#include "listener.h"
#include "log.h"
#include "migrate.h"
#include "policy.h"
#include "replay.h"
#include "spool.h"
#include "tls.h"
#include "worker.h"

#include "version.h"

#define MAX_THREADS 256

static void usage(FILE *out)
{
    fprintf(out, "usage: anymate-gateway -c FILE          run the gateway\n"
                 "       anymate-gateway -t -c FILE       check FILE and exit (0 ok, 1 errors)\n"
                 "       anymate-gateway migrate -c FILE  apply the SQL migrations to the audit\n"
                 "                                        database ([audit] database of FILE)\n"
                 "       anymate-gateway --version\n"
                 "       anymate-gateway --help\n"
                 "\n"
                 "A reverse proxy for Anymate RPA bots: forwards /connect/token and /api/... to\n"
                 "Anymate over verified TLS. Configuration reference: config/gateway.conf.\n");
}

struct app {
    struct config *cfg;     /* the start-up snapshot (its restart-only keys stay in force) */
    struct config *current; /* a reference: the snapshot in force, after reloads */
    SSL_CTX *client_tls;    /* a reference: upstream TLS of the snapshot in force, or NULL */
    struct stat ca_st;      /* of its ca_file when it was read (a reload rereads a changed one) */
    struct event_base *base;
    struct worker *workers[MAX_THREADS];
    int nworkers;
    struct admin *admin;
    struct spool *spool;   /* the ledger's spool, or NULL */
    struct replay *replay; /* its replay thread */
    struct event *reap;    /* during shutdown: leave once every worker has drained */
    bool stopping;
};

/*
 * Descriptors: every bot connection, every upstream connection of every pool, the ledger's
 * connections, and a few per thread (listener, epoll, resolver). Raise the soft limit as far
 * as that needs (the hard limit is the ceiling), or say how many bots the gateway can hold.
 */
static void raise_fd_limit(const struct config *cfg, int threads)
{
    uint64_t need = (uint64_t)cfg->server.max_connections +
                    (uint64_t)threads * (2u * cfg->upstream.pool_max + 8) + 64;
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) != 0)
        return;
    if (rl.rlim_cur != RLIM_INFINITY && rl.rlim_cur < need) {
        struct rlimit want = rl;
        want.rlim_cur = rl.rlim_max == RLIM_INFINITY || rl.rlim_max > need ? need : rl.rlim_max;
        if (setrlimit(RLIMIT_NOFILE, &want) == 0)
            rl = want;
    }
    if (rl.rlim_cur != RLIM_INFINITY && rl.rlim_cur < need) {
        uint64_t other = need - cfg->server.max_connections;
        uint64_t bots = rl.rlim_cur > other ? rl.rlim_cur - other : 0;
        log_warn("the open-file limit is lower than the configuration needs: the gateway holds "
                 "fewer bot connections than max_connections; raise the hard limit (ulimit -n, "
                 "systemd LimitNOFILE) or lower max_connections or pool_max",
                 "\"limit\":%llu,\"needed\":%llu,\"max_connections\":%u,\"bots_held\":%llu",
                 (unsigned long long)rl.rlim_cur, (unsigned long long)need,
                 cfg->server.max_connections, (unsigned long long)bots);
    }
}

static void reap_cb(evutil_socket_t fd, short what, void *arg)
{
    struct app *app = arg;
    for (int i = 0; i < app->nworkers; i++)
        if (!worker_exited(app->workers[i]))
            return;
    event_base_loopexit(app->base, NULL);
}

static bool same_file_version(const struct stat *a, const struct stat *b)
{
    return a->st_dev == b->st_dev && a->st_ino == b->st_ino && a->st_size == b->st_size &&
           a->st_mtim.tv_sec == b->st_mtim.tv_sec && a->st_mtim.tv_nsec == b->st_mtim.tv_nsec;
}

/* Log ERRS one line each under MSG. */
static void log_errors(int level, const char *msg, const struct config_errors *errs)
{
    char esc[1200];
    for (size_t i = 0; i < errs->count; i++)
        log_msg(level, msg, "\"error\":\"%s\"", log_json_escape(errs->msgs[i], esc, sizeof(esc)));
}

/*
 * SIGHUP: read and check the whole file again. A file with errors is refused (each error logged
 * with FILE:LINE) and the running configuration stays. Otherwise keys that need a restart are
 * reported and keep their running value, a changed trust store gets a new TLS context, and every
 * worker takes the new snapshot for its new requests (worker_reload).
 */
static void reload(struct app *app)
{
    struct config_errors errs = {0};
    char path[4096], err[600], esc[700];
    snprintf(path, sizeof(path), "%s", app->current->path);
    struct config *next = config_load(path, &errs);
    if (!next) {
        log_errors(LOG_LEVEL_ERROR,
                   "configuration reload refused: the file has errors; the running "
                   "configuration stays",
                   &errs);
        config_errors_free(&errs);
        admin_note_reload(app->admin, false);
        return;
    }
    config_errors_free(&errs);
    if (config_reload_check(app->current, next, &errs) != 0)
        log_errors(LOG_LEVEL_WARN,
                   "configuration reload: a key that needs a restart changed; it keeps its "
                   "running value",
                   &errs);
    config_errors_free(&errs);
    if (config_keep_restart_values(next, app->current) != 0) {
        log_error("configuration reload refused: out of memory", "");
        config_unref(next);
        admin_note_reload(app->admin, false);
        return;
    }
    SSL_CTX *tls = app->client_tls;
    bool need_tls = next->upstream.api.tls || next->upstream.auth.tls;
    struct stat st = {0};
    if (next->upstream.ca_file)
        stat(next->upstream.ca_file, &st);
    bool same_store =
        (next->upstream.ca_file == NULL) == (app->current->upstream.ca_file == NULL) &&
        (!next->upstream.ca_file ||
         (strcmp(next->upstream.ca_file, app->current->upstream.ca_file) == 0 &&
          same_file_version(&st, &app->ca_st)));
    if (need_tls && (!tls || !same_store)) {
        /* the trust store is read again: another file, or the same one changed in place */
        tls = tls_client_ctx_new(next->upstream.ca_file, err, sizeof(err));
        if (!tls) {
            log_error("configuration reload refused: the upstream trust store cannot be "
                      "loaded; the running configuration stays",
                      "\"reason\":\"%s\"", log_json_escape(err, esc, sizeof(esc)));
            config_unref(next);
            admin_note_reload(app->admin, false);
            return;
        }
    } else if (tls) {
        SSL_CTX_up_ref(tls);
    }
    /* said under the level in force until now; the new level applies before any worker
     * takes the snapshot, so that their lines follow it */
    log_info("configuration reloaded (SIGHUP)", "\"path\":\"%s\",\"threads\":%d",
             log_json_escape(path, esc, sizeof(esc)), app->nworkers);
    log_set_level(next->log.level);
    for (int i = 0; i < app->nworkers; i++) {
        if (tls)
            SSL_CTX_up_ref(tls);
        worker_reload(app->workers[i], config_ref(next), tls);
    }
    replay_set_config(app->replay, next); /* [process] sections for records replayed later */
    config_unref(app->current);
    app->current = next;
    if (app->client_tls)
        SSL_CTX_free(app->client_tls);
    app->client_tls = tls; /* the reference taken above */
    app->ca_st = st;
    admin_note_reload(app->admin, true);
}

static void on_signal(evutil_socket_t sig, short what, void *arg)
{
    struct app *app = arg;
    if (sig == SIGHUP) {
        if (app->stopping)
            log_warn("SIGHUP during shutdown: not reloaded", "");
        else
            reload(app);
        return;
    }
    if (sig == SIGUSR1) {
        char err[600], esc[700];
        if (log_reopen(err, sizeof(err)) != 0)
            log_error("cannot reopen the log files; the old ones stay in use", "\"reason\":\"%s\"",
                      log_json_escape(err, esc, sizeof(esc)));
        else
            log_info("log files reopened (SIGUSR1)", "");
        return;
    }
    if (app->stopping) {
        log_warn("second stop signal: shutdown already in progress", "");
        return;
    }
    app->stopping = true;
    log_info("shutting down", "\"signal\":%d,\"deadline_ms\":%u", (int)sig,
             app->cfg->server.shutdown_timeout_ms);
    /* The admin listener keeps answering (/readyz 503) until every worker has drained. */
    admin_set_draining(app->admin);
    for (int i = 0; i < app->nworkers; i++)
        worker_stop(app->workers[i]);
    struct timeval tv = {0, 20 * 1000};
    event_add(app->reap, &tv);
}

static int run(struct config *cfg)
{
    struct app app = {.cfg = cfg, .current = config_ref(cfg)};
    char err[512];
    int rc = 1;
    SSL_CTX *ssl_ctx = NULL, *server_tls = NULL;
    struct event *sigs[4] = {NULL, NULL, NULL, NULL};
    bool migrate_later = false;

    signal(SIGPIPE, SIG_IGN);
    if (policy_init() != 0 || audit_init() != 0) {
        log_error("cannot register the request phases", "");
        return 1;
    }
    if (!cfg->audit.database) {
        log_warn("the KPI audit ledger is off ([audit] database is not set): FinishRun and "
                 "task actions are forwarded without a record",
                 "");
    } else if (cfg->audit.auto_migrate) {
        /* Blocking libpq is fine here: no loop runs yet. */
        int n = migrate_apply(cfg->audit.database, NULL, err, sizeof(err));
        char esc[600];
        if (n < 0 && !cfg->audit.spool_dir) {
            log_error("auto_migrate failed", "\"reason\":\"%s\"",
                      log_json_escape(err, esc, sizeof(esc)));
            return 1;
        }
        if (n < 0) {
            /* the database must not keep the bots from starting: the spool takes the records,
             * and the replay migrates before it inserts */
            log_warn("auto_migrate failed; starting with the spool, the replay will migrate",
                     "\"reason\":\"%s\"", log_json_escape(err, esc, sizeof(esc)));
            migrate_later = true;
        } else {
            log_info("audit database migrated", "\"applied\":%d", n);
        }
    }
    if (evthread_use_pthreads() != 0) {
        log_error("cannot enable libevent threading", "");
        return 1;
    }
    if (cfg->upstream.api.tls || cfg->upstream.auth.tls) {
        ssl_ctx = tls_client_ctx_new(cfg->upstream.ca_file, err, sizeof(err));
        if (!ssl_ctx) {
            log_error("TLS set-up failed", "\"reason\":\"%s\"", err);
            return 1;
        }
    }
    if (cfg->server.tls_cert) {
        server_tls =
            tls_server_ctx_new(cfg->server.tls_cert, cfg->server.tls_key, err, sizeof(err));
        if (!server_tls) {
            char esc[600];
            log_error("TLS towards the bots cannot be set up", "\"reason\":\"%s\"",
                      log_json_escape(err, esc, sizeof(esc)));
            if (ssl_ctx)
                SSL_CTX_free(ssl_ctx);
            return 1;
        }
    }
    if (cfg->audit.database && cfg->audit.spool_dir) {
        int n = cfg->server.threads > MAX_THREADS ? MAX_THREADS : cfg->server.threads;
        struct spool_options so = {
            .dir = cfg->audit.spool_dir,
            .max_bytes = cfg->audit.spool_max_bytes,
            .segment_bytes = cfg->audit.spool_max_bytes / 16 < 4 * 1024 * 1024
                                 ? cfg->audit.spool_max_bytes / 16
                                 : 4 * 1024 * 1024,
            .idle_close_ms = 1000,
            .nworkers = n,
        };
        app.spool = spool_open(&so, err, sizeof(err));
        if (!app.spool) {
            char esc[600];
            log_error("cannot open the spool", "\"reason\":\"%s\"",
                      log_json_escape(err, esc, sizeof(esc)));
            goto out;
        }
        struct replay_options ro = {
            .conninfo = cfg->audit.database,
            .cfg = cfg,
            .rows_per_second = cfg->audit.spool_replay_rate,
            .batch_rows = cfg->audit.batch_size,
            .reconnect_max_ms = cfg->audit.reconnect_max_ms,
            .migrate_first = migrate_later,
        };
        app.replay = replay_start(app.spool, &ro, err, sizeof(err));
        if (!app.replay) {
            log_error("cannot start the spool replay", "\"reason\":\"%s\"", err);
            goto out;
        }
    }
    app.client_tls = ssl_ctx;
    if (ssl_ctx)
        SSL_CTX_up_ref(ssl_ctx);
    if (cfg->upstream.ca_file)
        stat(cfg->upstream.ca_file, &app.ca_st);
    app.base = event_base_new();
    app.reap = app.base ? event_new(app.base, -1, EV_PERSIST, reap_cb, &app) : NULL;
    if (!app.base || !app.reap) {
        log_error("cannot create the main event loop", "");
        goto out;
    }

    /* Listening sockets first: port 0 is resolved by the first and reused by the others. */
    uint16_t port = cfg->server.listen.port, bound = 0;
    int nthreads = cfg->server.threads;
    if (nthreads > MAX_THREADS)
        nthreads = MAX_THREADS;
    raise_fd_limit(cfg, nthreads);
    for (int i = 0; i < nthreads; i++) {
        int fd = listener_open(cfg->server.listen.host, port, true, &bound, err, sizeof(err));
        if (fd < 0) {
            log_error("cannot open the bots' listener", "\"reason\":\"%s\"", err);
            goto out;
        }
        port = bound;
        app.workers[i] = worker_new(i, cfg, ssl_ctx, server_tls, app.spool, fd, err, sizeof(err));
        if (!app.workers[i]) {
            log_error("cannot create worker", "\"thread\":%d,\"reason\":\"%s\"", i, err);
            goto out;
        }
        app.nworkers++;
    }
    uint16_t admin_port = 0;
    int afd = listener_open(cfg->admin.listen.host, cfg->admin.listen.port, false, &admin_port, err,
                            sizeof(err));
    if (afd < 0) {
        log_error("cannot open the admin listener", "\"reason\":\"%s\"", err);
        goto out;
    }
    app.admin = admin_new(app.base, afd, app.workers, app.nworkers, app.spool, err, sizeof(err));
    if (!app.admin) {
        log_error("cannot start the admin listener", "\"reason\":\"%s\"", err);
        goto out;
    }

    int signums[4] = {SIGTERM, SIGINT, SIGHUP, SIGUSR1};
    for (int i = 0; i < 4; i++) {
        sigs[i] = evsignal_new(app.base, signums[i], on_signal, &app);
        if (!sigs[i] || event_add(sigs[i], NULL) != 0) {
            log_error("cannot install signal handlers", "");
            goto out;
        }
    }
    if (log_start() != 0)
        log_warn("cannot start the logging thread; workers write their log lines themselves", "");
    for (int i = 0; i < app.nworkers; i++) {
        if (worker_start(app.workers[i]) != 0) {
            log_error("cannot start worker thread", "\"thread\":%d", i);
            for (int j = 0; j < i; j++)
                worker_stop(app.workers[j]);
            goto out;
        }
    }
    char h1[300], h2[300];
    log_info("listening",
             "\"version\":\"%s\",\"server\":\"%s:%u\",\"admin\":\"%s:%u\",\"threads\":%d,"
             "\"tls\":%s,\"api\":\"%s\",\"auth\":\"%s\"",
             GW_VERSION, log_json_escape(cfg->server.listen.host, h1, sizeof(h1)), port,
             log_json_escape(cfg->admin.listen.host, h2, sizeof(h2)), admin_port, app.nworkers,
             server_tls ? "true" : "false", cfg->upstream.api.text, cfg->upstream.auth.text);

    event_base_dispatch(app.base);
    rc = 0;

out:
    for (int i = 0; i < app.nworkers; i++)
        worker_join_and_free(app.workers[i]);
    /* the workers' unwritten rows are in the spool now; the replay stops, the spool closes its
     * segments for the next start */
    replay_stop(app.replay);
    spool_close(app.spool);
    log_stop();
    if (rc == 0)
        log_info("stopped", "");
    for (int i = 0; i < 4; i++)
        if (sigs[i])
            event_free(sigs[i]);
    admin_free(app.admin);
    if (app.reap)
        event_free(app.reap);
    if (app.base)
        event_base_free(app.base);
    if (ssl_ctx)
        SSL_CTX_free(ssl_ctx);
    if (app.client_tls)
        SSL_CTX_free(app.client_tls);
    config_unref(app.current);
    if (server_tls)
        SSL_CTX_free(server_tls);
    return rc;
}

int main(int argc, char **argv)
{
    const char *path = NULL;
    bool test_only = false, migrate = false;

    for (int i = 1; i < argc; i++) {
        if (i == 1 && strcmp(argv[i], "migrate") == 0) {
            migrate = true;
            continue;
        }
        if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
            usage(stdout);
            return 0;
        } else if (strcmp(argv[i], "--version") == 0 || strcmp(argv[i], "-v") == 0) {
            printf("anymate-gateway %s\n", GW_VERSION);
            /* what `migrate` would apply: the upgrade order depends on it (README) */
            if (migrations_embedded_count > 0)
                printf("migrations embedded: %zu (latest %s)\n", migrations_embedded_count,
                       migrations_embedded[migrations_embedded_count - 1].name);
            else
                printf("migrations embedded: none (built without sql/migrations)\n");
            return 0;
        } else if (strcmp(argv[i], "-t") == 0) {
            test_only = true;
        } else if (strcmp(argv[i], "-c") == 0 && i + 1 < argc) {
            path = argv[++i];
        } else {
            fprintf(stderr, "anymate-gateway: unknown or incomplete argument: %s\n", argv[i]);
            usage(stderr);
            return 2;
        }
    }
    if (!path) {
        fprintf(stderr, "anymate-gateway: -c FILE is required\n");
        usage(stderr);
        return 2;
    }

    struct config_errors errs = {0};
    struct config *cfg = config_load(path, &errs);
    if (!cfg) {
        for (size_t i = 0; i < errs.count; i++)
            fprintf(stderr, "%s\n", errs.msgs[i]);
        if (test_only)
            fprintf(stderr, "%s: %zu error%s\n", path, errs.count, errs.count == 1 ? "" : "s");
        config_errors_free(&errs);
        return 1;
    }
    config_errors_free(&errs);
    if (test_only) {
        printf("%s: ok\n", path);
        config_unref(cfg);
        return 0;
    }
    if (migrate) {
        if (!cfg->audit.database) {
            fprintf(stderr, "anymate-gateway migrate: %s has no [audit] database\n", path);
            config_unref(cfg);
            return 1;
        }
        char err[1024];
        int n = migrate_apply(cfg->audit.database, stdout, err, sizeof(err));
        config_unref(cfg);
        if (n < 0) {
            fprintf(stderr, "anymate-gateway migrate: %s\n", err);
            return 1;
        }
        printf("%d migration%s applied\n", n, n == 1 ? "" : "s");
        return 0;
    }
    log_set_level(cfg->log.level);
    char lerr[600];
    if (log_open_files(cfg->log.access_log_file, cfg->log.error_log_file, lerr, sizeof(lerr)) !=
        0) {
        fprintf(stderr, "anymate-gateway: %s\n", lerr);
        config_unref(cfg);
        return 1;
    }
    int rc = run(cfg);
    config_unref(cfg);
    return rc;
}
