#!/usr/bin/env python3
"""Benchmark (not a test): what one ledger row costs PostgreSQL, for the schema as it is and for
schema changes that would make rows cheaper, so that such a change can be weighed with numbers.

    python3 tests/bench/pgrows.py                  # 3 rounds, medians
    python3 tests/bench/pgrows.py --rounds 5 --rows 50000 --batches 16,100,1000

A throwaway cluster (tests/integration/pg.py: fsync off, as the ledger benchmark's) gets the
migrations of sql/migrations. One libpq connection (through ctypes, in pipeline mode as the
gateway's: prepared statements, text parameters, a Sync closing each batch) prepares, per
table shape, the ledger's batched insert (`insert into T (cols) select * from
unnest($1::type[], ...) on conflict do nothing`, the shape gateway/ledger.c builds) and
executes it with fresh rows until --rows rows are written, one execution per Sync (so a
transaction and a round trip each; the gateway has one per batch of several statements), at
each batch size. Measured: the backend's own CPU time (user + system from /proc/PID/stat, read
before and after the executions) per row, and, from the smallest and largest batch, the fixed
cost per statement (cost(B) = fixed + B x per-row). The rows look like the benchmark's
FinishRuns: one process, settings from the table, no overrides.

Then the process lookups against 200,000 rows of run_process, half of the ids unknown, 16 per
Sync: the backend's CPU per id as 16 prepared statements of one id each (the gateway before
2026-12-01), and as one statement of the 16 ids (gateway/ledger.c's LOOKUP_SQL).

Shapes:
  finishrun_audit            as migrated (partitioned by day, text key, jsonb kpi_settings,
                             row CHECK of 0006, run_id and rejection indexes)
  uuid key                   the same with request_id uuid (a bot's own X-Request-Id is any
                             1-64 characters, so this needs a key the gateway mints and the
                             bot's id in a column of its own)
  settings referenced        the same with kpi_settings replaced by a bigint referring to the
                             settings stored once
  uuid key, settings ref.    both
  both, no row CHECK         both, without the CHECK (a bound: the rules would be gone)
  audit_outcome              as migrated
  audit_outcome, uuid key    with request_id uuid

The variant tables are partitioned like the real ones (one default partition); their CHECK,
defaults and indexes are copied from the real table (create table ... (like ... including
all)). Shapes are measured in turn within each round, so slow phases of the machine spread
over all of them. Needs PostgreSQL (the server binaries pg.py finds).
"""
import argparse
import ctypes
import ctypes.util
import json
import os
import random
import sys
import time
import uuid

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(ROOT, "tests", "integration"))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import pg  # noqa: E402
from benchlib import median, stat_cpu_seconds  # noqa: E402

SETTINGS = json.dumps({"source": "table", "tasksEnabled": True, "secondsPerRun": 60,
                       "secondsPerTask": 30, "advancedMode": False, "defaultEntries": 1,
                       "secondsPerEntry": 0})


def copy_of(name, source, alter=()):
    """DDL for a partitioned copy of SOURCE called NAME with ALTER TABLE clauses applied."""
    ddl = ["create table %s (like %s including all) partition by range (received_at)" %
           (name, source), "create table %s_d partition of %s default" % (name, name)]
    ddl += ["alter table %s %s" % (name, a) for a in alter]
    return ";\n".join(ddl)


UUID_KEY = ("alter column request_id type uuid using request_id::uuid",)
SETTINGS_REF = ("drop column kpi_settings", "add column kpi_settings_id bigint")

# (label, table, DDL or None, kind, uuid key, settings referenced)
SHAPES = [
    ("finishrun_audit", "finishrun_audit", None, "run", False, False),
    ("uuid key", "v_uuid", copy_of("v_uuid", "finishrun_audit", UUID_KEY), "run", True, False),
    ("settings referenced", "v_ref", copy_of("v_ref", "finishrun_audit", SETTINGS_REF), "run",
     False, True),
    ("uuid key, settings ref.", "v_both", copy_of("v_both", "finishrun_audit",
                                                  UUID_KEY + SETTINGS_REF), "run", True, True),
    ("both, no row CHECK", "v_nocheck",
     copy_of("v_nocheck", "finishrun_audit", UUID_KEY + SETTINGS_REF +
             ("drop constraint finishrun_audit_row_check",)), "run", True, True),
    ("audit_outcome", "audit_outcome", None, "outcome", False, False),
    ("audit_outcome, uuid key", "o_uuid", copy_of("o_uuid", "audit_outcome", UUID_KEY),
     "outcome", True, False),
]


class Rows:
    """Fresh rows as (column, SQL type, values): unique keys, run ids and receive times."""

    def __init__(self):
        self.seq = 0

    def _times(self, n):
        now = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime())
        self.seq += n
        return ["%s.%06d+00" % (now, (self.seq + i) % 1000000) for i in range(n)]

    def make(self, kind, n, uuid_key, settings_ref):
        key = ("request_id", "uuid" if uuid_key else "text", [str(uuid.uuid4()) for _ in range(n)])
        if kind == "outcome":
            return [key, ("received_at", "timestamptz", self._times(n)),
                    ("endpoint", "text", ["FinishRun"] * n), ("gateway_instance", "text", ["gw-1"] * n),
                    ("upstream_status", "integer", [200] * n), ("succeeded", "boolean", ["t"] * n),
                    ("message", "text", [None] * n), ("failure", "text", [None] * n),
                    ("status_sent", "integer", [200] * n),
                    ("audit_seconds", "double precision", [0.0012] * n),
                    ("upstream_seconds", "double precision", [0.0004] * n),
                    ("total_seconds", "double precision", [0.002] * n)]
        settings = (("kpi_settings_id", "bigint", [7] * n) if settings_ref
                    else ("kpi_settings", "jsonb", [SETTINGS] * n))
        return [key, ("received_at", "timestamptz", self._times(n)),
                ("gateway_instance", "text", ["gw-1"] * n), ("client_id", "text", ["bot-client"] * n),
                ("customer_key", "text", ["acme"] * n), ("bot_subject", "text", ["bench-mate"] * n),
                ("source_addr", "inet", ["127.0.0.1"] * n),
                ("run_id", "bigint", [10 ** 9 + self.seq + i for i in range(n)]),
                ("process_key", "text", ["proc-a"] * n), ("overrides", "jsonb", ["{}"] * n),
                ("overwrite_seconds_saved", "integer", [None] * n),
                ("overwrite_entries", "integer", [None] * n), ("kpi_rule", "text", ["defaults"] * n),
                ("kpi_entries", "bigint", [1] * n), ("kpi_seconds_saved", "bigint", [60] * n),
                settings, ("decision", "text", ["accepted"] * n), ("reason_code", "text", [None] * n),
                ("reason_message", "text", [None] * n), ("spooled", "boolean", ["f"] * n)]


def array_text(values):
    """VALUES as PostgreSQL's text form of an array (a parameter's value, not an SQL literal)."""
    out = []
    for v in values:
        if v is None:
            out.append("NULL")
        else:
            out.append('"' + str(v).replace("\\", "\\\\").replace('"', '\\"') + '"')
    return "{" + ",".join(out) + "}"


class Session:
    """One libpq connection (ctypes) in pipeline mode, as the gateway's: prepared statements
    sent with text parameters over the extended protocol, a batch of them closed by one Sync
    (one implicit transaction, one round trip); and its backend's CPU time."""

    def __init__(self, conninfo):
        lib = self.lib = ctypes.CDLL(ctypes.util.find_library("pq") or "libpq.so.5")
        vp, cp = ctypes.c_void_p, ctypes.c_char_p
        lib.PQconnectdb.restype, lib.PQconnectdb.argtypes = vp, [cp]
        for f in ("PQstatus", "PQbackendPID", "PQfinish", "PQenterPipelineMode",
                  "PQexitPipelineMode", "PQpipelineSync"):
            getattr(lib, f).argtypes = [vp]
        lib.PQerrorMessage.restype, lib.PQerrorMessage.argtypes = cp, [vp]
        lib.PQprepare.restype, lib.PQprepare.argtypes = vp, [vp, cp, cp, ctypes.c_int, vp]
        lib.PQsendQueryPrepared.argtypes = [vp, cp, ctypes.c_int, ctypes.POINTER(cp), vp, vp,
                                            ctypes.c_int]
        lib.PQgetResult.restype, lib.PQgetResult.argtypes = vp, [vp]
        lib.PQresultStatus.argtypes = lib.PQclear.argtypes = [vp]
        lib.PQresultErrorMessage.restype, lib.PQresultErrorMessage.argtypes = cp, [vp]
        self.conn = lib.PQconnectdb(conninfo.encode())
        if lib.PQstatus(self.conn) != 0:
            raise SystemExit("cannot connect: %s" % lib.PQerrorMessage(self.conn).decode())
        self.stat = "/proc/%d/stat" % lib.PQbackendPID(self.conn)
        self.n = 0

    def _fail(self, what):
        raise SystemExit("%s: %s" % (what, self.lib.PQerrorMessage(self.conn).decode().strip()))

    def prepare(self, sql):
        """Prepare SQL (outside pipeline mode, where libpq allows it); returns its name."""
        self.n += 1
        name = ("p%d" % self.n).encode()
        res = self.lib.PQprepare(self.conn, name, sql.encode(), 0, None)
        ok = self.lib.PQresultStatus(res) == 1  # PGRES_COMMAND_OK
        self.lib.PQclear(res)
        if not ok:
            self._fail(sql[:60])
        return name

    def batch(self, name, param_lists, what):
        """Send one execution of NAME per parameter list, then a Sync; read every answer."""
        lib = self.lib
        if not lib.PQenterPipelineMode(self.conn):
            self._fail(what)
        for params in param_lists:
            vals = (ctypes.c_char_p * len(params))(*[p.encode() for p in params])
            if not lib.PQsendQueryPrepared(self.conn, name, len(params), vals, None, None, 0):
                self._fail(what)
        if not lib.PQpipelineSync(self.conn):
            self._fail(what)
        for _ in param_lists:
            while True:
                res = lib.PQgetResult(self.conn)
                if not res:
                    break
                st = lib.PQresultStatus(res)  # PGRES_COMMAND_OK 1, PGRES_TUPLES_OK 2
                err = lib.PQresultErrorMessage(res).decode().strip()
                lib.PQclear(res)
                if st not in (1, 2):
                    raise SystemExit("%s: %s" % (what, err or "status %d" % st))
        res = lib.PQgetResult(self.conn)
        st = lib.PQresultStatus(res) if res else -1
        lib.PQclear(res)
        if st != 10 or not lib.PQexitPipelineMode(self.conn):  # PGRES_PIPELINE_SYNC
            self._fail(what)

    def cpu_us(self):
        return stat_cpu_seconds(open(self.stat).read()) * 1e6

    def close(self):
        self.lib.PQfinish(self.conn)


def cpu_per_batch(db, label, sql, batches):
    """Backend CPU (us) per batch of executions of SQL, prepared: BATCHES is a list of batches,
    each a list of parameter lists (text); the first two warm the plan and caches and are not
    counted."""
    name = db.prepare(sql)
    for i, b in enumerate(batches):
        if i == 2:
            t0 = db.cpu_us()
        db.batch(name, b, label)
    return (db.cpu_us() - t0) / (len(batches) - 2)


def measure(db, rows, shape, batch, total):
    """Backend CPU (us) per execution of SHAPE's insert at BATCH rows, over about TOTAL rows."""
    label, table, _, kind, uuid_key, settings_ref = shape
    cols = rows.make(kind, 1, uuid_key, settings_ref)
    sql = "insert into %s (%s) select * from unnest(%s) on conflict do nothing" % (
        table, ", ".join(c[0] for c in cols),
        ", ".join("$%d::%s[]" % (i + 1, c[1]) for i, c in enumerate(cols)))
    batches = [[[array_text(c[2]) for c in rows.make(kind, batch, uuid_key, settings_ref)]]
               for _ in range(2 + max(3, total // batch))]
    return cpu_per_batch(db, "%s at batch %d" % (label, batch), sql, batches)


# The process lookups (gateway/ledger.c, LOOKUP_SQL): one statement per run id, as before
# 2026-12-01, and one per batch of ids, one answer row per id in order, as now.
LOOKUP_ONE = "select process_key from run_process where run_id = $1"
LOOKUP_BATCH = ("select m.process_key from unnest($1::bigint[]) with ordinality as u(id, ord) "
                "left join run_process m on m.run_id = u.id order by u.ord")
MAPS = 200000


def measure_lookups(db, total, batch, rng):
    """Backend CPU (us) per run id looked up, BATCH ids per pipeline Sync: as BATCH statements
    of one id each, and as one statement of BATCH ids; over TOTAL ids of which half are in
    run_process (MAPS rows) and half not."""
    ids = [rng.randrange(1, 2 * MAPS) for _ in range(total + 2 * batch)]
    groups = [ids[k:k + batch] for k in range(0, len(ids) - batch + 1, batch)]
    one = cpu_per_batch(db, "lookups one by one", LOOKUP_ONE,
                        [[[str(i)] for i in g] for g in groups])
    many = cpu_per_batch(db, "lookups batched", LOOKUP_BATCH, [[[array_text(g)]] for g in groups])
    return one / batch, many / batch


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--rows", type=int, default=60000, help="rows per shape, batch and round")
    ap.add_argument("--batches", default="16,1000", help="batch sizes, comma-separated: the "
                    "fixed cost per statement is fitted from the smallest and the largest")
    args = ap.parse_args()
    batches = sorted(int(b) for b in args.batches.split(","))
    cluster = pg.PgCluster().start()
    db = None
    try:
        for name in sorted(os.listdir(os.path.join(ROOT, "sql", "migrations"))):
            cluster.psql_file(os.path.join(ROOT, "sql", "migrations", name))
        cluster.psql("select gateway_ensure_partitions(2)")
        for shape in SHAPES:
            if shape[2]:
                cluster.psql(shape[2])
        cluster.psql("insert into run_process (run_id, process_key, source) select g, "
                     "'proc-' || g %% 7, 'bench' from generate_series(1, %d) g; "
                     "vacuum analyze run_process" % MAPS)
        db = Session(cluster.conninfo)
        rows = Rows()
        rng = random.Random(1)
        per_exec = {}  # (label, batch) -> [us per execution, one per round]
        lookups = []  # (us per lookup alone, us per id batched), one per round
        for rnd in range(args.rounds):
            for shape in SHAPES:
                for b in batches:
                    us = measure(db, rows, shape, b, args.rows)
                    per_exec.setdefault((shape[0], b), []).append(us)
            lookups.append(measure_lookups(db, args.rows, 16, rng))
            print("round %d of %d done" % (rnd + 1, args.rounds), file=sys.stderr, flush=True)
        lo, hi = batches[0], batches[-1]
        print("PostgreSQL backend CPU per ledger row (us), medians of %d rounds, %d rows per "
              "shape and batch" % (args.rounds, args.rows))
        print("%-26s" % "shape" + "".join("%12s" % ("batch %d" % b) for b in batches) +
              "%16s" % "fixed/stmt")
        for shape in SHAPES:
            med = {b: median(per_exec[(shape[0], b)]) for b in batches}
            per_row = (med[hi] - med[lo]) / (hi - lo) if hi > lo else med[lo] / lo
            fixed = med[lo] - lo * per_row
            print("%-26s" % shape[0] + "".join("%12.1f" % (med[b] / b) for b in batches) +
                  "%16.0f" % fixed)
        print("\nPostgreSQL backend CPU per process lookup (us), %d run ids in run_process, "
              "half of the ids unknown, 16 per pipeline Sync: %.1f as one statement each, %.1f "
              "as one statement for the 16" % (MAPS, median([x[0] for x in lookups]),
                                        median([x[1] for x in lookups])))
    finally:
        if db:
            db.close()
        cluster.cleanup()


if __name__ == "__main__":
    main()
