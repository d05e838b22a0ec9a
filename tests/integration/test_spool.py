"""The ledger's spool end to end (issue 8): a real PostgreSQL, the real gateway with
[audit] spool_dir, the mock Anymate. While the database is stopped, frozen or too slow, audited
requests are recorded in the spool and forwarded; the replay completes the ledger afterwards;
the gateway killed mid-load loses nothing it confirmed; damaged segments are cut and reported;
a full spool answers 503 without forwarding.

Each fault test runs a steady load of concurrent bots (ledgerload.py: run processes with and
without Advanced Mode, a task process; FinishRun and task actions with varied overrides) and
then checks the ledger against what the bots were told (ledgerload.check): every 2xx has exactly
one record whose KPI equals the mock Anymate's own ledger, every forwarded request has a record,
no 503 was forwarded, nothing else is in the tables.
"""
import json
import os
import signal
import struct
import time
import unittest

import pg
from harness import GatewayTest, wait_for
from ledgerload import Load, check, processes_for, settings_sql

PG_OK, PG_WHY = pg.available()


@unittest.skipUnless(PG_OK, PG_WHY)
class SpoolTest(GatewayTest):
    NBOTS = 6

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
        if not self.pg.running:
            self.pg.start()
        type(self).ndb += 1
        self.db = "spool_%d" % self.ndb
        self.pg.psql("create database %s" % self.db, dbname="postgres")
        self.conninfo = ("host=127.0.0.1 port=%d dbname=%s user=postgres connect_timeout=2" %
                         (self.pg.port, self.db))
        self.procs = processes_for(self.NBOTS)
        procfile = os.path.join(self.tmp, "processes.json")
        with open(procfile, "w") as f:
            json.dump(self.procs, f)
        self.ca_, self.mock = self.tls_mock(extra=("--processes", procfile))
        self.spool_dir = os.path.join(self.tmp, "spool")
        self.migrated = False

    def tearDown(self):
        if self.pg.running:
            self.pg.thaw()
        super().tearDown()

    def sql(self, q):
        return self.pg.psql(q, dbname=self.db)

    def spool_gateway(self, commit_timeout="500ms", spool_max="1g", extra="", **opts):
        audit = ("[audit]\ndatabase = %s\ncommit_timeout = %s\nreconnect_max = 300ms\n"
                 "spool_dir = %s\nspool_max_bytes = %s\n%s%s" % (
                     self.conninfo, commit_timeout, self.spool_dir, spool_max,
                     "auto_migrate = on\n" if not self.migrated else "", extra))
        gw = self.gateway("https://localhost:%d" % self.mock.port, ca_file=self.ca_.cert,
                          extra_sections=audit, **opts)
        if not self.migrated:
            self.migrated = True
            self.sql(settings_sql(self.procs))
        gw.default_headers = {"Authorization": "Bearer " + self.token(gw)}
        return gw

    def readyz(self, gw):
        return json.loads(gw.admin("GET", "/readyz")[2])

    def spool_stats(self, gw):
        return self.readyz(gw)["checks"]["audit_ledger"]["counters"]["spool"]

    def wait_replayed(self, gw, what="the spool to be replayed"):
        def empty():
            s = self.spool_stats(gw)
            return s if s["records"] == 0 and not s["in_use"] else None
        return wait_for(empty, timeout=60, what=what)

    def load(self, gw, **kw):
        return Load(gw, self.procs, self.NBOTS, **kw)

    def check(self, load, **kw):
        return check(self, load, self.sql, self.mock, self.ca_.cert, **kw)

    # ---- tests ---------------------------------------------------------------------------

    def test_steady_load_without_faults(self):
        """The reference: the same load and checks with the database up all along."""
        gw = self.spool_gateway()
        load = self.load(gw)
        load.start()
        time.sleep(4)
        load.stop()
        report = self.check(load)
        self.assertGreater(report["status"].get(200, 0), 100, report)
        self.assertGreater(report["return_items"], 10, report)
        self.assertEqual(report["ok_while_spooled"], 0, report)
        self.assertEqual(self.spool_stats(gw)["appended"], 0)
        # the spool's metrics the operations dashboard reads are on /metrics
        import re
        from test_operations import samples, scrape
        ss, _ = samples(scrape(gw))
        names = {name for name, _ in ss}
        root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
        with open(os.path.join(root, "docker/grafana/dashboards/operations.json")) as f:
            used = set(re.findall(r"\bgateway_spool_[a-z_]+", f.read()))
        self.assertTrue(used)
        self.assertEqual(sorted(used - names), [])

    def test_database_stopped_mid_load_and_started_20s_later(self):
        gw = self.spool_gateway()
        load = self.load(gw)
        load.start()
        time.sleep(2)
        self.pg.stop()  # fast shutdown
        t0 = time.monotonic()
        wait_for(lambda: self.spool_stats(gw)["in_use"], what="records going to the spool")
        while time.monotonic() - t0 < 20:
            time.sleep(0.5)
        n_down = load.count_ok()
        self.pg.start()
        time.sleep(3)
        load.stop()
        stats = self.wait_replayed(gw)
        self.assertGreater(stats["replayed"], 0)
        self.assertGreater(n_down, 0)
        report = self.check(load)
        # the bots were not stopped by the outage: FinishRuns were answered 200 while it lasted
        self.assertGreater(report["ok_while_spooled"], 20, report)
        self.assertEqual(report["status"].get(503, 0), 0, report)
        lines = gw.proc.find("ledger: the audit database cannot take rows in time; records go "
                             "to the spool")
        self.assertTrue(lines)
        wait_for(lambda: gw.proc.find("spool replay: done"), what="the replay's log line")

    def test_database_frozen_mid_load_then_resumed(self):
        gw = self.spool_gateway()
        load = self.load(gw)
        load.start()
        time.sleep(2)
        self.pg.freeze()  # commits hang instead of failing
        try:
            wait_for(lambda: self.spool_stats(gw)["in_use"], what="records going to the spool")
            time.sleep(6)
        finally:
            self.pg.thaw()
        time.sleep(3)
        load.stop()
        self.wait_replayed(gw)
        report = self.check(load)
        self.assertEqual(report["status"].get(503, 0), 0, report)
        self.assertGreater(report["ok_while_spooled"], 20, report)

    def test_replay_values_a_record_with_the_process_sections_reloaded_meanwhile(self):
        """A FinishRun spooled while the database was down, for a run whose process the
        gateway could not look up, is valued when it is replayed (the map knows the run by
        then). A SIGHUP in between changed the process's [process] section: the replay uses
        the section in force when it replays, not the one the gateway started with."""
        gw = self.spool_gateway(extra='\n[process "late"]\nseconds_per_run = 60\n', threads=1)
        wait_for(lambda: self.readyz(gw)["checks"]["audit_ledger"]["connected"],
                 what="the ledger connected")
        # the database knows run 987654 (learned by another replica); this gateway has not
        # looked it up, and cannot while the database is down
        self.sql("insert into run_process (run_id, process_key, source) "
                 "values (987654, 'late', 'another-replica')")
        self.pg.stop()
        wait_for(lambda: not self.readyz(gw)["checks"]["audit_ledger"]["connected"],
                 what="the ledger to see the database down")
        s, h, _ = gw.request("POST", "/api/FinishRun/", body=b'{"runId": 987654}',
                             headers={"Content-Type": "application/json"})
        self.assertEqual(s, 200)
        rid = h["x-request-id"]
        wait_for(lambda: self.spool_stats(gw)["records"] > 0, what="the record in the spool")
        with open(gw.conf) as f:
            text = f.read()
        with open(gw.conf, "w") as f:
            f.write(text.replace("seconds_per_run = 60", "seconds_per_run = 90"))
        gw.proc.p.send_signal(signal.SIGHUP)
        wait_for(lambda: gw.proc.find("configuration reloaded (SIGHUP)"), what="the reload")
        self.pg.start()
        self.wait_replayed(gw)
        rows = wait_for(lambda: self.sql(
            "select process_key, kpi_rule, kpi_seconds_saved, kpi_settings->>'source', "
            "kpi_settings->>'secondsPerRun', spooled from finishrun_audit "
            "where request_id = '%s'" % rid), what="the replayed record")
        self.assertEqual(rows, [["late", "defaults", "90", "config", "90", "t"]])

    def test_gateway_killed_mid_load_replays_at_restart(self):
        gw = self.spool_gateway()
        load = self.load(gw)
        load.start()
        time.sleep(1.5)
        self.pg.stop()
        wait_for(lambda: self.spool_stats(gw)["in_use"], what="records going to the spool")
        time.sleep(3)
        gw.proc.p.kill()  # SIGKILL: segments left open, maybe a torn last frame
        gw.proc.p.wait(10)
        gw.proc.expect_failure = True
        load.stop()
        self.assertTrue(os.listdir(self.spool_dir))
        self.pg.start()
        gw2 = self.spool_gateway()
        self.wait_replayed(gw2)
        report = self.check(load, killed=True)
        self.assertGreater(report["ok_while_spooled"], 10, report)

    def test_corrupt_tail_and_middle_are_cut_and_reported(self):
        gw = self.spool_gateway()
        load = self.load(gw)
        load.start()
        time.sleep(1)
        self.pg.stop()
        wait_for(lambda: self.spool_stats(gw)["in_use"], what="records going to the spool")
        time.sleep(3)
        load.stop()
        gw.proc.p.send_signal(signal.SIGTERM)  # closes the segments cleanly
        gw.proc.p.wait(20)
        segs = sorted(f for f in os.listdir(self.spool_dir) if f.endswith(".seg"))
        self.assertGreaterEqual(len(segs), 1)
        # damage: garbage after the last frame of the first segment, and one flipped byte in
        # the middle of a frame of the last one; remember which record that frame held
        first = os.path.join(self.spool_dir, segs[0])
        last = os.path.join(self.spool_dir, segs[-1])
        with open(first, "ab") as f:
            f.write(b"\x4c\x47\x52\x46\x00\x10\x00\x00torn")
        # the victim: an audit record (kind 0 FinishRun, 1 task action) from the middle
        frames = read_frames(last)
        records = [f for f in frames[1:-1] if f[2] in (0, 1)]
        self.assertGreaterEqual(len(records), 1)
        victim_off, victim_len, kind, fields = records[len(records) // 2]
        victim = (fields[0], int(fields[20]) if kind == 1 else 0)  # request id, item
        with open(last, "r+b") as f:
            f.seek(victim_off + 20)
            b = f.read(1)
            f.seek(victim_off + 20)
            f.write(bytes([b[0] ^ 0xFF]))
        self.pg.start()
        gw2 = self.spool_gateway()
        cuts = gw2.proc.find("spool: cut damaged bytes from a segment")
        by_where = {c["where"].split()[0]: c for c in cuts}
        self.assertEqual(by_where["tail"]["bytes"], 12)
        self.assertTrue(by_where["tail"]["file"].endswith(segs[0]))
        self.assertEqual(by_where["middle"]["offset"], victim_off)
        self.assertEqual(by_where["middle"]["bytes"], victim_len)
        self.assertEqual(by_where["middle"]["reason"], "checksum mismatch")
        self.wait_replayed(gw2)
        # exactly the damaged record is missing; everything else is there
        report = self.check(load, lost={victim})
        self.assertEqual(report["lost_found_missing"], 1)

    def test_spool_too_small_answers_503_then_recovers(self):
        gw = self.spool_gateway(spool_max="1m")
        self.pg.stop()
        load = self.load(gw, ops_per_bot=400)
        load.start()
        wait_for(lambda: load.status_count(503) > 20, timeout=60, what="503s from a full spool")
        load.stop()
        st = self.spool_stats(gw)
        self.assertGreater(st["refused_full"], 0)
        self.assertLessEqual(st["bytes"], 1024 * 1024)
        self.pg.start()
        self.wait_replayed(gw)
        load2 = self.load(gw)
        load2.start()
        time.sleep(2)
        load2.stop()
        report = self.check(load, extra_loads=[load2])
        self.assertGreater(report["status"].get(503, 0), 0)
        self.assertGreater(report["ok_after"], 0, report)
        errs = [r for r in load.results if r["status"] == 503]
        self.assertTrue(all(r["error"] == "audit.spool_full" for r in errs), errs[:3])

    def test_upstream_failures_with_the_ledger_on_are_in_the_outcome(self):
        gw = self.spool_gateway(response_timeout="300ms")
        load = self.load(gw, upstream_faults=True)
        load.start()
        time.sleep(4)
        load.stop()
        report = self.check(load)
        self.assertGreater(report["upstream_failed"], 0, report)


def read_frames(path):
    """(offset, length, kind, fields) of every valid frame of a spool segment (format in
    gateway/spool.h; the payload is ledger_encode's: kind, field count, then per field a u16
    length, 0xFFFF for NULL, and the bytes)."""
    data = open(path, "rb").read()
    out = []
    pos = 32
    while pos + 13 <= len(data):
        marker, length = struct.unpack_from("<II", data, pos)
        if marker != 0x4652474C or pos + 13 + length > len(data):
            break
        payload = data[pos + 13:pos + 13 + length]
        kind, nfields = payload[0], payload[1]
        fields, o = [], 2
        for _ in range(nfields):
            flen = struct.unpack_from("<H", payload, o)[0]
            o += 2
            if flen == 0xFFFF:
                fields.append(None)
            else:
                fields.append(payload[o:o + flen].decode())
                o += flen
        out.append((pos, 13 + length, kind, fields))
        pos += 13 + length
    return out


if __name__ == "__main__":
    unittest.main()
