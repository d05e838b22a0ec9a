/*
 * kpi: the KPI values (entries, seconds saved) Anymate logs for a finished run or a returned
 * task, computed from the process's "Finish and Reporting" settings and the bot's two
 * overrides, as design.md §6 and anymate-api.md §3 describe and as the mock Anymate server's
 * ledger (tests/mock/mock_state.c, kpi_record) computes them:
 *
 *   subject             oSS   oE    rule               entries logged      seconds logged
 *   ------------------  ----  ----  -----------------  ------------------  ---------------
 *   (process unknown)   any   any   unknown_process    NULL                NULL
 *   (no settings)       any   any   no_settings        NULL                NULL
 *   run, tasks enabled  any   any   per_task           NULL                NULL
 *   run or task         set   set   override_seconds   oE                  oSS
 *   run or task         set   -     override_seconds   DE (*)              oSS
 *   run or task, AM     -     set   override_entries   oE                  oE x SPE
 *   run                 -     set   override_entries   oE                  secondsPerRun
 *   task                -     set   override_entries   oE                  secondsPerTask
 *   run or task, AM     -     -     advanced_defaults  DE                  DE x SPE
 *   run                 -     -     defaults           NULL                secondsPerRun
 *   task                -     -     defaults           NULL                secondsPerTask
 *
 * oSS = overwriteSecondsSaved, oE = overwriteEntries, "-" = absent or JSON null (the same to
 * Anymate), AM = Advanced Mode, DE = defaultEntries, SPE = secondsPerEntry. The rows are tried
 * in this order; the first that matches applies.
 * (*) in Advanced Mode; NULL otherwise.
 *
 * "Seconds saved per entry" exists only in Advanced Mode (design.md §6, clarified): without it
 * an overwriteEntries is logged as the entry count ("amount of entries is always logged") and
 * the seconds are the process's default per run (per task). An earlier version valued it as
 * entries x secondsPerEntry in every mode, i.e. 0 seconds for most processes; a real-SDK bot
 * session against Anymate's rules found 9 of 56 records valued differently that way.
 * Task actions are valued alike whatever the outcome (Solved, Manual, Retry, Error, their Async
 * variants, Return items): Anymate documents only the "solved task" default (anymate-api.md §3
 * and §7.11), so the gateway, like the mock, invents no per-outcome numbers. A task action is
 * valued by these rules whether or not its process has tasks enabled (as the mock does).
 *
 * When the process or its settings are unknown the result says so and carries no values: the
 * gateway never guesses; the raw overrides are recorded beside it, so the value can be computed
 * later. The FinishRun of a tasks-enabled process logs no run-level KPI (its KPIs come from the
 * tasks); its overrides are recorded but ignored. The mock's ledger writes secondsSaved 0 with
 * perTask true for such a run; this module answers "no value" (NULL): compare the two by rule.
 *
 * Pure module: no I/O, no logging, no global state; safe from any thread. All arithmetic is
 * 64-bit, so any two 32-bit factors (even INT32_MIN x INT32_MAX) multiply without overflow.
 */
#ifndef GW_KPI_H
#define GW_KPI_H

#include <stdbool.h>
#include <stdint.h>

/* A process's "Finish and Reporting" settings, as Anymate holds them (anymate-api.md §3).
 * A new field goes into ledger.c settings_equal() too (it keeps the settings' text per thread). */
struct kpi_settings {
    bool tasks_enabled;        /* KPIs are logged per task; a FinishRun logs none */
    int32_t seconds_per_run;   /* seconds saved per finished run (tasks not enabled) */
    int32_t seconds_per_task;  /* seconds saved per returned task */
    bool advanced_mode;        /* defaults come from entries x seconds per entry */
    int32_t default_entries;   /* Advanced Mode: entries per run or task */
    int32_t seconds_per_entry; /* Advanced Mode: seconds saved per entry (defaults and an
                                  overwriteEntries override) */
};

/* What is being valued. */
enum kpi_subject {
    KPI_RUN,  /* FinishRun */
    KPI_TASK, /* Solved, Manual, Retry, Error, their Async variants, an item of Return */
};

/* The bot's overrides. Absent and JSON null are the same: has_* false. */
struct kpi_overrides {
    bool has_seconds;
    int32_t seconds; /* overwriteSecondsSaved */
    bool has_entries;
    int32_t entries; /* overwriteEntries */
};

/* How the values were obtained. The names (kpi_rule_name) are stored in the audit table's
 * kpi_rule column and checked there: append new rules, never rename one. */
enum kpi_rule {
    KPI_RULE_OVERRIDE_SECONDS,  /* "override_seconds" */
    KPI_RULE_OVERRIDE_ENTRIES,  /* "override_entries" */
    KPI_RULE_DEFAULTS,          /* "defaults" */
    KPI_RULE_ADVANCED_DEFAULTS, /* "advanced_defaults" */
    KPI_RULE_PER_TASK,          /* "per_task" */
    KPI_RULE_UNKNOWN_PROCESS,   /* "unknown_process" */
    KPI_RULE_NO_SETTINGS,       /* "no_settings" */
    KPI_RULE__COUNT
};

struct kpi_result {
    enum kpi_rule rule;
    bool has_entries; /* false: entries logged as NULL */
    int64_t entries;  /* 0 when !has_entries */
    bool has_seconds; /* false: no seconds saved logged (per_task, unknown_process,
                         no_settings); every other rule has a value */
    int64_t seconds;  /* 0 when !has_seconds */
};

/*
 * Compute the KPI values for SUBJECT.
 *
 * PROCESS_KEY NULL means the process is unknown (no runId/taskId -> processKey mapping): rule
 * unknown_process. Otherwise SETTINGS NULL means no settings are known for that process (no
 * table row and nothing in the config file): rule no_settings. Only the NULL-ness of
 * PROCESS_KEY is looked at. OVERRIDES NULL means no overrides. OUT must not be NULL; it is
 * always filled. Settings and overrides are used as given, negative numbers included (policy
 * rejects negative overrides before this point; the settings table forbids negative settings).
 * Takes no ownership and keeps no pointer.
 */
void kpi_compute(enum kpi_subject subject, const char *process_key,
                 const struct kpi_settings *settings, const struct kpi_overrides *overrides,
                 struct kpi_result *out);

/* The stable text of RULE, e.g. "override_seconds"; "invalid" when out of range. Static. */
const char *kpi_rule_name(enum kpi_rule rule);

/*
 * Check SETTINGS as the settings table does: every number 0..INT32_MAX. Returns 0 when valid,
 * -1 with *WHY (if WHY is not NULL) set to a static message naming the first bad field.
 */
int kpi_settings_check(const struct kpi_settings *settings, const char **why);

#endif
