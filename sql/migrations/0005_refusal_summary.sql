-- 0005_refusal_summary: refusals counted instead of recorded one by one.
--
-- A refused FinishRun or task action is recorded as its own row (decision 'rejected') up to
-- [audit] refusal_records_per_second per gateway thread; beyond that rate (a bot in a retry
-- loop, a flood of bad requests) the gateway counts the refusals per endpoint and error code
-- and writes one refusal_summary row per second instead, so that a flood of refused requests
-- cannot become a flood of writes. The count is kept; only the per-request detail (who, which
-- runId) is not. rejections_per_reason_day adds both.

create table refusal_summary (
    summary_id       text        not null,
    window_start     timestamptz not null,
    window_end       timestamptz not null,
    gateway_instance text        not null,
    endpoint         text        not null,
    reason_code      text        not null,
    refusals         bigint      not null,
    inserted_at      timestamptz not null default now(),
    constraint refusal_summary_pkey primary key (summary_id),
    constraint refusal_summary_refusals_check check (refusals > 0),
    constraint refusal_summary_window_check check (window_end >= window_start)
);

create index refusal_summary_window_start_idx on refusal_summary (window_start);

comment on table refusal_summary is
    'Refusals the gateway counted but did not record one by one (beyond [audit] '
    'refusal_records_per_second per thread): per gateway thread, one row per endpoint and '
    'error code per window of about a second. Idempotent on summary_id (a UUIDv7), so a replay '
    'from the spool never counts twice.';
comment on column refusal_summary.refusals is
    'How many requests were refused with reason_code in the window and not recorded as rows.';

create or replace view rejections_per_reason_day as
with detailed as (
    select (received_at at time zone 'UTC')::date as day,
           endpoint,
           reason_code,
           count(distinct request_id) as recorded,
           count(distinct (coalesce(customer_key, ''), coalesce(bot_subject, ''))) as bots,
           min(received_at) as first_at,
           max(received_at) as last_at
      from (select received_at, request_id, 'FinishRun'::text as endpoint, reason_code,
                   customer_key, bot_subject
              from finishrun_audit
             where decision = 'rejected'
            union all
            select received_at, request_id, endpoint, reason_code, customer_key, bot_subject
              from task_action_audit
             where decision = 'rejected') r
     group by 1, endpoint, reason_code
), summarised as (
    select (window_start at time zone 'UTC')::date as day,
           endpoint,
           reason_code,
           sum(refusals)::bigint as summarised,
           min(window_start) as first_at,
           max(window_end) as last_at
      from refusal_summary
     group by 1, endpoint, reason_code
)
select day,
       endpoint,
       reason_code,
       coalesce(d.recorded, 0) + coalesce(s.summarised, 0) as requests,
       coalesce(d.bots, 0) as bots,
       least(d.first_at, s.first_at) as first_at,
       greatest(d.last_at, s.last_at) as last_at,
       coalesce(d.recorded, 0) as recorded,
       coalesce(s.summarised, 0) as summarised
  from detailed d
  full join summarised s using (day, endpoint, reason_code);

comment on view rejections_per_reason_day is
    'Requests the gateway refused (never forwarded), per UTC day, endpoint and error code '
    '(e.g. finishrun.runid_missing): requests = recorded (one row each, with who sent them) + '
    'summarised (counted in refusal_summary beyond the per-thread record rate). bots: distinct '
    '(customer_key, bot_subject) pairs among the recorded ones.';
