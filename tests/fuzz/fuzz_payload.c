/*
 * fuzz_payload: libFuzzer target for gateway/payload.c.
 *
 * Each input is validated as every kind of body, with numeric-string ids off and on, and as a
 * bare JSON value. Beyond "no crash, no sanitizer report" it checks:
 *   - shape: on success the id is in 1..INT64_MAX, overrides in 0..INT32_MAX, the activation
 *     date NUL-terminated and short; on failure a documented-looking code, a status that fits
 *     its prefix, a NUL-terminated message without control characters;
 *   - self-consistency: payload_validate refuses with the JSON layer's own code whenever
 *     payload_json_check refuses; numeric-string mode only widens what passes; a body valid for
 *     Retry is valid for the other task actions with the same values;
 *   - jansson as a differential oracle for the JSON layer (with the documented exceptions) and
 *     for the values read: the id and overrides jansson reads equal ours.
 * Any violation aborts with a message, which libFuzzer reports as a crash.
 */
#include <jansson.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "payload.h"

#include "fuzz_check.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check_error(const struct payload_error *e)
{
    CHECK(e->code != NULL);
    CHECK(memchr(e->message, '\0', sizeof e->message) != NULL);
    CHECK(e->message[0] != '\0');
    for (const char *c = e->message; *c; c++)
        CHECK((unsigned char)*c >= 0x20 && *c != 0x7F);
    if (strncmp(e->code, "json.", 5) == 0)
        CHECK(e->status == 400);
    else if (strncmp(e->code, "internal.", 9) == 0)
        CHECK(e->status == 500 || e->status == 503);
    else
        CHECK(e->status == 422 &&
              (strncmp(e->code, "finishrun.", 10) == 0 || strncmp(e->code, "task.", 5) == 0 ||
               strncmp(e->code, "kpi.", 4) == 0));
}

static void check_result(enum payload_kind kind, bool numeric, const struct payload_result *r)
{
    CHECK(r->id >= 1);
    CHECK(!r->id_from_string || numeric);
    CHECK(r->seconds_state <= PAYLOAD_VALUE && r->entries_state <= PAYLOAD_VALUE);
    CHECK(r->seconds_state == PAYLOAD_VALUE ? r->seconds >= 0 : r->seconds == 0);
    CHECK(r->entries_state == PAYLOAD_VALUE ? r->entries >= 0 : r->entries == 0);
    if (kind == PAYLOAD_FINISHRUN)
        CHECK(r->reason_state == PAYLOAD_ABSENT && r->comment_state == PAYLOAD_ABSENT);
    if (kind != PAYLOAD_RETRY_TASK_ACTION)
        CHECK(r->activation_date_state == PAYLOAD_ABSENT);
    CHECK(memchr(r->activation_date, '\0', sizeof r->activation_date) != NULL);
    if (r->activation_date_state == PAYLOAD_VALUE)
        CHECK(strlen(r->activation_date) >= 10);
    else
        CHECK(r->activation_date[0] == '\0');
}

static bool same_values(const struct payload_result *a, const struct payload_result *b)
{
    return a->id == b->id && a->seconds_state == b->seconds_state && a->seconds == b->seconds &&
           a->entries_state == b->entries_state && a->entries == b->entries;
}

static bool ascii_ieq(const char *a, const char *b)
{
    for (; *a && *b; a++, b++) {
        char x = (*a >= 'A' && *a <= 'Z') ? (char)(*a + 32) : *a;
        char y = (*b >= 'A' && *b <= 'Z') ? (char)(*b + 32) : *b;
        if (x != y)
            return false;
    }
    return *a == *b;
}

static json_t *get_ci(json_t *obj, const char *name)
{
    const char *key;
    json_t *v;
    json_object_foreach(obj, key, v)
    {
        if (ascii_ieq(key, name))
            return v;
    }
    return NULL;
}

/* jansson's reading of an integer field must agree with ours. */
static void check_int_field(json_t *obj, const char *name, enum payload_presence st, int64_t v)
{
    json_t *j = get_ci(obj, name);
    if (!j) {
        CHECK(st == PAYLOAD_ABSENT);
        return;
    }
    if (json_is_null(j)) {
        CHECK(st == PAYLOAD_NULL);
        return;
    }
    if (json_is_integer(j)) {
        CHECK(st == PAYLOAD_VALUE && json_integer_value(j) == v);
        return;
    }
    CHECK(json_is_string(j)); /* numeric-string id */
}

/* The JSON layer against jansson; see jansson_disagrees in tests/unit/test_payload.c. */
static void differential(const char *text, size_t len)
{
    struct payload_error e;
    int rc = payload_json_check(text, len, 64, 0, &e);
    json_error_t je;
    json_t *j = json_loadb(text, len, JSON_DECODE_ANY | JSON_ALLOW_NUL, &je);
    if (rc != 0)
        check_error(&e);
    if ((j != NULL) == (rc == 0)) {
        json_decref(j);
        return;
    }
    if (!j) {
        enum json_error_code jc = json_error_code(&je);
        if (jc == json_error_numeric_overflow || jc == json_error_null_byte_in_key)
            return;
        fprintf(stderr, "payload accepts, jansson refuses: %s\n", je.text);
        abort();
    }
    json_decref(j);
    if (strcmp(e.code, "json.too_deep") == 0)
        return;
    if (e.offset < len && text[e.offset] == '\0') /* jansson skips NUL after a token */
        return;
    fprintf(stderr, "payload refuses (%s: %s), jansson accepts\n", e.code, e.message);
    abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    /* An exact-size copy, so that reading past the end is an ASan report. */
    char *text = malloc(size ? size : 1);
    if (!text)
        return 0;
    memcpy(text, data, size);

    differential(text, size);

    struct payload_error je;
    int jrc = payload_json_check(text, size, 0, PAYLOAD_JSON_REJECT_DUPLICATES, &je);

    static const enum payload_kind kinds[] = {PAYLOAD_FINISHRUN, PAYLOAD_TASK_ACTION,
                                              PAYLOAD_RETRY_TASK_ACTION};
    struct payload_result res[3][2];
    int rcs[3][2];
    for (int k = 0; k < 3; k++) {
        for (int numeric = 0; numeric < 2; numeric++) {
            struct payload_options o = {.numeric_string_ids = numeric != 0, .max_depth = 0};
            struct payload_error e;
            struct payload_result *r = &res[k][numeric];
            int rc = payload_validate(kinds[k], text, size, &o, r, &e);
            rcs[k][numeric] = rc;
            if (rc == 0) {
                CHECK(e.code == NULL && e.status == 0);
                CHECK(jrc == 0);
                check_result(kinds[k], numeric != 0, r);
            } else {
                check_error(&e);
                if (jrc != 0)
                    CHECK(strcmp(e.code, je.code) == 0);
                else
                    CHECK(strcmp(e.code, "json.syntax") != 0 &&
                          strcmp(e.code, "json.duplicate_key") != 0 &&
                          strcmp(e.code, "json.too_deep") != 0);
            }
        }
        /* Numeric-string ids only widen: what passes without passes with, unchanged. */
        if (rcs[k][0] == 0)
            CHECK(rcs[k][1] == 0 && same_values(&res[k][0], &res[k][1]));
        if (rcs[k][1] == 0 && !res[k][1].id_from_string)
            CHECK(rcs[k][0] == 0 && same_values(&res[k][0], &res[k][1]));
    }
    /* Retry = task action + activationDate. */
    for (int numeric = 0; numeric < 2; numeric++)
        if (rcs[2][numeric] == 0)
            CHECK(rcs[1][numeric] == 0 && same_values(&res[1][numeric], &res[2][numeric]) &&
                  res[1][numeric].reason_state == res[2][numeric].reason_state &&
                  res[1][numeric].comment_state == res[2][numeric].comment_state);

    /* What we read equals what jansson reads. */
    json_t *doc = NULL;
    if (rcs[0][1] == 0 || rcs[1][1] == 0)
        doc = json_loadb(text, size, JSON_ALLOW_NUL, NULL);
    if (doc && json_is_object(doc)) {
        for (int k = 0; k < 2; k++) {
            const struct payload_result *r = &res[k][1];
            if (rcs[k][1] != 0)
                continue;
            check_int_field(doc, k == 0 ? "runId" : "taskId", PAYLOAD_VALUE, r->id);
            check_int_field(doc, "overwriteSecondsSaved", r->seconds_state, r->seconds);
            check_int_field(doc, "overwriteEntries", r->entries_state, r->entries);
        }
    }
    json_decref(doc);
    free(text);
    return 0;
}
