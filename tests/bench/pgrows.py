#!/usr/bin/env python3
"""Benchmark (not a test): what one ledger row costs PostgreSQL, for the schema as it is and for
schema changes that would make rows cheaper, so that such a change can be weighed with numbers.

    python3 tests/bench/pgrows.py                  # 3 rounds, medians
    python3 tests/bench/pgrows.py --rounds 5 --rows 50000 --batches 16,100,1000

A throwaway cluster (tests/integration/pg.py: fsync off, as the ledger benchmark's) gets the
migrations of sql/migrations; then, per table shape, one psql session prepares the ledger's
batched insert (`insert into T (cols) select * from unnest($1::type[], ...) on conflict do
nothing`, the shape gateway/ledger.c builds) and executes it with fresh rows until --rows rows
are written, each execution its own transaction, at each batch size. Measured: the backend's
own CPU time (user + system from /proc/PID/stat, read before and after the executions) per row,
and, from two batch sizes, the fixed cost per statement (cost(B) = fixed + B x per-row). The
rows look like the benchmark's FinishRuns: one process, settings from the table, no overrides.

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
import json
import os
import sys
import tempfile
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


def array_literal(values):
    out = []
    for v in values:
        if v is None:
            out.append("NULL")
        else:
            out.append('"' + str(v).replace("\\", "\\\\").replace('"', '\\"') + '"')
    return "'{" + ",".join(out).replace("'", "''") + "}'"


def backend_cpu_us(stat_file):
    return stat_cpu_seconds(open(stat_file).read()) * 1e6


def measure(cluster, work, rows, shape, batch, total):
    """Backend CPU (us) per execution of SHAPE's insert at BATCH rows, over about TOTAL rows."""
    label, table, _, kind, uuid_key, settings_ref = shape
    cols = rows.make(kind, 1, uuid_key, settings_ref)
    sql = "insert into %s (%s) select * from unnest(%s) on conflict do nothing" % (
        table, ", ".join(c[0] for c in cols),
        ", ".join("$%d::%s[]" % (i + 1, c[1]) for i, c in enumerate(cols)))
    execs = max(3, total // batch)
    script = os.path.join(work, "run.sql")
    before, after = os.path.join(work, "before"), os.path.join(work, "after")
    with open(script, "w") as f:
        f.write("prepare p as %s;\n" % sql)
        f.write("select pg_backend_pid() as pid \\gset\n\\setenv PGROWS_PID :pid\n")
        for i in range(2 + execs):  # two executions to warm the plan and caches, not counted
            if i == 2:
                f.write("\\! cat /proc/$PGROWS_PID/stat > %s\n" % before)
            vals = rows.make(kind, batch, uuid_key, settings_ref)
            f.write("execute p(%s);\n" % ", ".join(array_literal(c[2]) for c in vals))
        f.write("\\! cat /proc/$PGROWS_PID/stat > %s\n" % after)
    os.chmod(script, 0o644)
    r = cluster.psql_raw(["-q", "-v", "ON_ERROR_STOP=1", "-f", script], timeout=900)
    if r.returncode != 0:
        raise SystemExit("%s at batch %d: psql failed: %s" % (label, batch, r.stderr.strip()[:500]))
    return (backend_cpu_us(after) - backend_cpu_us(before)) / execs


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--rows", type=int, default=60000, help="rows per shape, batch and round")
    ap.add_argument("--batches", default="16,1000", help="batch sizes, comma-separated: the "
                    "fixed cost per statement is fitted from the smallest and the largest")
    args = ap.parse_args()
    batches = sorted(int(b) for b in args.batches.split(","))
    cluster = pg.PgCluster().start()
    work = tempfile.mkdtemp(prefix="gwpgrows-")
    os.chmod(work, 0o777)  # psql's \! runs as the cluster's user
    try:
        for name in sorted(os.listdir(os.path.join(ROOT, "sql", "migrations"))):
            cluster.psql_file(os.path.join(ROOT, "sql", "migrations", name))
        cluster.psql("select gateway_ensure_partitions(2)")
        for shape in SHAPES:
            if shape[2]:
                cluster.psql(shape[2])
        rows = Rows()
        per_exec = {}  # (label, batch) -> [us per execution, one per round]
        for rnd in range(args.rounds):
            for shape in SHAPES:
                for b in batches:
                    us = measure(cluster, work, rows, shape, b, args.rows)
                    per_exec.setdefault((shape[0], b), []).append(us)
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
    finally:
        cluster.cleanup()
        for f in os.listdir(work):
            os.unlink(os.path.join(work, f))
        os.rmdir(work)


if __name__ == "__main__":
    main()
