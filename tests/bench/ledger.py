#!/usr/bin/env python3
"""Benchmark (not a test): the KPI ledger's cost. The gateway with the ledger on, side by side
with nginx (no auditing) and the gateway with the ledger off, in one run, on loopback, in front
of a fast upstream (a second nginx answering StartOrGetRun with a runId and FinishRun with
success), with PostgreSQL on the same two cores.

    make bench                     # runs this after the other two benchmarks
    python3 tests/bench/ledger.py --seconds 6 --rounds 3
    python3 tests/bench/ledger.py --pg-cpus 1     # PostgreSQL on CPU 1 alone, the rest on 0
    python3 tests/bench/ledger.py --log-rounds --pg-conf 'wal_init_zero = on'
                                    # each round's p99 with the stall the test clusters avoid

Traffic, per configuration (wrk, one thread, 32 keep-alive connections):
  learned   what bots do: each FinishRun is for a runId a StartOrGetRun answered through the
            same proxy just before (so the gateway learns runId -> process and the FinishRun
            finds it in the cache); half the requests are StartOrGetRun, half FinishRun.
  unknown   FinishRun only, every one for a runId nobody learned: the gateway looks the run up
            in the database, finds nothing and records the process as unknown.

Configurations: nginx (no auditing), the gateway with the ledger off, the gateway with the
ledger on (PostgreSQL up), the same with its database a network round trip away (the same
cluster behind delayproxy.py, which delays each direction by --db-delay-ms: 0.5 ms each way
measured 1.35 ms per round trip, the proxy's own cost included; a database on another
machine, which is where production keeps it), and the gateway with the ledger on while its
database is frozen (a cluster of its own, SIGSTOPped: commits hang), so that every record, outcome and learned map
goes to the spool ([audit] spool_dir, fdatasync'ed, group-committed) before the request is
forwarded: what bots get while the database stalls.

Reported: req/s, p50, p99 per configuration and workload; the ratios to nginx; the proxy's own
CPU per request (the nginx or gateway process with all its threads and children, from /proc:
the steadiest figure for comparing two builds of the gateway); PostgreSQL's
CPU time (user + system of the postmaster and all its children, from /proc) per ledger row
written (records + outcomes + runId maps) and rows per request; the whole machine's CPU per
request (/proc/stat, busy time over the requests served) and how busy the cores were; the
ceiling on these cores for a gateway that proxied as cheaply as nginx and added only the
database's work (nginx's machine CPU per request plus PostgreSQL's per audited request, over
the cores), which bounds what any auditing proxy can reach here with PostgreSQL on the same
machine; for the spooling gateway the spool's rows, syncs and bytes per row (from /readyz). The test cluster runs with fsync off (pg.py), so commit latency
here is CPU, not disk; the spool's fdatasync is real (the file system of --spool-dir).
Needs nginx and wrk (Debian packages; installed on demand when run as root) and PostgreSQL.
"""
import argparse
import base64
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
                      stat_cpu_seconds, warm_until_spooling, wrk)
import pg  # noqa: E402


def b64(obj):
    return base64.urlsafe_b64encode(json.dumps(obj).encode()).rstrip(b"=").decode()


# A JWT shaped like Anymate's (the gateway reads its claims; nobody checks the signature here).
TOKEN = "%s.%s.%s" % (b64({"alg": "RS256", "typ": "JWT"}),
                      b64({"auth.anymate.app/CustomerKey": "acme",
                           "auth.anymate.app/UserName": "bench-mate", "exp": 4102444800}),
                      "c2lnbmF0dXJl")

COMMON_LUA = """
wrk.headers["Authorization"] = "Bearer %(token)s"
wrk.headers["Content-Type"] = "application/json"
"""

# learned: a queue of runIds answered by StartOrGetRun; FinishRun pops one. wrk's Lua state is
# per thread, shared by its connections, so the queue is too.
LEARNED_LUA = COMMON_LUA + """
local ids = {}
request = function()
  local n = #ids
  if n > 0 then
    local id = ids[n]
    ids[n] = nil
    return wrk.format("POST", "/api/FinishRun/", nil,
      '{"runId": ' .. id .. ', "overwriteSecondsSaved": null, "overwriteEntries": 5}')
  end
  return wrk.format("GET", "/api/StartOrGetRun/bench/", nil, nil)
end
response = function(status, headers, body)
  local id = body and string.match(body, '"runId":%%s*(%%d+)')
  if id then ids[#ids + 1] = id end
end
"""

UNKNOWN_LUA = COMMON_LUA + """
local next_id = %(start)d
request = function()
  next_id = next_id + 1
  return wrk.format("POST", "/api/FinishRun/", nil,
    '{"runId": ' .. next_id .. ', "overwriteSecondsSaved": 30}')
end
"""

# The upstream: StartOrGetRun answers a runId made of the connection's serial number and its
# request count (unique enough; a repeat only means one more learned map row skipped).
UPSTREAM_CONF = """
daemon off;
worker_processes 1;
pid %(dir)s/up.pid;
error_log %(dir)s/up-error.log warn;
events { worker_connections 4096; }
http {
  access_log off;
  keepalive_requests 10000000;
  keepalive_timeout 300s;
  client_body_temp_path %(dir)s/up-body;
  server {
    listen 127.0.0.1:%(port)d;
    default_type application/json;
    location /api/StartOrGetRun/ {
      return 200 '{"runId": 1$connection$connection_requests, "processKey": null}';
    }
    location / { return 200 '{"succeeded":true,"message":"Run finished"}'; }
  }
}
"""

NGINX_CONF = """
daemon off;
worker_processes %(workers)d;
pid %(dir)s/nginx.pid;
error_log %(dir)s/nginx-error.log warn;
events { worker_connections 4096; }
http {
  access_log off;
  keepalive_requests 10000000;
  keepalive_timeout 300s;
  client_body_temp_path %(dir)s/body;
  proxy_temp_path %(dir)s/proxy;
  upstream up { server 127.0.0.1:%(up)d; keepalive 1024; keepalive_requests 10000000; }
  server {
    listen 127.0.0.1:%(port)d;
    location / { proxy_pass http://up; proxy_http_version 1.1;
                 proxy_set_header Connection ""; }
  }
}
"""


def tree_cpu_seconds(pid):
    """User + system CPU of process PID (all its threads) and its children, in seconds."""
    pids = [pid]
    try:
        pids += [int(p) for p in open("/proc/%d/task/%d/children" % (pid, pid)).read().split()]
    except OSError:
        pass
    total = 0
    for p in pids:
        try:
            total += stat_cpu_seconds(open("/proc/%d/stat" % p).read())
        except (OSError, IndexError):
            pass
    return total


def pg_cpu_seconds(cluster):
    """User + system CPU of the postmaster and every child, in seconds."""
    return tree_cpu_seconds(cluster.proc.pid)


def machine_cpu():
    """(busy, all) CPU seconds of the whole machine so far, from /proc/stat (busy: everything
    but idle and iowait)."""
    f = [int(x) for x in open("/proc/stat").readline().split()[1:]]
    tick = os.sysconf("SC_CLK_TCK")
    return (sum(f) - f[3] - f[4]) / tick, sum(f) / tick


def ledger_rows(cluster):
    r = cluster.psql("select (select count(*) from finishrun_audit) + "
                     "(select count(*) from audit_outcome) + (select count(*) from run_process)")
    return int(r[0][0])


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--build", default=os.path.join(ROOT, "build"))
    ap.add_argument("--seconds", type=int, default=6)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--connections", type=int, default=32)
    ap.add_argument("--threads", type=int, default=1, help="gateway threads = nginx workers")
    ap.add_argument("--audit-extra", default="", metavar="LINES",
                    help="more [audit] lines for the ledger-on gateway, e.g. 'batch_delay = 2ms'")
    ap.add_argument("--only", default=None, metavar="SUBSTRING",
                    help="measure only the configurations whose name contains SUBSTRING (and "
                    "nginx, the baseline); e.g. 'ledger on' while perf records the gateway")
    ap.add_argument("--db-delay-ms", type=float, default=0.5,
                    help="one-way delay of the 'database away' configuration (through "
                    "delayproxy.py): 0.5 = a database 1 ms round trip away")
    ap.add_argument("--pg-cpus", default=None, metavar="LIST",
                    help="give PostgreSQL these CPUs (e.g. 1) and everything else (wrk, the "
                    "proxies, the upstream) the others, as when the database has a machine of "
                    "its own; the ceiling is then the lower of the two sides' limits")
    ap.add_argument("--pg-conf", default="", metavar="LINES",
                    help="settings for the cluster the ledger-on gateways write to, appended to "
                    "its postgresql.conf, separated by ';' (e.g. 'wal_init_zero = on')")
    ap.add_argument("--log-rounds", action="store_true",
                    help="print each round's req/s and p99 with the time it ended (to line "
                    "latency spikes up with PostgreSQL's log)")
    ap.add_argument("--spool-dir", default=None,
                    help="where the spooling gateway's spool lives (default: a temporary "
                    "directory; its file system decides what fdatasync costs)")
    args = ap.parse_args()
    os.environ["GW_BUILD"] = os.path.abspath(args.build)
    harness.BUILD = os.environ["GW_BUILD"]
    need("wrk", "wrk")
    need("nginx", "nginx")

    all_cpus = os.sched_getaffinity(0)
    pg_cpus = None
    if args.pg_cpus:
        pg_cpus = {int(c) for c in args.pg_cpus.split(",")}
        if not pg_cpus < all_cpus:
            sys.exit("--pg-cpus must name some, not all, of the CPUs %s" % sorted(all_cpus))
        os.sched_setaffinity(0, all_cpus - pg_cpus)  # inherited by everything started below
    proxy_cores = len(os.sched_getaffinity(0))

    def configure_database(c):
        if not args.pg_conf:
            return
        with open(os.path.join(c.data, "postgresql.conf"), "a") as f:
            f.write("\n# tests/bench/ledger.py --pg-conf\n%s\n"
                    % "\n".join(x.strip() for x in args.pg_conf.split(";")))

    def pin_database(c):
        # the postmaster and its children now; backends forked later inherit it
        if pg_cpus:
            for pid in c.pids():
                try:
                    os.sched_setaffinity(pid, pg_cpus)
                except ProcessLookupError:
                    pass  # a child that has just exited

    tmp = tempfile.mkdtemp(prefix="gwbench-ledger-")
    procs = []
    procs_plain = []  # subprocess.Popen objects to terminate
    cluster = None
    spool_dir = None
    frozen = None
    try:
        up_port = pg.free_port()
        with open(os.path.join(tmp, "up.conf"), "w") as f:
            f.write(UPSTREAM_CONF % dict(dir=tmp, port=up_port))
        up = subprocess.Popen(["nginx", "-p", tmp, "-c", os.path.join(tmp, "up.conf")])
        ngx_dir = os.path.join(tmp, "nginx")
        os.mkdir(ngx_dir)
        ngx_port = pg.free_port()
        with open(os.path.join(ngx_dir, "nginx.conf"), "w") as f:
            f.write(NGINX_CONF % dict(workers=args.threads, dir=ngx_dir, up=up_port,
                                      port=ngx_port))
        ngx = subprocess.Popen(["nginx", "-p", ngx_dir, "-c", os.path.join(ngx_dir,
                                                                          "nginx.conf")])

        cluster = pg.PgCluster()
        configure_database(cluster)
        cluster.start()
        pin_database(cluster)
        url = "http://127.0.0.1:%d" % up_port

        spool_dir = tempfile.mkdtemp(prefix="gwbench-spool-", dir=args.spool_dir)
        frozen = FrozenDatabase(pg)
        pin_database(frozen.cluster)

        # The same database one round trip of 2 x --db-delay-ms away, as a database on another
        # machine is (tc/netem is not available everywhere: a user-space proxy delays it).
        proxy_port = pg.free_port()
        proxy = subprocess.Popen([sys.executable, os.path.join(HERE, "delayproxy.py"),
                                  str(proxy_port), "127.0.0.1", str(cluster.port),
                                  str(args.db_delay_ms)], stdout=subprocess.PIPE, text=True)
        procs_plain.append(proxy)
        proxy.stdout.readline()
        remote_conninfo = cluster.conninfo.replace("port=%d" % cluster.port,
                                                   "port=%d" % proxy_port)

        def gateway(name, audit, spool=False, conninfo=None):
            d = os.path.join(tmp, name)
            os.mkdir(d)
            extra = ""
            if audit and not spool:
                extra = "[audit]\ndatabase = %s\nauto_migrate = on\n%s\n" % (
                    conninfo or cluster.conninfo, args.audit_extra.replace("\\n", "\n"))
            elif spool:
                extra = frozen.audit_section(spool_dir)
            extra += "[log]\naccess_log = off\n"
            # as many idle upstream connections as nginx keeps (keepalive 1024 above): with
            # the default pool_size of 64, every request beyond 64 bots opens and closes one
            gw = harness.Gateway(d, url, threads=args.threads, extra_sections=extra,
                                 server_extra="client_timeout = 300s",
                                 upstream_extra="pool_size = 1024\npool_max = 1024\n")
            procs.append(gw)
            gw.wait_ready()
            return gw

        gw_plain = gateway("gw-plain", False)
        gw_audit = gateway("gw-audit", True)
        gw_spool = gateway("gw-spool", True, spool=True)
        gw_away = gateway("gw-away", True, conninfo=remote_conninfo)
        harness.wait_for(lambda: json.loads(gw_spool.admin("GET", "/readyz")[2])["checks"]
                         ["audit_ledger"]["connected"], what="the spooling gateway's ledger")
        harness.wait_for(lambda: json.loads(gw_audit.admin("GET", "/readyz")[2])["checks"]
                         ["audit_ledger"]["connected"], what="audit ledger")
        for c in (cluster, frozen.cluster):
            c.psql("insert into process_kpi_settings (process_key, tasks_enabled, "
                   "seconds_per_run, seconds_per_task, advanced_mode, default_entries, "
                   "seconds_per_entry) values ('bench', false, 60, 30, false, 0, 0)")

        scripts = {}
        for name, lua in (("learned", LEARNED_LUA), ("unknown", UNKNOWN_LUA)):
            path = os.path.join(tmp, name + ".lua")
            with open(path, "w") as f:
                f.write(lua % dict(token=TOKEN, start=int(time.time()) * 1000) + WRK_DONE)
            scripts[name] = path
        targets = [("nginx (no audit)", ngx_port), ("gateway, ledger off", gw_plain.port),
                   ("gateway, ledger on", gw_audit.port),
                   ("gateway, ledger on, db %g ms away" % (2 * args.db_delay_ms), gw_away.port),
                   ("gateway, spooling", gw_spool.port)]
        if args.only:
            targets = [t for t in targets if t[1] == ngx_port or args.only in t[0]]
        proxy_pid = {ngx_port: ngx.pid}  # nginx's master; its workers are its children
        for g in (gw_plain, gw_audit, gw_spool, gw_away):
            proxy_pid[g.port] = g.proc.p.pid
        own = {}  # (workload, name) -> [proxy CPU s, requests]
        for _, port in targets:
            wrk("http://127.0.0.1:%d" % port, scripts["learned"], 2, args.connections)
        frozen.freeze()
        warm_until_spooling(gw_spool, "http://127.0.0.1:%d" % gw_spool.port, scripts["learned"],
                            args.connections)

        results = {}  # (workload, target) -> [rounds]
        cpu = {}      # workload -> (pg cpu seconds, rows) during the ledger-on runs
        spooled = {}  # workload -> [rows appended, syncs, bytes] during the spooling runs
        machine = {}  # (workload, name) -> [busy CPU s, all CPU s, requests] of the machine
        served = {}   # (workload, port) -> [requests] during the audited runs
        for rnd in range(args.rounds):
            for wl in ("learned", "unknown"):
                for i in range(len(targets)):
                    name, port = targets[(i + rnd) % len(targets)]
                    audited = port in (gw_audit.port, gw_away.port)
                    if audited:
                        c0, r0 = pg_cpu_seconds(cluster), ledger_rows(cluster)
                    if port == gw_spool.port:
                        s0 = spool_counters(gw_spool)
                    m0, p0 = machine_cpu(), tree_cpu_seconds(proxy_pid[port])
                    r = wrk("http://127.0.0.1:%d" % port, scripts[wl], args.seconds,
                            args.connections)
                    m1, p1 = machine_cpu(), tree_cpu_seconds(proxy_pid[port])
                    acc = own.setdefault((wl, name), [0.0, 0.0])
                    acc[0] += p1 - p0
                    acc[1] += r["rps"] * args.seconds
                    acc = machine.setdefault((wl, name), [0.0, 0.0, 0.0])
                    acc[0] += m1[0] - m0[0]
                    acc[1] += m1[1] - m0[1]
                    acc[2] += r["rps"] * args.seconds
                    if audited:
                        acc = served.setdefault((wl, port), [0.0])
                        acc[0] += r["rps"] * args.seconds
                    if audited:
                        time.sleep(0.5)  # the last batch commits
                        c1, r1 = pg_cpu_seconds(cluster), ledger_rows(cluster)
                        acc = cpu.setdefault((wl, port), [0.0, 0])
                        acc[0] += c1 - c0
                        acc[1] += r1 - r0
                    if port == gw_spool.port:
                        time.sleep(0.2)  # the last group commit
                        s1 = spool_counters(gw_spool)
                        acc = spooled.setdefault(wl, [0, 0, 0])
                        acc[0] += s1["appended"] - s0["appended"]
                        acc[1] += s1["syncs"] - s0["syncs"]
                        acc[2] += s1["bytes"] - s0["bytes"]
                    results.setdefault((wl, name), []).append(r)
                    if args.log_rounds:
                        print("round %d %-8s %-34s %8.0f req/s p99 %7.2f ms, ended %s" % (
                            rnd + 1, wl, name, r["rps"], r["p99"],
                            time.strftime("%H:%M:%S")), flush=True)

        print("\nLedger benchmark: wrk 1 thread, %d connections, %d rounds of %ds per "
              "configuration (medians), %d gateway thread(s) / nginx worker(s), fast static "
              "upstream, %s\n"
              % (args.connections, args.rounds, args.seconds, args.threads,
                 "PostgreSQL on the same %d cores" % len(all_cpus) if not pg_cpus else
                 "PostgreSQL on CPU(s) %s of its own, the rest on %d core(s)"
                 % (args.pg_cpus, proxy_cores)))
        print("%-9s %-22s %10s %8s %8s %7s" % ("workload", "configuration", "req/s", "p50 ms",
                                               "p99 ms", "errors"))
        for wl in ("learned", "unknown"):
            for name, _ in targets:
                rs = results[(wl, name)]
                print("%-9s %-22s %10.0f %8.2f %8.2f %7d" % (
                    wl, name, median([r["rps"] for r in rs]), median([r["p50"] for r in rs]),
                    median([r["p99"] for r in rs]), sum(r["errors"] for r in rs)))
            base = results[(wl, targets[0][0])]
            for name, _ in targets[1:]:
                rs = results[(wl, name)]
                print("%-9s %-22s throughput %.2fx nginx (rounds %s), p99 %.2fx" % (
                    "", name, median([g["rps"] / n["rps"] for g, n in zip(rs, base)]),
                    " ".join("%.2f" % (g["rps"] / n["rps"]) for g, n in zip(rs, base)),
                    median([g["p99"] / n["p99"] for g, n in zip(rs, base)])))
            for name, _ in targets:
                busy, total, reqs = machine[(wl, name)]
                print("%-9s %-22s machine CPU per request: %.1f us (busy %.0f%% of all cores)"
                      % ("", name, busy * 1e6 / max(reqs, 1), 100 * busy / max(total, 1e-9)))
            for name, _ in targets:
                secs, reqs = own[(wl, name)]
                print("%-9s %-22s proxy's own CPU per request: %.1f us" % (
                    "", name, secs * 1e6 / max(reqs, 1)))
            nbusy, _, nreqs = machine[(wl, targets[0][0])]
            for name, port in targets:
                secs, rows = cpu.get((wl, port), (0.0, 0))
                if rows:
                    reqs = served[(wl, port)][0]
                    print("%-9s %-22s PostgreSQL CPU per ledger row: %.1f us (%.2f s for %d "
                          "rows, %.2f rows per request)" % ("", name, secs * 1e6 / max(rows, 1),
                                                            secs, rows, rows / max(reqs, 1)))
                    # What nginx's run costs the machine per request (wrk, proxy, upstream)
                    # plus what PostgreSQL costs per audited request, over all the cores: the
                    # most a gateway that proxied as cheaply as nginx could serve here.
                    ngx_us = nbusy * 1e6 / max(nreqs, 1)
                    pg_us = secs * 1e6 / max(reqs, 1)
                    ngx_rps = median([x["rps"] for x in results[(wl, targets[0][0])]])
                    if pg_cpus:
                        # two machines, in effect: the proxy side at nginx's cost, the
                        # database at its own; the slower one bounds
                        ceiling = min(proxy_cores * 1e6 / ngx_us, len(pg_cpus) * 1e6 / pg_us)
                        where = "with PostgreSQL on %d core(s) of its own" % len(pg_cpus)
                    else:
                        ceiling = len(all_cpus) * 1e6 / (ngx_us + pg_us)
                        where = "on these %d cores" % len(all_cpus)
                    print("%-9s %-22s ceiling %s for a gateway as cheap as nginx "
                          "plus PostgreSQL's %.0f us per request: %.0f req/s = %.2fx nginx" % (
                              "", name, where, pg_us, ceiling, ceiling / ngx_rps))
            n, syncs, nbytes = spooled.get(wl, (0, 0, 0))
            if n:
                print("%-9s spool: %d rows in %d fdatasyncs (%.1f rows per sync), %.0f bytes per "
                      "row on disk" % ("", n, syncs, n / max(syncs, 1), nbytes / max(n, 1)))
            print()
        size = cluster.psql(
            "select coalesce(sum(pg_total_relation_size(c.oid)), 0) from pg_class c "
            "where c.relkind = 'r' and c.relname ~ "
            "'^(finishrun_audit|task_action_audit|audit_outcome|run_process|task_process)'")
        nrows = ledger_rows(cluster)
        print("PostgreSQL storage (tables, indexes, TOAST) per ledger row: %.0f bytes "
              "(%d rows)" % (int(size[0][0]) / max(nrows, 1), nrows))
        ngx.terminate()
        up.terminate()
        ngx.wait(10)
        up.wait(10)
    finally:
        if frozen and frozen.frozen:
            frozen.cluster.thaw()  # the spooling gateway stops without waiting on it
        for p in reversed(procs):
            try:
                p.close()
            except Exception:
                pass
        for p in procs_plain:
            p.terminate()
            p.wait(10)
        if cluster:
            cluster.cleanup()
        if frozen:
            frozen.cleanup()
        shutil.rmtree(tmp, ignore_errors=True)
        if spool_dir:
            shutil.rmtree(spool_dir, ignore_errors=True)


if __name__ == "__main__":
    main()
