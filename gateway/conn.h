/*
 * conn: the bots' side of the gateway's own HTTP/1.1 layer. A conn_server accepts on one
 * listening socket of one event loop (a worker's SO_REUSEPORT socket, or the admin listener)
 * and runs every connection it accepts:
 *
 *   - reads with plain read()/SSL_read into a per-connection buffer that exists only while a
 *     request is under way (an idle keep-alive connection holds no buffer);
 *   - parses each head in place (http1.c) and hands it to the server's request function;
 *   - enforces the limits natively: head size (431) and head deadline from the head's first
 *     byte (408), body deadline for the whole body (408), keep-alive idle timeout, a reply
 *     that makes no progress (send timeout), max_connections;
 *   - keep-alive and pipelining: one request at a time, the next head parsed only once the
 *     reply to the previous one is complete, so replies go out in order;
 *   - Expect: 100-continue, answered when the request asks for its body;
 *   - writes optimistically (writev at once), arming EV_WRITE only on EAGAIN;
 *   - optional TLS (server SSL_CTX).
 *
 * Lifetime. A conn owns itself and is freed when it closes. While a request is attached
 * (between the head and the end of its reply) the conn calls the request's sink; when the bot
 * goes away first, sink->gone is the last call, after which the conn forgets the request. A
 * request must not touch its conn after conn_send(.., CONN_END) or after sink->gone.
 * Callbacks never run inside conn_* calls made by the request; only from the loop.
 */
#ifndef GW_CONN_H
#define GW_CONN_H

#include <openssl/ssl.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/uio.h>

#include "errors.h"
#include "http1.h"

struct event_base;
struct gw_stats;
struct conn;
struct conn_server;

struct conn_limits {
    size_t max_header_size;     /* request line + headers (431) */
    uint32_t header_timeout_ms; /* first byte of a head to its end (408) */
    uint32_t body_timeout_ms;   /* the whole body, once asked for (408) */
    uint32_t idle_timeout_ms;   /* keep-alive: between requests */
    uint32_t send_timeout_ms;   /* a reply the bot does not read */
    uint32_t max_connections;   /* open at once on this server; accepting pauses beyond */
};

/*
 * A request head arrived on C. H and the bytes at HBUF (the head, H's spans are offsets into
 * it) are valid during the call only. When the head was refused (H NULL), ERR and WHY
 * (static) say why: the function must still answer it (conn_send with CONN_END; the
 * connection closes afterwards).
 */
typedef void (*conn_request_fn)(void *arg, struct conn *c, const struct http1_head *h,
                                const char *hbuf, enum gw_err err, const char *why);

/* What a conn tells the request attached to it. */
struct conn_sink {
    /* Decoded body bytes (valid during the call). Return 0, or -1 after replying or
     * aborting (no more body then). */
    int (*body)(void *arg, const char *data, size_t len);
    void (*body_end)(void *arg);
    /* The body cannot be read: malformed chunked framing, body deadline (CLIENT_TIMEOUT).
     * The request answers with ERR (static WHY); the connection closes afterwards. */
    void (*body_error)(void *arg, enum gw_err err, const char *why);
    /* The bot closed or reset the connection, or stopped reading a reply: the request
     * carries on without it. The last call. */
    void (*gone)(void *arg);
    /* Output fell below the low watermark after conn_send returned 1 (may be NULL). */
    void (*drained)(void *arg);
};

/* Serve the listening socket FD (taken over; -1: none) on BASE. TLS: the server context for TLS
 * towards the bots, or NULL. STATS: the thread's counters (borrowed). NULL with ERRBUF set on
 * failure. */
struct conn_server *conn_server_new(struct event_base *base, int fd, const struct conn_limits *lim,
                                    SSL_CTX *tls, conn_request_fn fn, void *arg,
                                    struct gw_stats *stats, char *errbuf, size_t errlen);

/* A reloaded configuration's limits (all but max_connections, which needs a restart): new
 * heads and phases use them; a connection's buffers keep the size they have. Worker thread. */
void conn_server_set_limits(struct conn_server *srv, const struct conn_limits *lim);

/* Serve FD, an already connected socket, as a bot's connection (unit tests over socketpairs;
 * a server made with FD -1 accepts nothing else). */
void conn_server_adopt(struct conn_server *srv, int fd);

/* Drain: stop accepting (the listening socket is closed) and close idle keep-alive
 * connections; busy ones close after their reply. Idempotent. */
void conn_server_drain(struct conn_server *srv);

/* Connections open, and of those the ones with a request or unwritten output. */
unsigned conn_server_count(const struct conn_server *srv);
unsigned conn_server_busy(const struct conn_server *srv);

/* Close every connection (attached requests get sink->gone) and free the server. */
void conn_server_free(struct conn_server *srv);

/* Attach the request that answers C's current head (from within the request function). */
void conn_attach(struct conn *c, const struct conn_sink *sink, void *arg);

/* Deliver the body to the sink (sends 100 Continue first when the bot expects it). Also
 * resumes after conn_pause_body. */
void conn_read_body(struct conn *c);
/* Stop delivering body bytes until conn_read_body (back-pressure; the body deadline pauses). */
void conn_pause_body(struct conn *c);

#define CONN_END 1u   /* this completes the reply: the request is detached */
#define CONN_CLOSE 2u /* close the connection after the reply */

/*
 * Send reply bytes: written at once as far as the socket takes them, the rest queued (copied).
 * Returns 0, or 1 when more than the high watermark is queued (a streaming sender should wait
 * for sink->drained). With CONN_END the reply is complete and the request detached.
 */
int conn_send(struct conn *c, const struct iovec *iov, int n, unsigned flags);

/* The reply cannot be completed (its source failed midway): close the connection at once
 * and detach the request (no further callbacks). */
void conn_abort(struct conn *c);

/* Must the reply close the connection? (The bot asked, HTTP/1.0 without keep-alive, the body
 * was not read to its end, or the server drains.) */
bool conn_must_close(const struct conn *c);

/* When the current head's first byte arrived (monotonic ms; _us: microseconds, 0 if unknown). */
uint64_t conn_head_started(const struct conn *c);
uint64_t conn_head_started_us(const struct conn *c);

/* The bot's address: copied binary (cheap, at every head) and formatted ("1.2.3.4", "::1",
 * "local" for a socketpair) only when someone needs it. */
struct conn_addr {
    union {
        struct sockaddr sa;
        struct sockaddr_in in;
        struct sockaddr_in6 in6;
    } u;
};
void conn_peer_addr(const struct conn *c, struct conn_addr *out);
const char *conn_addr_str(const struct conn_addr *a, char *buf, size_t len);

#endif
