/*
 * test_payload: unit tests for gateway/payload.c, the strict validator of FinishRun and
 * task-action bodies.
 *
 * Table driven: every row of the tables below is its own cmocka test. Bodies are written with '
 * where JSON has " (swapped before the call) unless the row sets .raw, and every body is copied
 * into a heap buffer of exactly its length, without a terminating NUL, so that AddressSanitizer
 * catches any read past the end. Then tests that need generated bodies (depth, many keys), the
 * API edge cases, the JSONTestSuite conformance run (skipped when the suite is absent) with
 * jansson as a second opinion, and a last test that every error code of payload.h was produced.
 *
 * Run from the repository root: JSONTestSuite is looked for in $JSONTESTSUITE, default
 * ../shared/jsontestsuite/test_parsing.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <dirent.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "payload.h"

#define FR PAYLOAD_FINISHRUN
#define TA PAYLOAD_TASK_ACTION
#define RT PAYLOAD_RETRY_TASK_ACTION
#define ABS PAYLOAD_ABSENT
#define NUL_ PAYLOAD_NULL
#define VAL PAYLOAD_VALUE

/* Every code payload.h documents; the last test checks each was produced by some row. */
static const char *const all_codes[] = {
    "json.empty",
    "json.bom",
    "json.invalid_utf8",
    "json.syntax",
    "json.lone_surrogate",
    "json.trailing_data",
    "json.too_deep",
    "json.duplicate_key",
    "json.not_object",
    "json.metadata_key",
    "json.confusable_key",
    "finishrun.runid_missing",
    "finishrun.runid_not_integer",
    "finishrun.runid_out_of_range",
    "task.taskid_missing",
    "task.taskid_not_integer",
    "task.taskid_out_of_range",
    "kpi.seconds_not_integer",
    "kpi.seconds_out_of_range",
    "kpi.entries_not_integer",
    "kpi.entries_out_of_range",
    "task.reason_not_string",
    "task.comment_not_string",
    "task.activation_date_invalid",
    "task.action_missing",
    "task.action_invalid",
    "json.not_array",
    "task.item_not_object",
    "task.too_many_items",
    "internal.no_memory", /* not produced: would need allocation fault injection */
    "internal.bad_argument",
};
#define NCODES (sizeof all_codes / sizeof all_codes[0])
static bool code_seen[NCODES];

static void note_code(const char *code)
{
    for (size_t i = 0; i < NCODES; i++)
        if (strcmp(all_codes[i], code) == 0) {
            code_seen[i] = true;
            return;
        }
    fail_msg("error code \"%s\" is not in the list of documented codes", code);
}

/* A copy of BODY of exactly LEN bytes on the heap, with ' turned into " unless RAW. */
static char *body_copy(const char *body, size_t len, bool raw)
{
    char *b = malloc(len ? len : 1);
    assert_non_null(b);
    memcpy(b, body, len);
    if (!raw)
        for (size_t i = 0; i < len; i++)
            if (b[i] == '\'')
                b[i] = '"';
    return b;
}

static bool valid_utf8_no_ctl(const char *s)
{
    const unsigned char *p = (const unsigned char *)s;
    while (*p) {
        if (*p < 0x20 || *p == 0x7F)
            return false;
        if (*p < 0x80) {
            p++;
            continue;
        }
        size_t k = *p >= 0xF0 ? 4 : *p >= 0xE0 ? 3 : *p >= 0xC2 ? 2 : 0;
        if (!k)
            return false;
        for (size_t i = 1; i < k; i++)
            if ((p[i] & 0xC0) != 0x80)
                return false;
        p += k;
    }
    return true;
}

/* Properties every refusal has, whatever the input. */
static void check_error_shape(int rc, const struct payload_error *e)
{
    assert_int_equal(rc, -1);
    assert_non_null(e->code);
    note_code(e->code);
    assert_non_null(memchr(e->message, '\0', sizeof e->message));
    assert_true(strlen(e->message) > 0);
    assert_true(valid_utf8_no_ctl(e->message));
    if (strncmp(e->code, "json.", 5) == 0)
        assert_int_equal(e->status, 400);
    else if (strncmp(e->code, "internal.", 9) == 0)
        assert_true(e->status == 500 || e->status == 503);
    else
        assert_int_equal(e->status, 422);
}

/* ------------------------------------------------------------------------------------------ */
/* payload_validate rows                                                                      */

struct pcase {
    const char *name;
    enum payload_kind kind;
    const char *body;
    size_t len;
    bool raw;         /* body has a real ' */
    const char *code; /* expected refusal, NULL when the body must pass */
    int64_t id;       /* on success */
    bool numeric;     /* numeric_string_ids */
    size_t depth;     /* max_depth, 0 = default */
    bool kpi;         /* check the override fields */
    enum payload_presence sec_state, ent_state;
    int32_t sec, ent;
    bool text; /* check reason / comment / activationDate */
    enum payload_presence reason_state, comment_state, date_state;
    const char *date;    /* activation_date when date_state == VAL */
    const char *msg;     /* exact message */
    const char *msg_has; /* substring of the message */
    size_t offset;       /* expected error offset + 1 (0 = not checked) */
};

#define P(nm, k, b, ...)                                                                           \
    {                                                                                              \
        .name = nm, .kind = k, .body = b, .len = sizeof(b) - 1, __VA_ARGS__                        \
    }

/* Number-range rows for the id, shared by runId and taskId. */
#define RANGE_MAX "9223372036854775807"

static const struct pcase pcases[] = {
    /* --- the bodies the SDKs send (anymate-api.md section 2.4 and 6) --- */
    P("sdk python FinishRun", FR,
      "{'runId': 501, 'overwriteSecondsSaved': null, 'overwriteEntries': 5}", .id = 501,
      .kpi = true, .sec_state = NUL_, .ent_state = VAL, .ent = 5),
    P("sdk python FinishRun runId only", FR, "{'runId': 501}", .id = 501, .kpi = true,
      .sec_state = ABS, .ent_state = ABS),
    P("sdk dotnet FinishRun PascalCase nulls", FR,
      "{'RunId':501,'OverwriteSecondsSaved':null,'OverwriteEntries':null}", .id = 501, .kpi = true,
      .sec_state = NUL_, .ent_state = NUL_),
    P("sdk dotnet Solved PascalCase nulls", TA,
      "{'TaskId':7,'Reason':null,'Comment':'','OverwriteSecondsSaved':null,'OverwriteEntries':"
      "null}",
      .id = 7, .kpi = true, .sec_state = NUL_, .ent_state = NUL_, .text = true,
      .reason_state = NUL_, .comment_state = VAL, .date_state = ABS),
    P("sdk dotnet Retry PascalCase nulls", RT,
      "{'TaskId':7,'Reason':null,'Comment':'','OverwriteSecondsSaved':null,'OverwriteEntries':"
      "null}",
      .id = 7, .text = true, .reason_state = NUL_, .comment_state = VAL, .date_state = ABS),
    P("sdk dotnet template Solved extras", TA,
      "{'TaskId':7,'Reason':'Solved by bot','Comment':null,'OverwriteSecondsSaved':120,"
      "'OverwriteEntries':3,'AnymateEndpoint': 3, 'ActivationDate': null}",
      .id = 7, .kpi = true, .sec_state = VAL, .sec = 120, .ent_state = VAL, .ent = 3, .text = true,
      .reason_state = VAL, .comment_state = NUL_, .date_state = ABS),
    P("sdk dotnet template Retry with offset", RT,
      "{'TaskId':7,'Reason':'later','Comment':null,'OverwriteSecondsSaved':null,"
      "'OverwriteEntries':null,'AnymateEndpoint':4,'ActivationDate':'2030-01-01T00:00:00+00:00'}",
      .id = 7, .text = true, .reason_state = VAL, .comment_state = NUL_, .date_state = VAL,
      .date = "2030-01-01T00:00:00+00:00"),
    P("sdk uipath Retry ToString(s)", RT,
      "{'TaskId':7,'Reason':'r','Comment':'c','OverwriteSecondsSaved':null,'OverwriteEntries':null,"
      "'ActivationDate':'2030-01-01T00:00:00'}",
      .id = 7, .text = true, .reason_state = VAL, .comment_state = VAL, .date_state = VAL,
      .date = "2030-01-01T00:00:00"),
    P("sdk python solved", TA,
      "{'taskId': 7, 'reason': 'done', 'comment': 'ok', 'overwriteSecondsSaved': 60, "
      "'overwriteEntries': 2}",
      .id = 7, .kpi = true, .sec_state = VAL, .sec = 60, .ent_state = VAL, .ent = 2),
    P("sdk python retry date only", RT, "{'taskId': 7, 'activationDate': '2021-01-01'}", .id = 7,
      .text = true, .reason_state = ABS, .comment_state = ABS, .date_state = VAL,
      .date = "2021-01-01"),
    P("template ActivationDate not checked on Solved", TA,
      "{'TaskId':7,'ActivationDate':'whenever','AnymateEndpoint':'x'}", .id = 7),
    P("unknown keys of any shape are tolerated", FR,
      "{'runId':1,'foo':{'bar':[1,2,{'baz':null}],'n':-1.5e-300},'AnymateEndpoint':3,"
      "'big':123456789012345678901234567890,'huge':1e400}",
      .id = 1),
    P("unknown key with NUL escape tolerated", FR, "{'runId':1,'a\\u0000b':1}", .id = 1),
    P("whitespace everywhere", FR, " \t\r\n{ \t\r\n'runId' \n: \r42 \t} \r\n\t", .id = 42),
    P("reason and comment not interpreted for FinishRun", FR, "{'runId':1,'reason':5,'comment':{}}",
      .id = 1),
    P("escaped field name matches", FR, "{'\\u0072unId':3}", .id = 3),
    P("field name matched ignoring ASCII case", TA,
      "{'TASKID':9,'ovErWrItEeNtRiEs':4,'REASON':null}", .id = 9, .kpi = true, .sec_state = ABS,
      .ent_state = VAL, .ent = 4),

    /* --- runId --- */
    P("runId 1", FR, "{'runId':1}", .id = 1),
    P("runId max", FR, "{'runId':" RANGE_MAX "}", .id = INT64_MAX),
    P("runId 0", FR, "{'runId':0}", .code = "finishrun.runid_out_of_range",
      .msg = "runId must be a JSON integer from 1 to 9223372036854775807, got 0"),
    P("runId -1", FR, "{'runId':-1}", .code = "finishrun.runid_out_of_range"),
    P("runId -0", FR, "{'runId':-0}", .code = "finishrun.runid_out_of_range"),
    P("runId max+1", FR, "{'runId':9223372036854775808}", .code = "finishrun.runid_out_of_range"),
    P("runId 2^64", FR, "{'runId':18446744073709551616}", .code = "finishrun.runid_out_of_range"),
    P("runId 40 digits", FR, "{'runId':1234567890123456789012345678901234567890}",
      .code = "finishrun.runid_out_of_range"),
    P("runId int64 min", FR, "{'runId':-9223372036854775808}",
      .code = "finishrun.runid_out_of_range"),
    P("runId 1.0", FR, "{'runId':1.0}", .code = "finishrun.runid_not_integer",
      .msg = "runId must be a JSON integer from 1 to 9223372036854775807, got 1.0", .offset = 10),
    P("RunId 1.0 named as spelled", FR, "{'RunId':1.0}", .code = "finishrun.runid_not_integer",
      .msg = "RunId must be a JSON integer from 1 to 9223372036854775807, got 1.0"),
    P("runId 1e3", FR, "{'runId':1e3}", .code = "finishrun.runid_not_integer"),
    P("runId 1E+3", FR, "{'runId':1E+3}", .code = "finishrun.runid_not_integer"),
    P("runId 10e0", FR, "{'runId':10e0}", .code = "finishrun.runid_not_integer"),
    P("runId 1.5", FR, "{'runId':1.5}", .code = "finishrun.runid_not_integer"),
    P("runId string refused by default", FR, "{'runId':'1'}", .code = "finishrun.runid_not_integer",
      .msg_has = "numeric strings are not accepted"),
    P("runId true", FR, "{'runId':true}", .code = "finishrun.runid_not_integer",
      .msg_has = "got true"),
    P("runId false", FR, "{'runId':false}", .code = "finishrun.runid_not_integer"),
    P("runId array", FR, "{'runId':[1]}", .code = "finishrun.runid_not_integer",
      .msg_has = "got an array"),
    P("runId object", FR, "{'runId':{}}", .code = "finishrun.runid_not_integer",
      .msg_has = "got an object"),
    P("runId null", FR, "{'runId':null}", .code = "finishrun.runid_missing",
      .msg = "runId is required, got null"),
    P("runId absent", FR, "{'overwriteEntries':1}", .code = "finishrun.runid_missing",
      .msg = "runId is required"),
    P("runId absent, taskId given", FR, "{'taskId':1}", .code = "finishrun.runid_missing"),
    P("empty object", FR, "{}", .code = "finishrun.runid_missing"),

    /* --- numeric-string mode --- */
    P("numeric on: '1'", FR, "{'runId':'1'}", .numeric = true, .id = 1),
    P("numeric on: max", FR, "{'runId':'" RANGE_MAX "'}", .numeric = true, .id = INT64_MAX),
    P("numeric on: escaped digits", FR, "{'runId':'\\u0031\\u0032'}", .numeric = true, .id = 12),
    P("numeric on: number still fine", FR, "{'runId':42}", .numeric = true, .id = 42),
    P("numeric on: max+1", FR, "{'runId':'9223372036854775808'}", .numeric = true,
      .code = "finishrun.runid_out_of_range"),
    P("numeric on: '0'", FR, "{'runId':'0'}", .numeric = true,
      .code = "finishrun.runid_out_of_range"),
    P("numeric on: '-1'", FR, "{'runId':'-1'}", .numeric = true,
      .code = "finishrun.runid_out_of_range"),
    P("numeric on: '01'", FR, "{'runId':'01'}", .numeric = true,
      .code = "finishrun.runid_not_integer"),
    P("numeric on: ''", FR, "{'runId':''}", .numeric = true, .code = "finishrun.runid_not_integer"),
    P("numeric on: ' 1'", FR, "{'runId':' 1'}", .numeric = true,
      .code = "finishrun.runid_not_integer"),
    P("numeric on: '1 '", FR, "{'runId':'1 '}", .numeric = true,
      .code = "finishrun.runid_not_integer"),
    P("numeric on: '+1'", FR, "{'runId':'+1'}", .numeric = true,
      .code = "finishrun.runid_not_integer"),
    P("numeric on: '1.0'", FR, "{'runId':'1.0'}", .numeric = true,
      .code = "finishrun.runid_not_integer"),
    P("numeric on: '1e3'", FR, "{'runId':'1e3'}", .numeric = true,
      .code = "finishrun.runid_not_integer"),
    P("numeric on: '12a'", FR, "{'runId':'12a'}", .numeric = true,
      .code = "finishrun.runid_not_integer"),
    P("numeric on: overrides stay numbers", FR, "{'runId':'1','overwriteEntries':'5'}",
      .numeric = true, .code = "kpi.entries_not_integer"),
    P("numeric on: taskId '7'", TA, "{'taskId':'7'}", .numeric = true, .id = 7),

    /* --- taskId --- */
    P("taskId 7", TA, "{'taskId':7}", .id = 7),
    P("taskId max", RT, "{'taskId':" RANGE_MAX "}", .id = INT64_MAX),
    P("taskId 0", TA, "{'taskId':0}", .code = "task.taskid_out_of_range"),
    P("taskId -1", RT, "{'taskId':-1}", .code = "task.taskid_out_of_range"),
    P("taskId max+1", TA, "{'taskId':9223372036854775808}", .code = "task.taskid_out_of_range"),
    P("taskId 1.0", TA, "{'taskId':1.0}", .code = "task.taskid_not_integer",
      .msg = "taskId must be a JSON integer from 1 to 9223372036854775807, got 1.0"),
    P("taskId '7' refused by default", TA, "{'taskId':'7'}", .code = "task.taskid_not_integer"),
    P("taskId null", TA, "{'taskId':null}", .code = "task.taskid_missing"),
    P("taskId absent", TA, "{'reason':'x'}", .code = "task.taskid_missing",
      .msg = "taskId is required"),
    P("taskId absent on Retry, runId given", RT, "{'runId':5}", .code = "task.taskid_missing"),

    /* --- overwriteSecondsSaved / overwriteEntries --- */
    P("seconds 0", FR, "{'runId':1,'overwriteSecondsSaved':0}", .id = 1, .kpi = true,
      .sec_state = VAL, .sec = 0, .ent_state = ABS),
    P("seconds max", FR, "{'runId':1,'overwriteSecondsSaved':2147483647}", .id = 1, .kpi = true,
      .sec_state = VAL, .sec = INT32_MAX, .ent_state = ABS),
    P("seconds -0 is 0", FR, "{'runId':1,'overwriteSecondsSaved':-0}", .id = 1, .kpi = true,
      .sec_state = VAL, .sec = 0, .ent_state = ABS),
    P("seconds max+1", FR, "{'runId':1,'overwriteSecondsSaved':2147483648}",
      .code = "kpi.seconds_out_of_range"),
    P("seconds -1", TA, "{'taskId':1,'overwriteSecondsSaved':-1}",
      .code = "kpi.seconds_out_of_range"),
    P("seconds 20 digits", FR, "{'runId':1,'overwriteSecondsSaved':99999999999999999999}",
      .code = "kpi.seconds_out_of_range"),
    P("seconds 1.5", FR, "{'runId':1,'overwriteSecondsSaved':1.5}",
      .code = "kpi.seconds_not_integer"),
    P("seconds 1.0", RT, "{'taskId':1,'overwriteSecondsSaved':1.0}",
      .code = "kpi.seconds_not_integer"),
    P("seconds 1e2", FR, "{'runId':1,'overwriteSecondsSaved':1e2}",
      .code = "kpi.seconds_not_integer"),
    P("seconds string", FR, "{'runId':1,'overwriteSecondsSaved':'5'}",
      .code = "kpi.seconds_not_integer"),
    P("seconds true", FR, "{'runId':1,'overwriteSecondsSaved':true}",
      .code = "kpi.seconds_not_integer"),
    P("seconds object", FR, "{'runId':1,'overwriteSecondsSaved':{}}",
      .code = "kpi.seconds_not_integer"),
    P("entries 0", TA, "{'taskId':1,'overwriteEntries':0}", .id = 1, .kpi = true, .sec_state = ABS,
      .ent_state = VAL, .ent = 0),
    P("entries max", FR, "{'runId':1,'overwriteEntries':2147483647}", .id = 1, .kpi = true,
      .sec_state = ABS, .ent_state = VAL, .ent = INT32_MAX),
    P("entries max+1", FR, "{'runId':1,'overwriteEntries':2147483648}",
      .code = "kpi.entries_out_of_range"),
    P("entries -1", FR, "{'runId':1,'overwriteEntries':-1}", .code = "kpi.entries_out_of_range"),
    P("entries 1.5", FR, "{'runId':1,'overwriteEntries':1.5}", .code = "kpi.entries_not_integer",
      .msg = "overwriteEntries must be null or a JSON integer from 0 to 2147483647, got 1.5"),
    P("entries 3e0", TA, "{'taskId':1,'overwriteEntries':3e0}", .code = "kpi.entries_not_integer"),
    P("entries string", FR, "{'runId':1,'overwriteEntries':'3'}",
      .code = "kpi.entries_not_integer"),
    P("entries array", FR, "{'runId':1,'overwriteEntries':[3]}", .code = "kpi.entries_not_integer"),
    P("seconds checked before entries", FR,
      "{'runId':1,'overwriteEntries':1.5,'overwriteSecondsSaved':-1}",
      .code = "kpi.seconds_out_of_range"),
    P("id checked before overrides", FR, "{'overwriteSecondsSaved':-1,'runId':0}",
      .code = "finishrun.runid_out_of_range"),

    /* --- reason / comment (task actions) --- */
    P("reason string", TA, "{'taskId':1,'reason':'x','comment':null}", .id = 1, .text = true,
      .reason_state = VAL, .comment_state = NUL_, .date_state = ABS),
    P("reason number", TA, "{'taskId':1,'reason':5}", .code = "task.reason_not_string",
      .msg = "reason must be a string or null, got 5"),
    P("Reason object", RT, "{'taskId':1,'Reason':{}}", .code = "task.reason_not_string",
      .msg = "Reason must be a string or null, got an object"),
    P("reason true", TA, "{'taskId':1,'reason':true}", .code = "task.reason_not_string"),
    P("comment number", TA, "{'taskId':1,'comment':0}", .code = "task.comment_not_string"),
    P("comment array", RT, "{'taskId':1,'comment':['a']}", .code = "task.comment_not_string"),

/* --- activationDate (Retry) --- */
#define DATE_OK(nm, d)                                                                             \
    P("date ok " nm, RT, "{'taskId':1,'activationDate':'" d "'}", .id = 1, .text = true,           \
      .reason_state = ABS, .comment_state = ABS, .date_state = VAL, .date = d)
#define DATE_BAD(nm, d)                                                                            \
    P("date bad " nm, RT, "{'taskId':1,'activationDate':" d "}",                                   \
      .code = "task.activation_date_invalid")
    DATE_OK("date only", "2030-01-01"),
    DATE_OK("minutes", "2030-01-01T00:00"),
    DATE_OK("seconds", "2030-01-01T00:00:00"),
    DATE_OK("Z", "2030-01-01T00:00:00Z"),
    DATE_OK("millis Z", "2030-01-01T00:00:00.123Z"),
    DATE_OK("ticks offset", "2030-01-01T00:00:00.1234567+02:00"),
    DATE_OK("negative offset", "2030-12-31T23:59:59-05:00"),
    DATE_OK("offset 14:00", "2030-01-01T00:00:00+14:00"),
    DATE_OK("leap day 2028", "2028-02-29"),
    DATE_OK("leap day 2000", "2000-02-29T12:00:00"),
    DATE_OK("year 1", "0001-01-01"),
    P("date null", RT, "{'taskId':1,'activationDate':null}", .id = 1, .text = true,
      .reason_state = ABS, .comment_state = ABS, .date_state = NUL_),
    P("date escaped", RT, "{'taskId':1,'activationDate':'\\u0032030-01-01'}", .id = 1, .text = true,
      .reason_state = ABS, .comment_state = ABS, .date_state = VAL, .date = "2030-01-01"),
    DATE_BAD("month 13", "'2030-13-01'"),
    DATE_BAD("month 0", "'2030-00-10'"),
    DATE_BAD("day 0", "'2030-01-00'"),
    DATE_BAD("Feb 29 2030", "'2030-02-29'"),
    DATE_BAD("Feb 29 1900", "'1900-02-29'"),
    DATE_BAD("Apr 31", "'2030-04-31'"),
    DATE_BAD("year 0", "'0000-01-01'"),
    DATE_BAD("short fields", "'2030-1-1'"),
    DATE_BAD("two-digit year", "'30-01-01'"),
    DATE_BAD("slashes", "'2030/01/01'"),
    DATE_BAD("hour 24", "'2030-01-01T24:00:00'"),
    DATE_BAD("minute 60", "'2030-01-01T00:60'"),
    DATE_BAD("second 60", "'2030-01-01T00:00:60'"),
    DATE_BAD("hour only", "'2030-01-01T00'"),
    DATE_BAD("one-digit seconds", "'2030-01-01T00:00:5'"),
    DATE_BAD("letter in month", "'2030-0a-01'"),
    DATE_BAD("letter in hour", "'2030-01-01T0a:00'"),
    DATE_BAD("letter in offset", "'2030-01-01T00:00+0a:00'"),
    DATE_BAD("dangling T", "'2030-01-01T'"),
    DATE_BAD("empty fraction", "'2030-01-01T00:00:00.'"),
    DATE_BAD("8 fraction digits", "'2030-01-01T00:00:00.12345678'"),
    DATE_BAD("fraction without seconds", "'2030-01-01T00:00.5'"),
    DATE_BAD("offset 15:00", "'2030-01-01T00:00:00+15:00'"),
    DATE_BAD("offset 14:01", "'2030-01-01T00:00:00+14:01'"),
    DATE_BAD("basic offset", "'2030-01-01T00:00:00+0200'"),
    DATE_BAD("offset hours only", "'2030-01-01T00:00:00+02'"),
    DATE_BAD("space separator", "'2030-01-01 00:00:00'"),
    DATE_BAD("lower-case t", "'2030-01-01t00:00:00'"),
    DATE_BAD("ZZ", "'2030-01-01T00:00:00ZZ'"),
    DATE_BAD("offset on date only", "'2030-01-01+02:00'"),
    DATE_BAD("empty", "''"),
    DATE_BAD("words", "'tomorrow'"),
    DATE_BAD("NUL", "'2030-01-01\\u0000'"),
    DATE_BAD("full-width digits", "'\xEF\xBC\x92\xEF\xBC\x90\xEF\xBC\x93\xEF\xBC\x90-01-01'"),
    DATE_BAD("too long", "'2030-01-01T00:00:00.1234567+02:00                   '"),
    DATE_BAD("number", "20300101"),
    DATE_BAD("true", "true"),
    DATE_BAD("object", "{}"),
    P("date message", RT, "{'taskId':1,'ActivationDate':'tomorrow'}",
      .code = "task.activation_date_invalid", .msg_has = "ActivationDate must be null or an "),
    P("date not checked on Solved", TA, "{'taskId':1,'activationDate':5}", .id = 1),

    /* --- duplicate keys --- */
    P("dup exact", FR, "{'runId':1,'runId':2}", .code = "json.duplicate_key", .offset = 12),
    P("dup ASCII case", FR, "{'runId':1,'RunId':2}", .code = "json.duplicate_key",
      .msg_has = "duplicate key \"RunId\" at byte 11: same as \"runId\" at byte 1"),
    P("dup upper", FR, "{'runId':1,'RUNID':1}", .code = "json.duplicate_key"),
    P("dup via escape", FR, "{'runId':1,'\\u0072unId':2}", .code = "json.duplicate_key"),
    P("dup unknown keys", FR, "{'foo':1,'FOO':2,'runId':1}", .code = "json.duplicate_key"),
    P("dup first second occurrence reported", FR, "{'b':1,'a':1,'A':2,'B':2,'runId':1}",
      .code = "json.duplicate_key", .offset = 14),
    P("dup nested object", FR, "{'runId':1,'x':{'a':1,'A':2}}", .code = "json.duplicate_key"),
    P("dup nested in array", TA, "{'taskId':1,'x':[{},{'k':1,'k':1}]}",
      .code = "json.duplicate_key"),
    P("same key in sibling objects ok", FR, "{'runId':1,'x':[{'a':1},{'a':2}]}", .id = 1),
    P("same key at two levels ok", FR, "{'runId':1,'x':{'runId':2,'y':{'runId':3}}}", .id = 1),
    P("nested keys do not leak into parent", FR, "{'a':{'b':1},'b':2,'runId':1}", .id = 1),
    P("non-ASCII case is not folded", FR, "{'runId':1,'\xC3\xBCnknown':1,'\xC3\x9CNKNOWN':2}",
      .id = 1),
    P("empty keys dup", FR, "{'runId':1,'':1,'':2}", .code = "json.duplicate_key"),
    P("NUL-distinct keys ok", FR, "{'runId':1,'a':1,'a\\u0000':2}", .id = 1),

    /* --- metadata keys --- */
    P("$type", FR, "{'$type':'Anymate.FinishRun','runId':1}", .code = "json.metadata_key",
      .offset = 2),
    P("$id after runId", FR, "{'runId':1,'$id':'1'}", .code = "json.metadata_key"),
    P("escaped $", TA, "{'\\u0024type':'x','taskId':1}", .code = "json.metadata_key"),
    P("nested $ tolerated", FR, "{'runId':1,'x':{'$type':'y'}}", .id = 1),
    P("$ inside key tolerated", FR, "{'runId':1,'a$':1}", .id = 1),

    /* --- Unicode confusables of known fields --- */
    P("runId with U+0130", FR,
      "{'run\xC4\xB0"
      "d':1}",
      .code = "json.confusable_key", .msg_has = "is not runId"),
    P("runId with U+0131", FR,
      "{'run\xC4\xB1"
      "d':1}",
      .code = "json.confusable_key"),
    P("runId with escaped U+0130 beside runId", FR, "{'runId':1,'run\\u0130d':2}",
      .code = "json.confusable_key"),
    P("taskId with long s", TA, "{'ta\xC5\xBFkId':1}", .code = "json.confusable_key"),
    P("taskId with Kelvin sign", TA, "{'tas\xE2\x84\xAAId':1,'taskId':1}",
      .code = "json.confusable_key"),
    P("taskId escaped Kelvin", RT, "{'taskId':1,'tas\\u212aid':2}", .code = "json.confusable_key"),
    P("seconds with long s", FR, "{'runId':1,'overwriteSecond\xC5\xBFSaved':5}",
      .code = "json.confusable_key"),
    P("seconds with sharp s", FR,
      "{'runId':1,'overwriteSecond\xC3\x9F"
      "aved':5}",
      .code = "json.confusable_key"),
    P("seconds with capital sharp s", TA,
      "{'taskId':1,'OVERWRITESECOND\xE1\xBA\x9E"
      "AVED':5}",
      .code = "json.confusable_key"),
    P("entries with dotless i", FR, "{'runId':1,'overwr\xC4\xB1teEntries':5}",
      .code = "json.confusable_key"),
    P("reason with long s", TA, "{'taskId':1,'rea\xC5\xBFon':5}", .code = "json.confusable_key"),
    P("activationDate with dotless i", RT, "{'taskId':1,'act\xC4\xB1vationDate':'x'}",
      .code = "json.confusable_key"),
    P("not a field of FinishRun: taskId confusable", FR, "{'runId':1,'ta\xC5\xBFkId':1}", .id = 1),
    P("not a field of Solved: activationDate confusable", TA,
      "{'taskId':1,'act\xC4\xB1vationDate':'x'}", .id = 1),
    P("full-width runId tolerated", FR,
      "{'runId':1,'\xEF\xBD\x92\xEF\xBD\x95\xEF\xBD\x8E\xEF\xBC\xA9\xEF\xBD\x84':2}", .id = 1),
    P("ligature in an unknown key tolerated", FR, "{'runId':1,'pro\xEF\xAC\x81le':2}", .id = 1),
    P("accented unknown key tolerated", FR, "{'runId':1,'r\xC3\xBCnId':2,'runId\xC3\xA9':3}",
      .id = 1),

    /* --- JSON layer through payload_validate --- */
    P("not object: array", FR, "[{'runId':1}]", .code = "json.not_object",
      .msg = "the body must be a JSON object, got an array"),
    P("not object: number", FR, " 1", .code = "json.not_object", .offset = 2),
    P("not object: string", TA, "'taskId'", .code = "json.not_object"),
    P("not object: null", RT, "null", .code = "json.not_object"),
    P("not object: true", FR, "true", .code = "json.not_object"),
    P("not object: false", FR, "false", .code = "json.not_object",
      .msg = "the body must be a JSON object, got false"),
    P("empty body", FR, "", .code = "json.empty"),
    P("whitespace body", FR, " \r\n\t", .code = "json.empty"),
    P("BOM", FR, "\xEF\xBB\xBF{'runId':1}", .code = "json.bom"),
    P("BOM only", FR, "\xEF\xBB\xBF", .code = "json.bom"),
    P("trailing garbage", FR, "{'runId':1} x", .code = "json.trailing_data", .offset = 13),
    P("two documents", FR, "{'runId':1}{'runId':2}", .code = "json.trailing_data"),
    P("trailing NUL", FR, "{'runId':1}\0", .code = "json.trailing_data"),
    P("NUL after the id (jansson would skip it)", FR, "{'runId':1\0}", .code = "json.syntax",
      .offset = 11),
    P("extra brace", FR, "{'runId':1}}", .code = "json.trailing_data"),
    P("trailing vertical tab", FR, "{'runId':1}\v", .code = "json.trailing_data"),
    P("trailing invalid UTF-8", FR, "{'runId':1}\xFF", .code = "json.invalid_utf8"),
    P("leading zero", FR, "{'runId':01}", .code = "json.syntax", .msg_has = "at byte 9"),
    P("1.", FR, "{'runId':1.}", .code = "json.syntax"),
    P(".5", FR, "{'runId':.5}", .code = "json.syntax"),
    P("+1", FR, "{'runId':+1}", .code = "json.syntax"),
    P("NaN", FR, "{'runId':NaN}", .code = "json.syntax", .msg_has = "NaN and Infinity"),
    P("Infinity", FR, "{'runId':Infinity}", .code = "json.syntax"),
    P("-Infinity", FR, "{'runId':-Infinity}", .code = "json.syntax"),
    P("trailing comma object", FR, "{'runId':1,}", .code = "json.syntax",
      .msg_has = "trailing comma"),
    P("trailing comma array", FR, "{'runId':1,'x':[1,]}", .code = "json.syntax",
      .msg_has = "trailing comma"),
    P("missing comma", FR, "{'runId':1 'x':2}", .code = "json.syntax"),
    P("missing colon", FR, "{'runId' 1}", .code = "json.syntax"),
    P("unquoted key", FR, "{runId:1}", .code = "json.syntax"),
    P("single quotes", FR, "{'runId':1,'x':'a'}", .raw = true, .code = "json.syntax"),
    P("comment", FR, "{'runId':1 /* c */}", .code = "json.syntax", .msg_has = "comments"),
    P("unclosed object", FR, "{'runId':1", .code = "json.syntax"),
    P("unterminated string", FR, "{'runId':1,'x':'abc}", .code = "json.syntax"),
    P("bad escape", FR, "{'runId':1,'x':'\\x'}", .code = "json.syntax"),
    P("short unicode escape", FR, "{'runId':1,'x':'\\u12'}", .code = "json.syntax"),
    P("upper-case U escape", FR, "{'runId':1,'x':'\\U0041'}", .code = "json.syntax"),
    P("raw control char", FR, "{'runId':1,'x':'\x01'}", .code = "json.syntax"),
    P("raw tab in string", FR, "{'runId':1,'x':'a\tb'}", .code = "json.syntax"),
    P("raw NUL in string", FR, "{'runId':1,'x':'a\0b'}", .code = "json.syntax"),
    P("form feed is not whitespace", FR, "{'runId':1\f}", .code = "json.syntax"),
    P("NBSP is not whitespace", FR, "{\xC2\xA0'runId':1}", .code = "json.syntax",
      .msg_has = "U+00A0"),
    P("overlong 2-byte", FR, "{'runId':1,'x':'\xC0\xAF'}", .code = "json.invalid_utf8",
      .offset = 17),
    P("overlong 3-byte", FR, "{'runId':1,'x':'\xE0\x80\xAF'}", .code = "json.invalid_utf8"),
    P("overlong 4-byte", FR, "{'runId':1,'x':'\xF0\x80\x80\xAF'}", .code = "json.invalid_utf8"),
    P("UTF-8 encoded surrogate", FR, "{'runId':1,'x':'\xED\xA0\x80'}", .code = "json.invalid_utf8"),
    P("above U+10FFFF", FR, "{'runId':1,'x':'\xF4\x90\x80\x80'}", .code = "json.invalid_utf8"),
    P("truncated sequence", FR, "{'runId':1,'x':'\xE2\x82'}", .code = "json.invalid_utf8"),
    P("stray continuation", FR, "{'runId':1,'x':'\x80'}", .code = "json.invalid_utf8"),
    P("byte FF in key", FR, "{'runId':1,'\xFF':1}", .code = "json.invalid_utf8"),
    P("invalid UTF-8 outside strings", FR, "{'runId':1,\xC0}", .code = "json.invalid_utf8"),
    P("valid UTF-8 ok", TA, "{'taskId':1,'reason':'\xE2\x82\xAC \xF0\x9F\x98\x80 \xEF\xBF\xBF'}",
      .id = 1),
    P("lone high surrogate", FR, "{'runId':1,'x':'\\ud800'}", .code = "json.lone_surrogate",
      .offset = 17),
    P("lone low surrogate", FR, "{'runId':1,'x':'\\udc00'}", .code = "json.lone_surrogate"),
    P("high then letter", FR, "{'runId':1,'x':'\\ud800\\u0041'}", .code = "json.lone_surrogate"),
    P("two highs", FR, "{'runId':1,'x':'\\ud800\\ud800'}", .code = "json.lone_surrogate"),
    P("high at end of string", FR, "{'runId':1,'x':'a\\uDBFF'}", .code = "json.lone_surrogate"),
    P("lone surrogate in key", FR, "{'runId':1,'\\ud83d':1}", .code = "json.lone_surrogate"),
    P("valid pair ok", TA, "{'taskId':1,'reason':'\\ud83d\\ude00\\uD834\\uDD1E'}", .id = 1),
    P("depth option 2 ok", FR, "{'runId':1,'x':[]}", .depth = 2, .id = 1),
    P("depth option 2 refused", FR, "{'runId':1,'x':[[]]}", .depth = 2, .code = "json.too_deep",
      .offset = 17),
};

static void run_pcase(void **state)
{
    const struct pcase *c = *state;
    struct payload_options o = {.numeric_string_ids = c->numeric, .max_depth = c->depth};
    struct payload_result r;
    struct payload_error e;
    char *body = body_copy(c->body, c->len, c->raw);

    memset(&r, 0xA5, sizeof r);
    memset(&e, 0xA5, sizeof e);
    int rc = payload_validate(c->kind, body, c->len, &o, &r, &e);
    free(body);

    if (!c->code) {
        if (rc != 0)
            fail_msg("refused with %s: %s", e.code, e.message);
        assert_null(e.code);
        assert_int_equal(e.status, 0);
        assert_string_equal(e.message, "");
        assert_true(r.id == c->id);
        if (c->kpi) {
            assert_int_equal(r.seconds_state, c->sec_state);
            assert_int_equal(r.entries_state, c->ent_state);
            if (c->sec_state == VAL)
                assert_int_equal(r.seconds, c->sec);
            if (c->ent_state == VAL)
                assert_int_equal(r.entries, c->ent);
        }
        if (c->text) {
            assert_int_equal(r.reason_state, c->reason_state);
            assert_int_equal(r.comment_state, c->comment_state);
            assert_int_equal(r.activation_date_state, c->date_state);
            if (c->date_state == VAL)
                assert_string_equal(r.activation_date, c->date);
        }
        return;
    }
    check_error_shape(rc, &e);
    if (strcmp(e.code, c->code) != 0)
        fail_msg("expected %s, got %s: %s", c->code, e.code, e.message);
    if (c->msg)
        assert_string_equal(e.message, c->msg);
    if (c->msg_has && !strstr(e.message, c->msg_has))
        fail_msg("message \"%s\" lacks \"%s\"", e.message, c->msg_has);
    if (c->offset)
        assert_int_equal(e.offset, c->offset - 1);
    /* A refused body leaves a zeroed result. */
    struct payload_result zero;
    memset(&zero, 0, sizeof zero);
    assert_memory_equal(&r, &zero, sizeof r);
}

/* ------------------------------------------------------------------------------------------ */
/* payload_json_check rows: the JSON layer alone, any top-level value                         */

struct jcase {
    const char *name;
    const char *body;
    size_t len;
    bool raw;
    unsigned flags;
    const char *code; /* NULL: must pass */
};

#define J(nm, b, ...)                                                                              \
    {                                                                                              \
        .name = nm, .body = b, .len = sizeof(b) - 1, __VA_ARGS__                                   \
    }
#define DUPS PAYLOAD_JSON_REJECT_DUPLICATES

static const struct jcase jcases[] = {
    J("json 0", "0"),
    J("json -0", "-0"),
    J("json -1", "-1"),
    J("json 1.5", "1.5"),
    J("json -0.0e-0", "-0.0e-0"),
    J("json 1e3 1E+3 1e-3", "[1e3,1E+3,1e-3]"),
    J("json big integer", "123456789012345678901234567890"),
    J("json huge exponent", "[1e400,-1e-400]"),
    J("json literals", "[true,false,null]"),
    J("json empty string", "''"),
    J("json empty containers", "[[],{}]"),
    J("json all whitespace kinds", " \t\n\r[ \t\n\r1 \t\n\r] \t\n\r"),
    J("json escapes", "'\\/\\\\\\'\\b\\f\\n\\r\\t'", .raw = false),
    J("json \\u0000", "'\\u0000'"),
    J("json pair", "'\\ud83d\\ude00'"),
    J("json DEL raw", "'\x7F'"),
    J("json U+FFFF noncharacter", "'\xEF\xBF\xBF'"),
    J("json U+10FFFF", "'\xF4\x8F\xBF\xBF'"),
    J("json duplicates allowed without flag", "{'a':1,'a':2}"),
    J("json duplicates refused with flag", "{'a':1,'a':2}", .flags = DUPS,
      .code = "json.duplicate_key"),
    J("json case duplicates with flag", "[{'Ab':1,'aB':2}]", .flags = DUPS,
      .code = "json.duplicate_key"),
    J("json dup after nested object", "{'a':1,'b':{'x':1},'A':2}", .flags = DUPS,
      .code = "json.duplicate_key"),
    J("json dup after unescaping every escape",
      "{'\\b\\f\\n\\r\\t\\/\\\\\\'x':1,"
      "'\\u0008\\u000C\\u000a\\u000d\\u0009/\\u005c\\u0022X':2}",
      .flags = DUPS, .code = "json.duplicate_key"),
    J("json dup surrogate pair and raw UTF-8", "{'\\ud83d\\ude00':1,'\xF0\x9F\x98\x80':2}",
      .flags = DUPS, .code = "json.duplicate_key"),
    J("json distinct escaped keys", "{'\\n':1,'\\r':2,'\\ud83d\\ude00':3,'\\ud83d\\ude01':4}",
      .flags = DUPS),
    /* Two different keys with the same FNV-1a hash: compared in full, not duplicates; with a
     * case variant of one of them, a duplicate. */
    J("json hash collision is not a duplicate", "{'lsexqzd':1,'ztxtxde':2}", .flags = DUPS),
    J("json hash collision plus real duplicate", "{'lsexqzd':1,'ztxtxde':2,'ZTXTXDE':3}",
      .flags = DUPS, .code = "json.duplicate_key"),
    J("json no dup across objects", "[{'a':1},{'a':1},{'b':{'a':1}}]", .flags = DUPS),
    J("json leading zero", "01", .code = "json.syntax"),
    J("json -01", "-01", .code = "json.syntax"),
    J("json 1.", "1.", .code = "json.syntax"),
    J("json .5", ".5", .code = "json.syntax"),
    J("json +1", "+1", .code = "json.syntax"),
    J("json -", "-", .code = "json.syntax"),
    J("json 1e", "1e", .code = "json.syntax"),
    J("json 1e+", "1e+", .code = "json.syntax"),
    J("json hex", "0x10", .code = "json.trailing_data"),
    J("json NaN", "NaN", .code = "json.syntax"),
    J("json Infinity", "[Infinity]", .code = "json.syntax"),
    J("json -Infinity", "-Infinity", .code = "json.syntax"),
    J("json nul", "nul", .code = "json.syntax"),
    J("json True", "True", .code = "json.syntax"),
    J("json fals", "[fals]", .code = "json.syntax"),
    J("json [1,]", "[1,]", .code = "json.syntax"),
    J("json [,1]", "[,1]", .code = "json.syntax"),
    J("json {,}", "{,}", .code = "json.syntax"),
    J("json [1 2]", "[1 2]", .code = "json.syntax"),
    J("json unclosed array", "[1", .code = "json.syntax"),
    J("json close unopened", "1]", .code = "json.trailing_data"),
    J("json [1]]", "[1]]", .code = "json.trailing_data"),
    J("json NUL outside string", "[1\0]", .code = "json.syntax"),
    /* jansson 2.14 loads this as [1,2]: it skips a NUL byte right after a number. */
    J("json NUL after number inside array", "[1\0,2]", .code = "json.syntax"),
    J("json \\u12G4", "'\\u12G4'", .code = "json.syntax"),
    J("json backslash at end", "'\\", .code = "json.syntax"),
    J("json raw newline", "'a\nb'", .code = "json.syntax"),
    J("json raw U+001F", "'\x1F'", .code = "json.syntax"),
    J("json form feed", "[1\f]", .code = "json.syntax"),
    J("json vertical tab", "\v[1]", .code = "json.syntax"),
    J("json line comment", "[1] // c", .code = "json.trailing_data"),
    J("json empty", "", .code = "json.empty"),
    J("json BOM", "\xEF\xBB\xBF[]", .code = "json.bom"),
    J("json UTF-16 BOM", "\xFE\xFF[]", .code = "json.invalid_utf8"),
    J("json 5-byte UTF-8", "'\xF8\x88\x80\x80\x80'", .code = "json.invalid_utf8"),
    J("json C1 lead", "'\xC1\xBF'", .code = "json.invalid_utf8"),
    J("json ED A0", "'\xED\xBF\xBF'", .code = "json.invalid_utf8"),
    J("json F5", "'\xF5\x80\x80\x80'", .code = "json.invalid_utf8"),
    J("json lone \\udfff", "['\\udfff']", .code = "json.lone_surrogate"),
    J("json high + non-escape", "'\\ud800x'", .code = "json.lone_surrogate"),
    J("json high + bad escape", "'\\ud800\\uZZZZ'", .code = "json.syntax"),
    J("json high + \\n", "'\\ud800\\n'", .code = "json.lone_surrogate"),
};

/*
 * jansson as a second opinion on the JSON layer (called with JSON_DECODE_ANY | JSON_ALLOW_NUL,
 * duplicates allowed). The two may disagree only where they are known to: jansson refuses
 * numbers beyond int64/double range and \u0000 in keys, which RFC 8259 allows; it allows depth
 * up to 2048, beyond our max_depth; and jansson 2.14 skips a raw NUL byte right after a number
 * or literal ("[1\0,2]" loads as [1,2], "123\0" as 123), which we refuse at that byte.
 * Returns NULL when they agree, else what differs.
 */
static const char *jansson_disagrees(const char *text, size_t len, int rc,
                                     const struct payload_error *e)
{
    json_error_t je;
    json_t *j = json_loadb(text, len, JSON_DECODE_ANY | JSON_ALLOW_NUL, &je);
    bool jok = j != NULL;
    json_decref(j);
    if (jok == (rc == 0))
        return NULL;
    if (!jok) {
        enum json_error_code jc = json_error_code(&je);
        if (jc == json_error_numeric_overflow || jc == json_error_null_byte_in_key)
            return NULL;
        return "payload accepts what jansson refuses";
    }
    if (strcmp(e->code, "json.too_deep") == 0)
        return NULL;
    if (e->offset < len && text[e->offset] == '\0')
        return NULL;
    return "payload refuses what jansson accepts";
}

static void run_jcase(void **state)
{
    const struct jcase *c = *state;
    struct payload_error e;
    char *body = body_copy(c->body, c->len, c->raw);

    memset(&e, 0xA5, sizeof e);
    int rc = payload_json_check(body, c->len, 0, c->flags, &e);
    const char *diff = c->flags ? NULL : jansson_disagrees(body, c->len, rc, &e);
    free(body);
    if (!c->code) {
        if (rc != 0)
            fail_msg("refused with %s: %s", e.code, e.message);
        assert_null(e.code);
    } else {
        check_error_shape(rc, &e);
        if (strcmp(e.code, c->code) != 0)
            fail_msg("expected %s, got %s: %s", c->code, e.code, e.message);
    }
    if (diff)
        fail_msg("%s", diff);
}

/* ------------------------------------------------------------------------------------------ */
/* Generated bodies                                                                           */

/* {'runId':1,'x': + N '[' + N ']' + } : nesting N + 1 (the object counts). */
static char *nested_body(size_t n, bool close, size_t *len)
{
    const char *head = "{\"runId\":1,\"x\":";
    size_t h = strlen(head);
    size_t total = h + n + (close ? n + 1 : 0);
    char *b = malloc(total);
    assert_non_null(b);
    memcpy(b, head, h);
    memset(b + h, '[', n);
    if (close) {
        memset(b + h + n, ']', n);
        b[total - 1] = '}';
    }
    *len = total;
    return b;
}

static void test_depth_64_ok_65_refused(void **state)
{
    (void)state;
    struct payload_error e;
    struct payload_result r;
    size_t len;
    char *b = nested_body(63, true, &len); /* depth 64 */
    assert_int_equal(payload_validate(FR, b, len, NULL, &r, &e), 0);
    assert_int_equal(r.id, 1);
    free(b);
    b = nested_body(64, true, &len); /* depth 65 */
    check_error_shape(payload_validate(FR, b, len, NULL, &r, &e), &e);
    assert_string_equal(e.code, "json.too_deep");
    assert_int_equal(e.offset, strlen("{\"runId\":1,\"x\":") + 63);
    free(b);

    /* The JSON layer alone: 64 arrays pass, 65 do not. */
    char arr[130];
    memset(arr, '[', 64);
    memset(arr + 64, ']', 64);
    assert_int_equal(payload_json_check(arr, 128, 0, 0, &e), 0);
    memset(arr, '[', 65);
    memset(arr + 65, ']', 65);
    check_error_shape(payload_json_check(arr, 130, 0, 0, &e), &e);
    assert_string_equal(e.code, "json.too_deep");
}

static void test_deep_nesting_100000(void **state)
{
    (void)state;
    struct payload_error e;
    size_t len;
    char *b = nested_body(100000, true, &len);
    check_error_shape(payload_validate(TA, b, len, NULL, NULL, &e), &e);
    assert_string_equal(e.code, "json.too_deep");
    free(b);

    /* 100000 unclosed arrays, and 100000 nested objects, through the JSON layer. */
    b = malloc(100000 * 5);
    assert_non_null(b);
    memset(b, '[', 100000);
    check_error_shape(payload_json_check(b, 100000, 0, 0, &e), &e);
    assert_string_equal(e.code, "json.too_deep");
    for (size_t i = 0; i < 100000; i++)
        memcpy(b + i * 5, "{\"a\":", 5);
    check_error_shape(payload_json_check(b, 100000 * 5, 0, DUPS, &e), &e);
    assert_string_equal(e.code, "json.too_deep");
    /* Even at the largest max_depth the explicit stack holds. */
    check_error_shape(payload_json_check(b, 100000 * 5, (size_t)-1, DUPS, &e), &e);
    assert_string_equal(e.code, "json.too_deep");
    assert_int_equal(e.offset, PAYLOAD_DEPTH_LIMIT * 5);
    free(b);
}

static void test_depth_limit_clamp(void **state)
{
    (void)state;
    struct payload_error e;
    char *b = malloc(2 * (PAYLOAD_DEPTH_LIMIT + 1));
    assert_non_null(b);
    memset(b, '[', PAYLOAD_DEPTH_LIMIT);
    memset(b + PAYLOAD_DEPTH_LIMIT, ']', PAYLOAD_DEPTH_LIMIT);
    assert_int_equal(payload_json_check(b, 2 * PAYLOAD_DEPTH_LIMIT, 1000000, 0, &e), 0);
    memset(b, '[', PAYLOAD_DEPTH_LIMIT + 1);
    memset(b + PAYLOAD_DEPTH_LIMIT + 1, ']', PAYLOAD_DEPTH_LIMIT + 1);
    check_error_shape(payload_json_check(b, 2 * (PAYLOAD_DEPTH_LIMIT + 1), 1000000, 0, &e), &e);
    assert_string_equal(e.code, "json.too_deep");
    free(b);
}

/* Many keys: all distinct pass; one case-insensitive duplicate at the end is found. */
static void test_many_keys(void **state)
{
    (void)state;
    enum { N = 100000 };
    size_t cap = (size_t)N * 24 + 64, len = 0;
    char *b = malloc(cap);
    struct payload_error e;
    struct payload_result r;
    assert_non_null(b);
    len += (size_t)sprintf(b + len, "{\"runId\":77");
    for (int i = 0; i < N; i++)
        len += (size_t)sprintf(b + len, ",\"k%d\":%d", i, i);
    b[len] = '}';
    assert_int_equal(payload_validate(FR, b, len + 1, NULL, &r, &e), 0);
    assert_int_equal(r.id, 77);
    len += (size_t)sprintf(b + len, ",\"K%d\":0}", N / 2);
    check_error_shape(payload_validate(FR, b, len, NULL, &r, &e), &e);
    assert_string_equal(e.code, "json.duplicate_key");
    assert_non_null(strstr(e.message, "\"K50000\""));
    free(b);
}

/* Long keys and values are cut in messages at a character boundary. */
static void test_long_names_in_messages(void **state)
{
    (void)state;
    char body[2048];
    size_t n = 0;
    struct payload_error e;
    n += (size_t)sprintf(body, "{\"runId\":1,\"overwriteEntries\":1.");
    for (int i = 0; i < 300; i++)
        body[n++] = '5';
    body[n++] = '}';
    check_error_shape(payload_validate(FR, body, n, NULL, NULL, &e), &e);
    assert_non_null(strstr(e.message, "got 1.5555"));
    assert_non_null(strstr(e.message, "..."));

    /* "a" first, so that the cut at 64 bytes falls inside a two-byte character. */
    n = (size_t)sprintf(body, "{\"runId\":1");
    for (int k = 0; k < 2; k++) {
        n += (size_t)sprintf(body + n, ",\"a");
        for (int i = 0; i < 200; i++)
            n += (size_t)sprintf(body + n, "\xC3\xA9");
        n += (size_t)sprintf(body + n, "\":%d", k);
    }
    body[n++] = '}';
    check_error_shape(payload_validate(FR, body, n, NULL, NULL, &e), &e);
    assert_string_equal(e.code, "json.duplicate_key");
    assert_non_null(strstr(e.message, "\xC3\xA9...\""));
}

static void test_api_edges(void **state)
{
    (void)state;
    struct payload_error e;
    struct payload_result r;
    const char ok[] = "{\"runId\":5}";

    /* NULL options and NULL result are allowed. */
    assert_int_equal(payload_validate(FR, ok, sizeof ok - 1, NULL, NULL, &e), 0);
    assert_int_equal(payload_validate(FR, ok, sizeof ok - 1, NULL, &r, &e), 0);
    assert_int_equal(r.id, 5);
    /* No error slot: refused without crashing. */
    assert_int_equal(payload_validate(FR, ok, sizeof ok - 1, NULL, &r, NULL), -1);
    assert_int_equal(payload_json_check(ok, sizeof ok - 1, 0, 0, NULL), -1);
    /* NULL body with length 0 is an empty body; with a length it is a caller bug. */
    check_error_shape(payload_validate(FR, NULL, 0, NULL, &r, &e), &e);
    assert_string_equal(e.code, "json.empty");
    check_error_shape(payload_validate(FR, NULL, 5, NULL, &r, &e), &e);
    assert_string_equal(e.code, "internal.bad_argument");
    check_error_shape(payload_json_check(NULL, 5, 0, 0, &e), &e);
    assert_string_equal(e.code, "internal.bad_argument");
    check_error_shape(payload_validate((enum payload_kind)42, ok, sizeof ok - 1, NULL, &r, &e), &e);
    assert_string_equal(e.code, "internal.bad_argument");
    /* The body is only read within len: what follows does not count. */
    assert_int_equal(payload_validate(FR, "{\"runId\":5}garbage", 11, NULL, &r, &e), 0);
    /* The result does not depend on a previous call. */
    assert_int_equal(payload_validate(TA, "{\"taskId\":3}", 12, NULL, &r, &e), 0);
    assert_int_equal(r.seconds_state, PAYLOAD_ABSENT);
    assert_int_equal(r.id_from_string, false);
}

/* ------------------------------------------------------------------------------------------ */
/* JSONTestSuite                                                                              */

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

static char *read_file(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL;
    size_t cap = 4096, n = 0;
    char *b = malloc(cap);
    size_t got;
    while (b && (got = fread(b + n, 1, cap - n, f)) > 0) {
        n += got;
        if (n == cap) {
            char *nb = realloc(b, cap * 2);
            if (!nb) {
                free(b);
                b = NULL;
                break;
            }
            b = nb;
            cap *= 2;
        }
    }
    fclose(f);
    /* Shrink to the exact size so that ASan sees reads past the end. */
    if (b) {
        char *exact = malloc(n ? n : 1);
        if (exact)
            memcpy(exact, b, n);
        free(b);
        b = exact;
    }
    *len = n;
    return b;
}

static void test_jsontestsuite(void **state)
{
    (void)state;
    const char *dir = getenv("JSONTESTSUITE");
    if (!dir || !*dir)
        dir = "../shared/jsontestsuite/test_parsing";
    DIR *d = opendir(dir);
    if (!d) {
        print_message("JSONTestSuite not found at %s: skipped\n", dir);
        skip();
        return;
    }
    char **names = NULL;
    size_t n = 0, cap = 0;
    struct dirent *de;
    while ((de = readdir(d)) != NULL) {
        const char *nm = de->d_name;
        size_t l = strlen(nm);
        if (l < 7 || strcmp(nm + l - 5, ".json") != 0 || nm[1] != '_' ||
            (nm[0] != 'y' && nm[0] != 'n' && nm[0] != 'i'))
            continue;
        if (n == cap) {
            cap = cap ? cap * 2 : 512;
            names = realloc(names, cap * sizeof *names);
            assert_non_null(names);
        }
        names[n] = strdup(nm);
        assert_non_null(names[n]);
        n++;
    }
    closedir(d);
    qsort(names, n, sizeof *names, cmp_str);

    size_t y = 0, y_ok = 0, no = 0, no_ok = 0, i_n = 0, i_acc = 0, wrapped_ok = 0, diffs = 0;
    int failures = 0;
    for (size_t k = 0; k < n; k++) {
        char path[4096];
        size_t len;
        snprintf(path, sizeof path, "%s/%s", dir, names[k]);
        char *text = read_file(path, &len);
        assert_non_null(text);
        struct payload_error e;
        int rc = payload_json_check(text, len, 0, 0, &e);
        if (rc != 0)
            check_error_shape(rc, &e);
        const char *diff = jansson_disagrees(text, len, rc, &e);
        if (diff) {
            print_message("  %s: %s\n", names[k], diff);
            diffs++;
        }

        /* The same document as a field value of a FinishRun body: same verdict, except
         * that the payload rules refuse duplicate keys. */
        static const char head[] = "{\"runId\":1,\"x\":";
        size_t wl = sizeof head - 1 + len + 1;
        char *w = malloc(wl);
        assert_non_null(w);
        memcpy(w, head, sizeof head - 1);
        memcpy(w + sizeof head - 1, text, len);
        w[wl - 1] = '}';
        struct payload_error we;
        int wrc = payload_validate(FR, w, wl, NULL, NULL, &we);
        free(w);
        if (wrc != 0)
            check_error_shape(wrc, &we);

        switch (names[k][0]) {
        case 'y':
            y++;
            if (rc == 0)
                y_ok++;
            else {
                print_message("  FAIL %s refused: %s %s\n", names[k], e.code, e.message);
                failures++;
            }
            if (wrc == 0 || (strncmp(names[k], "y_object_duplicated_key", 23) == 0 &&
                             strcmp(we.code, "json.duplicate_key") == 0))
                wrapped_ok++;
            else {
                print_message("  FAIL %s wrapped refused: %s %s\n", names[k], we.code, we.message);
                failures++;
            }
            break;
        case 'n':
            no++;
            if (rc != 0 && wrc != 0)
                no_ok++;
            else {
                print_message("  FAIL %s accepted (%s)\n", names[k], rc == 0 ? "alone" : "wrapped");
                failures++;
            }
            break;
        default:
            i_n++;
            if (rc == 0)
                i_acc++;
            print_message("  %s: %s%s%s\n", names[k], rc == 0 ? "accepted" : "refused ",
                          rc == 0 ? "" : e.code, wrc == rc ? "" : " (wrapped: differs)");
            break;
        }
        free(text);
        free(names[k]);
    }
    free(names);
    print_message("JSONTestSuite %s: y %zu/%zu accepted (%zu wrapped), n %zu/%zu refused, "
                  "i %zu accepted %zu refused, %zu jansson disagreements\n",
                  dir, y_ok, y, wrapped_ok, no_ok, no, i_acc, i_n - i_acc, diffs);
    assert_true(y + no + i_n > 0);
    assert_int_equal(failures, 0);
    assert_int_equal(diffs, 0);
}

/* ------------------------------------------------------------------------------------------ */

/* Return: an array of task actions, each with its action; one bad item refuses them all. */
static void test_return(void **state)
{
    (void)state;
    struct payload_result *items;
    size_t n;
    struct payload_error e;
    const char *ok = "[{\"taskId\": 7, \"action\": \"Solved\", \"overwriteEntries\": 3},"
                     " {\"TaskId\": 8, \"ACTION\": \"retry\", \"activationDate\": \"2030-01-01\","
                     " \"reason\": null, \"nested\": {\"a\": [1, {\"b\": \"}]\"}]}},"
                     " {\"taskId\": 9, \"action\": \"Manual\", \"overwriteSecondsSaved\": 0},"
                     " {\"taskId\": 10, \"action\": \"Error\"}]";
    assert_int_equal(payload_validate_return(ok, strlen(ok), NULL, 10, &items, &n, &e), 0);
    assert_int_equal(n, 4);
    assert_int_equal(items[0].id, 7);
    assert_int_equal(items[0].action, PAYLOAD_ACTION_SOLVED);
    assert_int_equal(items[0].entries_state, VAL);
    assert_int_equal(items[0].entries, 3);
    assert_int_equal(items[1].id, 8);
    assert_int_equal(items[1].action, PAYLOAD_ACTION_RETRY);
    assert_int_equal(items[1].activation_date_state, VAL);
    assert_int_equal(items[2].action, PAYLOAD_ACTION_MANUAL);
    assert_int_equal(items[2].seconds_state, VAL);
    assert_int_equal(items[3].action, PAYLOAD_ACTION_ERROR);
    assert_string_equal(payload_action_name(items[3].action), "Error");
    free(items);
    /* empty: nothing to record, nothing refused */
    assert_int_equal(payload_validate_return(" [ ] ", 5, NULL, 10, &items, &n, &e), 0);
    assert_int_equal(n, 0);
    assert_null(items);

    static const struct {
        const char *body, *code, *msg;
    } bad[] = {
        {"{\"taskId\": 1, \"action\": \"Solved\"}", "json.not_array", "array"},
        {"[{\"taskId\": 1, \"action\": \"Solved\"}, 5]", "task.item_not_object", "item 1"},
        {"[{\"taskId\": 1}]", "task.action_missing", "item 0: action is required"},
        {"[{\"taskId\": 1, \"action\": null}]", "task.action_missing", "item 0"},
        {"[{\"taskId\": 1, \"action\": \"Done\"}]", "task.action_invalid", "item 0"},
        {"[{\"taskId\": 1, \"action\": 0}]", "task.action_invalid", "got 0"},
        {"[{\"taskId\": 1, \"action\": \"Solvedxxxxxxxxxxxxxxx\"}]", "task.action_invalid",
         "item 0"},
        {"[{\"taskId\": 1, \"action\": \"Solved\"}, {\"action\": \"Solved\"}]",
         "task.taskid_missing", "item 1: "},
        {"[{\"taskId\": 1, \"action\": \"Retry\", \"activationDate\": \"soon\"}]",
         "task.activation_date_invalid", "item 0"},
        {"[{\"taskId\": 1, \"action\": \"Solved\", \"overwriteEntries\": -1}]",
         "kpi.entries_out_of_range", "item 0"},
        {"[{\"taskId\": 1, \"action\": \"Solved\", \"TASKID\": 2}]", "json.duplicate_key", NULL},
        {"[{\"taskId\": 1, \"action\": \"Solved\"},]", "json.syntax", NULL},
        {"[1,2,3,4,5,6,7,8,9,10,11]", "task.item_not_object", "item 0"},
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        int rc =
            payload_validate_return(bad[i].body, strlen(bad[i].body), NULL, 10, &items, &n, &e);
        check_error_shape(rc, &e);
        if (strcmp(e.code, bad[i].code) != 0)
            fail_msg("%s: %s, expected %s (%s)", bad[i].body, e.code, bad[i].code, e.message);
        if (bad[i].msg && !strstr(e.message, bad[i].msg))
            fail_msg("%s: message '%s' lacks '%s'", bad[i].body, e.message, bad[i].msg);
        assert_null(items);
        assert_int_equal(n, 0);
    }
    /* the offset points into the whole body: at the second item's bad value */
    const char *b =
        "[{\"taskId\": 1, \"action\": \"Solved\"}, {\"taskId\": \"x\", \"action\": \"Solved\"}]";
    assert_int_equal(payload_validate_return(b, strlen(b), NULL, 10, &items, &n, &e), -1);
    assert_string_equal(e.code, "task.taskid_not_integer");
    assert_int_equal(e.offset, (size_t)(strstr(b, "\"x\"") - b));
    /* the item bound */
    char many[2048] = "[";
    for (int i = 0; i < 11; i++)
        snprintf(many + strlen(many), sizeof(many) - strlen(many),
                 "%s{\"taskId\": %d, "
                 "\"action\": \"Solved\"}",
                 i ? "," : "", i + 1);
    strcat(many, "]");
    int rc = payload_validate_return(many, strlen(many), NULL, 10, &items, &n, &e);
    check_error_shape(rc, &e);
    assert_string_equal(e.code, "task.too_many_items");
    assert_int_equal(payload_validate_return(many, strlen(many), NULL, 11, &items, &n, &e), 0);
    assert_int_equal(n, 11);
    free(items);
}

/* Every documented code is produced by some test, and payload.h's table lists them all. */
static void test_every_code_exercised(void **state)
{
    (void)state;
    for (size_t i = 0; i < NCODES; i++) {
        if (strcmp(all_codes[i], "internal.no_memory") == 0)
            continue;
        if (!code_seen[i])
            fail_msg("no test produced %s", all_codes[i]);
    }
    size_t len;
    char *h = read_file("gateway/payload.h", &len);
    if (!h) {
        print_message("gateway/payload.h not found from the working directory: table not "
                      "checked\n");
        return;
    }
    char *z = malloc(len + 1);
    assert_non_null(z);
    memcpy(z, h, len);
    z[len] = '\0';
    for (size_t i = 0; i < NCODES; i++) {
        char needle[80];
        snprintf(needle, sizeof needle, " * | %s ", all_codes[i]);
        if (!strstr(z, needle))
            fail_msg("payload.h's table lacks %s", all_codes[i]);
    }
    /* And nothing in the table is missing from the list above. */
    size_t rows = 0;
    for (char *p = strstr(z, " * | "); p; p = strstr(p + 1, " * | ")) {
        char code[64];
        if (sscanf(p, " * | %63[a-z_.]", code) == 1 && strchr(code, '.'))
            rows++;
    }
    assert_int_equal(rows, NCODES);
    free(z);
    free(h);
}

int main(void)
{
    size_t np = sizeof pcases / sizeof pcases[0], nj = sizeof jcases / sizeof jcases[0];
    static const struct CMUnitTest fixed[] = {
        cmocka_unit_test(test_depth_64_ok_65_refused), cmocka_unit_test(test_deep_nesting_100000),
        cmocka_unit_test(test_depth_limit_clamp),      cmocka_unit_test(test_many_keys),
        cmocka_unit_test(test_long_names_in_messages), cmocka_unit_test(test_api_edges),
        cmocka_unit_test(test_jsontestsuite),          cmocka_unit_test(test_return),
        cmocka_unit_test(test_every_code_exercised), /* last: counts what the others produced */
    };
    size_t nf = sizeof fixed / sizeof fixed[0];
    struct CMUnitTest *tests = calloc(np + nj + nf, sizeof *tests);
    if (!tests)
        return 1;
    for (size_t i = 0; i < np; i++) {
        tests[i].name = pcases[i].name;
        tests[i].test_func = run_pcase;
        tests[i].initial_state = (void *)&pcases[i];
    }
    for (size_t i = 0; i < nj; i++) {
        tests[np + i].name = jcases[i].name;
        tests[np + i].test_func = run_jcase;
        tests[np + i].initial_state = (void *)&jcases[i];
    }
    memcpy(tests + np + nj, fixed, sizeof fixed);
    int failed = _cmocka_run_group_tests("payload", tests, np + nj + nf, NULL, NULL);
    free(tests);
    return failed;
}
