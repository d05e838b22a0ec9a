-- 0004_kpi_entries_rule: the KPI rule for an overwriteEntries without overwriteSecondsSaved,
-- clarified in design.md §6: "seconds saved per entry" exists only in Advanced Mode. Without
-- it Anymate logs the entry count and the process's default seconds per run (per task); the
-- gateway computes it that way from this version on (gateway/kpi.c). Only the documentation
-- of the settings table changes here; rows recorded earlier keep the values they were given
-- (their kpi_settings column holds what is needed to recompute them).

comment on column process_kpi_settings.seconds_per_entry is
    'Advanced Mode: seconds saved per entry, for the default entries and for an overwriteEntries '
    'override without overwriteSecondsSaved. Not used without Advanced Mode: an overwriteEntries '
    'is then logged as the entry count and the seconds are seconds_per_run (seconds_per_task).';
