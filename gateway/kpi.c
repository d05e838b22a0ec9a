/*
 * kpi: the KPI rules of design.md §6 as one pure function (see kpi.h for the rule table and
 * where the rules come from). The order of the tests below is the order of the table's rows.
 */
#include "kpi.h"

#include <stddef.h>

static const char *const rule_names[KPI_RULE__COUNT] = {
    [KPI_RULE_OVERRIDE_SECONDS] = "override_seconds",
    [KPI_RULE_OVERRIDE_ENTRIES] = "override_entries",
    [KPI_RULE_DEFAULTS] = "defaults",
    [KPI_RULE_ADVANCED_DEFAULTS] = "advanced_defaults",
    [KPI_RULE_PER_TASK] = "per_task",
    [KPI_RULE_UNKNOWN_PROCESS] = "unknown_process",
    [KPI_RULE_NO_SETTINGS] = "no_settings",
};

const char *kpi_rule_name(enum kpi_rule rule)
{
    if ((unsigned)rule >= KPI_RULE__COUNT)
        return "invalid";
    return rule_names[rule];
}

static void set_entries(struct kpi_result *out, int64_t entries)
{
    out->has_entries = true;
    out->entries = entries;
}

static void set_seconds(struct kpi_result *out, int64_t seconds)
{
    out->has_seconds = true;
    out->seconds = seconds;
}

void kpi_compute(enum kpi_subject subject, const char *process_key,
                 const struct kpi_settings *settings, const struct kpi_overrides *overrides,
                 struct kpi_result *out)
{
    static const struct kpi_overrides none = {0};
    const struct kpi_overrides *ov = overrides != NULL ? overrides : &none;
    const struct kpi_settings *s = settings;

    *out = (struct kpi_result){0};
    if (process_key == NULL) {
        out->rule = KPI_RULE_UNKNOWN_PROCESS;
        return;
    }
    if (s == NULL) {
        out->rule = KPI_RULE_NO_SETTINGS;
        return;
    }
    /* Tasks enabled: Anymate ignores a run's overrides and logs the KPIs per task. */
    if (subject == KPI_RUN && s->tasks_enabled) {
        out->rule = KPI_RULE_PER_TASK;
        return;
    }
    if (ov->has_seconds) {
        /* The seconds are taken as given; the entry count is still logged for analysis. */
        out->rule = KPI_RULE_OVERRIDE_SECONDS;
        set_seconds(out, ov->seconds);
        if (ov->has_entries)
            set_entries(out, ov->entries);
        else if (s->advanced_mode)
            set_entries(out, s->default_entries);
        return;
    }
    if (ov->has_entries) {
        /* The entry count is always logged; seconds per entry exist only in Advanced Mode,
         * so without it the seconds are the process's default. */
        out->rule = KPI_RULE_OVERRIDE_ENTRIES;
        set_entries(out, ov->entries);
        if (s->advanced_mode)
            set_seconds(out, (int64_t)ov->entries * (int64_t)s->seconds_per_entry);
        else
            set_seconds(out, subject == KPI_RUN ? s->seconds_per_run : s->seconds_per_task);
        return;
    }
    if (s->advanced_mode) {
        out->rule = KPI_RULE_ADVANCED_DEFAULTS;
        set_entries(out, s->default_entries);
        set_seconds(out, (int64_t)s->default_entries * (int64_t)s->seconds_per_entry);
        return;
    }
    out->rule = KPI_RULE_DEFAULTS;
    set_seconds(out, subject == KPI_RUN ? s->seconds_per_run : s->seconds_per_task);
}

int kpi_settings_check(const struct kpi_settings *settings, const char **why)
{
    static const char *const bad[] = {
        "seconds_per_run must not be negative",
        "seconds_per_task must not be negative",
        "default_entries must not be negative",
        "seconds_per_entry must not be negative",
    };
    const int32_t values[] = {settings->seconds_per_run, settings->seconds_per_task,
                              settings->default_entries, settings->seconds_per_entry};
    for (size_t i = 0; i < sizeof(values) / sizeof(values[0]); i++) {
        if (values[i] < 0) {
            if (why != NULL)
                *why = bad[i];
            return -1;
        }
    }
    if (why != NULL)
        *why = NULL;
    return 0;
}
