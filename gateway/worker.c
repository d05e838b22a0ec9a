/*
 * worker: thread, loop, listener and upstream pools of one worker (see worker.h).
 *
 * Shutdown: the main thread activates stop_ev; the worker stops accepting (closes its
 * listening socket), answers requests that still arrive on open keep-alive connections with
 * "Connection: close", and leaves its loop when the last in-flight request is done or when
 * shutdown_timeout passes, in which case the remaining requests get 503 first.
 */
#include "worker.h"

#include <event2/dns.h>
#include <event2/event.h>
#include <event2/http.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "audit.h"
#include "connguard.h"
#include "log.h"
#include "upstream.h"

static struct timeval ms_tv(uint32_t ms)
{
    struct timeval tv = {.tv_sec = ms / 1000, .tv_usec = (ms % 1000) * 1000};
    return tv;
}

static void publish_status(struct worker *w)
{
    struct upstream_stats st;
    uint64_t opened = 0, reqs = 0, retries = 0;
    for (int i = 0; i < ROUTE_UPSTREAM_COUNT; i++) {
        atomic_store(&w->status.resolved[i], upstream_pool_resolved(w->pools[i]));
        upstream_pool_stats(w->pools[i], &st);
        opened += st.connections_opened;
        reqs += st.requests;
        retries += st.retries;
    }
    atomic_store(&w->status.upstream_connections_opened, opened);
    atomic_store(&w->status.upstream_requests, reqs);
    atomic_store(&w->status.upstream_retries, retries);
    atomic_store(&w->status.inflight, w->ninflight);
    atomic_store(&w->status.audit_connected, audit_thread_ready(w->audit));
}

static void janitor_cb(evutil_socket_t fd, short what, void *arg)
{
    publish_status(arg);
}

void worker_request_started(struct worker *w, struct gw_request *r)
{
    TAILQ_INSERT_TAIL(&w->inflight, r, link);
    w->ninflight++;
    atomic_fetch_add(&w->status.requests, 1);
}

static void maybe_exit(struct worker *w)
{
    if (w->draining && w->ninflight == 0 && w->unflushed == 0)
        event_base_loopexit(w->base, NULL);
}

void worker_request_finished(struct worker *w, struct gw_request *r)
{
    TAILQ_REMOVE(&w->inflight, r, link);
    w->ninflight--;
    maybe_exit(w);
}

static void reply_written_cb(struct evhttp_request *ereq, void *arg)
{
    struct worker *w = arg;
    w->unflushed--;
    maybe_exit(w);
}

void worker_count_refusal(struct worker *w)
{
    atomic_fetch_add(&w->status.refusals, 1);
}

void worker_reply_queued(struct worker *w, struct evhttp_request *ereq)
{
    /* evhttp calls this once the reply is written; not when the bot's connection fails
     * first, which is why the shutdown deadline also bounds the wait for flushing. */
    w->unflushed++;
    evhttp_request_set_on_complete_cb(ereq, reply_written_cb, w);
}

static void deadline_cb(evutil_socket_t fd, short what, void *arg)
{
    struct worker *w = arg;
    struct gw_request *r;
    if (w->ninflight > 0)
        log_warn("shutdown deadline reached; aborting in-flight requests",
                 "\"thread\":%d,\"inflight\":%u", w->index, w->ninflight);
    while ((r = TAILQ_FIRST(&w->inflight)) != NULL)
        request_abort(r); /* unlinks r */
    if (w->flush_grace) {
        event_base_loopexit(w->base, NULL); /* second expiry: stop waiting for slow bots */
        return;
    }
    /* Let the 503s (and replies to bots that read slowly) go out, briefly. */
    w->flush_grace = true;
    struct timeval tv = {1, 0};
    evtimer_add(w->deadline, &tv);
    maybe_exit(w);
}

static void stop_cb(evutil_socket_t fd, short what, void *arg)
{
    struct worker *w = arg;
    if (w->draining)
        return;
    w->draining = true;
    atomic_store(&w->status.draining, true);
    if (w->bound) {
        evhttp_del_accept_socket(w->http, w->bound); /* closes the listening socket */
        w->bound = NULL;
    }
    if (w->ninflight == 0 && w->unflushed == 0) {
        event_base_loopexit(w->base, NULL);
        return;
    }
    struct timeval tv = ms_tv(w->cfg->server.shutdown_timeout_ms);
    evtimer_add(w->deadline, &tv);
}

struct worker *worker_new(int index, struct config *cfg, SSL_CTX *ssl_ctx, int fd, char *errbuf,
                          size_t errlen)
{
    struct worker *w = calloc(1, sizeof(*w));
    if (!w) {
        snprintf(errbuf, errlen, "out of memory");
        close(fd);
        return NULL;
    }
    w->index = index;
    w->cfg = config_ref(cfg);
    TAILQ_INIT(&w->inflight);

    /* The epoll changelist folds the enable/disable churn of bufferevents (every request
     * toggles read and write interest on two connections) into one epoll_ctl per fd and loop
     * iteration. The gateway never dup()s a watched fd, the changelist's one caveat. */
    struct event_config *ec = event_config_new();
    if (ec) {
        event_config_set_flag(ec, EVENT_BASE_FLAG_EPOLL_USE_CHANGELIST);
        w->base = event_base_new_with_config(ec);
        event_config_free(ec);
    }
    if (!w->base) {
        snprintf(errbuf, errlen, "cannot create event base");
        close(fd);
        goto fail;
    }
    w->dns = evdns_base_new(w->base, EVDNS_BASE_INITIALIZE_NAMESERVERS);
    if (!w->dns) {
        /* No usable resolv.conf: numeric upstreams still work; names will fail clearly. */
        w->dns = evdns_base_new(w->base, 0);
    }
    w->http = evhttp_new(w->base);
    if (!w->dns || !w->http) {
        snprintf(errbuf, errlen, "cannot create resolver or HTTP server");
        close(fd);
        goto fail;
    }
    /* evhttp's own limits: the configured ones, so it never buffers more than allowed. The
     * header limit leaves room for the request line and the gateway's own 431 check, which
     * answers in JSON; evhttp answers only what is far beyond it. */
    evhttp_set_max_headers_size(w->http, (ev_ssize_t)cfg->server.max_header_size * 2 + 1024);
    evhttp_set_max_body_size(w->http, (ev_ssize_t)cfg->server.max_body_size);
    struct timeval ct = ms_tv(cfg->server.client_timeout_ms);
    evhttp_set_timeout_tv(w->http, &ct);
    evhttp_set_allowed_methods(w->http, EVHTTP_REQ_GET | EVHTTP_REQ_POST | EVHTTP_REQ_HEAD |
                                            EVHTTP_REQ_PUT | EVHTTP_REQ_DELETE |
                                            EVHTTP_REQ_OPTIONS | EVHTTP_REQ_PATCH);
    evhttp_set_default_content_type(w->http, NULL); /* never invent a Content-Type */
    evhttp_set_gencb(w->http, request_handle, w);
    evhttp_set_bevcb(w->http, connguard_bevcb, w);
    w->max_conns = (cfg->server.max_connections + (uint32_t)cfg->server.threads - 1) /
                   (uint32_t)cfg->server.threads;
    w->bound = evhttp_accept_socket_with_handle(w->http, fd);
    if (!w->bound) {
        snprintf(errbuf, errlen, "cannot accept on the listening socket");
        close(fd);
        goto fail;
    }

    const struct config_url *urls[ROUTE_UPSTREAM_COUNT] = {&cfg->upstream.api, &cfg->upstream.auth};
    const char *names[ROUTE_UPSTREAM_COUNT] = {"api", "auth"};
    for (int i = 0; i < ROUTE_UPSTREAM_COUNT; i++) {
        w->pools[i] = upstream_pool_new(w->base, w->dns, ssl_ctx, urls[i], cfg, names[i]);
        if (!w->pools[i]) {
            snprintf(errbuf, errlen, "cannot create the %s upstream pool", names[i]);
            goto fail;
        }
    }
    if (audit_thread_new(w, &w->audit, errbuf, errlen) != 0)
        goto fail;
    w->stop_ev = event_new(w->base, -1, 0, stop_cb, w);
    w->deadline = evtimer_new(w->base, deadline_cb, w);
    w->janitor = event_new(w->base, -1, EV_PERSIST, janitor_cb, w);
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
    atomic_store(&w->status.running, true);
    event_base_dispatch(w->base);
    atomic_store(&w->status.running, false);
    return NULL;
}

int worker_start(struct worker *w)
{
    return pthread_create(&w->thread, NULL, worker_main, w) == 0 ? 0 : -1;
}

void worker_stop(struct worker *w)
{
    /* event_active is safe across threads once evthread_use_pthreads() was called. */
    event_active(w->stop_ev, EV_TIMEOUT, 0);
}

void worker_join_and_free(struct worker *w)
{
    if (!w)
        return;
    if (w->thread)
        pthread_join(w->thread, NULL);
    if (w->janitor)
        event_free(w->janitor);
    if (w->stop_ev)
        event_free(w->stop_ev);
    if (w->deadline)
        event_free(w->deadline);
    if (w->http)
        evhttp_free(w->http); /* closes client connections and the listener */
    audit_thread_free(w->audit);
    for (int i = 0; i < ROUTE_UPSTREAM_COUNT; i++)
        upstream_pool_free(w->pools[i]);
    if (w->dns)
        evdns_base_free(w->dns, 0);
    if (w->base)
        event_base_free(w->base);
    config_unref(w->cfg);
    free(w);
}
