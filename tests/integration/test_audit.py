"""The KPI audit ledger end to end (issue 4): a real PostgreSQL (temporary cluster), the real
gateway and the mock Anymate. Records are written before forwarding, outcomes after; the
gateway's KPI values agree with the mock's own ledger; restarts, concurrency and database
outages lose nothing and forward nothing unaudited."""

import json
import os
import signal
import socket
import subprocess
import threading
import time
import unittest

import pg
from harness import BUILD, GatewayTest, Mock, wait_for

PG_OK, PG_WHY = pg.available()

# The same KPI settings on both sides: the mock's --processes file and process_kpi_settings.
PROCESSES = {
    "runs":     dict(tasksEnabled=False, secondsPerRun=60, secondsPerTask=0, advancedMode=False,
                     defaultEntries=0, secondsPerEntry=11),
    "tasks":    dict(tasksEnabled=True, secondsPerRun=0, secondsPerTask=30, advancedMode=False,
                     defaultEntries=0, secondsPerEntry=7),
    "advanced": dict(tasksEnabled=False, secondsPerRun=0, secondsPerTask=0, advancedMode=True,
                     defaultEntries=4, secondsPerEntry=25),
}


@unittest.skipUnless(PG_OK, PG_WHY)
class AuditTest(GatewayTest):
    @classmethod
    def setUpClass(cls):
        cls.pg = pg.PgCluster()
        cls.pg.start()
        cls.ndb = 0

    @classmethod
    def tearDownClass(cls):
        cls.pg.cleanup()

    def setUp(self):
        super().setUp()
        type(self).ndb += 1
        self.db = "audit_%d" % self.ndb
        self.pg.psql("create database %s" % self.db, dbname="postgres")
        self.conninfo = "host=127.0.0.1 port=%d dbname=%s user=postgres connect_timeout=2" % (
            self.pg.port, self.db)
        procfile = os.path.join(self.tmp, "processes.json")
        with open(procfile, "w") as f:
            json.dump(PROCESSES, f)
        self.ca_, self.mock = self.tls_mock(extra=("--processes", procfile))

    def sql(self, q):
        return self.pg.psql(q, dbname=self.db)

    def audit_gateway(self, migrate=True, **opts):
        extra = opts.pop("extra_sections", "")
        audit = opts.pop("audit_extra", "")
        if migrate and not getattr(self, "_migrated", False):
            self._migrated = True
            audit_line = "auto_migrate = on\n"
        else:
            audit_line = ""
        sections = ("[audit]\ndatabase = %s\n%scommit_timeout = %s\nbatch_delay = 1ms\n%s\n%s" %
                    (self.conninfo, audit_line, opts.pop("commit_timeout", "2s"), audit, extra))
        gw = self.gateway("https://localhost:%d" % self.mock.port, ca_file=self.ca_.cert,
                          extra_sections=sections, **opts)
        if audit_line:
            for pk, s in PROCESSES.items():
                self.sql("insert into process_kpi_settings (process_key, tasks_enabled, "
                         "seconds_per_run, seconds_per_task, advanced_mode, default_entries, "
                         "seconds_per_entry) values ('%s', %s, %d, %d, %s, %d, %d) "
                         "on conflict do nothing" % (
                             pk, s["tasksEnabled"], s["secondsPerRun"], s["secondsPerTask"],
                             s["advancedMode"], s["defaultEntries"], s["secondsPerEntry"]))
        wait_for(lambda: json.loads(gw.admin("GET", "/readyz")[2])["checks"]["audit_ledger"]
                 ["connected"], what="audit ledger connected")
        bearer = self.token(gw)
        gw.default_headers = {"Authorization": "Bearer " + bearer}
        return gw

    def call(self, gw, method, path, body=None):
        hdrs = {"Content-Type": "application/json"} if body is not None else {}
        data = json.dumps(body).encode() if body is not None else None
        status, headers, out = gw.request(method, path, body=data, headers=hdrs)
        return status, headers, (json.loads(out) if out else None)

    def rows(self, q):
        return self.sql(q)

    def wait_rows(self, q, n, what):
        return wait_for(lambda: (lambda r: r if len(r) >= n else None)(self.rows(q)),
                        what=what)

    def hold_lock(self, table="finishrun_audit"):
        """A transaction that locks TABLE against inserts until release() is called: commits
        then wait (a frozen ledger) instead of failing."""
        p = subprocess.Popen(self.pg._psql_cmd(self.db) + ["-t", "-A"], stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        p.stdin.write("begin;\nlock table %s in exclusive mode;\nselect 'locked';\n" % table)
        p.stdin.flush()
        self.assertEqual(p.stdout.readline().strip(), "locked")

        def release():
            if p.poll() is None:
                p.stdin.write("commit;\n")
                p.stdin.close()
                p.wait(10)
        self.addCleanup(release)
        return release

    def raw(self, gw, data):
        s = socket.create_connection(("127.0.0.1", gw.port), timeout=10)
        s.sendall(data)
        return s

    def finishrun_bytes(self, gw, run_id, request_id, body=None):
        body = body if body is not None else json.dumps({"runId": run_id}).encode()
        return (b"POST /api/FinishRun/ HTTP/1.1\r\nHost: g\r\nAuthorization: " +
                gw.default_headers["Authorization"].encode() + b"\r\nX-Request-Id: " +
                request_id.encode() + b"\r\nContent-Type: application/json\r\n"
                b"Content-Length: %d\r\n\r\n" % len(body) + body)

    # ---- tests --------------------------------------------------------------------------

    def test_bot_session_produces_the_expected_rows_and_agrees_with_anymate(self):
        gw = self.audit_gateway()
        # a run-only process: FinishRun with an entries override, then one with defaults
        s, _, run1 = self.call(gw, "GET", "/api/StartOrGetRun/runs/")
        self.assertEqual(s, 200)
        s, h1, ans = self.call(gw, "POST", "/api/FinishRun/",
                               {"runId": run1["runId"], "overwriteSecondsSaved": None,
                                "overwriteEntries": 5})
        self.assertEqual((s, ans["succeeded"]), (200, True), ans)
        s, _, run2 = self.call(gw, "GET", "/api/StartOrGetRun/runs")
        s, h2, ans = self.call(gw, "POST", "/api/FinishRun/", {"RunId": run2["runId"]})
        self.assertTrue(ans["succeeded"], ans)
        # Advanced Mode
        s, _, run3 = self.call(gw, "GET", "/api/StartOrGetRun/advanced/")
        s, h3, ans = self.call(gw, "POST", "/api/FinishRun/", {"runId": run3["runId"]})
        self.assertTrue(ans["succeeded"], ans)
        # a task process: tasks created, taken and returned with and without overrides
        self.call(gw, "POST", "/api/CreateTasks/tasks/", [{"k": "a"}, {"k": "b"}])
        s, _, t1 = self.call(gw, "GET", "/api/TakeNext/tasks/")
        s, h4, ans = self.call(gw, "POST", "/api/Solved/",
                               {"taskId": t1["taskId"], "overwriteSecondsSaved": 100})
        self.assertTrue(ans["succeeded"], ans)
        s, _, t2 = self.call(gw, "GET", "/api/TakeNext/tasks")
        s, h5, ans = self.call(gw, "POST", "/api/Manual/", {"TaskId": t2["taskId"],
                                                            "Reason": None})
        self.assertTrue(ans["succeeded"], ans)
        s, _, runt = self.call(gw, "GET", "/api/StartOrGetRun/tasks/")
        s, h6, ans = self.call(gw, "POST", "/api/FinishRun/", {"runId": runt["runId"],
                                                                "overwriteEntries": 9})

        fr = self.wait_rows("select f.request_id, f.run_id, f.process_key, f.kpi_rule, "
                            "f.kpi_entries, f.kpi_seconds_saved, f.overrides::text, "
                            "f.customer_key, f.bot_subject, o.upstream_status, o.succeeded "
                            "from finishrun_audit f join audit_outcome o using (request_id, "
                            "received_at) order by f.received_at", 4, "4 FinishRun outcomes")
        got = {r[0]: r[1:] for r in fr}
        self.assertEqual(got[h1["x-request-id"]][:6],
                         [str(run1["runId"]), "runs", "override_entries", "5", "60",
                          '{"overwriteEntries": 5, "overwriteSecondsSaved": null}'])
        self.assertEqual(got[h2["x-request-id"]][:5],
                         [str(run2["runId"]), "runs", "defaults", None, "60"])
        self.assertEqual(got[h3["x-request-id"]][:5],
                         [str(run3["runId"]), "advanced", "advanced_defaults", "4", "100"])
        self.assertEqual(got[h6["x-request-id"]][:5],
                         [str(runt["runId"]), "tasks", "per_task", None, None])
        for r in fr:
            self.assertEqual(r[7:], ["acme", "mate1", "200", "t"])
        ta = self.wait_rows("select t.request_id, t.task_id, t.process_key, t.action, "
                            "t.kpi_rule, t.kpi_entries, t.kpi_seconds_saved, o.succeeded "
                            "from task_action_audit t join audit_outcome o using (request_id, "
                            "received_at) order by t.received_at", 2, "2 task outcomes")
        self.assertEqual([r[1:] for r in ta],
                         [[str(t1["taskId"]), "tasks", "Solved", "override_seconds", None, "100",
                           "t"],
                          [str(t2["taskId"]), "tasks", "Manual", "defaults", None, "30", "t"]])

        # The mock's own ledger (what Anymate logged) agrees with the gateway's values.
        ledger = self.mock.control("GET", "/_mock/ledger", ca=self.ca_.cert)
        ours = {}
        for r in self.rows("select run_id, kpi_entries, kpi_seconds_saved, kpi_rule from "
                           "finishrun_audit"):
            ours[("run", int(r[0]))] = (r[1], r[2], r[3])
        for r in self.rows("select task_id, kpi_entries, kpi_seconds_saved, kpi_rule from "
                           "task_action_audit"):
            ours[("task", int(r[0]))] = (r[1], r[2], r[3])
        self.assertEqual(len(ledger), len(ours))
        for row in ledger:
            entries, seconds, rule = ours[(row["kind"], row["id"])]
            if row.get("perTask"):
                self.assertEqual((entries, seconds, rule), (None, None, "per_task"))
                continue
            self.assertEqual(entries, None if row["entries"] is None else str(row["entries"]))
            self.assertEqual(seconds, str(row["secondsSaved"]))

        # the dashboard view
        day = self.rows("select process_key, runs, tasks, entries, seconds_saved, "
                        "hours_saved::numeric(10,4), overridden_share from kpi_per_process_day "
                        "order by process_key")
        self.assertEqual(day, [
            ["advanced", "1", "0", "4", "100", "0.0278", "0.0000"],
            ["runs", "2", "0", "5", "120", "0.0333", "0.5000"],
            ["tasks", "1", "2", None, "130", "0.0361", "0.6667"],
        ])
        maps = self.rows("select count(*) from run_process where process_key in "
                         "('runs', 'advanced', 'tasks')")
        self.assertGreaterEqual(int(maps[0][0]), 4)

    def test_record_is_committed_before_the_request_is_forwarded(self):
        gw = self.audit_gateway(commit_timeout="20s")
        s, _, run = self.call(gw, "GET", "/api/StartOrGetRun/runs/")
        # Hold a lock that the gateway's INSERT must wait for.
        locker = subprocess.Popen(self.pg._psql_cmd(self.db), stdin=subprocess.PIPE,
                                  stdout=subprocess.DEVNULL, text=True)
        try:
            locker.stdin.write("begin; lock table finishrun_audit in access exclusive mode;\n")
            locker.stdin.flush()
            wait_for(lambda: self.rows("select count(*) from pg_locks l join pg_class c on "
                                       "c.oid = l.relation where c.relname = 'finishrun_audit' "
                                       "and l.mode = 'AccessExclusiveLock' and l.granted")
                     == [["1"]], what="the table lock")
            result = {}
            t = threading.Thread(target=lambda: result.update(
                r=self.call(gw, "POST", "/api/FinishRun/", {"runId": run["runId"]})))
            t.start()
            wait_for(lambda: self.rows("select count(*) from pg_stat_activity where "
                                       "wait_event_type = 'Lock' and query like "
                                       "'insert into finishrun_audit%'") == [["1"]],
                     what="the gateway's INSERT waiting for the lock")
            # the record is not committed, so Anymate has not seen the request
            self.assertEqual([r for r in self.mock.requests() if "FinishRun" in r["path"]], [])
            locker.stdin.write("commit;\n")
            locker.stdin.close()
            t.join(20)
        finally:
            locker.wait(20)
        self.assertEqual(result["r"][0], 200)
        self.assertEqual(len([r for r in self.mock.requests() if "FinishRun" in r["path"]]), 1)

    def test_finishrun_for_a_run_started_before_a_restart_is_resolved(self):
        gw = self.audit_gateway()
        s, _, run = self.call(gw, "GET", "/api/StartOrGetRun/runs/")
        self.wait_rows("select 1 from run_process where run_id = %d" % run["runId"], 1,
                       "the run mapping")
        self.assertEqual(gw.close(), 0)
        self._procs.remove(gw)
        gw2 = self.audit_gateway(migrate=False)
        s, h, ans = self.call(gw2, "POST", "/api/FinishRun/", {"runId": run["runId"]})
        self.assertTrue(ans["succeeded"])
        rows = self.rows("select process_key, kpi_rule, kpi_seconds_saved from finishrun_audit "
                         "where request_id = '%s'" % h["x-request-id"])
        self.assertEqual(rows, [["runs", "defaults", "60"]])

    def test_lookups_after_a_restart_give_each_item_its_own_process(self):
        """After a restart the worker's cache is empty: the five items of one Return are looked
        up together (one statement, an answer row per id in order), and each item gets its own
        task's process, or none for a task nobody learned."""
        gw = self.audit_gateway()
        ids = {}
        for pk in ("tasks", "advanced"):
            self.call(gw, "POST", "/api/CreateTasks/%s/" % pk, [{"k": 1}, {"k": 2}])
            ids[pk] = [self.call(gw, "GET", "/api/TakeNext/%s/" % pk)[2]["taskId"]
                       for _ in range(2)]
        learned = ids["tasks"] + ids["advanced"]
        self.wait_rows("select 1 from task_process where task_id in (%s)" %
                       ",".join(map(str, learned)), 4, "the task mappings")
        self.assertEqual(gw.close(), 0)
        self._procs.remove(gw)
        gw2 = self.audit_gateway(migrate=False)
        unknown = max(learned) + 1000
        order = [ids["advanced"][0], ids["tasks"][0], unknown, ids["advanced"][1],
                 ids["tasks"][1]]
        _, h, _ = self.call(gw2, "POST", "/api/Return/",
                            [{"taskId": t, "action": "Solved"} for t in order])
        rows = self.wait_rows("select item, task_id, process_key from task_action_audit "
                              "where request_id = '%s' order by item" % h["x-request-id"], 5,
                              "five item rows")
        self.assertEqual(rows, [["0", str(order[0]), "advanced"], ["1", str(order[1]), "tasks"],
                                ["2", str(unknown), None], ["3", str(order[3]), "advanced"],
                                ["4", str(order[4]), "tasks"]])

    def test_metrics_count_what_the_ledger_holds(self):
        from test_operations import samples, scrape, value
        gw = self.audit_gateway()
        for body in ({"overwriteSecondsSaved": 90}, {"overwriteEntries": 4}, {}):
            s, _, run = self.call(gw, "GET", "/api/StartOrGetRun/runs/")
            body["runId"] = run["runId"]
            self.assertEqual(self.call(gw, "POST", "/api/FinishRun/", body)[0], 200)
        self.wait_rows("select 1 from audit_outcome", 3, "outcomes")
        ss, fams = samples(scrape(gw))
        rows = self.rows("select count(*), sum(kpi_seconds_saved), sum(coalesce(kpi_entries, "
                         "0)) from finishrun_audit where decision = 'accepted'")[0]
        self.assertEqual(value(ss, "gateway_kpi_records_total"), int(rows[0]))
        self.assertEqual(value(ss, "gateway_kpi_seconds_saved_total"), float(rows[1]))
        self.assertEqual(value(ss, "gateway_kpi_entries_total"), int(rows[2]))
        total = sum(int(self.rows("select count(*) from %s" % t)[0][0]) for t in (
            "finishrun_audit", "audit_outcome", "run_process"))
        wait_for(lambda: value(samples(scrape(gw))[0], "gateway_audit_rows_committed_total") ==
                 total, what="committed rows counted")
        ss, fams = samples(scrape(gw))
        self.assertEqual(value(ss, "gateway_audit_commit_seconds_count"), total)
        self.assertEqual(value(ss, "gateway_audit_database_connections_up"), 2)
        self.assertEqual(value(ss, "gateway_audit_rows_pending"), 0)
        self.assertEqual(value(ss, "gateway_audit_rows_lost_total"), 0)

    def analyst(self, q):
        """Run Q as the read-only analyst role; (rows, error text)."""
        cmd = [self.pg._bin("psql"), "-X", "-q", "-v", "ON_ERROR_STOP=1", "--csv", "-t", "-d",
               "host=127.0.0.1 port=%d dbname=%s user=anymate_analyst" % (self.pg.port, self.db)]
        r = subprocess.run(cmd, input=q, capture_output=True, text=True, timeout=60)
        rows = [line.split(",") for line in r.stdout.splitlines()]
        return rows, (r.stderr if r.returncode else "")

    def test_dashboards_queries_run_as_the_analyst_and_match_the_ledger(self):
        """Every SQL query of the shipped KPI dashboard runs, as the read-only role, against a
        ledger filled by a bot session and returns what the tables hold; that role reads the
        views and cannot read a table or write anything; every metric the operations
        dashboard uses is on /metrics."""
        import glob
        import re
        from test_operations import samples, scrape
        root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
        gw = self.audit_gateway()
        # a bot session: runs with and without overrides, tasks, a refusal
        for body in ({"overwriteSecondsSaved": 120}, {"overwriteEntries": 3}, {}):
            run = self.call(gw, "GET", "/api/StartOrGetRun/runs/")[2]
            body["runId"] = run["runId"]
            self.assertEqual(self.call(gw, "POST", "/api/FinishRun/", body)[0], 200)
        self.call(gw, "POST", "/api/CreateTasks/tasks/", [{"k": 1}, {"k": 2}])
        t1 = self.call(gw, "GET", "/api/TakeNext/tasks/")[2]
        self.assertEqual(self.call(gw, "POST", "/api/Solved/", {"taskId": t1["taskId"]})[0], 200)
        t2 = self.call(gw, "GET", "/api/TakeNext/tasks/")[2]
        self.assertEqual(self.call(gw, "POST", "/api/Manual/", {"taskId": t2["taskId"]})[0],
                         200)
        self.assertEqual(self.call(gw, "POST", "/api/FinishRun/", {"runId": "x"})[0], 422)
        self.wait_rows("select 1 from audit_outcome", 5, "outcomes")
        self.wait_rows("select 1 from finishrun_audit where decision = 'rejected'", 1,
                       "the rejection")

        r = self.pg.psql_raw(["-v", "analyst_password=secret", "-f",
                              os.path.join(root, "sql/roles/analyst_readonly.sql")],
                             dbname=self.db)
        self.assertEqual(r.returncode, 0, r.stderr)
        # the role reads the views, and nothing else
        self.assertEqual(self.analyst("select count(*) from kpi_records")[0], [["5"]])
        for q in ("select * from finishrun_audit", "select * from run_process",
                  "insert into process_kpi_settings (process_key) values ('x')",
                  "delete from audit_outcome", "update finishrun_audit set run_id = 1",
                  "select * from gateway_ensure_partitions(1, 0)",
                  "create table mine (a int)",
                  "set default_transaction_read_only = off; create table mine (a int)"):
            rows, err = self.analyst(q)
            self.assertTrue(err, q)
            self.assertRegex(err, "permission denied|read-only", q)

        # the KPI dashboard's queries, Grafana's time macros replaced by literal dates
        def expand(q):
            q = q.replace("$__timeFrom()", "'2000-01-01T00:00:00Z'::timestamptz")
            q = q.replace("$__timeTo()", "'2100-01-01T00:00:00Z'::timestamptz")
            self.assertNotIn("$", q)
            return q
        with open(os.path.join(root, "docker/grafana/dashboards/kpi.json")) as f:
            kpi = {p["title"]: p["targets"][0]["rawSql"] for p in json.load(f)["panels"]}
        results = {}
        for title, q in kpi.items():
            rows, err = self.analyst(expand(q))
            self.assertEqual(err, "", title)
            results[title] = rows
        truth = self.rows(
            "select coalesce(sum(a.kpi_seconds_saved), 0) / 3600.0 from finishrun_audit a "
            "join audit_outcome o using (request_id, received_at) where a.decision = "
            "'accepted' and o.succeeded")[0][0]
        truth_t = self.rows(
            "select coalesce(sum(a.kpi_seconds_saved), 0) / 3600.0 from task_action_audit a "
            "join audit_outcome o using (request_id, received_at) where a.decision = "
            "'accepted' and o.succeeded")[0][0]
        hours = sum(float(r[1]) for r in results["Hours saved per process (period)"])
        self.assertAlmostEqual(hours, float(truth) + float(truth_t), places=6)
        self.assertAlmostEqual(sum(float(r[2]) for r in
                                   results["Hours saved per process per day"]), hours, places=6)
        runs_tasks = results["Runs and tasks per day"]
        self.assertEqual(sum(int(r[1]) for r in runs_tasks), 3)
        self.assertEqual(sum(int(r[2]) for r in runs_tasks), 2)
        over = results["Overrides used and their share"]
        self.assertEqual([r[1:4] for r in over], [["2", "1", "1"]])
        self.assertEqual(results["Rejections by reason"],
                         [["finishrun.runid_not_integer", "FinishRun", "1", "1"]])
        self.assertEqual(sum(int(r[1]) for r in results["Outcomes by status"]),
                         int(self.rows("select count(*) from audit_outcome")[0][0]))
        self.assertEqual(results["Records awaiting an outcome"], [["0"]])
        self.assertEqual(results["Records without a KPI"], [["0"]])

        # README's example queries for analysts run as the analyst, on the views alone
        with open(os.path.join(root, "README.md")) as f:
            readme = f.read()
        section = readme.split("### Example queries", 1)[1].split("\n### ", 1)[0]
        blocks = re.findall(r"```sql\n(.*?)```", section, re.S)
        self.assertGreaterEqual(len(blocks), 1)
        for stmt in [q for b in blocks for q in b.split(";") if q.strip()]:
            if all(line.strip().startswith("--") for line in stmt.strip().splitlines()):
                continue
            rows, err = self.analyst(stmt + ";")
            self.assertEqual(err, "", stmt)

        # the operations dashboard: every metric it asks Prometheus for exists
        _, fams = samples(scrape(gw))
        names = set()
        for fam in fams.values():
            names.add(fam.name)
            names.update(s.name for s in fam.samples)
        with open(os.path.join(root, "docker/grafana/dashboards/operations.json")) as f:
            exprs = [t["expr"] for p in json.load(f)["panels"] for t in p["targets"]]
        used = set(m for e in exprs for m in re.findall(r"\bgateway_[a-z_]+", e))
        spool_only = {n for n in used if n.startswith("gateway_spool_")}  # needs spool_dir
        self.assertEqual(sorted(used - names - spool_only), [])
        self.assertTrue(glob.glob(os.path.join(root, "docker/grafana/dashboards/*.json")))

    def test_unknown_run_is_recorded_as_unknown_not_guessed(self):
        gw = self.audit_gateway()
        s, h, ans = self.call(gw, "POST", "/api/FinishRun/", {"runId": 987654})
        self.assertEqual(s, 200)
        rows = self.wait_rows("select f.process_key, f.kpi_rule, f.kpi_seconds_saved, "
                              "o.succeeded, o.message <> '' from finishrun_audit f join "
                              "audit_outcome o using (request_id, received_at) where "
                              "f.request_id = '%s'" % h["x-request-id"], 1, "outcome")
        self.assertEqual(rows, [[None, "unknown_process", None, "f", "t"]])

    def test_database_warnings_are_json_log_lines(self):
        """A server WARNING on the ledger's connection (here from an analyst's trigger) is a
        JSON log line, not libpq's raw text on stderr."""
        gw = self.audit_gateway()
        self.sql("create function gw_test_warn() returns trigger language plpgsql as $$ "
                 "begin raise warning 'trigger says %', new.run_id; return null; end $$; "
                 "create trigger gw_test_warn after insert on finishrun_audit "
                 "for each row execute function gw_test_warn();")
        s, _, _ = self.call(gw, "POST", "/api/FinishRun/", {"runId": 4242})
        self.assertEqual(s, 200)
        lines = wait_for(lambda: gw.proc.find("audit database message"), what="the warning")
        self.assertEqual(lines[0]["severity"], "WARNING")
        self.assertEqual(lines[0]["message"], "trigger says 4242")
        self.assertFalse([ln for ln in gw.proc.lines if "trigger says" in ln and
                          not ln.startswith("{")])

    def test_refused_payloads_are_recorded_with_their_reason(self):
        gw = self.audit_gateway()
        s, h, _ = self.call(gw, "POST", "/api/FinishRun/", {"runId": "12"})
        self.assertEqual(s, 422)
        s, h2, _ = self.call(gw, "POST", "/api/Solved/", {"reason": "no id"})
        rows = self.wait_rows("select decision, reason_code, run_id from finishrun_audit "
                              "where request_id = '%s'" % h["x-request-id"], 1, "rejection")
        self.assertEqual(rows, [["rejected", "finishrun.runid_not_integer", None]])
        rows = self.wait_rows("select decision, reason_code, bot_subject from task_action_audit "
                              "where request_id = '%s'" % h2["x-request-id"], 1, "rejection")
        self.assertEqual(rows, [["rejected", "task.taskid_missing", "mate1"]])
        view = self.rows("select reason_code, requests from rejections_per_reason_day order "
                         "by reason_code")
        self.assertEqual(view, [["finishrun.runid_not_integer", "1"],
                                ["task.taskid_missing", "1"]])

    def test_return_records_every_item_and_refuses_a_bad_one_whole(self):
        gw = self.audit_gateway()
        self.call(gw, "POST", "/api/CreateTasks/tasks/", [{"k": 1}, {"k": 2}, {"k": 3}])
        ids = [self.call(gw, "GET", "/api/TakeNext/tasks/")[2]["taskId"] for _ in range(3)]
        # one bad item (an unknown action): nothing forwarded, one rejected row
        bad = [{"taskId": ids[0], "action": "Solved"}, {"taskId": ids[1], "action": "Done"}]
        s, h, ans = self.call(gw, "POST", "/api/Return/", bad)
        self.assertEqual((s, ans["error"]), (422, "task.action_invalid"))
        self.assertIn("item 1", ans["message"])
        self.assertEqual([r for r in self.mock.requests() if "Return" in r["path"]], [])
        rows = self.wait_rows("select decision, reason_code, item, endpoint from "
                              "task_action_audit where request_id = '%s'" % h["x-request-id"],
                              1, "the rejection")
        self.assertEqual(rows, [["rejected", "task.action_invalid", "0", "Return"]])
        # three valid items, each with its own action and overrides: three rows, each valued
        # as Anymate values it
        items = [{"taskId": ids[0], "action": "Solved", "overwriteSecondsSaved": 100},
                 {"taskId": ids[1], "action": "Manual", "overwriteEntries": 2},
                 {"taskId": ids[2], "action": "Retry", "activationDate": "2030-01-01"}]
        s, h, ans = self.call(gw, "POST", "/api/Return/", items)
        self.assertEqual((s, ans["succeeded"]), (200, True), ans)
        rows = self.wait_rows("select item, task_id, action, endpoint, process_key, kpi_rule, "
                              "kpi_entries, kpi_seconds_saved from task_action_audit where "
                              "request_id = '%s' order by item" % h["x-request-id"], 3,
                              "three item rows")
        self.assertEqual(rows, [
            ["0", str(ids[0]), "Solved", "Return", "tasks", "override_seconds", None, "100"],
            ["1", str(ids[1]), "Manual", "Return", "tasks", "override_entries", "2", "30"],
            ["2", str(ids[2]), "Retry", "Return", "tasks", "defaults", None, "30"]])
        ledger = [r for r in self.mock.control("GET", "/_mock/ledger", ca=self.ca_.cert)
                  if r.get("requestId") == h["x-request-id"]]
        self.assertEqual(sorted((r["item"], r["entries"], r["secondsSaved"]) for r in ledger),
                         [(0, None, 100), (1, 2, 30), (2, None, 30)])
        self.wait_rows("select 1 from audit_outcome where request_id = '%s'" %
                       h["x-request-id"], 1, "one outcome for the request")

    def test_database_host_list_every_address_is_tried(self):
        """host= lists two hosts: an address where nothing listens (refused at once) and a name
        that resolves (with evdns, off the loop) to the server; the gateway gets there."""
        self.conninfo = ("host=127.0.0.2,localhost port=%d dbname=%s user=postgres "
                         "connect_timeout=2" % (self.pg.port, self.db))
        gw = self.audit_gateway()
        lines = gw.proc.find("audit database addresses, tried in order")
        self.assertTrue(lines)
        addrs = lines[0]["addresses"].split(",")
        self.assertEqual(addrs[0], "127.0.0.2")
        self.assertIn("127.0.0.1", addrs[1:])
        self.assertEqual(lines[0]["hosts"].split(",")[0], "127.0.0.2")
        s, _, run = self.call(gw, "GET", "/api/StartOrGetRun/runs/")
        s, h, ans = self.call(gw, "POST", "/api/FinishRun/", {"runId": run["runId"]})
        self.assertEqual(s, 200)
        self.wait_rows("select 1 from finishrun_audit where request_id = '%s'" %
                       h["x-request-id"], 1, "the record")

    def test_per_process_override_bounds(self):
        gw = self.audit_gateway(extra_sections='[process "runs"]\n'
                                               'max_overwrite_seconds_saved = 600\n')
        s, _, run = self.call(gw, "GET", "/api/StartOrGetRun/runs/")
        s, h, ans = self.call(gw, "POST", "/api/FinishRun/", {"runId": run["runId"],
                                                               "overwriteSecondsSaved": 601})
        self.assertEqual((s, ans["error"]), (422, "policy.seconds_above_limit"))
        rows = self.wait_rows("select decision, reason_code, process_key from finishrun_audit "
                              "where request_id = '%s'" % h["x-request-id"], 1, "rejection")
        self.assertEqual(rows, [["rejected", "policy.seconds_above_limit", "runs"]])
        finish = [r for r in self.mock.requests() if "FinishRun" in r["path"]]
        self.assertEqual(finish, [])

    def test_gateway_creates_partitions_ahead_at_start(self):
        import datetime
        self.audit_gateway(audit_extra="partitions_ahead = 12\n")  # the migration makes 7
        day = (datetime.datetime.now(datetime.timezone.utc).date() +
               datetime.timedelta(days=12)).strftime("%Y%m%d")
        for table in ("finishrun_audit", "task_action_audit", "audit_outcome"):
            self.wait_rows("select 1 from pg_class where relname = '%s_p%s'" % (table, day), 1,
                           "partition %s_p%s" % (table, day))

    def test_settings_change_applies_without_restart(self):
        gw = self.audit_gateway()
        self.sql("update process_kpi_settings set seconds_per_run = 90 where process_key = "
                 "'runs'")

        def finish_value():
            s, _, run = self.call(gw, "GET", "/api/StartOrGetRun/runs/")
            s, h, _ = self.call(gw, "POST", "/api/FinishRun/", {"runId": run["runId"]})
            r = self.rows("select kpi_seconds_saved from finishrun_audit where request_id = "
                          "'%s'" % h["x-request-id"])
            return r and r[0][0] == "90"
        wait_for(finish_value, what="the new setting to apply (NOTIFY)")

    def test_concurrent_bots_produce_no_duplicate_and_no_missing_row(self):
        gw = self.audit_gateway(threads=2)
        ids = []
        lock = threading.Lock()

        def bot(n):
            # A fresh connection every third run: SO_REUSEPORT spreads connections over the
            # threads by a hash of their addresses, so 8 connections land all on one thread
            # once in 128 runs; 40 of them, once in 2^39.
            conn = None
            for i in range(15):
                if i % 3 == 0:
                    if conn is not None:
                        conn.close()
                    conn = gw.conn()
                s, _, run = self.call_on(gw, conn, "GET", "/api/StartOrGetRun/runs/")
                s, h, _ = self.call_on(gw, conn, "POST", "/api/FinishRun/",
                                       {"runId": run["runId"], "overwriteEntries": n})
                self.assertEqual(s, 200)
                with lock:
                    ids.append(h["x-request-id"])
            conn.close()

        threads = [threading.Thread(target=bot, args=(n,)) for n in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        self.assertEqual(len(ids), 120)
        rows = self.wait_rows("select request_id from finishrun_audit f join audit_outcome o "
                              "using (request_id, received_at)", 120, "120 outcomes")
        self.assertEqual(sorted(r[0] for r in rows), sorted(ids))
        used = {a["thread"] for a in gw.access() if a["route"] == "FinishRun"}
        self.assertEqual(used, {0, 1})

    def call_on(self, gw, conn, method, path, body=None):
        hdrs = {"Content-Type": "application/json"} if body is not None else {}
        data = json.dumps(body).encode() if body is not None else None
        status, headers, out = gw.request(method, path, body=data, headers=hdrs, conn=conn)
        return status, headers, (json.loads(out) if out else None)

    def test_pipelined_batches_a_refused_row_fails_alone_the_batches_behind_it_commit(self):
        """Several batches on the wire at once ([audit] pipeline_depth): while the first waits
        for a table lock, the next ones are sent behind it (8 rows each); one of them carries a
        row PostgreSQL refuses (a trigger). Its batch is rolled back and its rows sent again,
        the bad one alone: only that request gets 503 and is not forwarded; every other one,
        before and after it on the wire, is committed and forwarded."""
        from test_operations import samples, scrape, value
        gw = self.audit_gateway(commit_timeout="20s", threads=1,
                                audit_extra="pipeline_depth = 4\nbatch_size = 8\n")
        # One learned run finished 25 times: 25 records (Anymate answers the repeats with
        # succeeded = false, HTTP 200); the process is known, so no lookup joins the batches.
        run = self.call(gw, "GET", "/api/StartOrGetRun/runs/")[2]["runId"]
        self.wait_rows("select 1 from run_process", 1, "the run mapping")
        self.sql("create function poison() returns trigger language plpgsql as $$ begin "
                 "if new.request_id like 'poison-%' then raise exception 'poisoned row %', "
                 "new.request_id; end if; return new; end $$; "
                 "create trigger poison before insert on finishrun_audit for each row "
                 "execute function poison()")
        release = self.hold_lock()
        results = {}

        def finish(i, rid):
            s = self.raw(gw, self.finishrun_bytes(gw, run, rid))
            s.settimeout(30)
            results[rid] = s.recv(65536).split(b" ", 2)[1].decode()
            s.close()

        def in_flight():
            return value(samples(scrape(gw))[0], "gateway_audit_batches_in_flight")

        threads = []
        for i in range(25):
            rid = "poison-%d" % i if i == 12 else "good-%d" % i
            t = threading.Thread(target=finish, args=(i, rid))
            t.start()
            threads.append(t)
            # row 0 waits alone for the lock; rows 1-8, 9-16 and 17-24 follow as batches
            if i % 8 == 0:
                wait_for(lambda n=1 + i // 8: in_flight() >= n,
                         what="%d batches on the wire" % (1 + i // 8))
        wait_for(lambda: value(samples(scrape(gw))[0], "gateway_audit_rows_pending") == 25,
                 what="25 rows handed to the writer")
        self.assertEqual(in_flight(), 4)
        self.assertEqual([r for r in self.mock.requests() if "FinishRun" in r["path"]], [])
        release()
        for t in threads:
            t.join(30)
        self.assertEqual(results.pop("poison-12"), "503")
        self.assertEqual(sorted(results.values()), ["200"] * 24)
        rows = self.wait_rows("select request_id from finishrun_audit f join audit_outcome o "
                              "using (request_id, received_at)", 24, "24 outcomes")
        self.assertEqual(sorted(r[0] for r in rows), sorted(results))
        forwarded = {dict((k.lower(), v) for k, v in r["headers"]).get("x-request-id")
                     for r in self.mock.requests() if "FinishRun" in r["path"]}
        self.assertEqual(forwarded, set(results))
        # the writer logs before it answers, but the harness reads the gateway's stderr on a
        # thread of its own: the line may reach it after the 503 reached the bot
        failed = wait_for(lambda: gw.proc.find("audit statement failed"),
                          what="the failed statement's log line")
        time.sleep(0.2)
        failed = gw.proc.find("audit statement failed")
        self.assertEqual(len(failed), 1, failed)
        self.assertIn("poisoned row poison-12", failed[0]["error"])
        wait_for(lambda: in_flight() == 0, what="no batch left on the wire")
        self.assertGreaterEqual(value(samples(scrape(gw))[0], "gateway_audit_batches_total"), 4)

    def test_bot_gone_while_its_record_commits_is_not_forwarded(self):
        gw = self.audit_gateway(commit_timeout="5s")
        s, _, run = self.call(gw, "GET", "/api/StartOrGetRun/runs/")
        self.wait_rows("select 1 from run_process where run_id = %d" % run["runId"], 1,
                       "the run mapping")
        release = self.hold_lock()
        sock = self.raw(gw, self.finishrun_bytes(gw, run["runId"], "gone-before-commit"))
        time.sleep(0.3)  # the insert waits for the lock
        sock.close()
        time.sleep(0.2)
        release()
        rows = self.wait_rows("select f.decision, o.failure, o.status_sent, o.upstream_status "
                              "from finishrun_audit f join audit_outcome o using "
                              "(request_id, received_at) where f.request_id = "
                              "'gone-before-commit'", 1, "record and outcome")
        self.assertEqual(rows, [["accepted", "client.closed", "499", None]])
        finish = [r for r in self.mock.requests() if "FinishRun" in r["path"]]
        self.assertEqual(finish, [])

    def test_sigterm_with_requests_in_every_phase(self):
        gw = self.audit_gateway(commit_timeout="5s", shutdown_timeout="1s")
        s, _, run = self.call(gw, "GET", "/api/StartOrGetRun/runs/")
        self.wait_rows("select 1 from run_process where run_id = %d" % run["runId"], 1,
                       "the run mapping")
        auth = gw.default_headers["Authorization"].encode()
        release = self.hold_lock()
        socks = {
            "head": self.raw(gw, b"GET /api/OkToRun/runs HTTP/1.1\r\nHost: g\r\n"),
            "body": self.raw(gw, self.finishrun_bytes(gw, run["runId"], "in-body")[:-5]),
            "commit": self.raw(gw, self.finishrun_bytes(gw, run["runId"], "in-commit")),
            "upstream": self.raw(gw, b"GET /api/OkToRun/runs HTTP/1.1\r\nHost: g\r\n"
                                     b"Authorization: " + auth + b"\r\nX-Mock-Delay-Ms: 3000\r\n"
                                     b"\r\n"),
            "reply": self.raw(gw, b"GET /api/GetRules/runs HTTP/1.1\r\nHost: g\r\n"
                                  b"Authorization: " + auth + b"\r\nX-Mock-Response-Bytes: "
                                  b"8388608\r\n\r\n"),
        }
        wait_for(lambda: len([r for r in self.mock.requests() if "OkToRun" in r["path"] or
                              "GetRules" in r["path"]]) >= 2, what="requests at the mock")
        t0 = time.monotonic()
        gw.proc.p.send_signal(signal.SIGTERM)
        self.assertEqual(gw.proc.p.wait(15), 0)
        self.assertLess(time.monotonic() - t0, 6)  # shutdown_timeout 1 s, a grace of 1 s
        release()
        for name, sock in socks.items():
            with self.subTest(phase=name):
                sock.settimeout(5)
                got = b""
                try:
                    while True:
                        chunk = sock.recv(1 << 20)
                        if not chunk:
                            break
                        got += chunk
                except OSError:
                    pass  # reset: the connection was closed
                # an answer (503 for what had not been answered) or a plain close, never a hang
                if got.startswith(b"HTTP/1.1 5"):
                    self.assertTrue(got.startswith(b"HTTP/1.1 503"), got[:100])
                sock.close()
        finish = [r for r in self.mock.requests() if "FinishRun" in r["path"]]
        self.assertEqual(finish, [], "nothing waiting for its record was forwarded")

    def test_database_down_503_nothing_forwarded_then_recovers(self):
        gw = self.audit_gateway(commit_timeout="3s", audit_extra="reconnect_max = 200ms\n")
        s, _, run = self.call(gw, "GET", "/api/StartOrGetRun/runs/")
        self.wait_rows("select 1 from run_process where run_id = %d" % run["runId"], 1,
                       "the run mapping")
        before = len([r for r in self.mock.requests() if "FinishRun" in r["path"]])
        self.pg.stop()
        try:
            wait_for(lambda: not json.loads(gw.admin("GET", "/readyz")[2])["checks"]
                     ["audit_ledger"]["connected"], what="the gateway to notice the outage")
            # other endpoints keep working, and learning endpoints are not held for the
            # commit_timeout (3 s) waiting for a database that is known to be away
            t0 = time.monotonic()
            s, _, other = self.call(gw, "GET", "/api/StartOrGetRun/advanced/")
            self.assertEqual(s, 200)
            self.assertLess(time.monotonic() - t0, 2.5)
            s, h, ans = self.call(gw, "POST", "/api/FinishRun/", {"runId": run["runId"]})
            self.assertEqual((s, ans["error"]), (503, "audit.unavailable"))
            self.assertEqual(h["retry-after"], "5")
            after = len([r for r in self.mock.requests() if "FinishRun" in r["path"]])
            self.assertEqual(after, before)
        finally:
            self.pg.start()
        # back without a restart: the same request now goes through and is recorded
        def ok():
            s, h, ans = self.call(gw, "POST", "/api/FinishRun/", {"runId": run["runId"]})
            return h["x-request-id"] if s == 200 else None
        rid = wait_for(ok, what="the gateway to recover")
        rows = self.wait_rows("select decision, process_key from finishrun_audit where "
                              "request_id = '%s'" % rid, 1, "the record")
        self.assertEqual(rows, [["accepted", "runs"]])
        # nothing half-written: every record of a 503 is either absent or has its outcome
        half = self.rows("select count(*) from finishrun_audit f left join audit_outcome o "
                         "using (request_id, received_at) where f.decision = 'accepted' and "
                         "o.request_id is null")
        self.assertEqual(half, [["0"]])
