"""A steady load of bots through the gateway for the ledger's fault tests (test_spool.py), and
the check of the ledger against what the bots were told.

Each bot has three processes of its own (so runs are never shared between bots): r<i> (runs,
no Advanced Mode), a<i> (runs, Advanced Mode) and t<i> (tasks enabled). It loops: start a run
of r<i> or a<i> through the gateway (StartOrGetRun: the gateway learns runId -> process) and
finish it with one of several override shapes; or create a task in t<i>, take it and return it
with Solved, Manual, Retry or Error and an override shape. Every request carries its own
X-Request-Id, so the gateway's records, the mock's request log and the mock's KPI ledger can
all be matched to the request and to what the bot was told.
"""
import http.client
import json
import random
import threading
import time
import uuid

AUDITED = ("FinishRun", "Solved", "Manual", "Retry", "Error", "Return")

OVERRIDES = [
    {},
    {"overwriteSecondsSaved": 90},
    {"overwriteEntries": 4},
    {"overwriteSecondsSaved": 30, "overwriteEntries": 2},
    {"overwriteEntries": None, "overwriteSecondsSaved": None},
    {"overwriteSecondsSaved": 0},
]


def processes_for(nbots):
    """KPI settings for the mock (--processes) and the database, per bot."""
    out = {}
    for i in range(nbots):
        out["r%d" % i] = dict(tasksEnabled=False, secondsPerRun=60 + i, secondsPerTask=0,
                              advancedMode=False, defaultEntries=0, secondsPerEntry=11)
        out["a%d" % i] = dict(tasksEnabled=False, secondsPerRun=7, secondsPerTask=0,
                              advancedMode=True, defaultEntries=3, secondsPerEntry=25 + i)
        out["t%d" % i] = dict(tasksEnabled=True, secondsPerRun=0, secondsPerTask=30 + i,
                              advancedMode=False, defaultEntries=0, secondsPerEntry=9)
    return out


def settings_sql(procs):
    return "".join(
        "insert into process_kpi_settings (process_key, tasks_enabled, seconds_per_run, "
        "seconds_per_task, advanced_mode, default_entries, seconds_per_entry) values "
        "('%s', %s, %d, %d, %s, %d, %d) on conflict do nothing;\n" % (
            pk, s["tasksEnabled"], s["secondsPerRun"], s["secondsPerTask"], s["advancedMode"],
            s["defaultEntries"], s["secondsPerEntry"]) for pk, s in procs.items())


class Bot(threading.Thread):
    def __init__(self, load, index):
        super().__init__(daemon=True)
        self.load = load
        self.i = index
        self.rnd = random.Random(1000 + index)
        self.conn = None
        self.seq = 0

    def request(self, method, path, body=None, endpoint=None, extra=None):
        self.seq += 1
        rid = "b%d-%d-%s" % (self.i, self.seq, uuid.uuid4().hex[:12])
        headers = dict(self.load.gw.default_headers)
        headers["X-Request-Id"] = rid
        if body is not None:
            headers["Content-Type"] = "application/json"
        headers.update(extra or {})
        data = json.dumps(body).encode() if body is not None else None
        rec = dict(rid=rid, endpoint=endpoint or path.split("/")[2], path=path, body=body,
                   status=None, answer=None, error=None, t0=time.monotonic(), bot=self.i)
        try:
            if self.conn is None:
                self.conn = http.client.HTTPConnection("127.0.0.1", self.load.gw.port,
                                                       timeout=15)
            self.conn.request(method, path, body=data, headers=headers)
            r = self.conn.getresponse()
            raw = r.read()
            rec["status"] = r.status
            try:
                rec["answer"] = json.loads(raw) if raw else None
            except ValueError:
                rec["answer"] = None
            if isinstance(rec["answer"], dict):
                rec["error"] = rec["answer"].get("error")
            if r.getheader("Connection", "").lower() == "close":
                self.conn.close()
                self.conn = None
        except (OSError, http.client.HTTPException) as e:
            rec["error"] = "connection: %s" % e
            if self.conn:
                self.conn.close()
            self.conn = None
            time.sleep(0.05)
        rec["t1"] = time.monotonic()
        with self.load.lock:
            self.load.results.append(rec)
        return rec

    def fault_headers(self):
        if not self.load.upstream_faults or self.rnd.random() > 0.25:
            return None
        return self.rnd.choice([{"X-Mock-Delay-Ms": "1500"}, {"X-Mock-Close": "1"},
                                {"X-Mock-Status": "500"}])

    def run_cycle(self, pk):
        r = self.request("GET", "/api/StartOrGetRun/%s/" % pk)
        if r["status"] != 200 or not isinstance(r["answer"], dict):
            return
        body = {"runId": r["answer"]["runId"]}
        body.update(self.rnd.choice(OVERRIDES))
        self.request("POST", "/api/FinishRun/", body, extra=self.fault_headers())

    def task_cycle(self, pk):
        self.request("POST", "/api/CreateTasks/%s/" % pk, [{"n": self.seq}])
        r = self.request("GET", "/api/TakeNext/%s/" % pk)
        if r["status"] != 200 or not isinstance(r["answer"], dict) or \
                not r["answer"].get("taskId"):
            return
        action = self.rnd.choice(["Solved", "Manual", "Retry", "Error"])
        body = {"taskId": r["answer"]["taskId"], "reason": "load"}
        body.update(self.rnd.choice(OVERRIDES))
        self.request("POST", "/api/%s/" % action, body, extra=self.fault_headers())

    def return_cycle(self, pk):
        """Three tasks taken, returned together: POST /api/Return with one item each."""
        self.request("POST", "/api/CreateTasks/%s/" % pk, [{"n": self.seq}, {"n": self.seq + 1},
                                                           {"n": self.seq + 2}])
        items = []
        for _ in range(3):
            r = self.request("GET", "/api/TakeNext/%s/" % pk)
            if r["status"] == 200 and isinstance(r["answer"], dict) and r["answer"].get("taskId"):
                item = {"taskId": r["answer"]["taskId"],
                        "action": self.rnd.choice(["Solved", "Manual", "Retry", "Error"])}
                item.update(self.rnd.choice(OVERRIDES))
                items.append(item)
        if items:
            self.request("POST", "/api/Return/", items, extra=self.fault_headers())

    def run(self):
        n = 0
        while not self.load.stopping.is_set() and n < self.load.ops_per_bot:
            n += 1
            k = n % 4
            if k == 0:
                self.run_cycle("r%d" % self.i)
            elif k == 1:
                self.run_cycle("a%d" % self.i)
            elif k == 2:
                self.task_cycle("t%d" % self.i)
            else:
                self.return_cycle("t%d" % self.i)
        if self.conn:
            self.conn.close()


class Load:
    def __init__(self, gw, procs, nbots, ops_per_bot=10 ** 9, upstream_faults=False):
        self.gw = gw
        self.procs = procs
        self.results = []
        self.lock = threading.Lock()
        self.stopping = threading.Event()
        self.ops_per_bot = ops_per_bot
        self.upstream_faults = upstream_faults
        self.bots = [Bot(self, i) for i in range(nbots)]

    def start(self):
        for b in self.bots:
            b.start()

    def stop(self):
        self.stopping.set()
        for b in self.bots:
            b.join(60)

    def count_ok(self):
        with self.lock:
            return sum(1 for r in self.results if r["endpoint"] in AUDITED and
                       r["status"] == 200)

    def status_count(self, status):
        with self.lock:
            return sum(1 for r in self.results if r["status"] == status)


def check(test, load, sql, mock, ca, killed=False, lost=(), extra_loads=()):
    """The ledger against what the bots were told (see test_spool.py). LOST: (request id, item)
    of records known to be lost (cut from a damaged spool). Returns a report."""
    results = list(load.results)
    for extra in extra_loads:
        results += extra.results
    audited = [r for r in results if r["endpoint"] in AUDITED]
    sent = {r["rid"] for r in results}
    forwarded = set()
    for m in mock.requests():
        for name, value in m["headers"]:
            if name.lower() == "x-request-id":
                forwarded.add(value)
    ledger = {}
    for row in mock.control("GET", "/_mock/ledger", ca=ca):
        if row.get("requestId"):
            ledger[(row["requestId"], row.get("item", 0))] = row

    def rows(q):
        return sql(q)
    recs = {}
    for r in rows("select request_id, 0, decision, kpi_rule, kpi_entries, kpi_seconds_saved, "
                  "spooled, process_key from finishrun_audit"):
        recs.setdefault((r[0], 0), []).append(r)
    for r in rows("select request_id, item, decision, kpi_rule, kpi_entries, kpi_seconds_saved, "
                  "spooled, process_key from task_action_audit"):
        recs.setdefault((r[0], int(r[1])), []).append(r)
    outcomes = {}
    for r in rows("select request_id, upstream_status, failure, status_sent from audit_outcome"):
        outcomes.setdefault(r[0], []).append(r)
    maps = {r[0] for r in rows("select run_id::text from run_process")}

    report = dict(status={}, ok_while_spooled=0, lost_found_missing=0, upstream_failed=0,
                  ok_after=0, missing_outcomes=0, return_items=0)
    problems = []
    expanded = []
    for r in audited:
        report["status"][r["status"]] = report["status"].get(r["status"], 0) + 1
        nitems = len(r["body"]) if r["endpoint"] == "Return" else 1
        for item in range(nitems):
            expanded.append((r, item))
    for r, item in expanded:
        key = (r["rid"], item)
        got = recs.get(key, [])
        fwd = r["rid"] in forwarded
        if key in lost:
            if got:
                problems.append("%s: reported lost but recorded" % r["rid"])
            else:
                report["lost_found_missing"] += 1
            continue
        if len(got) > 1:
            problems.append("%s: %d records" % (r["rid"], len(got)))
        if fwd and not got:
            problems.append("%s (%s): forwarded without a record" % (r["rid"], r["status"]))
        st = r["status"]
        if st is not None and 200 <= st < 300:
            if not got:
                problems.append("%s: answered %d but no record" % (r["rid"], st))
                continue
            rec = got[0]
            if rec[2] != "accepted":
                problems.append("%s: decision %s" % (r["rid"], rec[2]))
            if rec[6] == "t":
                report["ok_while_spooled"] += 1
            if r["endpoint"] == "Return":
                report["return_items"] += 1
            row = ledger.get(key)
            if row is None:
                problems.append("%s: answered %d but not in Anymate's ledger" % (r["rid"], st))
            elif row.get("perTask"):
                if (rec[3], rec[4], rec[5]) != ("per_task", None, None):
                    problems.append("%s: per-task run recorded as %s" % (r["rid"], rec[3:6]))
            else:
                want = (None if row["entries"] is None else str(row["entries"]),
                        str(row["secondsSaved"]))
                if (rec[4], rec[5]) != want:
                    problems.append("%s: KPI %s (rule %s, process %s), Anymate logged %s" % (
                        r["rid"], (rec[4], rec[5]), rec[3], rec[7], want))
            outs = outcomes.get(r["rid"], [])
            if item > 0:
                continue  # one outcome per request
            if not outs:
                report["missing_outcomes"] += 1
                if not killed:
                    problems.append("%s: no outcome" % r["rid"])
            elif outs[0][1] != str(st):
                problems.append("%s: outcome status %s, bot got %d" % (r["rid"], outs[0][1], st))
        elif st == 503:
            if fwd:
                problems.append("%s: answered 503 but forwarded" % r["rid"])
            if got and not killed and r["rid"] in outcomes and outcomes[r["rid"]][0][1]:
                problems.append("%s: 503 but its outcome has an upstream status" % r["rid"])
        elif st in (500, 502, 504):
            if item > 0:
                continue
            if not got:
                problems.append("%s: %d without a record" % (r["rid"], st))
            outs = outcomes.get(r["rid"], [])
            if not outs:
                problems.append("%s: %d without an outcome" % (r["rid"], st))
            elif st != 500 and not outs[0][2]:
                problems.append("%s: %d but the outcome names no failure" % (r["rid"], st))
            else:
                report["upstream_failed"] += 1
    # nothing else in the tables
    for (rid, item) in recs:
        if rid not in sent:
            problems.append("%s: a record no bot sent" % rid)
    for rid in outcomes:
        if rid not in sent:
            problems.append("%s: an outcome no bot sent" % rid)
    # every run a bot was given is mapped (maps are durable before the answer goes out)
    for r in results:
        if r["endpoint"] == "StartOrGetRun" and r["status"] == 200 and \
                isinstance(r["answer"], dict) and str(r["answer"].get("runId")) not in maps:
            problems.append("run %s (request %s) not in run_process" % (r["answer"]["runId"],
                                                                        r["rid"]))
    for extra in extra_loads:
        report["ok_after"] += sum(1 for r in extra.results if r["endpoint"] in AUDITED and
                                  r["status"] == 200)
    if problems:
        test.fail("%d ledger problems (of %d audited requests; report %s):\n  %s" % (
            len(problems), len(audited), report, "\n  ".join(problems[:30])))
    return report
