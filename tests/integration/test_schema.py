"""The audit schema (sql/migrations, issue 4) against a real PostgreSQL: migrations apply on an
empty database, day partitions exist ahead and a default partition catches the rest, inserts are
idempotent, the constraints hold, settings changes are NOTIFYed, and the dashboard views give
the expected numbers for hand-made audit and outcome rows. With `anymate-gateway migrate`, also
that replicas migrating at the same time apply each migration exactly once.

One PostgreSQL cluster (tests/integration/pg.py) per test class; one fresh database per test,
migrated by applying the sql/migrations files with psql in name order, each in one transaction
(what gateway/migrate.c does, minus the bookkeeping).
"""

import datetime
import decimal
import glob
import hashlib
import os
import re
import string
import subprocess
import unittest

import harness
import pg
from harness import BUILD, DEADLINE

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
MIGRATIONS = sorted(glob.glob(os.path.join(ROOT, "sql", "migrations", "*.sql")))
AUDIT_TABLES = ("finishrun_audit", "task_action_audit", "audit_outcome")
PG_OK, PG_WHY = pg.available()


def utc_today():
    return datetime.datetime.now(datetime.timezone.utc).date()


def ts(day, hour=12, minute=0, second=0):
    """A timestamptz literal at DAY hh:mm:ss UTC."""
    return "%s %02d:%02d:%02d+00" % (day.isoformat(), hour, minute, second)


@unittest.skipUnless(PG_OK, PG_WHY)
class SchemaTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.pg = pg.PgCluster()
        try:
            cls.pg.start()
        except Exception:
            cls.pg.cleanup()
            raise
        cls.ndb = 0

    @classmethod
    def tearDownClass(cls):
        cls.pg.cleanup()

    def setUp(self):
        type(self).ndb += 1
        self.db = "schema_%d" % self.ndb
        self.pg.psql("create database %s" % self.db, dbname="postgres")
        for path in MIGRATIONS:
            try:
                self.pg.psql_file(path, dbname=self.db)
            except pg.PgError as e:
                self.fail("%s: %s" % (os.path.basename(path), e.stderr))

    def sql(self, q):
        return self.pg.psql(q, dbname=self.db)

    def one(self, q):
        rows = self.sql(q)
        self.assertEqual(len(rows), 1, rows)
        return rows[0]

    def refused(self, q, expected):
        """Q must fail with EXPECTED (e.g. a constraint name) in PostgreSQL's message."""
        with self.assertRaises(pg.PgError) as cm:
            self.sql(q)
        self.assertIn(expected, cm.exception.stderr)

    # ---- helpers to write ledger rows as the gateway's writer does ---------------------------

    def run_row(self, rid, at, run_id=501, pk="pk1", rule="defaults", entries=None, seconds=60,
                overrides="{}", o_seconds=None, o_entries=None, decision="accepted",
                reason=None):
        return self.sql(
            "insert into finishrun_audit (request_id, received_at, gateway_instance, "
            "customer_key, bot_subject, source_addr, run_id, process_key, overrides, "
            "overwrite_seconds_saved, overwrite_entries, kpi_rule, kpi_entries, "
            "kpi_seconds_saved, decision, reason_code, reason_message) values "
            "(%s, %s, 'gw1', 'acme', 'mate1', '127.0.0.1', %s, %s, %s, %s, %s, %s, %s, %s, "
            "%s, %s, %s) on conflict do nothing returning 1"
            % (lit(rid), lit(at), lit(run_id), lit(pk), lit(overrides), lit(o_seconds),
               lit(o_entries), lit(rule), lit(entries), lit(seconds), lit(decision),
               lit(reason), lit(reason and "refused")))

    def task_row(self, rid, at, task_id=1001, item=0, endpoint="Solved", action="Solved",
                 pk="pk2", rule="defaults", entries=None, seconds=45, overrides="{}",
                 o_seconds=None, o_entries=None, decision="accepted", reason=None):
        return self.sql(
            "insert into task_action_audit (request_id, item, received_at, endpoint, action, "
            "gateway_instance, customer_key, bot_subject, task_id, process_key, overrides, "
            "overwrite_seconds_saved, overwrite_entries, kpi_rule, kpi_entries, "
            "kpi_seconds_saved, decision, reason_code) values "
            "(%s, %s, %s, %s, %s, 'gw1', 'acme', 'mate1', %s, %s, %s, %s, %s, %s, %s, %s, %s, "
            "%s) on conflict do nothing returning 1"
            % (lit(rid), lit(item), lit(at), lit(endpoint), lit(action), lit(task_id), lit(pk),
               lit(overrides), lit(o_seconds), lit(o_entries), lit(rule), lit(entries),
               lit(seconds), lit(decision), lit(reason)))

    def outcome(self, rid, at, endpoint="FinishRun", status=200, succeeded=True, failure=None,
                upstream=0.1, total=0.15, audit=0.002):
        return self.sql(
            "insert into audit_outcome (request_id, received_at, endpoint, gateway_instance, "
            "upstream_status, succeeded, message, failure, status_sent, audit_seconds, "
            "upstream_seconds, total_seconds) values (%s, %s, %s, 'gw1', %s, %s, '', %s, %s, "
            "%s, %s, %s) on conflict do nothing returning 1"
            % (lit(rid), lit(at), lit(endpoint), lit(status), lit(succeeded), lit(failure),
               lit(status or 502), lit(audit), lit(upstream), lit(total)))

    # ---- migrations ------------------------------------------------------------------------

    def test_migration_files_are_well_formed(self):
        names = [os.path.basename(p) for p in MIGRATIONS]
        self.assertTrue(names, "no migrations in sql/migrations")
        self.assertEqual(names[0][:4], "0001")
        for n in names:
            self.assertRegex(n, r"^\d{4}_[a-z0-9_]+\.sql$")
        self.assertEqual(len({n[:4] for n in names}), len(names), "two files share a number")
        for path in MIGRATIONS:
            with open(path) as f:
                text = f.read()
            # migrate.c wraps each file in its own transaction
            bad = re.findall(r"(?im)^\s*(begin|commit|rollback|start\s+transaction)\s*;", text)
            self.assertEqual(bad, [], os.path.basename(path))
            self.assertNotRegex(text, r"(?im)^\s*(create\s+(unique\s+)?index\s+concurrently"
                                r"|reindex\b.*\bconcurrently|vacuum\b|alter\s+system\b"
                                r"|create\s+database\b|alter\s+table\b.*\bdetach\b.*"
                                r"\bconcurrently)",
                                "%s: a statement that cannot run in a transaction block"
                                % os.path.basename(path))

    def test_empty_database_gets_every_object(self):
        have = {r[0] for r in self.sql(
            "select c.relname from pg_class c join pg_namespace n on n.oid = c.relnamespace "
            "where n.nspname = 'public' and c.relkind in ('r', 'p', 'v')")}
        for name in AUDIT_TABLES + ("run_process", "task_process", "process_kpi_settings",
                                    "process_kpi_settings_history", "kpi_records",
                                    "kpi_per_process_day", "rejections_per_reason_day",
                                    "outcomes_per_status"):
            self.assertIn(name, have)
        for t in AUDIT_TABLES:
            self.assertEqual(self.one("select relkind from pg_class where relname = '%s'" % t),
                             ["p"])
            self.assertIn(t + "_default", have)

    # ---- partitions ----------------------------------------------------------------------

    def partitions(self, table):
        """{partition name: bound expression} of TABLE."""
        return dict(self.sql(
            "select c.relname, pg_get_expr(c.relpartbound, c.oid) from pg_inherits i "
            "join pg_class c on c.oid = i.inhrelid where i.inhparent = '%s'::regclass" % table))

    def test_day_partitions_from_yesterday_to_a_week_ahead(self):
        today = utc_today()
        for t in AUDIT_TABLES:
            parts = self.partitions(t)
            self.assertEqual(parts[t + "_default"], "DEFAULT")
            for d in range(-1, 8):
                day = today + datetime.timedelta(days=d)
                name = "%s_p%s" % (t, day.strftime("%Y%m%d"))
                self.assertIn(name, parts)
                nxt = day + datetime.timedelta(days=1)
                self.assertEqual(parts[name], "FOR VALUES FROM ('%s 00:00:00+00') TO "
                                 "('%s 00:00:00+00')" % (day, nxt))
            self.assertEqual(len(parts), 10)
        # a row of today and one of yesterday land in their day partitions
        self.run_row("r-today", ts(today))
        self.run_row("r-yesterday", ts(today - datetime.timedelta(days=1), 23, 59, 59))
        where = dict(self.sql("select request_id, tableoid::regclass from finishrun_audit"))
        self.assertEqual(where["r-today"], "finishrun_audit_p" + today.strftime("%Y%m%d"))
        self.assertEqual(where["r-yesterday"], "finishrun_audit_p" +
                         (today - datetime.timedelta(days=1)).strftime("%Y%m%d"))

    def test_ensure_partitions_is_idempotent_and_extends(self):
        self.assertEqual(self.sql("select * from gateway_ensure_partitions(7)"), [])
        rows = self.sql("select * from gateway_ensure_partitions(9)")
        self.assertEqual(len(rows), 6)  # days +8 and +9, three tables
        self.assertTrue(all(r[1] == "created" for r in rows), rows)
        self.assertEqual(len(self.partitions("audit_outcome")), 12)
        self.refused("select * from gateway_ensure_partitions(-1)", "days_ahead must be 0..366")
        self.refused("select * from gateway_ensure_partitions(7, -1)", "days_back must be")
        # further back on request, e.g. for rows of an old spool that sit in the default
        old = utc_today() - datetime.timedelta(days=5)
        self.run_row("r-old", ts(old))
        self.assertEqual(self.one("select tableoid::regclass from finishrun_audit"),
                         ["finishrun_audit_default"])
        rows = dict(self.sql("select * from gateway_ensure_partitions(7, 5)"))
        self.assertEqual(len(rows), 3 * 4)  # days -5..-2
        name = "finishrun_audit_p" + old.strftime("%Y%m%d")
        self.assertEqual(rows[name], "created; moved 1 rows from finishrun_audit_default")
        self.assertEqual(self.one("select tableoid::regclass from finishrun_audit"), [name])

    def test_far_future_row_lands_in_default_partition_and_moves_out_later(self):
        day = utc_today() + datetime.timedelta(days=30)
        self.run_row("r-future", ts(day))
        self.outcome("r-future", ts(day))
        self.task_row("t-future", ts(day))
        for t in AUDIT_TABLES:
            self.assertEqual(self.one("select tableoid::regclass from %s" % t), [t + "_default"])
        rows = dict(self.sql("select * from gateway_ensure_partitions(30)"))
        for t in AUDIT_TABLES:
            name = "%s_p%s" % (t, day.strftime("%Y%m%d"))
            self.assertEqual(rows[name], "created; moved 1 rows from %s_default" % t)
            self.assertEqual(self.one("select tableoid::regclass from %s" % t), [name])
            self.assertEqual(self.one("select count(*) from %s_default" % t), ["0"])

    def test_ensure_partitions_concurrently(self):
        procs = [subprocess.Popen(
            [os.path.join(self.pg.bindir, "psql"), "-X", "-At", "-v", "ON_ERROR_STOP=1",
             "-d", "host=127.0.0.1 port=%d dbname=%s user=postgres" % (self.pg.port, self.db),
             "-c", "select count(*) from gateway_ensure_partitions(40)"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(6)]
        created = []
        for p in procs:
            out, err = p.communicate(timeout=DEADLINE)
            self.assertEqual(p.returncode, 0, err)
            created.append(int(out.strip()))
        self.assertEqual(sorted(created), [0] * 5 + [3 * 33])  # days +8..+40, once
        for t in AUDIT_TABLES:
            self.assertEqual(len(self.partitions(t)), 1 + 42)

    # ---- idempotent inserts and constraints ---------------------------------------------

    def test_insert_on_conflict_do_nothing_keeps_one_row(self):
        at = ts(utc_today())
        self.assertEqual(self.run_row("r1", at), [["1"]])
        self.assertEqual(self.run_row("r1", at, seconds=999), [])  # a replay changes nothing
        self.assertEqual(self.one("select count(*), max(kpi_seconds_saved) from finishrun_audit"),
                         ["1", "60"])
        self.assertEqual(self.outcome("r1", at), [["1"]])
        self.assertEqual(self.outcome("r1", at, status=500), [])
        self.assertEqual(self.one("select count(*), max(upstream_status) from audit_outcome"),
                         ["1", "200"])
        # items of one Return request are distinct rows; each replays idempotently
        for _ in range(2):
            for item in (0, 1, 2):
                self.task_row("t1", at, item=item, endpoint="Return", task_id=1001 + item)
        self.assertEqual(self.one("select count(*) from task_action_audit"), ["3"])
        # the key includes the receive time: another time is another record
        self.assertEqual(self.run_row("r1", ts(utc_today(), 13)), [["1"]])

    def test_constraints(self):
        at = ts(utc_today())
        row = dict(decision="'accepted'", kpi_rule="'defaults'",
                   overrides="'{\"overwriteEntries\": 5, \"overwriteSecondsSaved\": null}'",
                   overwrite_entries="5")

        def insert(rid, **changes):
            cols = dict(row, **changes)
            return self.sql("insert into finishrun_audit (request_id, received_at, "
                            "gateway_instance, run_id, %s) values ('%s', '%s', 'gw', 1, %s)"
                            % (", ".join(cols), rid, at, ", ".join(cols.values())))

        insert("x")
        for changes, constraint in (
                (dict(overrides="'{\"overwriteEntries\": 6}'"),
                 "finishrun_audit_overwrite_entries_check"),
                (dict(overrides="'{\"runId\": 1}'", overwrite_entries="null"),
                 "finishrun_audit_overrides_check"),
                (dict(overrides="'[]'", overwrite_entries="null"),
                 "finishrun_audit_overrides_check"),
                (dict(decision="'maybe'"), "finishrun_audit_decision_check"),
                (dict(kpi_rule="'guessed'"), "finishrun_audit_kpi_rule_check")):
            with self.subTest(constraint=constraint, changes=changes):
                with self.assertRaises(pg.PgError) as cm:
                    insert("y", **changes)
                self.assertIn(constraint, cm.exception.stderr)
        # accepted needs a run id and a rule; rejected needs a reason, not a run id
        self.refused("insert into finishrun_audit (request_id, received_at, gateway_instance, "
                     "kpi_rule, decision) values ('y', '%s', 'gw', 'defaults', 'accepted')" % at,
                     "finishrun_audit_accepted_check")
        self.refused("insert into finishrun_audit (request_id, received_at, gateway_instance, "
                     "decision) values ('y', '%s', 'gw', 'rejected')" % at,
                     "finishrun_audit_rejected_check")
        self.run_row("y", at, run_id=None, pk=None, rule=None, seconds=None,
                     decision="rejected", reason="finishrun.runid_missing")
        # a task is never valued per_task; endpoints and actions are closed lists
        self.refused("insert into task_action_audit (request_id, received_at, endpoint, action, "
                     "gateway_instance, task_id, kpi_rule, decision) values ('t', '%s', 'Solved', "
                     "'Solved', 'gw', 1, 'per_task', 'accepted')" % at,
                     "task_action_audit_kpi_rule_check")
        self.refused("insert into task_action_audit (request_id, received_at, endpoint, action, "
                     "gateway_instance, task_id, kpi_rule, decision) values ('t', '%s', "
                     "'UpdateTask', 'Solved', 'gw', 1, 'defaults', 'accepted')" % at,
                     "task_action_audit_endpoint_check")
        self.refused("insert into audit_outcome (request_id, received_at, endpoint, "
                     "gateway_instance) values ('o', '%s', 'FinishRun', 'gw')" % at,
                     "audit_outcome_answer_check")
        # 0006 keeps every rule of the three audit tables in one CHECK each (a PL/pgSQL
        # function: prepared once per connection, not per statement); each rule still refuses
        # with its own name, and a rule that is NULL still passes
        task = ("insert into task_action_audit (request_id, received_at, item, endpoint, action, "
                "gateway_instance, task_id, kpi_rule, decision) values ('t', '%s', %s, %s, %s, "
                "'gw', 1, 'defaults', 'accepted')")
        self.refused(task % (at, "-1", "'Solved'", "'Solved'"), "task_action_audit_item_check")
        self.refused(task % (at, "0", "'Solved'", "'Later'"), "task_action_audit_action_check")
        self.refused(task % (at, "0", "'Solved'", "null"), "task_action_audit_accepted_check")
        self.sql(task % (at, "0", "'Solved'", "'Solved'"))  # a valid row passes them all
        outcome = ("insert into audit_outcome (request_id, received_at, endpoint, gateway_instance, "
                   "upstream_status, status_sent, total_seconds) values ('o%d', '%s', 'FinishRun', "
                   "'gw', %s, %s, %s)")
        self.refused(outcome % (1, at, "99", "200", "0.1"), "audit_outcome_status_check")
        self.refused(outcome % (2, at, "200", "600", "0.1"), "audit_outcome_status_sent_check")
        self.refused(outcome % (3, at, "200", "200", "-0.1"), "audit_outcome_seconds_check")
        self.sql(outcome % (4, at, "200", "200", "null"))  # NULL seconds: the rule passes
        self.refused("insert into finishrun_audit (request_id, received_at, gateway_instance, "
                     "run_id, decision, kpi_rule, overrides, overwrite_seconds_saved) values "
                     "('z', '%s', 'gw', 1, 'accepted', 'defaults', "
                     "'{\"overwriteSecondsSaved\": 5}', 6)" % at,
                     "finishrun_audit_overwrite_seconds_check")
        checks = self.sql("select conrelid::regclass::text, conname, convalidated from "
                          "pg_constraint where contype = 'c' and conrelid in ('finishrun_audit'::"
                          "regclass, 'task_action_audit'::regclass, 'audit_outcome'::regclass) "
                          "order by 1")
        self.assertEqual(checks, [["audit_outcome", "audit_outcome_row_check", "f"],
                                  ["finishrun_audit", "finishrun_audit_row_check", "f"],
                                  ["task_action_audit", "task_action_audit_row_check", "f"]])
        # added NOT VALID (no scan under an exclusive lock); the operator validates later
        self.sql("select gateway_validate_row_checks()")
        self.assertEqual(self.sql("select count(*) from pg_constraint where conname like "
                                  "'%_row_check' and not convalidated"), [["0"]])
        self.refused("insert into process_kpi_settings (process_key, seconds_per_run) values "
                     "('pk', -1)", "process_kpi_settings_seconds_per_run_check")
        self.refused("insert into process_kpi_settings (process_key) values ('')",
                     "process_kpi_settings_key_check")

    # ---- settings ---------------------------------------------------------------------------

    def test_settings_changes_are_notified_and_kept(self):
        r = self.pg.psql_raw([
            "-c", "listen gateway_kpi_settings",
            "-c", "insert into process_kpi_settings (process_key, seconds_per_run) "
                  "values ('pk1', 60), ('pk2', 30)",
            "-c", "update process_kpi_settings set seconds_per_run = 61 where process_key = 'pk1'",
            "-c", "update process_kpi_settings set process_key = 'pk3' where process_key = 'pk2'",
            "-c", "delete from process_kpi_settings where process_key = 'pk1'",
            "-c", "truncate process_kpi_settings",
            "-c", "select 1"], dbname=self.db)
        self.assertEqual(r.returncode, 0, r.stderr)
        got = re.findall(r'notification "gateway_kpi_settings" with payload "([^"]*)"', r.stdout)
        self.assertEqual(got, ["pk1", "pk2", "pk1", "pk2", "pk3", "pk1", "*"])
        hist = self.sql("select operation, process_key, old_settings->>'seconds_per_run', "
                        "new_settings->>'seconds_per_run' from process_kpi_settings_history "
                        "order by id")
        self.assertEqual(hist, [["INSERT", "pk1", None, "60"], ["INSERT", "pk2", None, "30"],
                                ["UPDATE", "pk1", "60", "61"], ["UPDATE", "pk3", "30", "30"],
                                ["DELETE", "pk1", "61", None], ["TRUNCATE", "*", None, None]])

    def test_settings_update_stamps_updated_at(self):
        self.sql("insert into process_kpi_settings (process_key, updated_at) "
                 "values ('pk1', '2000-01-01')")
        self.sql("update process_kpi_settings set advanced_mode = true")
        self.assertEqual(self.one("select updated_at > '2001-01-01', updated_by "
                                  "from process_kpi_settings"), ["t", "postgres"])

    # ---- views ------------------------------------------------------------------------------

    def make_ledger(self):
        """A day of hand-made records (see the expectations in the view tests)."""
        d = utc_today()
        y = d - datetime.timedelta(days=1)
        at = lambda n: ts(d, 8, 0, n)  # noqa: E731
        # pk1, a run-only process: 2 counted runs (one with overwriteEntries), 1 refused by
        # Anymate, 1 never answered (timeout), 1 without outcome yet, 1 rejected by the gateway
        self.run_row("r1", at(1), run_id=501)
        self.outcome("r1", at(1), upstream=0.1)
        self.run_row("r2", at(2), run_id=502, rule="override_entries", entries=5, seconds=50,
                     overrides='{"overwriteEntries": 5, "overwriteSecondsSaved": null}',
                     o_entries=5)
        self.outcome("r2", at(2), upstream=0.2)
        self.run_row("r3", at(3), run_id=503)
        self.outcome("r3", at(3), succeeded=False, upstream=0.3)
        self.run_row("r4", at(4), run_id=504)
        self.outcome("r4", at(4), status=None, succeeded=None, failure="upstream.timeout",
                     upstream=5.0, total=5.0)
        self.run_row("r5", at(5), run_id=505)
        self.run_row("r6", at(6), run_id=None, pk=None, rule=None, seconds=None,
                     decision="rejected", reason="finishrun.runid_missing")
        self.run_row("r6b", at(16), run_id=None, pk=None, rule=None, seconds=None,
                     decision="rejected", reason="finishrun.runid_missing")
        # a run the gateway never saw start: counted, under '(unknown)', without a KPI value
        self.run_row("r7", at(7), run_id=777, pk=None, rule="unknown_process", seconds=None)
        self.outcome("r7", at(7), upstream=0.3)
        # pk2 has tasks enabled: its run logs no KPI and its overrides are ignored
        self.run_row("r8", at(8), run_id=801, pk="pk2", rule="per_task", seconds=None,
                     overrides='{"overwriteSecondsSaved": 100}', o_seconds=100)
        self.outcome("r8", at(8), upstream=0.4)
        # pk2's tasks: Solved (default 45 s), Manual with overwriteSecondsSaved 3555, and a
        # Return of two items (Retry, Error; default 45 s each)
        self.task_row("t1", at(9), task_id=1001)
        self.outcome("t1", at(9), endpoint="Solved", upstream=0.05)
        self.task_row("t2", at(10), task_id=1002, endpoint="Manual", action="Manual",
                      rule="override_seconds", seconds=3555,
                      overrides='{"overwriteSecondsSaved": 3555}', o_seconds=3555)
        self.outcome("t2", at(10), endpoint="Manual", upstream=0.05)
        self.task_row("t3", at(11), task_id=1003, item=0, endpoint="Return", action="Retry")
        self.task_row("t3", at(11), task_id=1004, item=1, endpoint="Return", action="Error")
        self.outcome("t3", at(11), endpoint="Return", upstream=0.05)
        self.task_row("t4", at(12), task_id=None, action=None, rule=None, seconds=None,
                      decision="rejected", reason="task.taskid_missing")
        # yesterday: one counted pk1 run
        self.run_row("ry", ts(y), run_id=500)
        self.outcome("ry", ts(y))
        return d, y

    def kpi(self, day):
        cols = ["process_key", "runs", "tasks", "entries", "seconds_saved", "hours_saved",
                "overridden", "overridden_share", "seconds_overridden", "entries_overridden",
                "runs_per_task", "overrides_ignored", "without_kpi", "tasks_solved",
                "tasks_manual", "tasks_retry", "tasks_error", "runs_attempted",
                "tasks_attempted", "refused_or_failed", "awaiting_outcome"]
        rows = self.sql("select %s from kpi_per_process_day where day = '%s' order by 1"
                        % (", ".join(cols), day))
        return {r[0]: dict(zip(cols[1:], r[1:])) for r in rows}

    def test_kpi_per_process_day(self):
        d, y = self.make_ledger()
        got = self.kpi(d)
        self.assertEqual(sorted(got), ["(unknown)", "pk1", "pk2"])
        pk1 = got["pk1"]
        self.assertEqual((pk1["runs"], pk1["tasks"], pk1["entries"], pk1["seconds_saved"]),
                         ("2", "0", "5", "110"))
        self.assertAlmostEqual(float(pk1["hours_saved"]), 110 / 3600, places=12)
        self.assertEqual((pk1["overridden"], decimal.Decimal(pk1["overridden_share"])),
                         ("1", decimal.Decimal("0.5")))
        self.assertEqual((pk1["seconds_overridden"], pk1["entries_overridden"]), ("0", "1"))
        self.assertEqual((pk1["runs_attempted"], pk1["refused_or_failed"],
                          pk1["awaiting_outcome"]), ("5", "2", "1"))
        pk2 = got["pk2"]
        self.assertEqual((pk2["runs"], pk2["tasks"], pk2["entries"], pk2["seconds_saved"]),
                         ("1", "4", None, "3690"))
        self.assertEqual(decimal.Decimal(pk2["hours_saved"]), decimal.Decimal("1.025"))
        self.assertEqual((pk2["runs_per_task"], pk2["overrides_ignored"]), ("1", "1"))
        # r8 (ignored) and t2 carried overrides: 2 of 5 counted records
        self.assertEqual((pk2["overridden"], decimal.Decimal(pk2["overridden_share"])),
                         ("2", decimal.Decimal("0.4")))
        self.assertEqual((pk2["tasks_solved"], pk2["tasks_manual"], pk2["tasks_retry"],
                          pk2["tasks_error"]), ("1", "1", "1", "1"))
        self.assertEqual((pk2["runs_attempted"], pk2["tasks_attempted"],
                          pk2["refused_or_failed"], pk2["awaiting_outcome"]),
                         ("1", "4", "0", "0"))
        unknown = got["(unknown)"]
        self.assertEqual((unknown["runs"], unknown["seconds_saved"], unknown["without_kpi"]),
                         ("1", "0", "1"))
        self.assertEqual(decimal.Decimal(unknown["hours_saved"]), 0)
        # yesterday is its own row
        self.assertEqual({k: (v["runs"], v["seconds_saved"]) for k, v in self.kpi(y).items()},
                         {"pk1": ("1", "60")})

    def test_rejections_per_reason_day(self):
        d, y = self.make_ledger()
        rows = self.sql("select endpoint, reason_code, requests, bots from "
                        "rejections_per_reason_day where day = '%s' order by 1" % d)
        self.assertEqual(rows, [["FinishRun", "finishrun.runid_missing", "2", "1"],
                                ["Solved", "task.taskid_missing", "1", "1"]])
        self.assertEqual(self.sql("select count(*) from rejections_per_reason_day "
                                  "where day = '%s'" % y), [["0"]])

    def test_outcomes_per_status(self):
        d, _ = self.make_ledger()
        rows = self.sql(
            "select endpoint, status_class, upstream_status, succeeded, failure, requests, "
            "round(upstream_avg_seconds::numeric, 3), round(upstream_p50_seconds::numeric, 3), "
            "round(upstream_max_seconds::numeric, 3) from outcomes_per_status "
            "where day = '%s' order by 1, 2, 4" % d)
        self.assertEqual(rows, [
            ["FinishRun", "2xx", "200", "f", None, "1", "0.300", "0.300", "0.300"],
            ["FinishRun", "2xx", "200", "t", None, "4", "0.250", "0.250", "0.400"],
            ["FinishRun", "none", None, None, "upstream.timeout", "1", "5.000", "5.000",
             "5.000"],
            ["Manual", "2xx", "200", "t", None, "1", "0.050", "0.050", "0.050"],
            ["Return", "2xx", "200", "t", None, "1", "0.050", "0.050", "0.050"],
            ["Solved", "2xx", "200", "t", None, "1", "0.050", "0.050", "0.050"],
        ])

    def test_view_filtered_by_a_literal_day_skips_other_partitions(self):
        d = utc_today()
        plan = "\n".join(r[0] for r in self.sql(
            "explain select * from kpi_per_process_day where day = '%s'" % d))
        scanned = set(re.findall(r"on ((?:finishrun|task_action)_audit_\w+)", plan))
        self.assertEqual(scanned, {"finishrun_audit_p" + d.strftime("%Y%m%d"),
                                   "finishrun_audit_default",
                                   "task_action_audit_p" + d.strftime("%Y%m%d"),
                                   "task_action_audit_default"}, plan)


def gateway_has_migrate():
    """(True, "") when build/anymate-gateway has the `migrate` subcommand."""
    gw = os.path.join(BUILD, "anymate-gateway")
    if not os.access(gw, os.X_OK):
        return False, "%s not built" % gw
    try:
        r = subprocess.run([gw, "--help"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                           text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired) as e:
        return False, "%s --help: %s" % (gw, e)
    if not re.search(r"\bmigrate\b", r.stdout):
        return False, "anymate-gateway has no `migrate` subcommand yet (--help does not list it)"
    return True, ""


class _Blank(dict):
    def __missing__(self, key):
        return ""


MIGRATE_OK, MIGRATE_WHY = gateway_has_migrate()


@unittest.skipUnless(PG_OK, PG_WHY)
@unittest.skipUnless(MIGRATE_OK, MIGRATE_WHY)
class MigrateCommandTest(unittest.TestCase):
    """`anymate-gateway migrate -c FILE` (gateway/migrate.c) against a real database."""

    @classmethod
    def setUpClass(cls):
        cls.pg = pg.PgCluster()
        try:
            cls.pg.start()
        except Exception:
            cls.pg.cleanup()
            raise
        cls.ndb = 0

    @classmethod
    def tearDownClass(cls):
        cls.pg.cleanup()

    def setUp(self):
        type(self).ndb += 1
        self.db = "migrate_%d" % self.ndb
        self.pg.psql("create database %s" % self.db, dbname="postgres")
        self.conf = os.path.join(self.pg.dir, "%s.conf" % self.db)
        values = _Blank(threads=1, request_timeout="10s", shutdown_timeout="5s",
                        max_header_size="16k", max_body_size="1m", connect_timeout="2s",
                        response_timeout="5s", log_level="info",
                        api_url="https://127.0.0.1:9", auth_url="https://127.0.0.1:9")
        text = string.Formatter().vformat(harness.DEFAULT_CONF, (), values)
        text += "\n[audit]\ndatabase = host=127.0.0.1 port=%d dbname=%s user=postgres\n" % (
            self.pg.port, self.db)
        with open(self.conf, "w") as f:
            f.write(text)

    def migrate(self):
        return subprocess.Popen([os.path.join(BUILD, "anymate-gateway"), "migrate", "-c",
                                 self.conf], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True)

    def recorded(self):
        return self.pg.psql("select version, checksum from gateway_schema_migrations "
                            "order by version", dbname=self.db)

    def test_concurrent_replicas_apply_each_migration_once(self):
        procs = [self.migrate() for _ in range(5)]
        outs = []
        for p in procs:
            out, err = p.communicate(timeout=DEADLINE * 3)
            self.assertEqual(p.returncode, 0, out + err)
            outs.append(out + err)
        applied = [re.findall(r"applied (\d{4}_\w+\.sql)", o) for o in outs]
        names = [os.path.basename(m) for m in MIGRATIONS]
        self.assertEqual(sorted(sum(applied, [])), names, outs)  # each once, by one replica
        expect = []
        for path in MIGRATIONS:
            with open(path, "rb") as f:
                expect.append([os.path.basename(path), hashlib.sha256(f.read()).hexdigest()])
        self.assertEqual(self.recorded(), expect)
        # up to date: nothing more
        p = self.migrate()
        out, err = p.communicate(timeout=DEADLINE)
        self.assertEqual(p.returncode, 0, out + err)
        self.assertNotRegex(out + err, r"applied \d{4}_")
        self.assertEqual(self.recorded(), expect)

    def test_changed_migration_is_refused(self):
        p = self.migrate()
        out, err = p.communicate(timeout=DEADLINE * 3)
        self.assertEqual(p.returncode, 0, out + err)
        self.pg.psql("update gateway_schema_migrations set checksum = 'x' "
                     "where version = '%s'" % os.path.basename(MIGRATIONS[0]), dbname=self.db)
        p = self.migrate()
        out, err = p.communicate(timeout=DEADLINE)
        self.assertNotEqual(p.returncode, 0)
        self.assertIn(os.path.basename(MIGRATIONS[0]), out + err)
        self.assertIn("checksum", out + err)


def lit(v):
    """A SQL literal for V (None -> null)."""
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    return "'" + str(v).replace("'", "''") + "'"
