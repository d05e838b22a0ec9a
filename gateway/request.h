/*
 * request: the per-request object and the phase pipeline every request goes through
 * (design.md §2, evhtp-style):
 *
 *   head (target, framing, header limits, request id) -> route -> body (limit)
 *     -> [policy hooks] -> [audit hooks] -> forward (upstream pool)
 *     -> [response hooks] -> reply -> access log
 *
 * A request object owns everything the request holds (forward headers, upstream call, timer)
 * and is freed right after its reply, which is sent exactly once, from request_reply_*.
 * Modules plug into the bracketed phases with request_hook_add before the workers start; a
 * hook returns REQUEST_NEXT to continue, REQUEST_AGAIN when it will call request_resume later
 * (after setting r->cancel so a timeout can abort it), or REQUEST_DONE after replying itself.
 */
#ifndef GW_REQUEST_H
#define GW_REQUEST_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/queue.h>

#include "errors.h"
#include "payload.h"
#include "router.h"
#include "util.h"

struct evhttp_request;
struct evkeyvalq;
struct worker;
struct upstream_call;

enum request_next { REQUEST_NEXT, REQUEST_AGAIN, REQUEST_DONE };

enum request_phase {
    REQUEST_PHASE_POLICY,   /* after the body is read: validation, policy */
    REQUEST_PHASE_AUDIT,    /* before forwarding: make the audit record durable */
    REQUEST_PHASE_RESPONSE, /* after the upstream answered (or failed), before the reply */
    REQUEST_PHASE__COUNT
};

struct gw_request;
typedef enum request_next (*request_hook_fn)(struct gw_request *r);

struct gw_request {
    TAILQ_ENTRY(gw_request) link; /* on the worker's in-flight list */
    struct worker *worker;
    struct evhttp_request *ereq; /* downstream request (owned by evhttp); NULL once replied */
    struct route_match match;
    char id[UTIL_REQUEST_ID_MAX + 1];
    const char *method;
    uint64_t t_start_ms;                  /* monotonic, handler entered */
    uint64_t t_wall_ms;                   /* wall clock, for records */
    uint64_t t_up_start_ms;               /* forward started */
    uint64_t t_up_ms;                     /* upstream duration */
    struct evkeyvalq *fwd_headers;        /* owned: headers sent upstream */
    struct upstream_call *call;           /* owned while forwarding */
    struct event *deadline;               /* owned: request_timeout */
    void (*cancel)(struct gw_request *r); /* set by a hook while it is in REQUEST_AGAIN */
    unsigned step;                        /* pipeline position */
    int status;                           /* status sent */
    const char *error_code;               /* static, when the gateway refused or failed */
    const char *ended_by;                 /* "upstream", "gateway", "timeout", "shutdown" */
    bool close;                           /* send Connection: close */
    char path[2048];                      /* canonical path (router_canonical_path) */
    bool payload_valid;                   /* the policy phase parsed the body into payload */
    struct payload_result payload;        /* FinishRun / task action fields */
    char error_message[256];              /* message of a refusal or failure, for the audit */
    size_t bytes_in, bytes_out;
    void *hook_data[REQUEST_PHASE__COUNT]; /* one slot per phase for its hooks' state */
};

/* Register FN in PHASE. Only before workers start. Returns 0, or -1 when the table is full. */
int request_hook_add(enum request_phase phase, const char *name, request_hook_fn fn);

/* Observers called for every request once its reply is decided (refusals included), in
 * registration order, right before the reply is handed to evhttp: audit outcomes, metrics.
 * R->ereq is still valid; they must not reply or keep R. Only before workers start; 0 or -1
 * when full. */
typedef void (*request_done_fn)(struct gw_request *r);
int request_done_hook_add(const char *name, request_done_fn fn);

/* evhttp callback for every request on a worker's listener; ARG is the worker. */
void request_handle(struct evhttp_request *ereq, void *arg);

/* Continue the pipeline after a hook returned REQUEST_AGAIN. */
void request_resume(struct gw_request *r);

/*
 * Reply with the gateway's JSON error for ERR (status from errors.h). MESSAGE NULL: the row's
 * default. Frees R: the caller must not touch it afterwards. CODE overrides the row's code when
 * non-NULL (policy refusals carry their own codes); STATUS likewise when non-zero.
 */
void request_reply_error(struct gw_request *r, enum gw_err err, const char *message);
void request_reply_refusal(struct gw_request *r, int status, const char *code, const char *message);

/* Abort an in-flight request (shutdown deadline): cancels pending work, replies 503. */
void request_abort(struct gw_request *r);

#endif
