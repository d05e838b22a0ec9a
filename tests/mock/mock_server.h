/*
 * The mock Anymate server object, shared by the process shell (anymate_mock.c: command line,
 * listener, TLS, connection tracking) and the HTTP layer (mock_http.c: routing, auth, test
 * hooks, request log, control API). Single-threaded: everything runs on one event_base.
 */
#ifndef ANYMATE_MOCK_SERVER_H
#define ANYMATE_MOCK_SERVER_H

#include <stdbool.h>
#include <stdio.h>
#include <sys/queue.h>

#include <event2/event.h>
#include <event2/http.h>
#include <jansson.h>
#include <openssl/ssl.h>

#include "mock_state.h"
#include "mock_token.h"

/* One accepted TCP connection. Counters marked "since reset" restart at POST /_mock/reset. */
struct mock_server;

struct mock_conn {
    struct mock_server *srv;         /* the owner */
    long long number;                /* 1, 2, ... in accept order; never reused */
    struct evhttp_connection *evcon; /* borrowed from evhttp; NULL once closed */
    bool open;
    bool accepted_since_reset;
    bool ever_api;               /* carried a request outside /_mock/ at some time */
    bool ever_control;           /* carried a /_mock/ request at some time */
    long long requests;          /* requests outside /_mock/, since reset */
    long long control_requests;  /* /_mock/ requests, since reset */
    long long lifetime_requests; /* all requests, for the X-Mock-Request header */
    TAILQ_ENTRY(mock_conn) link; /* on open_conns or closed_conns */
};

TAILQ_HEAD(mock_conn_list, mock_conn);

struct mock_reply;  /* mock_http.c: a response waiting for its X-Mock-Delay-Ms timer */
struct mock_accept; /* anymate_mock.c: a connection accepted but not yet registered */

struct mock_server {
    struct event_base *base;    /* owned */
    struct evhttp *http;        /* owned */
    SSL_CTX *ssl_ctx;           /* owned; NULL without --tls-cert */
    struct mock_state *state;   /* owned */
    struct mock_tokens *tokens; /* owned */
    json_t *users;              /* owned object username -> password; NULL without --users */
    long long token_ttl;        /* seconds */
    FILE *log;                  /* owned; NULL without --log */
    json_t *requests;           /* owned array: the request log, since reset */

    struct mock_conn_list open_conns;   /* owned */
    struct mock_conn_list closed_conns; /* owned: closed since the last reset */
    long long next_conn;
    long long requests_total;         /* requests outside /_mock/, since reset */
    long long control_requests_total; /* /_mock/ requests, since reset */
    long long tls_full, tls_resumed;  /* TLS handshakes completed, since reset */

    TAILQ_HEAD(, mock_reply) replies;  /* owned: delayed responses */
    TAILQ_HEAD(, mock_accept) accepts; /* owned: see anymate_mock.c */
};

/* The record of evcon, registering it (and setting TCP_NODELAY) if it is not known yet.
 * NULL only when out of memory. The record stays owned by srv. */
struct mock_conn *mock_conn_of(struct mock_server *srv, struct evhttp_connection *evcon);

/* Forgets closed connections and zeroes the since-reset counters of open ones. */
void mock_conn_reset(struct mock_server *srv);

/* The evhttp generic callback: every request the server receives. arg is the mock_server. */
void mock_http_handle(struct evhttp_request *req, void *arg);

/* Frees every delayed response without sending it; for shutdown, before evhttp_free (which
 * frees the requests they point to). */
void mock_http_drop_replies(struct mock_server *srv);

#endif
