-- 0003_dashboard_views: what dashboards read, so that they need not know the raw tables
-- (design.md §5). Days are UTC days of the gateway's receive time. See 0001_audit.sql for how
-- migrations are applied; a later migration changes a view with CREATE OR REPLACE VIEW (adding
-- columns at the end) or DROP + CREATE.
--
-- Filtering a view on day with literal dates (where day between '2025-01-01' and '2025-01-31')
-- lets PostgreSQL skip the audit partitions of other days (their day CHECK constraints);
-- expressions such as current_date are only known at run time and do not.

-- One row per accepted audit record (a run or a task action) with its outcome, if any. The
-- building block of kpi_per_process_day; handy for drilling into one process's day.
create view kpi_records as
select (a.received_at at time zone 'UTC')::date as day,
       a.received_at,
       a.request_id,
       0 as item,
       'run'::text as kind,
       'FinishRun'::text as endpoint,
       null::text as action,
       a.run_id,
       null::bigint as task_id,
       a.process_key,
       a.customer_key,
       a.bot_subject,
       a.overrides,
       a.overwrite_seconds_saved,
       a.overwrite_entries,
       a.kpi_rule,
       a.kpi_entries,
       a.kpi_seconds_saved,
       o.request_id is not null as answered,
       coalesce(o.upstream_status between 200 and 299 and o.succeeded, false) as succeeded,
       o.upstream_status,
       o.message
  from finishrun_audit a
  left join audit_outcome o on o.request_id = a.request_id and o.received_at = a.received_at
 where a.decision = 'accepted'
union all
select (t.received_at at time zone 'UTC')::date,
       t.received_at,
       t.request_id,
       t.item,
       'task'::text,
       t.endpoint,
       t.action,
       t.run_id,
       t.task_id,
       t.process_key,
       t.customer_key,
       t.bot_subject,
       t.overrides,
       t.overwrite_seconds_saved,
       t.overwrite_entries,
       t.kpi_rule,
       t.kpi_entries,
       t.kpi_seconds_saved,
       o.request_id is not null,
       coalesce(o.upstream_status between 200 and 299 and o.succeeded, false),
       o.upstream_status,
       o.message
  from task_action_audit t
  left join audit_outcome o on o.request_id = t.request_id and o.received_at = t.received_at
 where t.decision = 'accepted';

comment on view kpi_records is
    'Accepted FinishRun (kind run) and task-action (kind task) records with their outcome. '
    'succeeded: Anymate answered 2xx with "succeeded": true, i.e. it logged the KPI. '
    'answered: an outcome row exists (false: in flight, or the gateway stopped first).';

create view kpi_per_process_day as
select day,
       coalesce(process_key, '(unknown)') as process_key,
       count(*) filter (where succeeded and kind = 'run') as runs,
       count(*) filter (where succeeded and kind = 'task') as tasks,
       sum(kpi_entries) filter (where succeeded) as entries,
       coalesce(sum(kpi_seconds_saved) filter (where succeeded), 0) as seconds_saved,
       coalesce(sum(kpi_seconds_saved) filter (where succeeded), 0) / 3600.0 as hours_saved,
       count(*) filter (where succeeded
                          and (overwrite_seconds_saved is not null
                               or overwrite_entries is not null)) as overridden,
       round(count(*) filter (where succeeded
                                and (overwrite_seconds_saved is not null
                                     or overwrite_entries is not null))::numeric
             / nullif(count(*) filter (where succeeded), 0), 4) as overridden_share,
       count(*) filter (where succeeded and overwrite_seconds_saved is not null)
           as seconds_overridden,
       count(*) filter (where succeeded and overwrite_entries is not null) as entries_overridden,
       count(*) filter (where succeeded and kpi_rule = 'per_task') as runs_per_task,
       count(*) filter (where succeeded and kpi_rule = 'per_task'
                          and (overwrite_seconds_saved is not null
                               or overwrite_entries is not null)) as overrides_ignored,
       count(*) filter (where succeeded and kpi_rule in ('unknown_process', 'no_settings'))
           as without_kpi,
       count(*) filter (where succeeded and action = 'Solved') as tasks_solved,
       count(*) filter (where succeeded and action = 'Manual') as tasks_manual,
       count(*) filter (where succeeded and action = 'Retry') as tasks_retry,
       count(*) filter (where succeeded and action = 'Error') as tasks_error,
       count(*) filter (where kind = 'run') as runs_attempted,
       count(*) filter (where kind = 'task') as tasks_attempted,
       count(*) filter (where answered and not succeeded) as refused_or_failed,
       count(*) filter (where not answered) as awaiting_outcome
  from kpi_records
 group by day, coalesce(process_key, '(unknown)');

comment on view kpi_per_process_day is
    'KPI per process per UTC day, as Anymate logged it: only accepted records whose forward '
    'succeeded (HTTP 2xx and "succeeded": true) count in runs, tasks, entries, seconds_saved, '
    'hours_saved and the override columns. process_key ''(unknown)'': the gateway never saw the '
    'run or task start, so it recorded no KPI for them (see without_kpi). entries is NULL when no '
    'counted record logged entries. overridden_share: share of counted records that carried at '
    'least one override (0..1). runs_per_task: runs of processes with tasks enabled, whose KPI '
    'is in tasks (overrides_ignored of them carried overrides Anymate ignored). *_attempted count '
    'every accepted (forwarded) record; refused_or_failed: answered but not succeeded; '
    'awaiting_outcome: no outcome recorded (yet).';
comment on column kpi_per_process_day.without_kpi is
    'Counted records for which no KPI value could be computed (unknown_process, no_settings).';

create view rejections_per_reason_day as
select (received_at at time zone 'UTC')::date as day,
       endpoint,
       reason_code,
       count(distinct request_id) as requests,
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
 group by 1, endpoint, reason_code;

comment on view rejections_per_reason_day is
    'Requests the gateway refused (never forwarded), per UTC day, endpoint and error code '
    '(e.g. finishrun.runid_missing). bots: distinct (customer_key, bot_subject) pairs.';

create view outcomes_per_status as
select (received_at at time zone 'UTC')::date as day,
       endpoint,
       case when upstream_status is null then 'none'
            else (upstream_status / 100)::text || 'xx' end as status_class,
       upstream_status,
       succeeded,
       failure,
       count(*) as requests,
       avg(upstream_seconds) as upstream_avg_seconds,
       percentile_cont(0.5) within group (order by upstream_seconds) as upstream_p50_seconds,
       percentile_cont(0.95) within group (order by upstream_seconds) as upstream_p95_seconds,
       percentile_cont(0.99) within group (order by upstream_seconds) as upstream_p99_seconds,
       max(upstream_seconds) as upstream_max_seconds,
       avg(total_seconds) as total_avg_seconds,
       percentile_cont(0.95) within group (order by total_seconds) as total_p95_seconds,
       avg(audit_seconds) as audit_avg_seconds,
       percentile_cont(0.95) within group (order by audit_seconds) as audit_p95_seconds
  from audit_outcome
 group by 1, endpoint, 3, upstream_status, succeeded, failure;

comment on view outcomes_per_status is
    'Outcomes of forwarded audited requests per UTC day and endpoint: status class (2xx..5xx, '
    'none when Anymate never answered), exact status, Anymate''s succeeded, the gateway''s '
    'failure code, and latency (seconds): upstream = Anymate''s answer time, total = the bot''s '
    'view, audit = time to make the record durable.';
