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

#endif
