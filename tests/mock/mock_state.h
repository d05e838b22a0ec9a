/*
 * The Anymate model behind the mock server: processes and their KPI settings, runs, the task
 * queue of each process and the KPI ledger (anymate-api.md §2-4, design.md §6). Pure: no I/O,
 * no logging, no HTTP; the HTTP layer (mock_http.c) routes a request to an endpoint row, parses
 * its body and calls mock_state_call. Time comes from the caller.
 */
#ifndef ANYMATE_MOCK_STATE_H
#define ANYMATE_MOCK_STATE_H

#include <stdbool.h>
#include <stddef.h>
#include <time.h>

#include <jansson.h>

enum mock_op {
    MOCK_OP_OK_TO_RUN,
    MOCK_OP_START_OR_GET_RUN,
    MOCK_OP_START_RUN,
    MOCK_OP_FINISH_RUN,
    MOCK_OP_FAILURE,
    MOCK_OP_GET_RULES,
    MOCK_OP_TAKE_NEXT,
    MOCK_OP_CREATE_TASK,
    MOCK_OP_CREATE_TASKS,
    MOCK_OP_CREATE_AND_TAKE_TASK,
    MOCK_OP_UPDATE_TASK,
    MOCK_OP_SOLVED,
    MOCK_OP_MANUAL,
    MOCK_OP_RETRY,
    MOCK_OP_ERROR,
    MOCK_OP_TAKE_MANY,
    MOCK_OP_SOLVED_ASYNC,
    MOCK_OP_MANUAL_ASYNC,
    MOCK_OP_RETRY_ASYNC,
    MOCK_OP_ERROR_ASYNC,
    MOCK_OP_RETURN,
};

/* What the request body of an endpoint must be; GET endpoints ignore any body. */
enum mock_body {
    MOCK_BODY_NONE,
    MOCK_BODY_OBJECT,
    MOCK_BODY_ARRAY,
};

/* One row per Anymate API endpoint (anymate-api.md §2.3, rows 1-20). */
struct mock_endpoint {
    const char *name; /* path segment after /api/, spelled as the SDKs do */
    bool post;        /* POST, else GET */
    bool has_key;     /* the path is /api/{name}/{processKey} */
    enum mock_body body;
    enum mock_op op;
};

extern const struct mock_endpoint mock_endpoints[];
extern const size_t mock_endpoint_count;

struct mock_state;

/* An empty model with the built-in default process settings, or NULL when out of memory. */
struct mock_state *mock_state_new(void);
void mock_state_free(struct mock_state *st);

/* Merges process settings: spec is {"PK": {"tasksEnabled": bool, "secondsPerRun": int,
 * "secondsPerTask": int, "advancedMode": bool, "defaultEntries": int, "secondsPerEntry": int,
 * "gateOpen": bool, "notBlockedDate": bool, "rules": object}, ...}; every key optional; the
 * key "*" changes the defaults of processes created later. All or nothing: returns -1 with a
 * message in err (and changes nothing) on an unknown key, a wrong type or a negative number. */
int mock_state_configure(struct mock_state *st, const json_t *spec, char *err, size_t errlen);

/* Runs endpoint ep. key is the decoded {processKey} (NULL for endpoints without one); body is
 * the parsed request body (borrowed; of the kind ep->body says, NULL for GET). Sets *status
 * (200, or 400 for a body of the right JSON kind whose fields have wrong types) and returns the
 * response body, a new reference; NULL only when out of memory. */
/* The X-Request-Id of the request the next mock_state_call serves (NULL: none); the ledger's
 * rows carry it as "requestId" (and "item", the index of a Return item), so tests can match
 * each row to the request that caused it. */
void mock_state_set_request_id(struct mock_state *st, const char *id);

json_t *mock_state_call(struct mock_state *st, const struct mock_endpoint *ep, const char *key,
                        json_t *body, time_t now, int *status);

/* The KPI ledger: an array the state owns (borrowed reference). Each row: {"seq", "kind": "run" |
 * "task", "id", "processKey", "action", "endpoint", "runId", "entries": n | null, "secondsSaved",
 * "overwriteEntries", "overwriteSecondsSaved", "perTask", "requestId", "item"}; the rules are in
 * mock_state.c. */
json_t *mock_state_ledger(const struct mock_state *st);
void mock_state_clear_ledger(struct mock_state *st);

/* Snapshot of defaults, processes, runs and queues for /_mock/processes. New reference. */
json_t *mock_state_dump(const struct mock_state *st);

#endif
