/*
 * payload: strict validation of the JSON bodies the gateway interprets (FinishRun and the task
 * actions Solved/Manual/Error/Retry and their Async variants), before anything is audited or
 * forwarded.
 *
 * Pure module: no I/O, no logging, no global state, never exits; safe to call from any thread.
 * Bytes in; either a parsed result or an error code, HTTP status and message out. The caller
 * forwards the original bytes unchanged when validation passes; this module never rewrites a
 * body.
 *
 * Why so strict: the gateway and Anymate (ASP.NET, case-insensitive binding, last duplicate
 * wins) must read the same body the same way. Anything two parsers could read differently
 * (duplicate keys, also differing only in ASCII case; lone surrogates; keys that .NET may bind
 * to a field through Unicode case mapping; serializer metadata keys; numbers that are not plain
 * integer literals) is refused instead of guessed at.
 *
 * The JSON layer is a hand-written iterative RFC 8259 scanner (explicit stack, no recursion), not
 * jansson: the rules need the raw text of number literals (jansson turns 1e3 into a real and
 * refuses integers beyond int64 outright), ASCII-case-insensitive duplicate detection, a
 * configurable depth bound and byte offsets for errors. jansson serves as the test oracle (unit
 * tests and the fuzz target compare the two parsers).
 *
 * Error codes (stable; `code` is a static string, `status` the HTTP status to answer with):
 *
 * | code                            | status | meaning                                           |
 * |---------------------------------|--------|---------------------------------------------------|
 * | json.empty                      | 400    | body empty or only whitespace                     |
 * | json.bom                        | 400    | body starts with a UTF-8 byte order mark          |
 * | json.invalid_utf8               | 400    | bytes that are not well-formed UTF-8 (overlong    |
 * |                                 |        | forms, UTF-8 encoded surrogates, > U+10FFFF,      |
 * |                                 |        | truncated or stray bytes)                         |
 * | json.syntax                     | 400    | not RFC 8259 JSON (bad number, bad escape, control|
 * |                                 |        | character in a string, NaN/Infinity, trailing     |
 * |                                 |        | comma, comment, ...); the message has the byte    |
 * |                                 |        | offset                                            |
 * | json.lone_surrogate             | 400    | a \uD800-\uDFFF escape that is not half of a      |
 * |                                 |        | high+low surrogate pair                           |
 * | json.trailing_data              | 400    | anything but whitespace after the top-level value |
 * | json.too_deep                   | 400    | arrays/objects nested deeper than max_depth (64)  |
 * | json.duplicate_key              | 400    | two keys of one object (at any level) are equal   |
 * |                                 |        | after unescaping, ignoring ASCII case             |
 * | json.not_object                 | 400    | the top-level value is not an object              |
 * | json.metadata_key               | 400    | a top-level key starts with '$' ($type, $id, ...) |
 * | json.confusable_key             | 400    | a top-level key is not a known field but becomes  |
 * |                                 |        | one under Unicode case mapping (U+0130, U+0131,   |
 * |                                 |        | U+017F, U+212A Kelvin sign, U+00DF, ...)          |
 * | finishrun.runid_missing         | 422    | FinishRun without runId, or runId null            |
 * | finishrun.runid_not_integer     | 422    | runId not an integer literal (1.0, 1e3, "1",      |
 * |                                 |        | true, ...)                                        |
 * | finishrun.runid_out_of_range    | 422    | runId outside 1..9223372036854775807              |
 * | task.taskid_missing             | 422    | task action without taskId, or taskId null        |
 * | task.taskid_not_integer         | 422    | taskId not an integer literal                     |
 * | task.taskid_out_of_range        | 422    | taskId outside 1..9223372036854775807             |
 * | kpi.seconds_not_integer         | 422    | overwriteSecondsSaved neither null nor an integer |
 * |                                 |        | literal                                           |
 * | kpi.seconds_out_of_range        | 422    | overwriteSecondsSaved outside 0..2147483647       |
 * | kpi.entries_not_integer         | 422    | overwriteEntries neither null nor an integer      |
 * |                                 |        | literal                                           |
 * | kpi.entries_out_of_range        | 422    | overwriteEntries outside 0..2147483647            |
 * | task.reason_not_string          | 422    | reason neither a string nor null (task actions)   |
 * | task.comment_not_string         | 422    | comment neither a string nor null (task actions)  |
 * | task.activation_date_invalid    | 422    | Retry: activationDate neither null nor an         |
 * |                                 |        | ISO-8601 date or date-time string                 |
 * | task.action_missing             | 422    | Return item without action, or action null        |
 * | task.action_invalid             | 422    | Return item action not one of the strings Solved, |
 * |                                 |        | Manual, Retry, Error (ASCII case ignored)         |
 * | json.not_array                  | 400    | Return: the top-level value is not an array       |
 * | task.item_not_object            | 422    | Return: an array element is not an object         |
 * | task.too_many_items             | 422    | Return: more items than the gateway accepts       |
 * | internal.no_memory              | 503    | out of memory while validating (retryable)        |
 * | internal.bad_argument           | 500    | caller bug: NULL body with len > 0, unknown kind  |
 *
 * Order of checks (the first failure is reported): empty, BOM, then the JSON layer in body order
 * (invalid_utf8, syntax, lone_surrogate, too_deep; duplicate_key when an object closes),
 * trailing_data, not_object; then top-level keys in body order (metadata_key, confusable_key);
 * then the fields: id, overwriteSecondsSaved, overwriteEntries, reason, comment, activationDate.
 */
#ifndef GW_PAYLOAD_H
#define GW_PAYLOAD_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Which body contract applies; the endpoint table maps endpoints to kinds. */
enum payload_kind {
    PAYLOAD_FINISHRUN,         /* FinishRun: runId, errors "finishrun.*" */
    PAYLOAD_TASK_ACTION,       /* Solved, Manual, Error (+Async): taskId, errors "task.*" */
    PAYLOAD_RETRY_TASK_ACTION, /* Retry, RetryAsync: TASK_ACTION + activationDate */
    PAYLOAD_RETURN_ITEM,       /* one item of Return: RETRY_TASK_ACTION + action */
};

/* A Return item's action. */
enum payload_action {
    PAYLOAD_ACTION_NONE,
    PAYLOAD_ACTION_SOLVED,
    PAYLOAD_ACTION_MANUAL,
    PAYLOAD_ACTION_RETRY,
    PAYLOAD_ACTION_ERROR
};

#define PAYLOAD_DEFAULT_MAX_DEPTH 64
/* Upper bound for payload_options.max_depth (the explicit parse stack lives on the C stack). */
#define PAYLOAD_DEPTH_LIMIT 1024

struct payload_options {
    /* Accept ids sent as strings of an integer literal ("runId":"123"), for home-grown bots.
     * Off by default. Applies to runId/taskId only, never to the KPI overrides. */
    bool numeric_string_ids;
    /* Maximum nesting of arrays/objects; the top-level object counts as 1. 0 means
     * PAYLOAD_DEFAULT_MAX_DEPTH; values above PAYLOAD_DEPTH_LIMIT are clamped to it. */
    size_t max_depth;
};

/* Whether an optional field was absent, explicitly null, or carried a value. */
enum payload_presence { PAYLOAD_ABSENT = 0, PAYLOAD_NULL, PAYLOAD_VALUE };

/* Longest activationDate accepted, e.g. "2030-01-01T00:00:00.1234567+00:00" is 33. */
#define PAYLOAD_DATE_MAX 39

struct payload_result {
    int64_t id;          /* runId (FinishRun) or taskId: 1 .. INT64_MAX */
    bool id_from_string; /* the id came as a numeric string (numeric_string_ids only) */
    enum payload_presence seconds_state; /* overwriteSecondsSaved */
    int32_t seconds;                     /* 0 .. INT32_MAX when seconds_state == PAYLOAD_VALUE */
    enum payload_presence entries_state; /* overwriteEntries */
    int32_t entries;                     /* 0 .. INT32_MAX when entries_state == PAYLOAD_VALUE */
    /* Task actions only (ABSENT for FinishRun, where these keys are not interpreted): */
    enum payload_presence reason_state;
    enum payload_presence comment_state;
    /* Retry only: activationDate, unescaped and NUL-terminated when PAYLOAD_VALUE. */
    enum payload_presence activation_date_state;
    char activation_date[PAYLOAD_DATE_MAX + 1];
    /* Return items only: */
    enum payload_action action;
};

/* "Solved", "Manual", "Retry", "Error", or NULL for PAYLOAD_ACTION_NONE. Static. */
const char *payload_action_name(enum payload_action a);

struct payload_error {
    const char *code; /* static, stable string from the table above; NULL on success */
    int status;       /* 400, 422, 500 or 503; 0 on success */
    size_t offset;    /* byte offset in the body the error refers to, or SIZE_MAX */
    /* Human-readable, NUL-terminated, valid UTF-8, no control characters; names the field as the
     * body spelled it and what was wrong. Still escape it when embedding it in JSON. */
    char message[256];
};

/*
 * Validate BODY (LEN bytes, need not be NUL-terminated, may contain NUL bytes) as the request
 * body of an endpoint of KIND.
 *
 * Accepts: strict RFC 8259 JSON in UTF-8 whose top-level value is an object, nested at most
 * max_depth deep, with no two keys of one object equal ignoring ASCII case, whose fields
 * (matched ASCII-case-insensitively after unescaping) obey the contract of KIND: the id
 * (runId / taskId) an integer literal in 1..2^63-1; overwriteSecondsSaved and overwriteEntries
 * absent, null or an integer literal in 0..2^31-1; for task actions reason and comment absent,
 * null or a string; for Retry activationDate absent, null or an ISO-8601 date
 * (YYYY-MM-DD) or date-time (YYYY-MM-DDTHH:MM[:SS[.f{1,7}]] with an optional Z or +HH:MM
 * offset). Other keys are tolerated (they are forwarded unchanged) unless they start with '$'
 * or equal a known field of KIND only under Unicode case mapping.
 *
 * OPTS may be NULL (defaults). RESULT may be NULL when only the verdict is wanted; it is zeroed
 * first and filled only on success. ERR must not be NULL; it is cleared on success.
 * Returns 0 when the body is valid, -1 otherwise (ERR says why). Takes no ownership; keeps no
 * pointer into BODY after returning.
 */
int payload_validate(enum payload_kind kind, const char *body, size_t len,
                     const struct payload_options *opts, struct payload_result *result,
                     struct payload_error *err);

/*
 * Validate the body of POST /api/Return: a JSON array (strict JSON as above, duplicate keys
 * refused at every level) whose every element is a Return item (PAYLOAD_RETURN_ITEM: a Retry
 * task action plus "action"). On success *ITEMS is a malloc'd array of *NITEMS results, in array
 * order (NULL for an empty array); the caller frees it. An invalid item refuses the whole body:
 * ERR's message starts with "item N: " and its offset is into BODY. At most MAX_ITEMS items.
 */
int payload_validate_return(const char *body, size_t len, const struct payload_options *opts,
                            size_t max_items, struct payload_result **items, size_t *nitems,
                            struct payload_error *err);

/* Flags for payload_json_check. */
#define PAYLOAD_JSON_REJECT_DUPLICATES 0x1u /* json.duplicate_key, at every level */

/*
 * The JSON layer alone: check that TEXT (LEN bytes) is one strict RFC 8259 JSON value of any
 * type (object, array, string, number, true, false, null), in UTF-8 without BOM, with nothing
 * but whitespace around it and nesting at most MAX_DEPTH (0 means PAYLOAD_DEFAULT_MAX_DEPTH,
 * clamped to PAYLOAD_DEPTH_LIMIT). \u0000 escapes and numbers of any size are valid JSON and
 * accepted. Duplicate keys are refused only with PAYLOAD_JSON_REJECT_DUPLICATES.
 * Returns 0 if valid, -1 with ERR filled (json.* codes, or internal.*) otherwise.
 */
int payload_json_check(const char *text, size_t len, size_t max_depth, unsigned flags,
                       struct payload_error *err);

#endif
