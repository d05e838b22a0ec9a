/*
 * worker: thread, loop, listener, pools and ledger of one worker (see worker.h).
 */
#include "worker.h"

#include <errno.h>
#include <event2/dns.h>
#include <fcntl.h>
#include <event2/event.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "audit.h"
#include "conn.h"
#include "identity.h"
#include "log.h"
#include "pool.h"
#include "request.h"

#define DRAIN_CHECK_MS 20
#define FLUSH_GRACE_MS 1000

static struct timeval ms_tv(uint32_t ms)
{
    struct timeval tv = {.tv_sec = ms / 1000, .tv_usec = (suseconds_t)(ms % 1000) * 1000};
    return tv;
}

static void publish_status(struct worker *w)
{
    for (int i = 0; i < ROUTE_UPSTREAM_COUNT; i++)
        STAT_SET(&w->stats, resolved[i], pool_resolved(w->ctx.pools[i]));
    STAT_SET(&w->stats, audit_connected, audit_thread_ready(w->ctx.audit));
}

/* Nothing left to do: no request, no reply being written, the ledger's queue flushed. */
static bool quiet(struct worker *w)
{
    return w->ctx.nrequests == 0 && conn_server_busy(w->server) == 0 &&
           audit_thread_flushed(w->ctx.audit);
}

/* Free the retired pools that have finished their calls. */
static void reap_retired(struct worker *w)
{
    for (int i = 0; i < w->nretired;) {
        struct retired_pool *rp = &w->retired[i];
        if (!pool_quiet(rp->pool)) {
            i++;
            continue;
        }
        pool_free(rp->pool);
        config_unref(rp->cfg);
        if (rp->tls)
            SSL_CTX_free(rp->tls);
        w->retired[i] = w->retired[--w->nretired];
    }
}

static void janitor_cb(evutil_socket_t fd, short what, void *arg)
{
    struct worker *w = arg;
    publish_status(w);
    reap_retired(w);
    if (w->ctx.draining && quiet(w))
        event_base_loopexit(w->ctx.base, NULL);
}

static void deadline_cb(evutil_socket_t fd, short what, void *arg)
{
    struct worker *w = arg;
    if (w->flush_grace) {
        event_base_loopexit(w->ctx.base, NULL); /* stop waiting for slow bots */
        return;
    }
    if (w->ctx.nrequests > 0)
        log_warn("shutdown deadline reached; aborting in-flight requests",
                 "\"thread\":%d,\"inflight\":%u", w->index, w->ctx.nrequests);
    request_abort_all(&w->ctx);
    /* Let the 503s (and replies to bots that read slowly) go out, briefly. */
    w->flush_grace = true;
    struct timeval tv = ms_tv(FLUSH_GRACE_MS);
    evtimer_add(w->deadline, &tv);
}

static struct conn_limits limits_of(const struct config *cfg)
{
    uint32_t threads = cfg->server.threads > 0 ? (uint32_t)cfg->server.threads : 1;
    struct conn_limits lim = {
        .max_header_size = cfg->server.max_header_size,
        .header_timeout_ms = cfg->server.client_header_timeout_ms,
        .body_timeout_ms = cfg->server.client_body_timeout_ms,
        .idle_timeout_ms = cfg->server.client_timeout_ms,
        .send_timeout_ms = cfg->server.client_timeout_ms,
        .max_connections = (cfg->server.max_connections + threads - 1) / threads,
    };
    return lim;
}

static bool same_upstream(const struct config_url *a, const struct config_url *b)
{
    return a->port == b->port && a->tls == b->tls && a->host && b->host &&
           strcmp(a->host, b->host) == 0;
}

/* Take the snapshot the main thread handed over (worker_reload), in this thread. */
static void apply_reload(struct worker *w)
{
    pthread_mutex_lock(&w->reload_mu);
    struct config *cfg = w->pending_cfg;
    SSL_CTX *tls = w->pending_tls;
    w->pending_cfg = NULL;
    w->pending_tls = NULL;
    pthread_mutex_unlock(&w->reload_mu);
    if (!cfg)
        return;
    struct gw_ctx *ctx = &w->ctx;
    const struct config_url *urls[ROUTE_UPSTREAM_COUNT] = {&cfg->upstream.api, &cfg->upstream.auth};
    const char *names[ROUTE_UPSTREAM_COUNT] = {"api", "auth"};
    /* First everything that can fail: the new pools, and room to retire the old ones. A pool
     * that keeps running borrows its configuration, so a worker either takes the whole new
     * snapshot or keeps the whole old one. */
    struct pool *fresh[ROUTE_UPSTREAM_COUNT] = {NULL};
    int replaced = 0;
    reap_retired(w);
    bool ok = true;
    for (int i = 0; i < ROUTE_UPSTREAM_COUNT && ok; i++) {
        const struct config_url *old_url = i == 0 ? &w->cfg->upstream.api : &w->cfg->upstream.auth;
        bool same_tls = !urls[i]->tls || tls == w->client_tls;
        if (same_upstream(old_url, urls[i]) && same_tls)
            continue;
        fresh[i] = pool_new(ctx->base, ctx->dns, tls, urls[i], cfg, names[i], &w->stats);
        ok = fresh[i] != NULL;
        replaced++;
    }
    ok = ok && w->nretired + replaced <= (int)(sizeof(w->retired) / sizeof(w->retired[0]));
    if (!ok) {
        for (int i = 0; i < ROUTE_UPSTREAM_COUNT; i++)
            pool_free(fresh[i]);
        log_error("reload not taken by this thread: no memory for new upstream pools, or too "
                  "many old ones still finishing calls; it keeps the configuration it had",
                  "\"thread\":%d,\"retired_pools\":%d", w->index, w->nretired);
        config_unref(cfg);
        if (tls)
            SSL_CTX_free(tls);
        return;
    }
    /* Then the swap, which cannot fail. */
    struct conn_limits lim = limits_of(cfg);
    conn_server_set_limits(w->server, &lim);
    for (int i = 0; i < ROUTE_UPSTREAM_COUNT; i++) {
        if (!fresh[i]) {
            pool_set_config(ctx->pools[i], cfg, urls[i]);
            continue;
        }
        struct retired_pool *rp = &w->retired[w->nretired++];
        rp->pool = ctx->pools[i];
        rp->cfg = config_ref(w->cfg);
        rp->tls = w->client_tls;
        if (rp->tls)
            SSL_CTX_up_ref(rp->tls);
        pool_set_gauges(rp->pool, NULL);
        ctx->pools[i] = fresh[i];
        pool_set_gauges(fresh[i], &w->stats.pools[i]);
    }
    audit_thread_reconfigure(ctx->audit, cfg);
    config_unref(w->cfg);
    w->cfg = cfg;
    ctx->cfg = cfg;
    if (w->client_tls)
        SSL_CTX_free(w->client_tls);
    w->client_tls = tls;
    log_info("configuration reloaded", "\"thread\":%d,\"pools_replaced\":%d", w->index, replaced);
    publish_status(w);
}

void worker_reload(struct worker *w, struct config *cfg, SSL_CTX *client_tls)
{
    pthread_mutex_lock(&w->reload_mu);
    struct config *old_cfg = w->pending_cfg;
    SSL_CTX *old_tls = w->pending_tls;
    w->pending_cfg = cfg;
    w->pending_tls = client_tls;
    pthread_mutex_unlock(&w->reload_mu);
    config_unref(old_cfg);
    if (old_tls)
        SSL_CTX_free(old_tls);
    ssize_t n = write(w->stop_pipe[1], "r", 1);
    (void)n; /* a full pipe already wakes the loop; the snapshot waits under the lock */
}

static void stop_cb(evutil_socket_t fd, short what, void *arg)
{
    struct worker *w = arg;
    char buf[16];
    bool stop = false, reload = false;
    ssize_t n;
    while ((n = read(fd, buf, sizeof(buf))) > 0)
        for (ssize_t i = 0; i < n; i++) {
            stop |= buf[i] == 's';
            reload |= buf[i] == 'r';
        }
    if (reload || !stop)
        apply_reload(w); /* also on a full pipe: a pending snapshot is taken either way */
    if (!stop || w->ctx.draining)
        return;
    w->ctx.draining = true;
    STAT_SET(&w->stats, draining, true);
    conn_server_drain(w->server);
    struct timeval tv = ms_tv(w->cfg->server.shutdown_timeout_ms);
    evtimer_add(w->deadline, &tv);
    /* Watch the drain closely from now on. */
    event_del(w->janitor);
    tv = ms_tv(DRAIN_CHECK_MS);
    event_add(w->janitor, &tv);
    if (quiet(w))
        event_base_loopexit(w->ctx.base, NULL);
}

struct worker *worker_new(int index, struct config *cfg, SSL_CTX *client_tls, SSL_CTX *server_tls,
                          struct spool *spool, int fd, char *errbuf, size_t errlen)
{
    struct worker *w = calloc(1, sizeof(*w));
    if (!w) {
        snprintf(errbuf, errlen, "out of memory");
        close(fd);
        return NULL;
    }
    w->index = index;
    w->cfg = config_ref(cfg);
    pthread_mutex_init(&w->reload_mu, NULL);
    w->client_tls = client_tls;
    if (client_tls)
        SSL_CTX_up_ref(client_tls);
    w->stop_pipe[0] = w->stop_pipe[1] = -1;
    struct gw_ctx *ctx = &w->ctx;
    ctx->index = index;
    ctx->cfg = w->cfg;
    ctx->stats = &w->stats;
    ctx->identities = identity_cache_new(); /* NULL when memory is short: no cache, no harm */
    TAILQ_INIT(&ctx->requests);

    /* The loop belongs to this thread alone (the stop request comes through a pipe), so it
     * needs no lock: NOLOCK saves a mutex round trip on every event operation. */
    struct event_config *ec = event_config_new();
    if (ec) {
        event_config_set_flag(ec, EVENT_BASE_FLAG_EPOLL_USE_CHANGELIST | EVENT_BASE_FLAG_NOLOCK);
        ctx->base = event_base_new_with_config(ec);
        event_config_free(ec);
    }
    if (!ctx->base) {
        snprintf(errbuf, errlen, "cannot create event base");
        close(fd);
        goto fail;
    }
    ctx->dns = evdns_base_new(ctx->base, EVDNS_BASE_INITIALIZE_NAMESERVERS);
    if (!ctx->dns) /* no usable resolv.conf: numeric upstreams still work */
        ctx->dns = evdns_base_new(ctx->base, 0);
    if (!ctx->dns) {
        snprintf(errbuf, errlen, "cannot create the resolver");
        close(fd);
        goto fail;
    }
    struct conn_limits lim = limits_of(cfg);
    w->server = conn_server_new(ctx->base, fd, &lim, server_tls, request_on_head, ctx, &w->stats,
                                errbuf, errlen);
    if (!w->server)
        goto fail;

    const struct config_url *urls[ROUTE_UPSTREAM_COUNT] = {&cfg->upstream.api, &cfg->upstream.auth};
    const char *names[ROUTE_UPSTREAM_COUNT] = {"api", "auth"};
    for (int i = 0; i < ROUTE_UPSTREAM_COUNT; i++) {
        ctx->pools[i] =
            pool_new(ctx->base, ctx->dns, client_tls, urls[i], cfg, names[i], &w->stats);
        if (!ctx->pools[i]) {
            snprintf(errbuf, errlen, "cannot create the %s upstream pool", names[i]);
            goto fail;
        }
        pool_set_gauges(ctx->pools[i], &w->stats.pools[i]);
    }
    if (audit_thread_new(ctx, spool, &ctx->audit, errbuf, errlen) != 0)
        goto fail;
    if (pipe2(w->stop_pipe, O_NONBLOCK | O_CLOEXEC) != 0) {
        snprintf(errbuf, errlen, "cannot create the stop pipe: %s", strerror(errno));
        goto fail;
    }
    w->stop_ev = event_new(ctx->base, w->stop_pipe[0], EV_READ | EV_PERSIST, stop_cb, w);
    if (w->stop_ev)
        event_add(w->stop_ev, NULL);
    w->deadline = evtimer_new(ctx->base, deadline_cb, w);
    w->janitor = event_new(ctx->base, -1, EV_PERSIST, janitor_cb, w);
    if (!w->stop_ev || !w->deadline || !w->janitor) {
        snprintf(errbuf, errlen, "out of memory");
        goto fail;
    }
    struct timeval one = {1, 0};
    event_add(w->janitor, &one);
    publish_status(w);
    return w;

fail:
    worker_join_and_free(w);
    return NULL;
}

static void *worker_main(void *arg)
{
    struct worker *w = arg;
    log_thread_start(w->index);
    STAT_SET(&w->stats, running, true);
    event_base_dispatch(w->ctx.base);
    STAT_SET(&w->stats, running, false);
    log_thread_stop();
    atomic_store(&w->exited, true);
    return NULL;
}

int worker_start(struct worker *w)
{
    if (pthread_create(&w->thread, NULL, worker_main, w) != 0)
        return -1;
    w->started = true;
    return 0;
}

void worker_stop(struct worker *w)
{
    /* Any thread, any time (also from a signal handler): one byte wakes the worker's loop. */
    ssize_t n = write(w->stop_pipe[1], "s", 1);
    (void)n; /* a full pipe already holds a stop request */
}

bool worker_exited(struct worker *w)
{
    return !w->started || atomic_load(&w->exited);
}

void worker_join_and_free(struct worker *w)
{
    if (!w)
        return;
    if (w->started)
        pthread_join(w->thread, NULL);
    struct gw_ctx *ctx = &w->ctx;
    /* Dependency order: requests (they hold calls, records and connections), then the bots'
     * connections, the pools, the ledger, and last the loop. */
    if (ctx->base)
        request_abort_all(ctx);
    conn_server_free(w->server);
    for (int i = 0; i < ROUTE_UPSTREAM_COUNT; i++)
        pool_free(ctx->pools[i]);
    for (int i = 0; i < w->nretired; i++) { /* their calls ended with the requests */
        pool_free(w->retired[i].pool);
        config_unref(w->retired[i].cfg);
        if (w->retired[i].tls)
            SSL_CTX_free(w->retired[i].tls);
    }
    audit_thread_free(ctx->audit);
    identity_cache_free(ctx->identities);
    if (w->janitor)
        event_free(w->janitor);
    if (w->stop_ev)
        event_free(w->stop_ev);
    if (w->deadline)
        event_free(w->deadline);
    for (int i = 0; i < 2; i++)
        if (w->stop_pipe[i] >= 0)
            close(w->stop_pipe[i]);
    if (ctx->dns)
        evdns_base_free(ctx->dns, 0);
    if (ctx->base)
        event_base_free(ctx->base);
    config_unref(w->cfg);
    config_unref(w->pending_cfg);
    if (w->pending_tls)
        SSL_CTX_free(w->pending_tls);
    if (w->client_tls)
        SSL_CTX_free(w->client_tls);
    pthread_mutex_destroy(&w->reload_mu);
    free(w);
}
