/*
 * router: the endpoint table. Each Anymate endpoint is one row (name, methods, path shape,
 * upstream, body rule, audit kind), not a branch in code; later phases (validation, audit) read
 * their rule from the matched row.
 *
 * Matching follows what the SDKs send (anymate-api.md §2.1): ASCII case-insensitive, with or
 * without one trailing slash, {processKey} as one opaque segment. The path is never rewritten:
 * the gateway forwards the target exactly as received.
 */
#ifndef GW_ROUTER_H
#define GW_ROUTER_H

#include <stdbool.h>
#include <stddef.h>

enum route_upstream { ROUTE_UPSTREAM_API = 0, ROUTE_UPSTREAM_AUTH = 1 };
#define ROUTE_UPSTREAM_COUNT 2

/* What the body of a request to this endpoint must be (enforced by the policy phase). */
enum route_body {
    ROUTE_BODY_NONE,        /* GET endpoints */
    ROUTE_BODY_ANY,         /* forwarded as is */
    ROUTE_BODY_FORM,        /* token endpoint */
    ROUTE_BODY_JSON,        /* any JSON (CreateTask, UpdateTask, ...) */
    ROUTE_BODY_FINISHRUN,   /* FinishRun contract */
    ROUTE_BODY_TASK_ACTION, /* Solved, Manual, Error (+Async) */
    ROUTE_BODY_RETRY_ACTION /* Retry (+Async) */
};

/* What the audit phase does with a request or its answer. */
enum route_audit {
    ROUTE_AUDIT_COUNT_ONLY,  /* counted, not recorded row by row */
    ROUTE_AUDIT_FINISHRUN,   /* recorded before forwarding, outcome after */
    ROUTE_AUDIT_TASK_ACTION, /* likewise, per task */
    ROUTE_AUDIT_LEARN_RUN,   /* answer carries runId (StartOrGetRun, StartRun) */
    ROUTE_AUDIT_LEARN_TASKS  /* answer carries task ids (TakeNext, TakeMany, Create*) */
};

/* Methods as a bit set of libevent's enum evhttp_cmd_type values. */
struct route {
    const char *name;  /* "FinishRun", "Token", "api.other" */
    const char *path;  /* "/api/FinishRun", without trailing slash */
    unsigned methods;  /* allowed methods (EVHTTP_REQ_* bits) */
    const char *allow; /* the Allow header value for 405 */
    bool process_key;  /* path continues with /{processKey} */
    enum route_upstream upstream;
    enum route_body body;
    enum route_audit audit;
};

struct route_match {
    const struct route *route; /* NULL: no route (404) */
    bool method_ok;            /* false: 405 with route->allow */
    const char *key;           /* {processKey} span inside the path (not decoded), or NULL */
    size_t key_len;
};

/*
 * Match METHOD (an EVHTTP_REQ_* value) and the request target TARGET (path and optional query,
 * as received). Fills *M and returns 0; returns -1 when nothing matches (404). Unknown paths
 * under /api/ match the pass-through row "api.other".
 */
int router_match(unsigned method, const char *target, struct route_match *m);

/* The table, for documentation and tests. */
const struct route *router_table(size_t *count);

#endif
