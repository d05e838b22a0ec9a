#!/usr/bin/env python3
"""Benchmark (not a test): FinishRun throughput and latency through anymate-gateway with the
KPI ledger on, side by side with nginx as a plain TLS reverse proxy (no auditing) in front of
the same mock Anymate, in one run, on loopback. Prints a table and the ratios. One more
gateway has its own database frozen (SIGSTOP) while it is measured: its records go to the
spool ([audit] spool_dir), as they do while a real database stalls.

    make bench                      # or: python3 tests/bench/finishrun.py --seconds 10

Every configuration gets the same load from wrk (one thread, N connections, keep-alive,
POST /api/FinishRun/ with a valid body and bearer token) for the same time. The mock is
single-threaded and shared, so "mock direct" is the ceiling every proxy is measured against.
Needs nginx and wrk (Debian packages; installed on demand) and PostgreSQL (make deps).
"""
import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(ROOT, "tests", "integration"))

import harness  # noqa: E402
from benchlib import (WRK_DONE, FrozenDatabase, median, need, spool_counters,  # noqa: E402
                      warm_until_spooling, wrk)
import pg  # noqa: E402

WRK_LUA = """
wrk.method = "POST"
wrk.body = '{"runId": %d, "overwriteSecondsSaved": null, "overwriteEntries": 5}'
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer %s"
"""

NGINX_CONF = """
daemon off;
worker_processes %(workers)d;
pid %(dir)s/nginx.pid;
error_log %(dir)s/nginx-error.log warn;
events { worker_connections 1024; }
http {
  access_log off;
  client_body_temp_path %(dir)s/body;
  proxy_temp_path %(dir)s/proxy;
  upstream anymate { server 127.0.0.1:%(mock)d; keepalive 64; }
  server {
    listen 127.0.0.1:%(port)d;
    location / {
      proxy_pass https://anymate;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_set_header Host localhost:%(mock)d;
      proxy_ssl_server_name on;
      proxy_ssl_name localhost;
      proxy_ssl_verify on;
      proxy_ssl_trusted_certificate %(ca)s;
      proxy_ssl_session_reuse on;
    }
  }
}
"""




def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--build", default=os.path.join(ROOT, "build"))
    ap.add_argument("--seconds", type=int, default=10)
    ap.add_argument("--connections", type=int, default=32)
    ap.add_argument("--threads", type=int, default=2, help="gateway threads = nginx workers")
    ap.add_argument("--rounds", type=int, default=3,
                    help="rounds; each runs every configuration once, in turn, so that a slow "
                         "moment of the machine hits all of them; medians are reported")
    args = ap.parse_args()
    os.environ["GW_BUILD"] = os.path.abspath(args.build)
    harness.BUILD = os.environ["GW_BUILD"]
    need("wrk", "wrk")
    need("nginx", "nginx")

    tmp = tempfile.mkdtemp(prefix="gwbench-")
    procs = []
    cluster = None
    frozen = None
    try:
        ca = harness.TestCA(tmp)
        cert, key = ca.issue("mock")
        mock = harness.Mock(tmp, cert, key)
        procs.append(mock)
        mock_url = "https://localhost:%d" % mock.port

        cluster = pg.PgCluster()  # its own temp dir: postgres cannot enter ours (0700)
        cluster.start()
        conninfo = "host=127.0.0.1 port=%d dbname=gateway user=postgres" % cluster.port

        frozen = FrozenDatabase(pg)

        def gateway(name, audit, spool=False):
            d = os.path.join(tmp, name)
            os.mkdir(d)
            extra = "[audit]\ndatabase = %s\nauto_migrate = on\n" % conninfo if audit else ""
            if spool:
                os.mkdir(os.path.join(d, "spool"))
                extra = frozen.audit_section(os.path.join(d, "spool"))
            extra += "[log]\naccess_log = off\n"  # nginx logs nothing either
            gw = harness.Gateway(d, mock_url, ca_file=ca.cert, threads=args.threads,
                                 extra_sections=extra)
            procs.append(gw)
            gw.wait_ready()
            return gw

        gw_plain = gateway("gw-plain", False)
        gw_audit = gateway("gw-audit", True)
        gw_spool = gateway("gw-spool", True, spool=True)
        for g in (gw_audit, gw_spool):
            harness.wait_for(lambda: json.loads(g.admin("GET", "/readyz")[2])["checks"]
                             ["audit_ledger"]["connected"], what="audit ledger")
        # a token from the mock, through the gateway
        body = "client_id=acme&client_secret=s&grant_type=password&username=bench&password=pw"
        s, _, data = gw_plain.request("POST", "/connect/token", body=body, headers={
            "Content-Type": "application/x-www-form-urlencoded"})
        token = json.loads(data)["access_token"]
        # a run the ledger knows (the common case: the process is resolved from the cache)
        s, _, data = gw_audit.request("GET", "/api/StartOrGetRun/bench/", headers={
            "Authorization": "Bearer " + token})
        run_id = json.loads(data)["runId"]
        # the spooling gateway learns the same run while its database still answers
        s, _, data = gw_spool.request("GET", "/api/StartOrGetRun/bench/", headers={
            "Authorization": "Bearer " + token})
        assert json.loads(data)["runId"] == run_id, data
        script = os.path.join(tmp, "finishrun.lua")
        with open(script, "w") as f:
            f.write(WRK_LUA % (run_id, token) + WRK_DONE)

        ngx_dir = os.path.join(tmp, "nginx")
        os.mkdir(ngx_dir)
        ngx_port = pg.free_port()
        with open(os.path.join(ngx_dir, "nginx.conf"), "w") as f:
            f.write(NGINX_CONF % dict(workers=args.threads, dir=ngx_dir, mock=mock.port,
                                      port=ngx_port, ca=ca.cert))
        ngx = subprocess.Popen(["nginx", "-p", ngx_dir, "-c", os.path.join(ngx_dir,
                                                                          "nginx.conf")])
        harness.wait_for(lambda: subprocess.run(["curl", "-s", "-o", "/dev/null",
                                                 "http://127.0.0.1:%d/" % ngx_port]).returncode
                         == 0, what="nginx")

        targets = [
            ("mock direct (TLS, no proxy)", "https://localhost:%d/api/FinishRun/" % mock.port),
            ("nginx -> mock (no audit)", "http://127.0.0.1:%d/api/FinishRun/" % ngx_port),
            ("gateway -> mock (ledger off)",
             "http://127.0.0.1:%d/api/FinishRun/" % gw_plain.port),
            ("gateway -> mock (ledger on)",
             "http://127.0.0.1:%d/api/FinishRun/" % gw_audit.port),
            ("gateway -> mock (spooling)",
             "http://127.0.0.1:%d/api/FinishRun/" % gw_spool.port),
        ]
        for name, url in targets:
            wrk(url, script, 2, args.connections)  # warm-up: pools, TLS sessions
        frozen.freeze()
        warm_until_spooling(gw_spool, targets[4][1], script, args.connections)
        spool0 = spool_counters(gw_spool)
        rounds = []
        for _ in range(args.rounds):
            rounds.append([wrk(url, script, args.seconds, args.connections)
                           for _, url in targets])
        ngx.terminate()
        ngx.wait(10)
        rows = int(cluster.psql("select count(*) from finishrun_audit")[0][0])
        spool1 = spool_counters(gw_spool)

        print("\nFinishRun, %d connections, %d rounds of %ds per configuration (medians), %d "
              "gateway threads / nginx workers, all processes on the same 2 cores\n" % (
                  args.connections, args.rounds, args.seconds, args.threads))
        print("%-32s %10s %9s %9s %9s %7s" % ("configuration", "req/s", "p50 ms", "p99 ms",
                                              "max ms", "errors"))
        for i, (name, _) in enumerate(targets):
            col = [r[i] for r in rounds]
            print("%-32s %10.0f %9.2f %9.2f %9.2f %7d" % (
                name, median([c["rps"] for c in col]), median([c["p50"] for c in col]),
                median([c["p99"] for c in col]), max(c["max"] for c in col),
                sum(c["errors"] for c in col)))
        for i in (2, 3, 4):
            tput = [r[i]["rps"] / r[1]["rps"] for r in rounds]
            p99 = [r[i]["p99"] / r[1]["p99"] for r in rounds]
            print("ratio %-26s throughput %.2fx nginx (rounds: %s), p99 latency %.2fx nginx" % (
                targets[i][0], median(tput), " ".join("%.2f" % t for t in tput), median(p99)))
        print("audit rows written: %d" % rows)
        n = spool1["appended"] - spool0["appended"]
        print("spooled while frozen: %d rows in %d fdatasyncs, %.0f bytes per row on disk" % (
            n, spool1["syncs"] - spool0["syncs"],
            (spool1["bytes"] - spool0["bytes"]) / max(n, 1)))
    finally:
        if frozen and frozen.frozen:
            frozen.cluster.thaw()
        for p in reversed(procs):
            try:
                p.close()
            except Exception:
                pass
        if cluster:
            cluster.cleanup()
        if frozen:
            frozen.cleanup()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
