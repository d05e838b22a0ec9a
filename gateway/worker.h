/*
 * worker: one thread with its own event_base, evdns resolver, bots' listener (its own
 * SO_REUSEPORT socket), upstream pools and audit ledger connection (design: nothing on the
 * request path is shared with other threads). The worker builds the thread's struct gw_ctx and
 * hands it down; the admin thread reads only the counters in worker->stats.
 *
 * Shutdown (worker_stop): stop accepting, close idle keep-alive connections, answer requests
 * that still arrive with 503 and "Connection: close", let in-flight requests finish and the
 * audit queue flush, within shutdown_timeout; then answer what is left with 503, give replies
 * a second to go out, and leave the loop. Teardown frees in dependency order: requests, bots'
 * connections, upstream pools, the ledger, the loop.
 *
 * Reload (worker_reload): the main thread hands over a new configuration snapshot; the worker
 * takes it in its own loop, between events. New requests use it; each request in flight keeps
 * the snapshot it started with (its own reference). The bots' connection limits follow at once.
 * A pool whose upstream (host, port, scheme) or trust store changed is retired: new calls go to
 * a new pool, the old one finishes its calls and is freed by the janitor once quiet.
 */
#ifndef GW_WORKER_H
#define GW_WORKER_H

#include <openssl/ssl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>

#include "config.h"
#include "ctx.h"
#include "stats.h"

struct event;
struct conn_server;
struct spool;

struct worker {
    int index;
    pthread_t thread;
    bool started;
    struct config *cfg; /* a reference */
    struct gw_ctx ctx;
    struct gw_stats stats;
    struct conn_server *server;
    struct event *stop_ev; /* the main thread writes to stop_pipe[1] */
    int stop_pipe[2];
    struct event *deadline; /* shutdown deadline */
    struct event *janitor;  /* publishes state; watches a drain */
    bool flush_grace;       /* the deadline passed once: waiting for replies to go out */
    atomic_bool exited;     /* the thread left its loop */
    SSL_CTX *client_tls;    /* a reference: upstream TLS of the current pools (may be NULL) */
    /* reload: handed over by the main thread under reload_mu, taken by the worker */
    pthread_mutex_t reload_mu;
    struct config *pending_cfg;
    SSL_CTX *pending_tls;
    /* pools replaced by a reload, each with what it borrows, until they are quiet */
    struct retired_pool {
        struct pool *pool;
        struct config *cfg;
        SSL_CTX *tls;
    } retired[16];
    int nretired;
};

/*
 * Build worker INDEX around the listening socket FD (taken over). CFG gets a new reference;
 * CLIENT_TLS (upstream) and SERVER_TLS (towards the bots, may be NULL) and SPOOL (the ledger's
 * spool, may be NULL) are borrowed. Returns NULL with a message in ERRBUF.
 */
struct worker *worker_new(int index, struct config *cfg, SSL_CTX *client_tls, SSL_CTX *server_tls,
                          struct spool *spool, int fd, char *errbuf, size_t errlen);
int worker_start(struct worker *w);   /* spawn the thread; 0 or -1 */
void worker_stop(struct worker *w);   /* thread-safe: begin draining */
bool worker_exited(struct worker *w); /* thread-safe: the loop has ended (joining won't wait) */
void worker_join_and_free(struct worker *w);

/* Thread-safe: hand CFG and CLIENT_TLS (references, both taken over; TLS may be NULL) to W for
 * its next loop turn. A snapshot not yet taken is replaced (its references dropped). */
void worker_reload(struct worker *w, struct config *cfg, SSL_CTX *client_tls);

#endif
