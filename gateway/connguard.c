/*
 * connguard: header deadline (408) and connection cap for the bots' connections (see
 * connguard.h).
 *
 * Lifetimes: evhttp owns the filter bufferevent and frees it with the connection; the filter
 * owns the underlying socket bufferevent (BEV_OPT_CLOSE_ON_FREE) and calls guard_free on our
 * context then, which is where the connection count goes down.
 *
 * Output goes straight to the socket. A filter that passed replies on to the underlying
 * bufferevent would empty its own output buffer before the bytes reached the kernel; evhttp
 * takes an empty output buffer for "reply written" and closes "Connection: close" connections
 * at that moment, which would cut the reply short. So the filter's output filter never moves
 * anything; a callback on the filter's output buffer notices what evhttp adds and, once evhttp
 * is done adding (the kick event, next loop turn), writes it to the socket, leaving what the
 * kernel does not take for the write event. Only when all of it is in the kernel does evhttp
 * hear that the reply was written.
 */
#include "connguard.h"

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <event2/http.h>
#include <event2/listener.h>
#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include "errors.h"
#include "log.h"
#include "util.h"
#include "worker.h"

enum head_state {
    G_IDLE, /* between requests: the next byte starts a head */
    G_HEAD, /* reading a head: the clock runs */
    G_REST  /* head complete: body, processing, reply; no clock */
};

struct guard {
    struct worker *w;
    struct bufferevent *bev; /* the filter, owned by evhttp */
    struct event *timer;
    struct event *writable; /* the socket turned writable again; owned */
    struct event *kick;     /* evhttp added output: write it; owned */
    enum head_state state;
    int eol; /* end-of-head scanner: 0 none, 1 after "\n", 2 after "\n\r" */
};

static void update_accepting(struct worker *w)
{
    if (!w->bound)
        return;
    struct evconnlistener *l = evhttp_bound_socket_get_listener(w->bound);
    if (w->nconns >= w->max_conns && !w->accept_paused) {
        evconnlistener_disable(l);
        w->accept_paused = true;
        log_warn("connection limit reached; not accepting until one closes",
                 "\"thread\":%d,\"connections\":%u", w->index, w->nconns);
    } else if (w->nconns < w->max_conns && w->accept_paused) {
        evconnlistener_enable(l);
        w->accept_paused = false;
    }
}

static void guard_free(void *ctx)
{
    struct guard *g = ctx;
    struct worker *w = g->w;
    if (g->timer)
        event_free(g->timer);
    if (g->writable)
        event_free(g->writable);
    if (g->kick)
        event_free(g->kick);
    free(g);
    w->nconns--;
    update_accepting(w);
}

/* Scan the new bytes of a head for an empty line ("\n\n" or "\n\r\n"); true when found. */
static bool head_ends(struct guard *g, struct evbuffer *buf)
{
    struct evbuffer_iovec v[16];
    int n = evbuffer_peek(buf, -1, NULL, v, 16);
    for (int i = 0; i < n && i < 16; i++) {
        const unsigned char *p = v[i].iov_base;
        for (size_t k = 0; k < v[i].iov_len; k++) {
            unsigned char c = p[k];
            if (c == '\n') {
                if (g->eol)
                    return true;
                g->eol = 1;
            } else if (c == '\r' && g->eol == 1) {
                g->eol = 2;
            } else {
                g->eol = 0;
            }
        }
    }
    return false;
}

static enum bufferevent_filter_result guard_in(struct evbuffer *src, struct evbuffer *dst,
                                               ev_ssize_t lim, enum bufferevent_flush_mode mode,
                                               void *ctx)
{
    struct guard *g = ctx;
    if (evbuffer_get_length(src) == 0)
        return BEV_NEED_MORE;
    if (g->state == G_IDLE) {
        uint32_t ms = g->w->cfg->server.client_header_timeout_ms;
        struct timeval tv = {.tv_sec = ms / 1000, .tv_usec = (ms % 1000) * 1000};
        evtimer_add(g->timer, &tv);
        g->state = G_HEAD;
        g->eol = 0;
    }
    if (g->state == G_HEAD && head_ends(g, src)) {
        evtimer_del(g->timer);
        g->state = G_REST;
    }
    evbuffer_add_buffer(dst, src); /* moves the chains */
    return BEV_OK;
}

static void writable_cb(evutil_socket_t fd, short what, void *arg);

/* Write as much of OUT as the socket takes now. 0 when all was written, 1 when some is left
 * (the caller arms the write event), -1 on a socket error. */
static int write_out(struct guard *g, struct evbuffer *out)
{
    evutil_socket_t fd = bufferevent_getfd(g->bev);
    while (evbuffer_get_length(out) > 0) {
        int n = evbuffer_write(out, fd);
        if (n < 0) {
            int e = EVUTIL_SOCKET_ERROR();
            if (e == EAGAIN || e == EWOULDBLOCK || e == EINTR)
                break;
            return -1;
        }
        if (n == 0)
            break;
    }
    if (evbuffer_get_length(out) == 0)
        return 0;
    if (!g->writable) {
        g->writable = event_new(bufferevent_get_base(g->bev), fd, EV_WRITE, writable_cb, g);
        if (!g->writable)
            return -1;
    }
    return 1;
}

static void writable_cb(evutil_socket_t fd, short what, void *arg)
{
    struct guard *g = arg;
    struct evbuffer *out = bufferevent_get_output(g->bev);
    int r = write_out(g, out);
    if (r > 0) {
        event_add(g->writable, NULL);
        return;
    }
    /* All in the kernel (evhttp may now finish the reply, even free the connection), or the
     * socket failed. Nothing touches G after these calls. */
    if (r == 0)
        bufferevent_trigger(g->bev, EV_WRITE, 0);
    else
        bufferevent_trigger_event(g->bev, BEV_EVENT_WRITING | BEV_EVENT_ERROR, 0);
}

/* The filter's own output step: everything is sent by send_output instead. */
static enum bufferevent_filter_result guard_out(struct evbuffer *src, struct evbuffer *dst,
                                                ev_ssize_t lim, enum bufferevent_flush_mode mode,
                                                void *ctx)
{
    return BEV_NEED_MORE;
}

/*
 * libevent answers a few malformed or oversized requests itself, before the gateway sees them
 * (bad request line, Content-Length over the body limit, headers far over the header limit),
 * with an HTML page. Every reply of the gateway's own carries X-Request-Id; such a page does
 * not. Replace it with the gateway's JSON error of the same class, so that every error a bot
 * gets has one shape. OUT holds exactly that page (evhttp writes a reply in one go).
 */
static void rewrite_parser_error(struct guard *g, struct evbuffer *out)
{
    size_t n = evbuffer_get_length(out);
    char head[16];
    if (n < 13)
        return;
    evbuffer_copyout(out, head, 13);
    if (memcmp(head, "HTTP/1.", 7) != 0 || (head[9] != '4' && head[9] != '5'))
        return;
    struct evbuffer_ptr end = evbuffer_search(out, "\r\n\r\n", 4, NULL);
    if (end.pos < 0 || evbuffer_search_range(out, "\r\nX-Request-Id:", 15, NULL, &end).pos >= 0)
        return;
    enum gw_err err = memcmp(head + 9, "413", 3) == 0 ? GW_ERR_TOO_LARGE : GW_ERR_UNPARSABLE;
    const struct gw_err_info *info = errors_info(err);
    char id[37];
    util_uuid7(id);
    char *body = errors_body(info->code, info->message, id);
    evbuffer_drain(out, n);
    evbuffer_add_printf(out,
                        "HTTP/1.1 %d %s\r\nContent-Type: application/json; charset=utf-8\r\n"
                        "X-Request-Id: %s\r\nConnection: close\r\nContent-Length: %zu\r\n\r\n",
                        info->status, errors_reason(info->status), id, body ? strlen(body) : 0);
    if (body)
        evbuffer_add(out, body, strlen(body));
    free(body);
    log_info("access",
             "\"id\":\"%s\",\"method\":\"-\",\"route\":\"-\",\"status\":%d,"
             "\"ended_by\":\"gateway\",\"error\":\"%s\",\"thread\":%d",
             id, info->status, info->code, g->w->index);
}

static void send_output(evutil_socket_t fd_unused, short what, void *arg)
{
    struct guard *g = arg;
    struct evbuffer *out = bufferevent_get_output(g->bev);
    size_t n = evbuffer_get_length(out);
    if (n == 0 || (g->writable && event_pending(g->writable, EV_WRITE, NULL)))
        return; /* nothing new, or the write event is already waiting for the socket */
    /* A reply has begun: the request was read whole. An interim 100 Continue says nothing. */
    if (g->state == G_REST) {
        char first[12];
        size_t m = n < sizeof(first) ? n : sizeof(first);
        evbuffer_copyout(out, first, m);
        if (!(m >= 12 && memcmp(first, "HTTP/1.1 100", 12) == 0))
            g->state = G_IDLE;
    }
    rewrite_parser_error(g, out);
    writable_cb(-1, EV_WRITE, g);
}

static void output_added(struct evbuffer *buf, const struct evbuffer_cb_info *info, void *arg)
{
    struct guard *g = arg;
    if (info->n_added > 0)
        event_active(g->kick, EV_TIMEOUT, 0);
}

static void header_timeout_cb(evutil_socket_t fd_unused, short what, void *arg)
{
    struct guard *g = arg;
    if (g->state != G_HEAD)
        return;
    /* Answer 408 on the socket directly (small, fits the socket buffer), then make evhttp
     * close the connection: it has no request of its own to answer yet. */
    char id[37];
    util_uuid7(id);
    const struct gw_err_info *info = errors_info(GW_ERR_CLIENT_TIMEOUT);
    char *body = errors_body(info->code, "the request head did not arrive in time", id);
    char resp[512];
    int len = snprintf(resp, sizeof(resp),
                       "HTTP/1.1 408 Request Timeout\r\nContent-Type: application/json; "
                       "charset=utf-8\r\nX-Request-Id: %s\r\nConnection: close\r\n"
                       "Content-Length: %zu\r\n\r\n%s",
                       id, body ? strlen(body) : 0, body ? body : "");
    free(body);
    evutil_socket_t fd = bufferevent_getfd(g->bev);
    if (fd >= 0 && len > 0 && (size_t)len < sizeof(resp))
        (void)send(fd, resp, (size_t)len, MSG_NOSIGNAL | MSG_DONTWAIT);
    log_info("access",
             "\"id\":\"%s\",\"method\":\"-\",\"route\":\"-\",\"status\":408,"
             "\"ended_by\":\"timeout\",\"error\":\"%s\",\"thread\":%d",
             id, info->code, g->w->index);
    g->state = G_REST;
    /* evhttp frees the connection, the filter and this guard inside this call. */
    bufferevent_trigger_event(g->bev, BEV_EVENT_READING | BEV_EVENT_TIMEOUT, 0);
}

struct bufferevent *connguard_bevcb(struct event_base *base, void *arg)
{
    struct worker *w = arg;
    struct bufferevent *sock = bufferevent_socket_new(base, -1, BEV_OPT_CLOSE_ON_FREE);
    struct guard *g = calloc(1, sizeof(*g));
    if (!sock || !g)
        goto fail;
    g->w = w;
    g->timer = evtimer_new(base, header_timeout_cb, g);
    if (!g->timer)
        goto fail;
    g->kick = event_new(base, -1, 0, send_output, g);
    if (!g->kick)
        goto fail;
    g->bev =
        bufferevent_filter_new(sock, guard_in, guard_out, BEV_OPT_CLOSE_ON_FREE, guard_free, g);
    if (!g->bev)
        goto fail;
    w->nconns++; /* from here on guard_free counts it down */
    if (!evbuffer_add_cb(bufferevent_get_output(g->bev), output_added, g)) {
        bufferevent_free(g->bev); /* frees sock and, through guard_free, g */
        return NULL;
    }
    update_accepting(w);
    return g->bev;
fail:
    /* evhttp cannot do without a bufferevent: hand it an unguarded one (or NULL, which it
     * handles by creating its own). */
    if (g && g->timer)
        event_free(g->timer);
    if (g && g->kick)
        event_free(g->kick);
    free(g);
    return sock;
}
