-- 0001_audit: the audit ledger of design.md §5: what bots asked (FinishRun, task actions), what
-- the gateway decided and computed, and what Anymate answered.
--
-- Applied by `anymate-gateway migrate -c FILE` (gateway/migrate.c) in one transaction, with
-- its name and checksum recorded in gateway_schema_migrations; never edit it once released, add
-- a new migration. No BEGIN/COMMIT here, and nothing that cannot run in a transaction.
--
-- Shape of the ledger:
--   finishrun_audit     one row per FinishRun request, accepted or rejected
--   task_action_audit   one row per task action (Solved, Manual, Retry, Error, their Async
--                       variants; one per array item of Return)
--   audit_outcome       one row per forwarded request: what Anymate (or the network) answered
-- Every row is keyed by the gateway's request id and its receive time, and written with
-- INSERT ... ON CONFLICT DO NOTHING, so a replay from the spool or a resend never duplicates it.
-- The outcome is a separate insert-only row, never an UPDATE of the audit row; the views of
-- 0003 join the two.
--
-- Partitioning: the three tables are range-partitioned by received_at in UTC days, with a
-- DEFAULT partition each so an insert never fails for lack of a partition.
-- gateway_ensure_partitions() creates the day partitions from yesterday (or further back) to N
-- days ahead; the migration calls it once and the gateway calls it periodically (and at
-- start-up).

-- ---- audit tables ---------------------------------------------------------------------------

create table finishrun_audit (
    request_id              text        not null,
    received_at             timestamptz not null,
    gateway_instance        text        not null,
    client_id               text,
    customer_key            text,
    bot_subject             text,
    source_addr             inet,
    run_id                  bigint,
    process_key             text,
    overrides               jsonb       not null default '{}',
    overwrite_seconds_saved integer,
    overwrite_entries       integer,
    kpi_rule                text,
    kpi_entries             bigint,
    kpi_seconds_saved       bigint,
    kpi_settings            jsonb,
    decision                text        not null,
    reason_code             text,
    reason_message          text,
    spooled                 boolean     not null default false,
    inserted_at             timestamptz not null default now(),
    constraint finishrun_audit_pkey primary key (request_id, received_at),
    constraint finishrun_audit_decision_check check (decision in ('accepted', 'rejected')),
    constraint finishrun_audit_accepted_check
        check (decision = 'rejected' or (run_id is not null and kpi_rule is not null)),
    constraint finishrun_audit_rejected_check
        check (decision = 'accepted' or reason_code is not null),
    constraint finishrun_audit_kpi_rule_check
        check (kpi_rule in ('override_seconds', 'override_entries', 'defaults',
                            'advanced_defaults', 'per_task', 'unknown_process', 'no_settings')),
    constraint finishrun_audit_overrides_check
        check (jsonb_typeof(overrides) = 'object'
               and overrides - '{overwriteSecondsSaved,overwriteEntries}'::text[] = '{}'::jsonb),
    constraint finishrun_audit_overwrite_seconds_check
        check (overwrite_seconds_saved is null
               or overrides -> 'overwriteSecondsSaved' = to_jsonb(overwrite_seconds_saved)),
    constraint finishrun_audit_overwrite_entries_check
        check (overwrite_entries is null
               or overrides -> 'overwriteEntries' = to_jsonb(overwrite_entries))
) partition by range (received_at);

comment on table finishrun_audit is
    'One row per FinishRun request the gateway received: who sent it, the raw KPI overrides, '
    'the KPI the gateway computed (design.md §6) and whether it was accepted (then forwarded '
    'after this row was durable) or rejected (never forwarded). Partitioned by received_at in '
    'UTC days. The answer is in audit_outcome, same key. Dashboards: use the views '
    'kpi_per_process_day, rejections_per_reason_day, outcomes_per_status.';
comment on column finishrun_audit.request_id is
    'Gateway request id (UUIDv7 minted by the gateway, or the bot''s X-Request-Id), also sent '
    'upstream as X-Request-Id. With received_at the primary key; inserts are idempotent on it.';
comment on column finishrun_audit.received_at is
    'When the gateway received the request (gateway clock). Partition key.';
comment on column finishrun_audit.gateway_instance is
    'Name of the gateway replica that received the request ([audit] instance, default host name).';
comment on column finishrun_audit.client_id is
    'Anymate customer (tenant) the gateway forwards to, from its configuration; NULL if not set.';
comment on column finishrun_audit.customer_key is
    'The bearer token''s auth.anymate.app/CustomerKey claim (decoded, never verified or stored '
    'whole); NULL when absent or unreadable.';
comment on column finishrun_audit.bot_subject is
    'The bearer token''s subject or user-name claim: which Mate (bot user) sent the request.';
comment on column finishrun_audit.source_addr is
    'Address of the TCP peer that sent the request.';
comment on column finishrun_audit.run_id is
    'runId from the body. NULL only on rejected rows whose runId was missing or unusable.';
comment on column finishrun_audit.process_key is
    'Process of the run, from the runId -> processKey map (run_process) at receive time; NULL '
    'when the gateway had not seen the run start (kpi_rule = unknown_process).';
comment on column finishrun_audit.overrides is
    'The KPI override keys exactly as present in the body, with their JSON values: '
    '{} = neither sent; {"overwriteEntries": null} = sent as null; {"overwriteEntries": 5} = '
    'sent as 5. Keys are spelled canonically whatever case the bot used. On rejected rows a '
    'value may be whatever invalid JSON value was sent.';
comment on column finishrun_audit.overwrite_seconds_saved is
    'overwriteSecondsSaved when sent as a valid 32-bit integer; NULL when absent, null or invalid '
    '(see overrides to tell which).';
comment on column finishrun_audit.overwrite_entries is
    'overwriteEntries when sent as a valid 32-bit integer; NULL when absent, null or invalid.';
comment on column finishrun_audit.kpi_rule is
    'How kpi_entries and kpi_seconds_saved were computed (gateway/kpi.h): override_seconds, '
    'override_entries, defaults, advanced_defaults, per_task (process has tasks enabled: the run '
    'logs no KPI, its tasks do), unknown_process or no_settings (no values: never guessed). '
    'NULL on rejected rows.';
comment on column finishrun_audit.kpi_entries is
    'Entries Anymate will log for the run; NULL when it logs none (Advanced Mode off and no '
    'overwriteEntries, or no value could be computed).';
comment on column finishrun_audit.kpi_seconds_saved is
    'Seconds saved Anymate will log for the run; NULL when no value (per_task, unknown_process, '
    'no_settings, rejected).';
comment on column finishrun_audit.kpi_settings is
    'The process KPI settings the computation used, as a JSON object '
    '{"source": "table"|"config", "tasksEnabled", "secondsPerRun", "secondsPerTask", '
    '"advancedMode", "defaultEntries", "secondsPerEntry"}; NULL when none applied.';
comment on column finishrun_audit.decision is
    'accepted: valid, audited, then forwarded. rejected: answered by the gateway with a 4xx and '
    'never forwarded.';
comment on column finishrun_audit.reason_code is
    'Rejected rows: the stable error code the bot received (e.g. finishrun.runid_missing).';
comment on column finishrun_audit.reason_message is
    'Rejected rows: the human message the bot received.';
comment on column finishrun_audit.spooled is
    'True when the record reached PostgreSQL through the gateway''s local spool (the database was '
    'down or slow when the request came in) rather than directly.';
comment on column finishrun_audit.inserted_at is
    'When the row was inserted; later than received_at by the spool replay delay when spooled.';

create table task_action_audit (
    request_id              text        not null,
    item                    integer     not null default 0,
    received_at             timestamptz not null,
    endpoint                text        not null,
    action                  text,
    gateway_instance        text        not null,
    client_id               text,
    customer_key            text,
    bot_subject             text,
    source_addr             inet,
    task_id                 bigint,
    run_id                  bigint,
    process_key             text,
    overrides               jsonb       not null default '{}',
    overwrite_seconds_saved integer,
    overwrite_entries       integer,
    kpi_rule                text,
    kpi_entries             bigint,
    kpi_seconds_saved       bigint,
    kpi_settings            jsonb,
    decision                text        not null,
    reason_code             text,
    reason_message          text,
    spooled                 boolean     not null default false,
    inserted_at             timestamptz not null default now(),
    constraint task_action_audit_pkey primary key (request_id, item, received_at),
    constraint task_action_audit_item_check check (item >= 0),
    constraint task_action_audit_endpoint_check
        check (endpoint in ('Solved', 'Manual', 'Retry', 'Error', 'SolvedAsync', 'ManualAsync',
                            'RetryAsync', 'ErrorAsync', 'Return')),
    constraint task_action_audit_action_check
        check (action in ('Solved', 'Manual', 'Retry', 'Error')),
    constraint task_action_audit_decision_check check (decision in ('accepted', 'rejected')),
    constraint task_action_audit_accepted_check
        check (decision = 'rejected'
               or (task_id is not null and action is not null and kpi_rule is not null)),
    constraint task_action_audit_rejected_check
        check (decision = 'accepted' or reason_code is not null),
    constraint task_action_audit_kpi_rule_check
        check (kpi_rule in ('override_seconds', 'override_entries', 'defaults',
                            'advanced_defaults', 'unknown_process', 'no_settings')),
    constraint task_action_audit_overrides_check
        check (jsonb_typeof(overrides) = 'object'
               and overrides - '{overwriteSecondsSaved,overwriteEntries}'::text[] = '{}'::jsonb),
    constraint task_action_audit_overwrite_seconds_check
        check (overwrite_seconds_saved is null
               or overrides -> 'overwriteSecondsSaved' = to_jsonb(overwrite_seconds_saved)),
    constraint task_action_audit_overwrite_entries_check
        check (overwrite_entries is null
               or overrides -> 'overwriteEntries' = to_jsonb(overwrite_entries))
) partition by range (received_at);

comment on table task_action_audit is
    'One row per task action the gateway received (Solved, Manual, Retry, Error and their Async '
    'variants; one row per array item of Return), accepted or rejected, with the raw KPI '
    'overrides and the KPI the gateway computed. Columns as in finishrun_audit, plus endpoint, '
    'action, item and task_id. Partitioned by received_at in UTC days; outcome in audit_outcome.';
comment on column task_action_audit.item is
    'Position of the action in a Return array (0-based); 0 for every other endpoint. Part of '
    'the primary key (request_id, item, received_at).';
comment on column task_action_audit.endpoint is
    'Endpoint called: Solved, Manual, Retry, Error, SolvedAsync, ManualAsync, RetryAsync, '
    'ErrorAsync or Return.';
comment on column task_action_audit.action is
    'What happened to the task: Solved, Manual, Retry or Error (for Return, the item''s action). '
    'Every action is valued with the process''s task defaults: Anymate documents no other.';
comment on column task_action_audit.task_id is
    'taskId from the body. NULL only on rejected rows whose taskId was missing or unusable.';
comment on column task_action_audit.run_id is
    'Run the task was taken in, from the taskId map (task_process) when known; else NULL.';
comment on column task_action_audit.process_key is
    'Process of the task, from the taskId -> processKey map (task_process); NULL when unknown.';
comment on column task_action_audit.overrides is
    'The KPI override keys exactly as present in the item, with their JSON values (see '
    'finishrun_audit.overrides).';
comment on column task_action_audit.kpi_rule is
    'How the KPI was computed (see finishrun_audit.kpi_rule; per_task never applies to tasks).';

-- ---- outcomes -------------------------------------------------------------------------------

create table audit_outcome (
    request_id       text             not null,
    received_at      timestamptz      not null,
    endpoint         text             not null,
    gateway_instance text             not null,
    upstream_status  integer,
    succeeded        boolean,
    message          text,
    failure          text,
    status_sent      integer,
    audit_seconds    double precision,
    upstream_seconds double precision,
    total_seconds    double precision,
    finished_at      timestamptz      not null default now(),
    constraint audit_outcome_pkey primary key (request_id, received_at),
    constraint audit_outcome_status_check check (upstream_status between 100 and 599),
    constraint audit_outcome_status_sent_check check (status_sent between 100 and 599),
    constraint audit_outcome_answer_check
        check (upstream_status is not null or failure is not null),
    constraint audit_outcome_seconds_check
        check (audit_seconds >= 0 and upstream_seconds >= 0 and total_seconds >= 0)
) partition by range (received_at);

comment on table audit_outcome is
    'What became of each forwarded audited request: Anymate''s HTTP status and answer, or the '
    'failure when none came. Written once, after the answer (insert-only, idempotent on '
    '(request_id, received_at), the key of the audit row it belongs to). An accepted audit row '
    'without an outcome row is still in flight, or its gateway stopped before it could write one.';
comment on column audit_outcome.endpoint is
    'Endpoint of the request: FinishRun, or a task_action_audit.endpoint value.';
comment on column audit_outcome.upstream_status is
    'HTTP status Anymate answered; NULL when no answer came (see failure).';
comment on column audit_outcome.succeeded is
    'The "succeeded" field of Anymate''s JSON answer; NULL when the body had none (not JSON, '
    'not an object, or no answer). A KPI counts only when upstream_status is 2xx and this is true.';
comment on column audit_outcome.message is
    'The "message" field of Anymate''s JSON answer (why a business refusal happened).';
comment on column audit_outcome.failure is
    'Gateway error code when the upstream exchange failed (upstream.timeout, upstream.connect, '
    'upstream.tls, upstream.protocol, ...); NULL when Anymate answered.';
comment on column audit_outcome.status_sent is
    'HTTP status the bot received from the gateway.';
comment on column audit_outcome.audit_seconds is
    'From receipt until the audit record was durable (committed or spooled).';
comment on column audit_outcome.upstream_seconds is
    'From sending upstream until Anymate''s answer was complete (or the failure).';
comment on column audit_outcome.total_seconds is
    'From receipt until the reply to the bot was complete.';

-- ---- partitions -----------------------------------------------------------------------------

create table finishrun_audit_default partition of finishrun_audit default;
create table task_action_audit_default partition of task_action_audit default;
create table audit_outcome_default partition of audit_outcome default;

comment on table finishrun_audit_default is
    'Rows for days without a partition (clock far off, partitions not created in time). '
    'gateway_ensure_partitions() moves them into the day partition when it creates one.';
comment on table task_action_audit_default is
    'Rows for days without a partition; see finishrun_audit_default.';
comment on table audit_outcome_default is
    'Rows for days without a partition; see finishrun_audit_default.';

create function gateway_ensure_partitions(days_ahead integer default 7,
                                          days_back integer default 1)
returns table (partition_name text, action text)
language plpgsql
set lock_timeout = '5s'
as $fn$
declare
    -- Serialises concurrent callers (every replica calls this periodically); the value is
    -- 'anymateP' in ASCII. gateway/migrate.c uses 'anymateM' for migrations.
    lock_key    constant bigint := 7020682379810596176;
    parents     constant text[] := array['finishrun_audit', 'task_action_audit', 'audit_outcome'];
    today       date := (now() at time zone 'UTC')::date;
    parent      text;
    parent_oid  regclass;
    nsp         text;
    dflt        text;
    day         date;
    part        text;
    lo          timestamptz;
    hi          timestamptz;
    moved       bigint;
begin
    if days_ahead is null or days_ahead < 0 or days_ahead > 366 then
        raise exception 'gateway_ensure_partitions: days_ahead must be 0..366, not %', days_ahead;
    end if;
    if days_back is null or days_back < 0 or days_back > 3660 then
        raise exception 'gateway_ensure_partitions: days_back must be 0..3660, not %', days_back;
    end if;
    perform pg_advisory_xact_lock(lock_key);
    foreach parent in array parents loop
        parent_oid := to_regclass(parent);
        if parent_oid is null then
            raise exception 'gateway_ensure_partitions: table % not found (search_path %)',
                parent, current_setting('search_path');
        end if;
        select n.nspname into nsp
          from pg_class c join pg_namespace n on n.oid = c.relnamespace
         where c.oid = parent_oid;
        dflt := parent || '_default';
        for day in select generate_series(today - days_back, today + days_ahead,
                                          interval '1 day')::date
        loop
            part := parent || '_p' || to_char(day, 'YYYYMMDD');
            if to_regclass(format('%I.%I', nsp, part)) is not null then
                continue;
            end if;
            lo := day::timestamp at time zone 'UTC';
            hi := (day + 1)::timestamp at time zone 'UTC';
            begin
                -- CREATE TABLE ... PARTITION OF would take an ACCESS EXCLUSIVE lock on the
                -- parent and so wait for (and then block) every reader and writer. Creating a
                -- plain table and attaching it takes only SHARE UPDATE EXCLUSIVE on the parent,
                -- which inserts and dashboard queries do not conflict with. The default
                -- partition is locked (ATTACH would lock and scan it anyway) so that rows that
                -- landed there for this day can be moved without a race.
                if to_regclass(format('%I.%I', nsp, dflt)) is not null then
                    execute format('lock table %I.%I in access exclusive mode', nsp, dflt);
                end if;
                execute format('create table %I.%I (like %I.%I including all)',
                               nsp, part, nsp, parent);
                -- Lets the planner skip this partition when a query (or a view) filters on
                -- the UTC day of received_at, which partition pruning alone cannot do.
                execute format('alter table %I.%I add constraint %I check '
                               '((received_at at time zone ''UTC'')::date = %L::date)',
                               nsp, part, part || '_day_check', day);
                moved := 0;
                if to_regclass(format('%I.%I', nsp, dflt)) is not null then
                    execute format('with m as (delete from %I.%I where received_at >= %L '
                                   'and received_at < %L returning *) '
                                   'insert into %I.%I select * from m',
                                   nsp, dflt, lo, hi, nsp, part);
                    get diagnostics moved = row_count;
                end if;
                execute format('alter table %I.%I attach partition %I.%I '
                               'for values from (%L) to (%L)', nsp, parent, nsp, part, lo, hi);
                partition_name := part;
                action := case when moved > 0
                               then 'created; moved ' || moved || ' rows from ' || dflt
                               else 'created' end;
                return next;
            exception
                when lock_not_available then
                    partition_name := part;
                    action := 'skipped: lock timeout; try again later';
                    return next;
                when duplicate_table then
                    partition_name := part;
                    action := 'skipped: a table of that name exists but is not a partition';
                    return next;
            end;
        end loop;
    end loop;
end
$fn$;

comment on function gateway_ensure_partitions(integer, integer) is
    'Creates the missing UTC-day partitions of finishrun_audit, task_action_audit and '
    'audit_outcome from days_back days before today (default: yesterday) to days_ahead days '
    'after today (UTC), moving rows that landed in a default partition for such a day (a larger '
    'days_back rescues older rows, e.g. after replaying an old spool). Idempotent; concurrent '
    'callers are serialised by an advisory lock. Returns one row per partition created or '
    'skipped (a lock not obtained within 5 s skips the partition: call again). The gateway '
    'calls it at start-up and periodically ([audit] partitions_ahead days ahead); call it by '
    'hand after a long outage. Old partitions are never dropped here: retention is an operator '
    'decision (DETACH PARTITION ... CONCURRENTLY, then DROP).';

do $$ begin perform gateway_ensure_partitions(7); end $$;

-- ---- indexes --------------------------------------------------------------------------------
-- The primary keys serve the idempotent inserts and the audit -> outcome joins of the views.
-- The views aggregate whole days, which sequential scans of day partitions do best; the
-- partitions' day CHECK constraints let a view filtered by day skip the other partitions. The
-- indexes below serve the rest: finding the records of one run or task, and the rejections
-- view, whose rows are rare among many accepted ones.

create index finishrun_audit_run_id_idx on finishrun_audit (run_id);
create index finishrun_audit_rejected_idx on finishrun_audit (reason_code)
    where decision = 'rejected';
create index task_action_audit_task_id_idx on task_action_audit (task_id);
create index task_action_audit_rejected_idx on task_action_audit (reason_code)
    where decision = 'rejected';
