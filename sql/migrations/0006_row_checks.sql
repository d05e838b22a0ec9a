-- 0006_row_checks: each audit table's rules in one CHECK that calls a PL/pgSQL function.
--
-- Why. PostgreSQL prepares a table's CHECK constraints again for every statement that inserts
-- into it (it reads each constraint's stored expression tree and plans it), and the gateway's
-- batched inserts are many short statements: with seven and four such constraints on the two
-- hottest tables this was 20-35% of the database's CPU per ledger row in the ledger benchmark
-- (tests/bench/ledger.py: 30-54 us per row with them, 24-31 us with the rules moved here, 23-28
-- us with no rules at all). A PL/pgSQL function is compiled once per connection and its
-- expressions planned once; the CHECK that calls it is a small expression.
--
-- What stays the same. Every rule of 0001 is kept, word for word, in the same order; a row
-- breaking one is refused with SQLSTATE 23514 (check_violation) and the rule's old constraint
-- name, in the message and in the error's constraint field. As with any CHECK, a rule whose
-- expression is NULL passes. The functions are immutable (they read nothing but their
-- arguments), so the constraints may be relied on like the ones they replace.
--
-- Locks. Adding a CHECK to a table scans it under an ACCESS EXCLUSIVE lock; the rows already
-- there passed the very same rules, so the new constraints are added NOT VALID (no scan: the
-- migration blocks ledger writes only for as long as the catalog changes take) and validated
-- afterwards by gateway_validate_row_checks(), which an operator may run at a quiet time (it
-- takes SHARE UPDATE EXCLUSIVE: inserts go on). New rows are checked either way.

create function gateway_row_check_failed(rule text) returns boolean
language plpgsql immutable as $$
begin
    raise exception 'new row violates check constraint "%"', rule
        using errcode = 'check_violation', constraint = rule;
end $$;

create function gateway_finishrun_row_ok(
    decision text, run_id bigint, kpi_rule text, reason_code text, overrides jsonb,
    overwrite_seconds_saved integer, overwrite_entries integer)
returns boolean language plpgsql immutable as $$
begin
    if not coalesce(decision in ('accepted', 'rejected'), true) then
        return gateway_row_check_failed('finishrun_audit_decision_check');
    end if;
    if not coalesce(decision = 'rejected' or (run_id is not null and kpi_rule is not null),
                    true) then
        return gateway_row_check_failed('finishrun_audit_accepted_check');
    end if;
    if not coalesce(decision = 'accepted' or reason_code is not null, true) then
        return gateway_row_check_failed('finishrun_audit_rejected_check');
    end if;
    if not coalesce(kpi_rule in ('override_seconds', 'override_entries', 'defaults',
                                 'advanced_defaults', 'per_task', 'unknown_process',
                                 'no_settings'), true) then
        return gateway_row_check_failed('finishrun_audit_kpi_rule_check');
    end if;
    if not coalesce(jsonb_typeof(overrides) = 'object'
                    and overrides - '{overwriteSecondsSaved,overwriteEntries}'::text[]
                        = '{}'::jsonb, true) then
        return gateway_row_check_failed('finishrun_audit_overrides_check');
    end if;
    if not coalesce(overwrite_seconds_saved is null
                    or overrides -> 'overwriteSecondsSaved' = to_jsonb(overwrite_seconds_saved),
                    true) then
        return gateway_row_check_failed('finishrun_audit_overwrite_seconds_check');
    end if;
    if not coalesce(overwrite_entries is null
                    or overrides -> 'overwriteEntries' = to_jsonb(overwrite_entries), true) then
        return gateway_row_check_failed('finishrun_audit_overwrite_entries_check');
    end if;
    return true;
end $$;

create function gateway_task_action_row_ok(
    item integer, endpoint text, action text, decision text, task_id bigint, kpi_rule text,
    reason_code text, overrides jsonb, overwrite_seconds_saved integer, overwrite_entries integer)
returns boolean language plpgsql immutable as $$
begin
    if not coalesce(item >= 0, true) then
        return gateway_row_check_failed('task_action_audit_item_check');
    end if;
    if not coalesce(endpoint in ('Solved', 'Manual', 'Retry', 'Error', 'SolvedAsync',
                                 'ManualAsync', 'RetryAsync', 'ErrorAsync', 'Return'), true) then
        return gateway_row_check_failed('task_action_audit_endpoint_check');
    end if;
    if not coalesce(action in ('Solved', 'Manual', 'Retry', 'Error'), true) then
        return gateway_row_check_failed('task_action_audit_action_check');
    end if;
    if not coalesce(decision in ('accepted', 'rejected'), true) then
        return gateway_row_check_failed('task_action_audit_decision_check');
    end if;
    if not coalesce(decision = 'rejected'
                    or (task_id is not null and action is not null and kpi_rule is not null),
                    true) then
        return gateway_row_check_failed('task_action_audit_accepted_check');
    end if;
    if not coalesce(decision = 'accepted' or reason_code is not null, true) then
        return gateway_row_check_failed('task_action_audit_rejected_check');
    end if;
    if not coalesce(kpi_rule in ('override_seconds', 'override_entries', 'defaults',
                                 'advanced_defaults', 'unknown_process', 'no_settings'),
                    true) then
        return gateway_row_check_failed('task_action_audit_kpi_rule_check');
    end if;
    if not coalesce(jsonb_typeof(overrides) = 'object'
                    and overrides - '{overwriteSecondsSaved,overwriteEntries}'::text[]
                        = '{}'::jsonb, true) then
        return gateway_row_check_failed('task_action_audit_overrides_check');
    end if;
    if not coalesce(overwrite_seconds_saved is null
                    or overrides -> 'overwriteSecondsSaved' = to_jsonb(overwrite_seconds_saved),
                    true) then
        return gateway_row_check_failed('task_action_audit_overwrite_seconds_check');
    end if;
    if not coalesce(overwrite_entries is null
                    or overrides -> 'overwriteEntries' = to_jsonb(overwrite_entries), true) then
        return gateway_row_check_failed('task_action_audit_overwrite_entries_check');
    end if;
    return true;
end $$;

create function gateway_outcome_row_ok(
    upstream_status integer, status_sent integer, failure text, audit_seconds double precision,
    upstream_seconds double precision, total_seconds double precision)
returns boolean language plpgsql immutable as $$
begin
    if not coalesce(upstream_status between 100 and 599, true) then
        return gateway_row_check_failed('audit_outcome_status_check');
    end if;
    if not coalesce(status_sent between 100 and 599, true) then
        return gateway_row_check_failed('audit_outcome_status_sent_check');
    end if;
    if not coalesce(upstream_status is not null or failure is not null, true) then
        return gateway_row_check_failed('audit_outcome_answer_check');
    end if;
    if not coalesce(audit_seconds >= 0 and upstream_seconds >= 0 and total_seconds >= 0,
                    true) then
        return gateway_row_check_failed('audit_outcome_seconds_check');
    end if;
    return true;
end $$;

alter table finishrun_audit
    drop constraint finishrun_audit_decision_check,
    drop constraint finishrun_audit_accepted_check,
    drop constraint finishrun_audit_rejected_check,
    drop constraint finishrun_audit_kpi_rule_check,
    drop constraint finishrun_audit_overrides_check,
    drop constraint finishrun_audit_overwrite_seconds_check,
    drop constraint finishrun_audit_overwrite_entries_check,
    add constraint finishrun_audit_row_check check (gateway_finishrun_row_ok(
        decision, run_id, kpi_rule, reason_code, overrides, overwrite_seconds_saved,
        overwrite_entries)) not valid;

alter table task_action_audit
    drop constraint task_action_audit_item_check,
    drop constraint task_action_audit_endpoint_check,
    drop constraint task_action_audit_action_check,
    drop constraint task_action_audit_decision_check,
    drop constraint task_action_audit_accepted_check,
    drop constraint task_action_audit_rejected_check,
    drop constraint task_action_audit_kpi_rule_check,
    drop constraint task_action_audit_overrides_check,
    drop constraint task_action_audit_overwrite_seconds_check,
    drop constraint task_action_audit_overwrite_entries_check,
    add constraint task_action_audit_row_check check (gateway_task_action_row_ok(
        item, endpoint, action, decision, task_id, kpi_rule, reason_code, overrides,
        overwrite_seconds_saved, overwrite_entries)) not valid;

alter table audit_outcome
    drop constraint audit_outcome_status_check,
    drop constraint audit_outcome_status_sent_check,
    drop constraint audit_outcome_answer_check,
    drop constraint audit_outcome_seconds_check,
    add constraint audit_outcome_row_check check (gateway_outcome_row_ok(
        upstream_status, status_sent, failure, audit_seconds, upstream_seconds,
        total_seconds)) not valid;

create function gateway_validate_row_checks() returns void
language plpgsql as $$
begin
    alter table finishrun_audit validate constraint finishrun_audit_row_check;
    alter table task_action_audit validate constraint task_action_audit_row_check;
    alter table audit_outcome validate constraint audit_outcome_row_check;
end $$;

comment on function gateway_validate_row_checks() is
    'Validates the row checks 0006 added NOT VALID (rows written before it passed the same '
    'rules as separate constraints). Scans every partition; inserts go on meanwhile.';
