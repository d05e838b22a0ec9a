/*
 * request: the per-request object and the phase pipeline every request goes through:
 *
 *   head (request id, target) -> route -> [head hooks] -> body -> [policy hooks]
 *     -> [audit hooks] -> forward (upstream pool) -> [response hooks] -> reply
 *     -> done observers, access log
 *
 * Lifetime. A request is created when its head arrives and copies what it needs from it (the
 * head's bytes, the bot's address); afterwards it reaches its bot's connection only through
 * r->conn, which the connection clears when the bot goes away (the request then finishes
 * without forwarding if it has not forwarded yet, or records what the upstream said if it
 * has). The request owns everything it holds (body, upstream call, timers) and is freed right
 * after its reply, which is sent exactly once.
 *
 * Hooks. Modules plug into the bracketed phases with request_hook_add before the workers
 * start. A hook returns REQUEST_NEXT to continue, REQUEST_AGAIN when it will call
 * request_resume later (after setting r->cancel so a deadline or shutdown can stop it), or
 * REQUEST_DONE after replying itself. request_resume never runs inside the hook that returned
 * AGAIN: completions come from the loop. After AGAIN or DONE the pipeline does not touch the
 * request again (a hook may have finished it while deciding to wait).
 */
#ifndef GW_REQUEST_H
#define GW_REQUEST_H

#include <event2/event_struct.h>
#include <netinet/in.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/queue.h>

#include "buf.h"
#include "conn.h"
#include "ctx.h"
#include "errors.h"
#include "identity.h"
#include "headers.h"
#include "payload.h"
#include "router.h"
#include "util.h"

struct conn;
struct upstream_call;

enum request_next { REQUEST_NEXT, REQUEST_AGAIN, REQUEST_DONE };

enum request_phase {
    REQUEST_PHASE_HEAD,     /* after routing, before the body is read: allow-list, bearer, size */
    REQUEST_PHASE_POLICY,   /* after the body is read: validation, policy */
    REQUEST_PHASE_AUDIT,    /* before forwarding: make the audit record durable */
    REQUEST_PHASE_RESPONSE, /* after the upstream answered (or failed), before the reply */
    REQUEST_PHASE__COUNT
};

struct gw_request;
typedef enum request_next (*request_hook_fn)(struct gw_request *r);

struct gw_request {
    TAILQ_ENTRY(gw_request) link; /* on ctx->requests */
    struct gw_ctx *ctx;
    struct config *cfg;  /* a reference: the snapshot the request started under (reloads) */
    struct identity who; /* the bot, from its token's claims: request_identity fills it once */
    bool who_known;
    struct conn *conn; /* the bot's connection; NULL once it is gone or the reply handed over */
    struct route_match match;
    char id[UTIL_REQUEST_ID_MAX + 1];
    /* From the head, copied (strings point into the request's own copy of the head). */
    const char *method;
    const char *target;
    unsigned method_bit;
    uint8_t http_minor;
    const struct hfield *fields;
    unsigned nfields;
    size_t head_len;            /* bytes of the bot's head */
    struct conn_addr peer_addr; /* the bot's address (request_peer formats it) */
    char peer[INET6_ADDRSTRLEN];
    uint64_t content_length; /* when the head gave one */
    bool has_length, chunked;
    /* Times. */
    uint64_t t_start_us;      /* monotonic, first byte of the head */
    uint64_t t_start_ms;      /* the same in ms (deadlines) */
    uint64_t t_wall_ms;       /* wall clock at the head, for records */
    uint64_t t_up_start_us;   /* forward started */
    uint64_t t_up_us;         /* upstream duration (until the answer's head, then its end) */
    bool up_known, up_reused; /* an upstream connection answered; it had served before */
    /* Body. */
    size_t body_limit;    /* bytes; set by the head hooks (413 beyond) */
    struct bytes body;    /* read whole (validated endpoints) */
    size_t body_reserved; /* of max_buffered_body */
    bool body_whole;      /* the body is read whole before the policy phase */
    bool body_complete;
    bool streaming_up; /* the body streams to the upstream as it arrives */
    /* Upstream. */
    struct upstream_call *call;
    struct bytes up_head; /* the head sent upstream */
    struct iovec up_iov[2];
    bool buffer_response; /* a response hook needs the whole answer (set by hooks) */
    bool forwarded;       /* the upstream call started */
    /* Reply. */
    char reply_headers[384]; /* extra header lines of the gateway's own replies */
    size_t reply_headers_len;
    struct bytes reply_head; /* a streamed reply's head, sent with its first body bytes */
    bool reply_started, replied;
    bool stream_chunked; /* the streamed reply is chunk-encoded by the gateway */
    int status;          /* status sent (499 when the bot left first) */
    const char *error_code;
    const char *ended_by; /* "upstream", "gateway", "timeout", "shutdown", "client" */
    bool close;           /* send Connection: close */
    char *path;           /* canonical path (router_canonical_path), in the request's block */
    bool payload_valid;
    struct payload_result payload; /* FinishRun, single task actions */
    struct payload_result *items;  /* Return: its task actions (malloc'd), nitems of them */
    size_t nitems;
    char error_message[256];
    size_t bytes_in, bytes_out;
    /* Pipeline. */
    unsigned step;
    int wait;                             /* what the request waits for (request.c) */
    void (*cancel)(struct gw_request *r); /* set by a hook while it is in REQUEST_AGAIN */
    struct event wake;                    /* deferred resumption */
    struct event deadline;                /* request_timeout */
    void *hook_data[REQUEST_PHASE__COUNT];
};

/* Register FN in PHASE. Only before workers start. 0, or -1 when the table is full. */
int request_hook_add(enum request_phase phase, const char *name, request_hook_fn fn);

/* Observers called once for every request when it ends (refusals included), after its reply
 * was handed over: audit outcomes, counters. They must not reply or keep R. 0 or -1. */
typedef void (*request_done_fn)(struct gw_request *r);
int request_done_hook_add(const char *name, request_done_fn fn);

/* The conn_request_fn of the bots' listeners; ARG is the thread's struct gw_ctx. */
void request_on_head(void *arg, struct conn *c, const struct http1_head *h, const char *hbuf,
                     enum gw_err err, const char *why);

/* Continue the pipeline after a hook returned REQUEST_AGAIN. The one way a suspended request
 * goes on; it notices a bot that has gone meanwhile. */
void request_resume(struct gw_request *r);

/*
 * Reply with the gateway's JSON error for ERR (status from errors.h). MESSAGE NULL: the row's
 * default. request_reply_refusal takes the status and code itself (policy refusals carry their
 * own codes). Both finish R: the caller must not touch it afterwards.
 */
void request_reply_error(struct gw_request *r, enum gw_err err, const char *message);
void request_reply_refusal(struct gw_request *r, int status, const char *code, const char *message);

/* Add "NAME: VALUE" to the gateway's own reply (Retry-After, WWW-Authenticate, Allow). */
void request_reply_header(struct gw_request *r, const char *name, const char *value);

/* The bot's identity from its bearer token (identity.h), read on first use and kept for the
 * request's life: the audit record of every item and the access line share one parse. */
const struct identity *request_identity(struct gw_request *r);

/* The bot's address as text ("10.1.2.3", "::1"). */
const char *request_peer(struct gw_request *r);

/* The first value of request header NAME, or NULL; how many there are. */
const char *request_header(const struct gw_request *r, const char *name);
unsigned request_header_count(const struct gw_request *r, const char *name);

/* Abort every request of CTX (shutdown deadline): pending work is cancelled; the ones not yet
 * answered get 503. */
void request_abort_all(struct gw_ctx *ctx);

/* Bytes of request bodies held in memory by all threads now (max_buffered_body). */
size_t request_buffered_bytes(void);

#endif
