/*
 * Unit tests for kpi.c: every row of design.md §6 for runs and tasks, Advanced Mode on and off,
 * tasks-enabled processes, unknown process and unknown settings, overrides at the bounds
 * (0, INT32_MAX, and INT32_MIN although policy rejects negatives), "not set" with a stray value,
 * and an exhaustive comparison with the mock Anymate server's ledger arithmetic.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdbool.h>
#include <string.h>

#include "kpi.h"

/* Settings of the shapes that matter. The run-only numbers are the mock's defaults. */
static const struct kpi_settings RUNS = {false, 60, 30, false, 1, 10};
static const struct kpi_settings ADV = {false, 60, 30, true, 3, 20};
static const struct kpi_settings TASKS = {true, 60, 45, false, 1, 10};
static const struct kpi_settings TASKS_ADV = {true, 60, 45, true, 2, 15};
static const struct kpi_settings ZERO = {false, 0, 0, false, 0, 0};
static const struct kpi_settings ZERO_ADV = {false, 0, 0, true, 0, 0};
static const struct kpi_settings MAX = {false, INT32_MAX, INT32_MAX, false, INT32_MAX, INT32_MAX};
static const struct kpi_settings MAX_ADV = {false, INT32_MAX, INT32_MAX,
                                            true,  INT32_MAX, INT32_MAX};

#define NUL false, 0 /* an override not set (absent or JSON null) */
#define SET(v) true, (v)
#define NONE false, 0 /* a result value logged as NULL */
#define VAL(v) true, (int64_t)(v)

struct kpi_case {
    const char *name;
    enum kpi_subject subject;
    bool known; /* the process key is known */
    const struct kpi_settings *settings;
    struct kpi_overrides ov; /* has_seconds, seconds, has_entries, entries */
    enum kpi_rule rule;
    bool has_entries;
    int64_t entries;
    bool has_seconds;
    int64_t seconds;
};

static const struct kpi_case cases[] = {
    /* design.md §6, FinishRun of a process without tasks, Advanced Mode off */
    {"run: seconds set, entries set",
     KPI_RUN,
     true,
     &RUNS,
     {SET(100), SET(7)},
     KPI_RULE_OVERRIDE_SECONDS,
     VAL(7),
     VAL(100)},
    {"run: seconds set, entries null",
     KPI_RUN,
     true,
     &RUNS,
     {SET(100), NUL},
     KPI_RULE_OVERRIDE_SECONDS,
     NONE,
     VAL(100)},
    {"run: seconds null, entries set -> entries logged, seconds per run (no Advanced Mode)",
     KPI_RUN,
     true,
     &RUNS,
     {NUL, SET(5)},
     KPI_RULE_OVERRIDE_ENTRIES,
     VAL(5),
     VAL(60)},
    {"run: neither", KPI_RUN, true, &RUNS, {NUL, NUL}, KPI_RULE_DEFAULTS, NONE, VAL(60)},
    /* the same rows in Advanced Mode */
    {"run AM: seconds set, entries set",
     KPI_RUN,
     true,
     &ADV,
     {SET(100), SET(7)},
     KPI_RULE_OVERRIDE_SECONDS,
     VAL(7),
     VAL(100)},
    {"run AM: seconds set, entries null -> default entries",
     KPI_RUN,
     true,
     &ADV,
     {SET(100), NUL},
     KPI_RULE_OVERRIDE_SECONDS,
     VAL(3),
     VAL(100)},
    {"run AM: seconds null, entries set",
     KPI_RUN,
     true,
     &ADV,
     {NUL, SET(5)},
     KPI_RULE_OVERRIDE_ENTRIES,
     VAL(5),
     VAL(100)},
    {"run AM: neither -> default entries x seconds per entry",
     KPI_RUN,
     true,
     &ADV,
     {NUL, NUL},
     KPI_RULE_ADVANCED_DEFAULTS,
     VAL(3),
     VAL(60)},
    /* tasks (Solved, Manual, Retry, Error alike), Advanced Mode off and on */
    {"task: seconds set, entries set",
     KPI_TASK,
     true,
     &RUNS,
     {SET(9), SET(2)},
     KPI_RULE_OVERRIDE_SECONDS,
     VAL(2),
     VAL(9)},
    {"task: seconds set, entries null",
     KPI_TASK,
     true,
     &RUNS,
     {SET(9), NUL},
     KPI_RULE_OVERRIDE_SECONDS,
     NONE,
     VAL(9)},
    {"task: seconds null, entries set -> entries logged, seconds per task",
     KPI_TASK,
     true,
     &RUNS,
     {NUL, SET(4)},
     KPI_RULE_OVERRIDE_ENTRIES,
     VAL(4),
     VAL(30)},
    {"task: neither -> seconds per task",
     KPI_TASK,
     true,
     &RUNS,
     {NUL, NUL},
     KPI_RULE_DEFAULTS,
     NONE,
     VAL(30)},
    {"task AM: seconds set, entries null",
     KPI_TASK,
     true,
     &ADV,
     {SET(9), NUL},
     KPI_RULE_OVERRIDE_SECONDS,
     VAL(3),
     VAL(9)},
    {"task AM: seconds null, entries set",
     KPI_TASK,
     true,
     &ADV,
     {NUL, SET(4)},
     KPI_RULE_OVERRIDE_ENTRIES,
     VAL(4),
     VAL(80)},
    {"task AM: neither",
     KPI_TASK,
     true,
     &ADV,
     {NUL, NUL},
     KPI_RULE_ADVANCED_DEFAULTS,
     VAL(3),
     VAL(60)},
    /* tasks enabled: a run logs nothing, whatever it sends; its tasks are valued */
    {"run, tasks enabled: neither",
     KPI_RUN,
     true,
     &TASKS,
     {NUL, NUL},
     KPI_RULE_PER_TASK,
     NONE,
     NONE},
    {"run, tasks enabled: both overrides ignored",
     KPI_RUN,
     true,
     &TASKS,
     {SET(100), SET(7)},
     KPI_RULE_PER_TASK,
     NONE,
     NONE},
    {"run, tasks enabled: entries ignored",
     KPI_RUN,
     true,
     &TASKS,
     {NUL, SET(7)},
     KPI_RULE_PER_TASK,
     NONE,
     NONE},
    {"run, tasks enabled, AM: neither",
     KPI_RUN,
     true,
     &TASKS_ADV,
     {NUL, NUL},
     KPI_RULE_PER_TASK,
     NONE,
     NONE},
    {"run, tasks enabled, AM: seconds ignored",
     KPI_RUN,
     true,
     &TASKS_ADV,
     {SET(1), NUL},
     KPI_RULE_PER_TASK,
     NONE,
     NONE},
    {"task, tasks enabled: neither",
     KPI_TASK,
     true,
     &TASKS,
     {NUL, NUL},
     KPI_RULE_DEFAULTS,
     NONE,
     VAL(45)},
    {"task, tasks enabled: seconds set",
     KPI_TASK,
     true,
     &TASKS,
     {SET(12), NUL},
     KPI_RULE_OVERRIDE_SECONDS,
     NONE,
     VAL(12)},
    {"task, tasks enabled: entries set",
     KPI_TASK,
     true,
     &TASKS,
     {NUL, SET(6)},
     KPI_RULE_OVERRIDE_ENTRIES,
     VAL(6),
     VAL(45)},
    {"task, tasks enabled, AM: neither",
     KPI_TASK,
     true,
     &TASKS_ADV,
     {NUL, NUL},
     KPI_RULE_ADVANCED_DEFAULTS,
     VAL(2),
     VAL(30)},
    {"task, tasks enabled, AM: seconds set",
     KPI_TASK,
     true,
     &TASKS_ADV,
     {SET(12), NUL},
     KPI_RULE_OVERRIDE_SECONDS,
     VAL(2),
     VAL(12)},
    /* unknown process / no settings: never a guess, even when an override is set */
    {"run: unknown process",
     KPI_RUN,
     false,
     NULL,
     {NUL, NUL},
     KPI_RULE_UNKNOWN_PROCESS,
     NONE,
     NONE},
    {"run: unknown process with overrides",
     KPI_RUN,
     false,
     NULL,
     {SET(100), SET(7)},
     KPI_RULE_UNKNOWN_PROCESS,
     NONE,
     NONE},
    {"task: unknown process with seconds",
     KPI_TASK,
     false,
     NULL,
     {SET(100), NUL},
     KPI_RULE_UNKNOWN_PROCESS,
     NONE,
     NONE},
    {"run: unknown process, settings ignored",
     KPI_RUN,
     false,
     &RUNS,
     {NUL, NUL},
     KPI_RULE_UNKNOWN_PROCESS,
     NONE,
     NONE},
    {"run: no settings", KPI_RUN, true, NULL, {NUL, NUL}, KPI_RULE_NO_SETTINGS, NONE, NONE},
    {"task: no settings with overrides",
     KPI_TASK,
     true,
     NULL,
     {SET(1), SET(1)},
     KPI_RULE_NO_SETTINGS,
     NONE,
     NONE},
    /* bounds: 0 is a value, not "unset" */
    {"run: seconds 0",
     KPI_RUN,
     true,
     &RUNS,
     {SET(0), NUL},
     KPI_RULE_OVERRIDE_SECONDS,
     NONE,
     VAL(0)},
    {"run: entries 0 -> 0 entries, seconds per run",
     KPI_RUN,
     true,
     &RUNS,
     {NUL, SET(0)},
     KPI_RULE_OVERRIDE_ENTRIES,
     VAL(0),
     VAL(60)},
    {"run AM: entries 0 -> 0 seconds",
     KPI_RUN,
     true,
     &ADV,
     {NUL, SET(0)},
     KPI_RULE_OVERRIDE_ENTRIES,
     VAL(0),
     VAL(0)},
    {"run AM: seconds 0, entries 0",
     KPI_RUN,
     true,
     &ADV,
     {SET(0), SET(0)},
     KPI_RULE_OVERRIDE_SECONDS,
     VAL(0),
     VAL(0)},
    {"run: zero settings", KPI_RUN, true, &ZERO, {NUL, NUL}, KPI_RULE_DEFAULTS, NONE, VAL(0)},
    {"task AM: zero settings",
     KPI_TASK,
     true,
     &ZERO_ADV,
     {NUL, NUL},
     KPI_RULE_ADVANCED_DEFAULTS,
     VAL(0),
     VAL(0)},
    {"run: seconds INT32_MAX",
     KPI_RUN,
     true,
     &RUNS,
     {SET(INT32_MAX), SET(INT32_MAX)},
     KPI_RULE_OVERRIDE_SECONDS,
     VAL(INT32_MAX),
     VAL(INT32_MAX)},
    {"run AM: entries INT32_MAX x 20",
     KPI_RUN,
     true,
     &ADV,
     {NUL, SET(INT32_MAX)},
     KPI_RULE_OVERRIDE_ENTRIES,
     VAL(INT32_MAX),
     VAL(42949672940LL)},
    {"run: entries INT32_MAX without Advanced Mode -> seconds per run",
     KPI_RUN,
     true,
     &MAX,
     {NUL, SET(INT32_MAX)},
     KPI_RULE_OVERRIDE_ENTRIES,
     VAL(INT32_MAX),
     VAL(INT32_MAX)},
    {"run AM: entries INT32_MAX x INT32_MAX",
     KPI_RUN,
     true,
     &MAX_ADV,
     {NUL, SET(INT32_MAX)},
     KPI_RULE_OVERRIDE_ENTRIES,
     VAL(INT32_MAX),
     VAL(4611686014132420609LL)},
    {"task AM: defaults INT32_MAX x INT32_MAX",
     KPI_TASK,
     true,
     &MAX_ADV,
     {NUL, NUL},
     KPI_RULE_ADVANCED_DEFAULTS,
     VAL(INT32_MAX),
     VAL(4611686014132420609LL)},
    {"run: seconds per run INT32_MAX",
     KPI_RUN,
     true,
     &MAX,
     {NUL, NUL},
     KPI_RULE_DEFAULTS,
     NONE,
     VAL(INT32_MAX)},
    {"task: seconds per task INT32_MAX",
     KPI_TASK,
     true,
     &MAX,
     {NUL, NUL},
     KPI_RULE_DEFAULTS,
     NONE,
     VAL(INT32_MAX)},
    {"run AM: entries INT32_MIN x INT32_MAX (policy rejects; no overflow)",
     KPI_RUN,
     true,
     &MAX_ADV,
     {NUL, SET(INT32_MIN)},
     KPI_RULE_OVERRIDE_ENTRIES,
     VAL(INT32_MIN),
     VAL(-4611686016279904256LL)},
    /* not set means not set, whatever value sits beside the flag */
    {"run: stray values behind unset flags",
     KPI_RUN,
     true,
     &RUNS,
     {false, 999, false, 999},
     KPI_RULE_DEFAULTS,
     NONE,
     VAL(60)},
    {"run AM: stray seconds behind an unset flag",
     KPI_RUN,
     true,
     &ADV,
     {false, -1, SET(2)},
     KPI_RULE_OVERRIDE_ENTRIES,
     VAL(2),
     VAL(40)},
};

static void check_case(const struct kpi_case *c, const struct kpi_result *r)
{
    if (r->rule != c->rule)
        fail_msg("%s: rule %s, expected %s", c->name, kpi_rule_name(r->rule),
                 kpi_rule_name(c->rule));
    if (r->has_entries != c->has_entries || r->entries != c->entries)
        fail_msg("%s: entries %s%lld, expected %s%lld", c->name, r->has_entries ? "" : "NULL/",
                 (long long)r->entries, c->has_entries ? "" : "NULL/", (long long)c->entries);
    if (r->has_seconds != c->has_seconds || r->seconds != c->seconds)
        fail_msg("%s: seconds %s%lld, expected %s%lld", c->name, r->has_seconds ? "" : "NULL/",
                 (long long)r->seconds, c->has_seconds ? "" : "NULL/", (long long)c->seconds);
}

static void test_rule_table(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        const struct kpi_case *c = &cases[i];
        struct kpi_result r;
        memset(&r, 0xA5, sizeof(r)); /* every field must be written */
        kpi_compute(c->subject, c->known ? "pk1" : NULL, c->settings, &c->ov, &r);
        check_case(c, &r);
    }
}

static void test_null_overrides_mean_none(void **state)
{
    (void)state;
    struct kpi_result r;
    kpi_compute(KPI_RUN, "pk", &RUNS, NULL, &r);
    assert_int_equal(r.rule, KPI_RULE_DEFAULTS);
    assert_false(r.has_entries);
    assert_true(r.has_seconds);
    assert_int_equal(r.seconds, 60);
    kpi_compute(KPI_TASK, "pk", &ADV, NULL, &r);
    assert_int_equal(r.rule, KPI_RULE_ADVANCED_DEFAULTS);
    assert_int_equal(r.entries, 3);
    assert_int_equal(r.seconds, 60);
}

/*
 * The mock Anymate server's arithmetic (tests/mock/mock_state.c, kpi_record), transcribed: the
 * gateway's audit and the mock's ledger must agree on every input. The only difference is
 * representation: for a tasks-enabled FinishRun the ledger writes perTask=true, entries null,
 * secondsSaved 0, where kpi_compute answers rule per_task with no values.
 */
struct mock_row {
    bool has_entries;
    long long entries;
    long long seconds;
};

static struct mock_row mock_kpi_record(bool run, const struct kpi_settings *s,
                                       const struct kpi_overrides *in, bool per_task)
{
    struct mock_row row = {false, 0, 0};
    if (!per_task) {
        row.has_entries = in->has_entries || s->advanced_mode;
        row.entries = in->has_entries ? in->entries : s->default_entries;
        if (in->has_seconds)
            row.seconds = in->seconds;
        else if (in->has_entries && s->advanced_mode)
            row.seconds = (long long)in->entries * s->seconds_per_entry;
        else if (s->advanced_mode)
            row.seconds = (long long)s->default_entries * s->seconds_per_entry;
        else
            row.seconds = run ? s->seconds_per_run : s->seconds_per_task;
    }
    return row;
}

static void test_agrees_with_mock_ledger(void **state)
{
    (void)state;
    const int32_t values[] = {0, 1, 7, 1000, INT32_MAX};
    const bool flags[] = {false, true};
    size_t compared = 0;
    for (unsigned bits = 0; bits < 4; bits++) {
        for (size_t a = 0; a < 5; a++) {
            for (size_t b = 0; b < 5; b++) {
                const struct kpi_settings s = {
                    .tasks_enabled = flags[bits & 1],
                    .seconds_per_run = values[a],
                    .seconds_per_task = values[b],
                    .advanced_mode = flags[(bits >> 1) & 1],
                    .default_entries = values[b],
                    .seconds_per_entry = values[a],
                };
                for (int subj = 0; subj < 2; subj++) {
                    for (size_t ov = 0; ov < 36; ov++) {
                        /* 6 x 6: unset with a stray value, or each of the 5 values */
                        struct kpi_overrides in = {
                            .has_seconds = ov % 6 != 0,
                            .seconds = ov % 6 != 0 ? values[ov % 6 - 1] : 12345,
                            .has_entries = ov / 6 != 0,
                            .entries = ov / 6 != 0 ? values[ov / 6 - 1] : 54321,
                        };
                        bool run = subj == 0;
                        bool per_task = run && s.tasks_enabled;
                        struct mock_row m = mock_kpi_record(run, &s, &in, per_task);
                        struct kpi_result r;
                        kpi_compute(run ? KPI_RUN : KPI_TASK, "pk", &s, &in, &r);
                        if (per_task) {
                            assert_int_equal(r.rule, KPI_RULE_PER_TASK);
                            assert_false(r.has_entries);
                            assert_false(r.has_seconds);
                            assert_false(m.has_entries);
                            assert_int_equal(m.seconds, 0);
                        } else {
                            assert_true(r.has_seconds);
                            assert_true(r.seconds == m.seconds);
                            assert_int_equal(r.has_entries, m.has_entries);
                            if (m.has_entries)
                                assert_true(r.entries == m.entries);
                        }
                        compared++;
                    }
                }
            }
        }
    }
    assert_int_equal(compared, 4 * 5 * 5 * 2 * 36);
}

static void test_rule_names(void **state)
{
    (void)state;
    const char *expected[KPI_RULE__COUNT] = {
        [KPI_RULE_OVERRIDE_SECONDS] = "override_seconds",
        [KPI_RULE_OVERRIDE_ENTRIES] = "override_entries",
        [KPI_RULE_DEFAULTS] = "defaults",
        [KPI_RULE_ADVANCED_DEFAULTS] = "advanced_defaults",
        [KPI_RULE_PER_TASK] = "per_task",
        [KPI_RULE_UNKNOWN_PROCESS] = "unknown_process",
        [KPI_RULE_NO_SETTINGS] = "no_settings",
    };
    for (int i = 0; i < KPI_RULE__COUNT; i++) {
        assert_non_null(expected[i]);
        assert_string_equal(kpi_rule_name((enum kpi_rule)i), expected[i]);
    }
    assert_string_equal(kpi_rule_name(KPI_RULE__COUNT), "invalid");
    assert_string_equal(kpi_rule_name((enum kpi_rule) - 1), "invalid");
}

static void test_settings_check(void **state)
{
    (void)state;
    const char *why = "unchanged";
    assert_int_equal(kpi_settings_check(&RUNS, &why), 0);
    assert_null(why);
    assert_int_equal(kpi_settings_check(&MAX_ADV, NULL), 0);
    assert_int_equal(kpi_settings_check(&ZERO, NULL), 0);
    struct kpi_settings s = RUNS;
    s.seconds_per_task = -1;
    assert_int_equal(kpi_settings_check(&s, &why), -1);
    assert_string_equal(why, "seconds_per_task must not be negative");
    s = RUNS;
    s.seconds_per_entry = INT32_MIN;
    assert_int_equal(kpi_settings_check(&s, &why), -1);
    assert_string_equal(why, "seconds_per_entry must not be negative");
    assert_int_equal(kpi_settings_check(&s, NULL), -1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_rule_table),
        cmocka_unit_test(test_null_overrides_mean_none),
        cmocka_unit_test(test_agrees_with_mock_ledger),
        cmocka_unit_test(test_rule_names),
        cmocka_unit_test(test_settings_check),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
