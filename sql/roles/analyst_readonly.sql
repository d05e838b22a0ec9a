-- Optional, not a migration: a login role for analysts and their tools (Grafana, Metabase,
-- Power BI) that can read the dashboard views and nothing else: no base table, no write, no
-- function that changes anything. Run it as the owner of the ledger's tables (the role the
-- gateway migrates with), once, and again after a migration that adds a view:
--
--   psql -v analyst_password='...' -d anymate_audit -f sql/roles/analyst_readonly.sql
--
-- The role is anymate_analyst; its sessions are read-only by default as well.

\if :{?analyst_password}
\else
\echo 'analyst_readonly.sql: give the password, e.g. psql -v analyst_password=... -f ...'
\quit
\endif

select not exists (select from pg_roles where rolname = 'anymate_analyst') as create_role \gset
\if :create_role
create role anymate_analyst login;
\endif
alter role anymate_analyst with login nosuperuser nocreatedb nocreaterole noinherit
    password :'analyst_password';
alter role anymate_analyst set default_transaction_read_only = on;

-- nothing but the views: no base table (the records carry who sent them), no sequence
revoke all on all tables in schema public from anymate_analyst;
revoke all on all sequences in schema public from anymate_analyst;
grant usage on schema public to anymate_analyst;
grant select on kpi_records, kpi_per_process_day, rejections_per_reason_day, outcomes_per_status
    to anymate_analyst;

-- PostgreSQL lets every role execute functions by default; the gateway's (which create
-- partitions or fire on settings changes) are for the owner only
revoke execute on function gateway_ensure_partitions(integer, integer) from public;
revoke execute on function process_kpi_settings_touch() from public;
revoke execute on function process_kpi_settings_notify() from public;
