/*
 * anymate-mock: a mock of the Anymate API (anymate-api.md) for anymate-gateway's tests.
 *
 * This file is the process shell: command line, files, the evhttp listener (plain or TLS),
 * signals, and the tracking of TCP connections for /_mock/stats. Requests are handled in
 * mock_http.c; the Anymate model is in mock_state.c.
 *
 * Connection tracking. libevent 2.1 tells the application about a new connection only through
 * the bufferevent callback (evhttp_set_bevcb), which runs before the connection has its socket
 * or its evhttp_connection. So the callback takes a reference on the bufferevent and activates
 * a one-shot event; that event runs in the same loop iteration, after evhttp has finished
 * setting the connection up and before its first request is read (a TLS handshake may have
 * started), and registers it: TCP_NODELAY on the socket, a mock_conn record, and a close
 * callback that moves the record to the closed list. evhttp passes
 * the connection as the bufferevent's callback argument, which is how the event finds it; if
 * the connection died in between, the callbacks are already cleared and it is counted closed.
 */
#include <errno.h>
#include <getopt.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/queue.h>
#include <sys/socket.h>

#include <event2/bufferevent.h>
#include <event2/bufferevent_ssl.h>
#include <event2/event.h>
#include <event2/http.h>
#include <jansson.h>
#include <openssl/err.h>
#include <openssl/ssl.h>

#include "mock_server.h"
#include "mock_state.h"
#include "mock_token.h"
#include "mock_util.h"

#define EXIT_USAGE 2
#define MAX_HEADERS_SIZE (64 * 1024)
#define MAX_BODY_SIZE (16 * 1024 * 1024)
#define TIMEOUT_SECONDS 60

struct mock_accept {
    struct mock_server *srv;
    struct bufferevent *bev; /* one reference, dropped when registered */
    struct event *ev;        /* owned */
    TAILQ_ENTRY(mock_accept) link;
};

/* ---- connection tracking ---------------------------------------------------------------- */

/* evhttp_connection_set_closecb callback: evhttp is about to free evcon. */
static void conn_closed_cb(struct evhttp_connection *evcon, void *arg)
{
    struct mock_conn *c = arg;
    c->open = false;
    c->evcon = NULL;
    TAILQ_REMOVE(&c->srv->open_conns, c, link);
    TAILQ_INSERT_TAIL(&c->srv->closed_conns, c, link);
}

static struct mock_conn *conn_new(struct mock_server *srv)
{
    struct mock_conn *c = calloc(1, sizeof(*c));
    if (c == NULL)
        return NULL;
    c->srv = srv;
    c->number = ++srv->next_conn;
    c->accepted_since_reset = true;
    return c;
}

static struct mock_conn *conn_register(struct mock_server *srv, struct evhttp_connection *evcon,
                                       evutil_socket_t fd)
{
    struct mock_conn *c = conn_new(srv);
    if (c == NULL)
        return NULL;
    if (fd >= 0) {
        /* Small TLS records otherwise wait for the peer's delayed ACK (design.md §4). */
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    }
    c->evcon = evcon;
    c->open = true;
    evhttp_connection_set_closecb(evcon, conn_closed_cb, c);
    TAILQ_INSERT_TAIL(&srv->open_conns, c, link);
    return c;
}

static struct mock_conn *conn_find(struct mock_server *srv, struct evhttp_connection *evcon)
{
    struct mock_conn *c;
    TAILQ_FOREACH(c, &srv->open_conns, link)
    {
        if (c->evcon == evcon)
            return c;
    }
    return NULL;
}

struct mock_conn *mock_conn_of(struct mock_server *srv, struct evhttp_connection *evcon)
{
    struct mock_conn *c = conn_find(srv, evcon);
    if (c != NULL)
        return c;
    /* Not seen by accept_registered_cb (should not happen): register it now. */
    struct bufferevent *bev = evhttp_connection_get_bufferevent(evcon);
    return conn_register(srv, evcon, bev != NULL ? bufferevent_getfd(bev) : -1);
}

void mock_conn_reset(struct mock_server *srv)
{
    struct mock_conn *c;
    srv->tls_full = srv->tls_resumed = 0;
    while ((c = TAILQ_FIRST(&srv->closed_conns)) != NULL) {
        TAILQ_REMOVE(&srv->closed_conns, c, link);
        free(c);
    }
    TAILQ_FOREACH(c, &srv->open_conns, link)
    {
        c->accepted_since_reset = false;
        c->requests = 0;
        c->control_requests = 0;
    }
    srv->requests_total = 0;
    srv->control_requests_total = 0;
}

static void accept_free(struct mock_accept *a)
{
    TAILQ_REMOVE(&a->srv->accepts, a, link);
    event_free(a->ev);
    bufferevent_decref(a->bev);
    free(a);
}

static void accept_registered_cb(evutil_socket_t unused, short what, void *arg)
{
    struct mock_accept *a = arg;
    struct mock_server *srv = a->srv;
    void *cbarg = NULL;
    bufferevent_getcb(a->bev, NULL, NULL, NULL, &cbarg);
    if (cbarg != NULL) {
        struct evhttp_connection *evcon = cbarg;
        if (conn_find(srv, evcon) == NULL)
            conn_register(srv, evcon, bufferevent_getfd(a->bev));
    } else {
        /* evhttp already freed the connection (e.g. a failed TLS handshake). */
        struct mock_conn *c = conn_new(srv);
        if (c != NULL)
            TAILQ_INSERT_TAIL(&srv->closed_conns, c, link);
    }
    accept_free(a);
}

/* evhttp_set_bevcb callback: the bufferevent for a newly accepted connection (fd not set
 * yet). Returning NULL makes evhttp fall back to a plain socket bufferevent. */
static struct bufferevent *make_bufferevent(struct event_base *base, void *arg)
{
    struct mock_server *srv = arg;
    struct bufferevent *bev;
    if (srv->ssl_ctx != NULL) {
        SSL *ssl = SSL_new(srv->ssl_ctx);
        if (ssl == NULL)
            return NULL;
        bev = bufferevent_openssl_socket_new(base, -1, ssl, BUFFEREVENT_SSL_ACCEPTING,
                                             BEV_OPT_CLOSE_ON_FREE);
        if (bev == NULL) {
            SSL_free(ssl);
            return NULL;
        }
        /* Clients often close without close_notify; that is not an error for a server. */
        bufferevent_openssl_set_allow_dirty_shutdown(bev, 1);
    } else {
        bev = bufferevent_socket_new(base, -1, BEV_OPT_CLOSE_ON_FREE);
        if (bev == NULL)
            return NULL;
    }
    struct mock_accept *a = calloc(1, sizeof(*a));
    if (a == NULL)
        return bev; /* untracked until its first request (mock_conn_of) */
    a->ev = event_new(base, -1, 0, accept_registered_cb, a);
    if (a->ev == NULL) {
        free(a);
        return bev;
    }
    a->srv = srv;
    a->bev = bev;
    bufferevent_incref(bev);
    TAILQ_INSERT_TAIL(&srv->accepts, a, link);
    event_active(a->ev, EV_TIMEOUT, 0);
    return bev;
}

/* ---- command line and start-up ------------------------------------------------------------ */

struct options {
    const char *listen;
    const char *tls_cert;
    const char *tls_key;
    const char *log;
    const char *processes;
    const char *users;
    long long token_ttl;
};

static void usage(FILE *out)
{
    fprintf(out,
            "usage: anymate-mock --listen HOST:PORT [--tls-cert FILE --tls-key FILE]\n"
            "                    [--log FILE] [--processes FILE] [--token-ttl SECONDS]\n"
            "                    [--users FILE]\n"
            "  --listen HOST:PORT   address to listen on; port 0 picks a free port;\n"
            "                       IPv6 as [::1]:PORT\n"
            "  --tls-cert FILE      PEM certificate chain: serve HTTPS (needs --tls-key)\n"
            "  --tls-key FILE       PEM private key\n"
            "  --log FILE           append one JSON line per request\n"
            "  --processes FILE     JSON process settings {\"PK\": {\"tasksEnabled\": bool, ...}}\n"
            "  --token-ttl SECONDS  lifetime of issued tokens (default 3600)\n"
            "  --users FILE         JSON {\"user\": \"password\"}: only these may log in\n"
            "Prints {\"event\":\"listening\",\"port\":N,\"tls\":BOOL} on stdout once listening.\n");
}

static int usage_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* Prints "anymate-mock: <message>" and the usage to stderr; returns -1. */
static int usage_error(const char *fmt, ...)
{
    va_list ap;
    fprintf(stderr, "anymate-mock: ");
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fprintf(stderr, "\n");
    usage(stderr);
    return -1;
}

static int parse_options(int argc, char **argv, struct options *o)
{
    static const struct option longopts[] = {
        {"listen", required_argument, NULL, 'l'},
        {"tls-cert", required_argument, NULL, 'c'},
        {"tls-key", required_argument, NULL, 'k'},
        {"log", required_argument, NULL, 'L'},
        {"processes", required_argument, NULL, 'p'},
        {"token-ttl", required_argument, NULL, 't'},
        {"users", required_argument, NULL, 'u'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    *o = (struct options){.token_ttl = 3600};
    opterr = 0;
    int ch;
    while ((ch = getopt_long(argc, argv, ":h", longopts, NULL)) != -1) {
        switch (ch) {
        case 'l':
            o->listen = optarg;
            break;
        case 'c':
            o->tls_cert = optarg;
            break;
        case 'k':
            o->tls_key = optarg;
            break;
        case 'L':
            o->log = optarg;
            break;
        case 'p':
            o->processes = optarg;
            break;
        case 'u':
            o->users = optarg;
            break;
        case 't':
            if (!mock_parse_i64(optarg, 0, 10LL * 365 * 86400, &o->token_ttl))
                return usage_error("--token-ttl must be an integer 0..315360000, not \"%s\"",
                                   optarg);
            break;
        case 'h':
            usage(stdout);
            exit(0);
        case ':':
            return usage_error("%s needs an argument", argv[optind - 1]);
        default:
            return usage_error("unknown option %s", argv[optind - 1]);
        }
    }
    if (optind < argc)
        return usage_error("unexpected argument \"%s\"", argv[optind]);
    if (o->listen == NULL)
        return usage_error("%s is required", "--listen");
    if ((o->tls_cert == NULL) != (o->tls_key == NULL))
        return usage_error("%s", "--tls-cert and --tls-key go together");
    return 0;
}

/* Splits HOST:PORT or [V6]:PORT. *host is malloc'd (caller frees). */
static int parse_listen(const char *arg, char **host, int *port)
{
    const char *colon;
    const char *h = arg;
    size_t hlen;
    if (arg[0] == '[') {
        const char *close = strchr(arg, ']');
        if (close == NULL || close[1] != ':')
            return -1;
        h = arg + 1;
        hlen = (size_t)(close - h);
        colon = close + 1;
    } else {
        colon = strrchr(arg, ':');
        if (colon == NULL || memchr(arg, ':', (size_t)(colon - arg)) != NULL)
            return -1;
        hlen = (size_t)(colon - arg);
    }
    long long p;
    if (hlen == 0 || !mock_parse_i64(colon + 1, 0, 65535, &p))
        return -1;
    *host = strndup(h, hlen);
    if (*host == NULL)
        return -1;
    *port = (int)p;
    return 0;
}

static json_t *load_json_file(const char *what, const char *path)
{
    json_error_t err;
    json_t *j = json_load_file(path, 0, &err);
    if (j == NULL)
        fprintf(stderr, "anymate-mock: %s %s:%d:%d: %s\n", what, path, err.line, err.column,
                err.text);
    return j;
}

static int load_users(struct mock_server *srv, const char *path)
{
    json_t *users = load_json_file("--users", path);
    if (users == NULL)
        return -1;
    const char *name;
    json_t *pw;
    bool ok = json_is_object(users);
    json_object_foreach(users, name, pw)
    {
        ok = ok && json_is_string(pw);
    }
    if (!ok) {
        fprintf(stderr, "anymate-mock: --users %s: expected {\"username\": \"password\", ...}\n",
                path);
        json_decref(users);
        return -1;
    }
    srv->users = users;
    return 0;
}

static int load_processes(struct mock_server *srv, const char *path)
{
    json_t *spec = load_json_file("--processes", path);
    if (spec == NULL)
        return -1;
    char err[256];
    int rc = mock_state_configure(srv->state, spec, err, sizeof(err));
    if (rc != 0)
        fprintf(stderr, "anymate-mock: --processes %s: %s\n", path, err);
    json_decref(spec);
    return rc;
}

static void print_ssl_error(const char *what, const char *path)
{
    char buf[256] = "unknown error";
    unsigned long e = ERR_get_error();
    if (e != 0)
        ERR_error_string_n(e, buf, sizeof(buf));
    fprintf(stderr, "anymate-mock: %s %s: %s\n", what, path, buf);
    ERR_clear_error();
}

/* Counts full and resumed handshakes, so tests can prove that clients resume sessions. */
static void tls_info_cb(const SSL *ssl, int where, int ret)
{
    if (!(where & SSL_CB_HANDSHAKE_DONE))
        return;
    struct mock_server *srv = SSL_CTX_get_app_data(SSL_get_SSL_CTX(ssl));
    if (srv == NULL)
        return;
    if (SSL_session_reused((SSL *)ssl))
        srv->tls_resumed++;
    else
        srv->tls_full++;
}

static SSL_CTX *tls_context(const char *cert, const char *key)
{
    SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());
    if (ctx == NULL) {
        print_ssl_error("cannot create TLS context", "");
        return NULL;
    }
    SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
    SSL_CTX_set_info_callback(ctx, tls_info_cb);
    if (SSL_CTX_use_certificate_chain_file(ctx, cert) != 1) {
        print_ssl_error("cannot load --tls-cert", cert);
        goto free_ctx;
    }
    if (SSL_CTX_use_PrivateKey_file(ctx, key, SSL_FILETYPE_PEM) != 1) {
        print_ssl_error("cannot load --tls-key", key);
        goto free_ctx;
    }
    if (SSL_CTX_check_private_key(ctx) != 1) {
        print_ssl_error("--tls-key does not match --tls-cert", key);
        goto free_ctx;
    }
    return ctx;
free_ctx:
    SSL_CTX_free(ctx);
    return NULL;
}

static void on_signal(evutil_socket_t sig, short what, void *arg)
{
    event_base_loopbreak(arg);
}

/* Everything that needs only the command line: files, TLS, state. Exit code 2 on failure. */
static int server_prepare(struct mock_server *srv, const struct options *o)
{
    TAILQ_INIT(&srv->open_conns);
    TAILQ_INIT(&srv->closed_conns);
    TAILQ_INIT(&srv->replies);
    TAILQ_INIT(&srv->accepts);
    srv->token_ttl = o->token_ttl;
    srv->state = mock_state_new();
    srv->tokens = mock_tokens_new();
    srv->requests = json_array();
    if (srv->state == NULL || srv->tokens == NULL || srv->requests == NULL) {
        fprintf(stderr, "anymate-mock: out of memory\n");
        return -1;
    }
    if (o->processes != NULL && load_processes(srv, o->processes) != 0)
        return -1;
    if (o->users != NULL && load_users(srv, o->users) != 0)
        return -1;
    if (o->log != NULL) {
        srv->log = fopen(o->log, "a");
        if (srv->log == NULL) {
            fprintf(stderr, "anymate-mock: cannot open --log %s: %s\n", o->log, strerror(errno));
            return -1;
        }
    }
    if (o->tls_cert != NULL) {
        srv->ssl_ctx = tls_context(o->tls_cert, o->tls_key);
        if (srv->ssl_ctx == NULL)
            return -1;
        SSL_CTX_set_app_data(srv->ssl_ctx, srv);
    }
    return 0;
}

/* The event base, evhttp and the bound socket. Returns the port, or -1 (exit code 1). */
static int server_listen(struct mock_server *srv, const char *host, int port)
{
    srv->base = event_base_new();
    if (srv->base == NULL) {
        fprintf(stderr, "anymate-mock: cannot create event base\n");
        return -1;
    }
    srv->http = evhttp_new(srv->base);
    if (srv->http == NULL) {
        fprintf(stderr, "anymate-mock: cannot create HTTP server\n");
        return -1;
    }
    evhttp_set_max_headers_size(srv->http, MAX_HEADERS_SIZE);
    evhttp_set_max_body_size(srv->http, MAX_BODY_SIZE);
    evhttp_set_timeout(srv->http, TIMEOUT_SECONDS);
    evhttp_set_allowed_methods(srv->http, EVHTTP_REQ_GET | EVHTTP_REQ_POST | EVHTTP_REQ_HEAD |
                                              EVHTTP_REQ_PUT | EVHTTP_REQ_DELETE |
                                              EVHTTP_REQ_OPTIONS | EVHTTP_REQ_TRACE |
                                              EVHTTP_REQ_CONNECT | EVHTTP_REQ_PATCH);
    /* No text/html default: a 401 goes out with an empty body and no Content-Type. */
    evhttp_set_default_content_type(srv->http, NULL);
    evhttp_set_flags(srv->http, EVHTTP_SERVER_LINGERING_CLOSE);
    evhttp_set_bevcb(srv->http, make_bufferevent, srv);
    evhttp_set_gencb(srv->http, mock_http_handle, srv);

    struct evhttp_bound_socket *bound =
        evhttp_bind_socket_with_handle(srv->http, host, (ev_uint16_t)port);
    if (bound == NULL) {
        fprintf(stderr, "anymate-mock: cannot listen on %s port %d: %s\n", host, port,
                strerror(errno));
        return -1;
    }
    struct sockaddr_storage ss;
    socklen_t sslen = sizeof(ss);
    if (getsockname(evhttp_bound_socket_get_fd(bound), (struct sockaddr *)&ss, &sslen) != 0) {
        fprintf(stderr, "anymate-mock: getsockname: %s\n", strerror(errno));
        return -1;
    }
    if (ss.ss_family == AF_INET6)
        return ntohs(((struct sockaddr_in6 *)&ss)->sin6_port);
    return ntohs(((struct sockaddr_in *)&ss)->sin_port);
}

static void server_free(struct mock_server *srv)
{
    mock_http_drop_replies(srv);
    if (srv->http != NULL)
        evhttp_free(srv->http); /* runs the close callbacks of open connections */
    struct mock_accept *a;
    while ((a = TAILQ_FIRST(&srv->accepts)) != NULL)
        accept_free(a);
    struct mock_conn *c;
    while ((c = TAILQ_FIRST(&srv->open_conns)) != NULL) {
        TAILQ_REMOVE(&srv->open_conns, c, link);
        free(c);
    }
    while ((c = TAILQ_FIRST(&srv->closed_conns)) != NULL) {
        TAILQ_REMOVE(&srv->closed_conns, c, link);
        free(c);
    }
    if (srv->base != NULL)
        event_base_free(srv->base);
    SSL_CTX_free(srv->ssl_ctx);
    if (srv->log != NULL)
        fclose(srv->log);
    json_decref(srv->requests);
    json_decref(srv->users);
    mock_tokens_free(srv->tokens);
    mock_state_free(srv->state);
}

int main(int argc, char **argv)
{
    struct options opts;
    struct mock_server srv;
    char *host = NULL;
    int port = 0;
    int rc = EXIT_USAGE;
    memset(&srv, 0, sizeof(srv));

    /* A SIGTERM that arrives during start-up waits for libevent's handler instead of killing
     * the process with a non-zero status. */
    sigset_t stop_signals;
    sigemptyset(&stop_signals);
    sigaddset(&stop_signals, SIGTERM);
    sigaddset(&stop_signals, SIGINT);
    sigprocmask(SIG_BLOCK, &stop_signals, NULL);

    if (parse_options(argc, argv, &opts) != 0)
        return EXIT_USAGE;
    if (parse_listen(opts.listen, &host, &port) != 0) {
        usage_error("--listen wants HOST:PORT or [IPV6]:PORT with PORT 0..65535, not \"%s\"",
                    opts.listen);
        return EXIT_USAGE;
    }
    signal(SIGPIPE, SIG_IGN);
    if (server_prepare(&srv, &opts) != 0)
        goto free_server;

    rc = 1;
    int bound_port = server_listen(&srv, host, port);
    if (bound_port < 0)
        goto free_server;
    struct event *sigterm = evsignal_new(srv.base, SIGTERM, on_signal, srv.base);
    struct event *sigint = evsignal_new(srv.base, SIGINT, on_signal, srv.base);
    if (sigterm == NULL || sigint == NULL || event_add(sigterm, NULL) != 0 ||
        event_add(sigint, NULL) != 0) {
        fprintf(stderr, "anymate-mock: cannot install signal handlers\n");
    } else {
        sigprocmask(SIG_UNBLOCK, &stop_signals, NULL);
        printf("{\"event\":\"listening\",\"port\":%d,\"tls\":%s}\n", bound_port,
               srv.ssl_ctx != NULL ? "true" : "false");
        fflush(stdout);
        if (event_base_dispatch(srv.base) != -1)
            rc = 0;
    }
    if (sigint != NULL)
        event_free(sigint);
    if (sigterm != NULL)
        event_free(sigterm);
free_server:
    server_free(&srv);
    free(host);
    libevent_global_shutdown();
    return rc;
}
