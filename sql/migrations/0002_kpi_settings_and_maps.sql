-- 0002_kpi_settings_and_maps: what the gateway needs to value a FinishRun or a task action
-- (design.md §6): which process a runId or taskId belongs to, and each process's KPI settings.
-- Shared by every gateway replica. See 0001_audit.sql for how migrations are applied.

-- ---- runId / taskId -> processKey ---------------------------------------------------------
-- FinishRun and the task actions carry only an id; the gateway learns the process from the
-- answers to StartOrGetRun/StartRun, TakeNext, TakeMany, CreateAndTakeTask, CreateTask and
-- CreateTasks that pass through it (anymate-api.md §4), and upserts them here.

create table run_process (
    run_id      bigint      not null,
    process_key text        not null,
    learned_at  timestamptz not null default now(),
    source      text        not null,
    request_id  text,
    constraint run_process_pkey primary key (run_id),
    constraint run_process_key_check check (process_key <> ''),
    constraint run_process_source_check check (source <> '')
);

comment on table run_process is
    'runId -> processKey, learned by the gateway from Anymate''s answers (the processKey of the '
    'URL, not of the body, which the docs show as null). A run belongs to one process for its '
    'whole life, so a row never needs to change; FinishRun looks the run up here.';
comment on column run_process.learned_at is 'When the mapping was (last) learned.';
comment on column run_process.source is
    'Endpoint whose answer taught it (StartOrGetRun, StartRun, TakeNext, TakeMany, '
    'CreateAndTakeTask), or e.g. ''manual'' for an operator''s backfill.';
comment on column run_process.request_id is
    'Gateway request id of that answer (joins the access log); NULL for a backfill.';

create index run_process_learned_at_idx on run_process (learned_at);

create table task_process (
    task_id     bigint      not null,
    process_key text        not null,
    run_id      bigint,
    learned_at  timestamptz not null default now(),
    source      text        not null,
    request_id  text,
    constraint task_process_pkey primary key (task_id),
    constraint task_process_key_check check (process_key <> ''),
    constraint task_process_source_check check (source <> '')
);

comment on table task_process is
    'taskId -> processKey (and the run the task was last taken in, when an answer said so), '
    'learned from TakeNext, TakeMany, CreateAndTakeTask, CreateTask and CreateTasks answers. '
    'Solved, Manual, Retry and Error look the task up here.';
comment on column task_process.run_id is
    'runId of the task object in the answer that taught the mapping (TakeNext, TakeMany, '
    'CreateAndTakeTask); NULL when the answer had none (CreateTask, CreateTasks).';
comment on column task_process.source is 'Endpoint whose answer taught it, or ''manual''.';

create index task_process_learned_at_idx on task_process (learned_at);

-- ---- per-process KPI settings -------------------------------------------------------------

create table process_kpi_settings (
    process_key       text        not null,
    tasks_enabled     boolean     not null default false,
    seconds_per_run   integer     not null default 0,
    seconds_per_task  integer     not null default 0,
    advanced_mode     boolean     not null default false,
    default_entries   integer     not null default 0,
    seconds_per_entry integer     not null default 0,
    note              text,
    updated_at        timestamptz not null default now(),
    updated_by        text        not null default current_user,
    constraint process_kpi_settings_pkey primary key (process_key),
    constraint process_kpi_settings_key_check check (process_key <> ''),
    constraint process_kpi_settings_seconds_per_run_check check (seconds_per_run >= 0),
    constraint process_kpi_settings_seconds_per_task_check check (seconds_per_task >= 0),
    constraint process_kpi_settings_default_entries_check check (default_entries >= 0),
    constraint process_kpi_settings_seconds_per_entry_check check (seconds_per_entry >= 0)
);

comment on table process_kpi_settings is
    'Each process''s KPI defaults, a copy of its "Finish and Reporting" settings in Anymate '
    '(which the API does not expose). The gateway values each FinishRun and task action with '
    'them (gateway/kpi.h); a row here takes precedence over a [process "KEY"] section of the '
    'gateway''s config file. Every change is announced with NOTIFY gateway_kpi_settings '
    '(payload: the process key, or * after TRUNCATE) and takes effect at once on every replica; '
    'it does not change records already written. Changes are kept in process_kpi_settings_history.';
comment on column process_kpi_settings.process_key is
    'The process key, exactly (case-sensitive) as Anymate and the bots spell it.';
comment on column process_kpi_settings.tasks_enabled is
    'Process has tasks enabled: KPIs are logged per task; a FinishRun''s overrides are ignored.';
comment on column process_kpi_settings.seconds_per_run is
    'Seconds saved per finished run (processes without tasks), when the bot sends no override.';
comment on column process_kpi_settings.seconds_per_task is
    'Seconds saved per returned task (Solved, Manual, Retry, Error alike), without override.';
comment on column process_kpi_settings.advanced_mode is
    'Advanced Mode: defaults are default_entries entries x seconds_per_entry seconds.';
comment on column process_kpi_settings.default_entries is
    'Advanced Mode: entries per run or task when the bot sends no overwriteEntries.';
comment on column process_kpi_settings.seconds_per_entry is
    'Seconds saved per entry: Advanced Mode defaults, and any overwriteEntries override without '
    'overwriteSecondsSaved (whether or not Advanced Mode is on).';

create table process_kpi_settings_history (
    id           bigint      generated always as identity,
    changed_at   timestamptz not null default now(),
    changed_by   text        not null default current_user,
    operation    text        not null,
    process_key  text        not null,
    old_settings jsonb,
    new_settings jsonb,
    constraint process_kpi_settings_history_pkey primary key (id),
    constraint process_kpi_settings_history_op_check
        check (operation in ('INSERT', 'UPDATE', 'DELETE', 'TRUNCATE'))
);

comment on table process_kpi_settings_history is
    'Every change of process_kpi_settings, with the row before and after (as JSON). With the '
    'kpi_settings snapshot in each audit row, it tells how any recorded KPI was computed.';

create index process_kpi_settings_history_key_idx
    on process_kpi_settings_history (process_key, changed_at);

create function process_kpi_settings_touch() returns trigger
language plpgsql
as $fn$
begin
    new.updated_at := now();
    new.updated_by := current_user;
    return new;
end
$fn$;

create trigger process_kpi_settings_touch
    before update on process_kpi_settings
    for each row execute function process_kpi_settings_touch();

-- NOTIFY payloads are limited to 8000 bytes: a longer key is announced as '*' (reload all).
create function process_kpi_settings_notify() returns trigger
language plpgsql
as $fn$
declare
    channel constant text := 'gateway_kpi_settings';
begin
    if tg_op = 'TRUNCATE' then
        insert into process_kpi_settings_history (operation, process_key)
        values ('TRUNCATE', '*');
        perform pg_notify(channel, '*');
        return null;
    end if;
    insert into process_kpi_settings_history (operation, process_key, old_settings, new_settings)
    values (tg_op,
            case when tg_op = 'DELETE' then old.process_key else new.process_key end,
            case when tg_op <> 'INSERT' then to_jsonb(old) end,
            case when tg_op <> 'DELETE' then to_jsonb(new) end);
    if tg_op <> 'INSERT' then
        perform pg_notify(channel, case when octet_length(old.process_key) < 7900
                                        then old.process_key else '*' end);
    end if;
    if tg_op = 'INSERT' or (tg_op = 'UPDATE' and new.process_key <> old.process_key) then
        perform pg_notify(channel, case when octet_length(new.process_key) < 7900
                                        then new.process_key else '*' end);
    end if;
    return null;
end
$fn$;

create trigger process_kpi_settings_notify
    after insert or update or delete on process_kpi_settings
    for each row execute function process_kpi_settings_notify();

create trigger process_kpi_settings_notify_truncate
    after truncate on process_kpi_settings
    for each statement execute function process_kpi_settings_notify();

comment on function process_kpi_settings_notify() is
    'Announces each change of process_kpi_settings on channel gateway_kpi_settings (payload: '
    'the process key; * after TRUNCATE or for keys too long for a payload) and records it in '
    'process_kpi_settings_history. Notifications are sent when the transaction commits.';
