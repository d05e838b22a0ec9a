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
    ROUTE_BODY_NONE,         /* GET endpoints */
    ROUTE_BODY_ANY,          /* forwarded as is */
    ROUTE_BODY_FORM,         /* token endpoint */
    ROUTE_BODY_JSON,         /* any JSON (CreateTask, UpdateTask, ...) */
    ROUTE_BODY_FINISHRUN,    /* FinishRun contract */
    ROUTE_BODY_TASK_ACTION,  /* Solved, Manual, Error (+Async) */
    ROUTE_BODY_RETRY_ACTION, /* Retry (+Async) */
    ROUTE_BODY_RETURN        /* Return: an array of task actions, each with its action */
};

/* What the audit phase does with a request or its answer. */
enum route_audit {
    ROUTE_AUDIT_COUNT_ONLY,  /* counted, not recorded row by row */
    ROUTE_AUDIT_FINISHRUN,   /* recorded before forwarding, outcome after */
    ROUTE_AUDIT_TASK_ACTION, /* likewise, per task */
    ROUTE_AUDIT_LEARN_RUN,   /* answer carries runId (StartOrGetRun, StartRun) */
    ROUTE_AUDIT_LEARN_TASKS  /* answer carries task ids (TakeNext, TakeMany, Create*) */
};

/* Methods as bits (method names are case-sensitive). */
enum {
    ROUTE_GET = 1u << 0,
    ROUTE_POST = 1u << 1,
    ROUTE_HEAD = 1u << 2,
    ROUTE_PUT = 1u << 3,
    ROUTE_DELETE = 1u << 4,
    ROUTE_OPTIONS = 1u << 5,
    ROUTE_PATCH = 1u << 6,
    ROUTE_OTHER = 1u << 7, /* any other method llhttp accepts */
};

/* The bit of METHOD ("GET", ...), ROUTE_OTHER for the rest. */
unsigned router_method_bit(const char *method);

struct route {
    const char *name;  /* "FinishRun", "Token", "api.other" */
    const char *path;  /* "/api/FinishRun", without trailing slash */
    unsigned methods;  /* allowed methods (ROUTE_* bits) */
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
 * Match METHOD (a ROUTE_* bit) and PATH (canonical, from router_canonical_path; a
 * query, if still present, is ignored). Fills *M and returns 0; returns -1 when nothing
 * matches (404). Unknown paths under /api/ match the pass-through row "api.other".
 */
int router_match(unsigned method, const char *path, struct route_match *m);

/* Every route, the table's rows and then "api.other", has an index below ROUTER_MAX_ROUTES
 * (for per-endpoint counters); router_by_index is its inverse (NULL past the end). */
#define ROUTER_MAX_ROUTES 32
size_t router_index(const struct route *r);
const struct route *router_by_index(size_t i);

/* The row named NAME (case-insensitive), or NULL. */
const struct route *router_find(const char *name);

/*
 * Canonicalise the path of the request target TARGET the way Anymate's server (ASP.NET Core
 * on Kestrel) reads it before routing, so that no spelling of an endpoint escapes the rules
 * of that endpoint: percent-escapes are decoded, except %2F which stays encoded (Kestrel keeps
 * it, so it never separates segments). Spellings that no SDK sends and that servers disagree
 * on are refused instead of interpreted (returns -1 with a static reason in *WHY):
 *   - a malformed percent-escape, a decoded NUL or control character, invalid UTF-8;
 *   - "." or ".." segments (also as %2E), empty segments ("//"), a backslash (IIS reads it as
 *     a slash), a fragment;
 *   - any non-ASCII character in the first two segments (e.g. "/api/F%C4%B1nishRun": .NET's
 *     ignore-case comparison maps dotless i to I, so Anymate could route it to FinishRun).
 * On success writes the decoded path (without the query) into OUT (OUTLEN bytes, at least
 * strlen(TARGET) + 1) and returns 0. The target forwarded upstream is never rewritten.
 */
int router_canonical_path(const char *target, char *out, size_t outlen, const char **why);

/* The table, for documentation and tests. */
const struct route *router_table(size_t *count);

#endif
