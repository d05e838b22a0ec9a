#!/usr/bin/env python3
"""`make run`: the mock Anymate server, a local PostgreSQL and the gateway, in the foreground.

Creates (once) a throwaway CA and a certificate for localhost in .run/, and a PostgreSQL
cluster in .run/pg (127.0.0.1:15432, reused on later runs) when config/dev.conf's [audit]
database points there; starts the mock on 127.0.0.1:18443 over TLS and the gateway with
config/dev.conf (which applies the migrations itself: auto_migrate), waits until /readyz says
ready, prints the lines to try, and stops everything on Ctrl-C.
"""
import argparse
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(ROOT, "tests", "integration"))


def ensure_ca(rundir):
    ca = os.path.join(rundir, "dev-ca.pem")
    cert = os.path.join(rundir, "mock.pem")
    if os.path.exists(ca) and os.path.exists(cert):
        return ca, cert, os.path.join(rundir, "mock.key")
    from harness import TestCA
    c = TestCA(rundir, "dev-ca")
    cert, key = c.issue("mock")
    return ca, cert, key


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--build", default="build")
    ap.add_argument("--config", default="config/dev.conf")
    args = ap.parse_args()
    os.chdir(ROOT)
    rundir = os.path.join(ROOT, ".run")
    os.makedirs(rundir, exist_ok=True)
    ca, cert, key = ensure_ca(rundir)

    check = subprocess.run([os.path.join(args.build, "anymate-gateway"), "-t", "-c", args.config])
    if check.returncode != 0:
        return 1
    cluster = None
    with open(args.config) as f:
        local_db = "port=15432" in f.read()
    if local_db:
        import pg
        cluster = pg.PgCluster(dbname="gateway", keep_dir=os.path.join(rundir, "pg"), port=15432)
        try:
            cluster.start()
        except RuntimeError as e:
            print("make run: PostgreSQL did not start (is port 15432 free?): %s" % e,
                  file=sys.stderr)
            return 1
    mock = subprocess.Popen([os.path.join(args.build, "anymate-mock"), "--listen",
                             "127.0.0.1:18443", "--tls-cert", cert, "--tls-key", key],
                            stdout=subprocess.PIPE, text=True)
    line = mock.stdout.readline()
    if not line:
        print("make run: the mock did not start (is port 18443 free?)", file=sys.stderr)
        return 1
    gw = subprocess.Popen([os.path.join(args.build, "anymate-gateway"), "-c", args.config])
    try:
        deadline = time.monotonic() + 15
        while True:
            try:
                with urllib.request.urlopen("http://127.0.0.1:9090/readyz", timeout=1) as r:
                    if r.status == 200:
                        break
            except Exception:
                pass
            if gw.poll() is not None or time.monotonic() > deadline:
                print("make run: the gateway did not become ready", file=sys.stderr)
                return 1
            time.sleep(0.1)
        if cluster:
            cluster.psql("insert into process_kpi_settings (process_key, seconds_per_run, "
                         "seconds_per_entry) values ('demo', 60, 15) on conflict do nothing")
        print("""
anymate-gateway is running on http://127.0.0.1:8080 in front of the mock Anymate
(https://localhost:18443), with its KPI ledger in PostgreSQL on 127.0.0.1:15432.
Try, in another terminal:

  TOKEN=$(curl -s -d 'client_id=acme&client_secret=s&grant_type=password&username=mate1&password=pw' \\
      http://127.0.0.1:8080/connect/token | python3 -c 'import json,sys; print(json.load(sys.stdin)["access_token"])')
  RUN=$(curl -s -H "Authorization: Bearer $TOKEN" http://127.0.0.1:8080/api/StartOrGetRun/demo/ \\
      | python3 -c 'import json,sys; print(json.load(sys.stdin)["runId"])')
  curl -i -H "Authorization: Bearer $TOKEN" -H 'Content-Type: application/json' \\
      -d "{\\"runId\\": $RUN, \\"overwriteEntries\\": 3}" http://127.0.0.1:8080/api/FinishRun/
  psql "host=127.0.0.1 port=15432 dbname=gateway user=postgres" \\
      -c 'select * from kpi_per_process_day'

Readiness: curl http://127.0.0.1:9090/readyz     Stop: Ctrl-C
""", flush=True)
        gw.wait()
    except KeyboardInterrupt:
        pass
    finally:
        for p in (gw, mock):
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
                try:
                    p.wait(10)
                except subprocess.TimeoutExpired:
                    p.kill()
        if cluster:
            cluster.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
