#!/usr/bin/env python3
"""Benchmark (not a test): the gateway's HTTP layer side by side with nginx and HAProxy as
reverse proxies, in one run, on loopback, in front of a fast upstream (nginx serving a static
JSON answer, plain HTTP and TLS), so that the proxies and not the upstream set the pace.

    make bench                       # runs this after the FinishRun/ledger benchmark
    python3 tests/bench/passthrough.py --seconds 5 --rounds 3 --workers 1,2 --idle 10000

For each worker count (nginx worker_processes = HAProxy nbthread = gateway threads) and each
upstream (plain, TLS), every proxy gets the same wrk load (one thread, 32 keep-alive
connections) on two paths: POST /api/FinishRun/ (validated by the gateway; ledger off) and
GET /api/OkToRun/x/ (passed through). Rounds are interleaved (each round runs every proxy in
turn, starting with a different one each round) and medians reported, with the ratios of the
gateway to nginx. Then, with one worker,
RSS per idle keep-alive bot connection: N connections that each made one request, RSS before
and after, per connection. Access logs are off everywhere (nginx and HAProxy log nothing).

Needs nginx, haproxy and wrk (Debian packages; installed on demand when run as root).
"""
import argparse
import os
import re
import resource
import selectors
import shutil
import socket
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(ROOT, "tests", "integration"))

import harness  # noqa: E402
from benchlib import WRK_DONE, median, need, wrk  # noqa: E402
import pg  # noqa: E402

ANSWER = '{"succeeded":true,"message":"ok","gateOpen":true,"okToRun":true}'

WRK_LUA = """
wrk.method = "%(method)s"
%(body)s
wrk.headers["Authorization"] = "Bearer aaaaaaaa.bbbbbbbbbbbb.cccccccc"
wrk.headers["Content-Type"] = "application/json"
"""

PATHS = [
    ("FinishRun (validated)", "/api/FinishRun/", "POST",
     'wrk.body = \'{"runId": 501, "overwriteSecondsSaved": null, "overwriteEntries": 5}\''),
    ("OkToRun (pass-through)", "/api/OkToRun/x/", "GET", ""),
]

UPSTREAM_CONF = """
daemon off;
worker_processes 1;
pid %(dir)s/up.pid;
error_log %(dir)s/up-error.log warn;
worker_rlimit_nofile 20000;
events { worker_connections 18000; }
http {
  access_log off;
  keepalive_requests 10000000;
  keepalive_timeout 300s;
  client_body_temp_path %(dir)s/up-body;
  server {
    listen 127.0.0.1:%(plain)d;
    listen 127.0.0.1:%(tls)d ssl;
    ssl_certificate %(cert)s;
    ssl_certificate_key %(key)s;
    location / { default_type application/json; return 200 '%(answer)s'; }
  }
}
"""

NGINX_CONF = """
daemon off;
worker_processes %(workers)d;
pid %(dir)s/nginx.pid;
error_log %(dir)s/nginx-error.log warn;
worker_rlimit_nofile 20000;
events { worker_connections 18000; }
http {
  access_log off;
  keepalive_requests 10000000;
  keepalive_timeout 300s;
  client_body_temp_path %(dir)s/body;
  proxy_temp_path %(dir)s/proxy;
  upstream plain { server 127.0.0.1:%(up_plain)d; keepalive 64; keepalive_requests 10000000; }
  upstream tls { server 127.0.0.1:%(up_tls)d; keepalive 64; keepalive_requests 10000000; }
  server {
    listen 127.0.0.1:%(port_plain)d;
    location / { proxy_pass http://plain; proxy_http_version 1.1;
                 proxy_set_header Connection ""; }
  }
  server {
    listen 127.0.0.1:%(port_tls)d;
    location / { proxy_pass https://tls; proxy_http_version 1.1;
                 proxy_set_header Connection "";
                 proxy_ssl_verify on; proxy_ssl_trusted_certificate %(ca)s;
                 proxy_ssl_name localhost; proxy_ssl_server_name on;
                 proxy_ssl_session_reuse on; }
  }
}
"""

HAPROXY_MAXCONN = 9000
HAPROXY_CONF = """
global
  maxconn %(maxconn)d
  nbthread %(workers)d
defaults
  mode http
  timeout connect 5s
  timeout client 300s
  timeout server 60s
  timeout http-keep-alive 300s
  option http-keep-alive
  http-reuse always
frontend fe_plain
  bind 127.0.0.1:%(port_plain)d
  default_backend be_plain
frontend fe_tls
  bind 127.0.0.1:%(port_tls)d
  default_backend be_tls
backend be_plain
  server up 127.0.0.1:%(up_plain)d
backend be_tls
  server up 127.0.0.1:%(up_tls)d ssl verify required ca-file %(ca)s sni str(localhost) verifyhost localhost
"""


def raise_nofile():
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (40000, 40000))
    except (ValueError, OSError):
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))




def rss_kib(pid):
    """Resident memory of PID and its children, in KiB."""
    total = 0
    pids = [pid]
    try:
        kids = open("/proc/%d/task/%d/children" % (pid, pid)).read().split()
        pids += [int(k) for k in kids]
    except OSError:
        pass
    for p in pids:
        try:
            for line in open("/proc/%d/status" % p):
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        except OSError:
            pass
    return total


def idle_connections(port, n, path):
    """Open N keep-alive connections that each made one request; return them (still open)."""
    req = ("GET %s HTTP/1.1\r\nHost: bench\r\nAuthorization: Bearer aaaa.bbbb.cccc\r\n\r\n"
           % path).encode()
    socks = []
    sel = selectors.DefaultSelector()
    pending = {}
    for i in range(n):
        s = socket.socket()
        s.connect(("127.0.0.1", port))
        s.sendall(req)
        s.setblocking(False)
        sel.register(s, selectors.EVENT_READ)
        pending[s] = b""
        socks.append(s)
        if len(pending) >= 500:
            drain(sel, pending, 0)
    drain(sel, pending, 0)
    return socks


def drain(sel, pending, keep):
    deadline = time.monotonic() + 60
    while len(pending) > keep and time.monotonic() < deadline:
        for key, _ in sel.select(1):
            s = key.fileobj
            try:
                data = s.recv(65536)
            except BlockingIOError:
                continue
            pending[s] += data
            head, _, body = pending[s].partition(b"\r\n\r\n")
            m = re.search(rb"(?i)content-length: *(\d+)", head)
            if not data or (m and len(body) >= int(m.group(1))):
                sel.unregister(s)
                del pending[s]


def start(argv, logdir, name):
    log = open(os.path.join(logdir, name + ".log"), "w")
    return subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, preexec_fn=raise_nofile)


def wait_port(port, what):
    def up():
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return True
        except OSError:
            return False
    harness.wait_for(up, what=what)




def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--build", default=os.path.join(ROOT, "build"))
    ap.add_argument("--seconds", type=int, default=5)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--connections", type=int, default=32)
    ap.add_argument("--workers", default="1,2")
    ap.add_argument("--upstreams", default="plain,tls")
    ap.add_argument("--idle", type=int, default=10000,
                    help="idle connections for RSS (0: skip); HAProxy gets at most its maxconn "
                         "(%d): it reserves two descriptors per connection and the machine's "
                         "hard limit is 20000" % HAPROXY_MAXCONN)
    args = ap.parse_args()
    raise_nofile()
    for tool, pkg in (("wrk", "wrk"), ("nginx", "nginx"), ("haproxy", "haproxy")):
        need(tool, pkg)
    gw_bin = os.path.join(os.path.abspath(args.build), "anymate-gateway")
    tmp = tempfile.mkdtemp(prefix="gwbench-pt-")
    procs = []
    try:
        ca = harness.TestCA(tmp)
        cert, key = ca.issue("upstream")
        up_plain, up_tls = pg.free_port(), pg.free_port()
        with open(os.path.join(tmp, "up.conf"), "w") as f:
            f.write(UPSTREAM_CONF % dict(dir=tmp, plain=up_plain, tls=up_tls, cert=cert, key=key,
                                         answer=ANSWER))
        procs.append(start(["nginx", "-p", tmp, "-c", os.path.join(tmp, "up.conf")], tmp, "up"))
        wait_port(up_plain, "upstream nginx")

        scripts = []
        for name, path, method, body in PATHS:
            script = os.path.join(tmp, "%s.lua" % method)
            with open(script, "w") as f:
                f.write(WRK_LUA % dict(method=method, body=body) + WRK_DONE)
            scripts.append((name, path, script))

        results = {}   # (workers, upstream, path) -> {proxy: [rounds]}
        idle = {}
        for workers in [int(w) for w in args.workers.split(",")]:
            ports = {}
            wdir = os.path.join(tmp, "w%d" % workers)
            os.mkdir(wdir)
            # nginx
            np, nt = pg.free_port(), pg.free_port()
            with open(os.path.join(wdir, "nginx.conf"), "w") as f:
                f.write(NGINX_CONF % dict(workers=workers, dir=wdir, up_plain=up_plain,
                                          up_tls=up_tls, port_plain=np, port_tls=nt, ca=ca.cert))
            ngx = start(["nginx", "-p", wdir, "-c", os.path.join(wdir, "nginx.conf")], wdir,
                        "nginx")
            ports["nginx"] = {"plain": np, "tls": nt, "proc": ngx}
            # HAProxy
            hp, ht = pg.free_port(), pg.free_port()
            with open(os.path.join(wdir, "haproxy.cfg"), "w") as f:
                f.write(HAPROXY_CONF % dict(workers=workers, up_plain=up_plain, up_tls=up_tls,
                                            port_plain=hp, port_tls=ht, ca=ca.cert,
                                            maxconn=HAPROXY_MAXCONN))
            hap = start(["haproxy", "-db", "-f", os.path.join(wdir, "haproxy.cfg")], wdir,
                        "haproxy")
            ports["haproxy"] = {"plain": hp, "tls": ht, "proc": hap}
            # the gateway: one process per upstream kind
            gw = {}
            for kind, url in (("plain", "http://127.0.0.1:%d" % up_plain),
                              ("tls", "https://localhost:%d" % up_tls)):
                port = pg.free_port()
                conf = os.path.join(wdir, "gw-%s.conf" % kind)
                with open(conf, "w") as f:
                    f.write("[server]\nlisten = 127.0.0.1:%d\nthreads = %d\n"
                            "max_connections = 16000\nclient_timeout = 300s\n"
                            "[admin]\nlisten = 127.0.0.1:0\n"
                            "[upstream]\napi_url = %s\nauth_url = %s\nca_file = %s\n"
                            "[log]\naccess_log = off\n" % (port, workers, url, url, ca.cert))
                gw[kind] = (port, start([gw_bin, "-c", conf], wdir, "gw-" + kind))
            ports["gateway"] = {"plain": gw["plain"][0], "tls": gw["tls"][0],
                                "proc": gw["plain"][1], "proc_tls": gw["tls"][1]}
            for p in ports.values():
                procs.append(p["proc"])
                if "proc_tls" in p:
                    procs.append(p["proc_tls"])
                wait_port(p["plain"], "proxy")
                wait_port(p["tls"], "proxy")
            proxies = ["nginx", "haproxy", "gateway"]
            combos = [(u, s) for u in args.upstreams.split(",") for s in scripts]
            for u, (name, path, script) in combos:
                for px in proxies:  # warm-up: pools, TLS sessions
                    wrk("http://127.0.0.1:%d%s" % (ports[px][u], path), script, 1,
                        args.connections)
            for rnd in range(args.rounds):
                for u, (name, path, script) in combos:
                    # each round starts with another proxy, so no one always runs first or
                    # right after the same neighbour
                    for px in proxies[rnd % 3:] + proxies[:rnd % 3]:
                        r = wrk("http://127.0.0.1:%d%s" % (ports[px][u], path), script,
                                args.seconds, args.connections)
                        results.setdefault((workers, u, name), {}).setdefault(px, []).append(r)
            if workers == 1 and args.idle > 0:
                for px in proxies:
                    pid = ports[px]["proc"].pid
                    before = rss_kib(pid)
                    n = min(args.idle, HAPROXY_MAXCONN) if px == "haproxy" else args.idle
                    socks = idle_connections(ports[px]["plain"], n, "/api/OkToRun/x/")
                    time.sleep(1)
                    after = rss_kib(pid)
                    idle[px] = (before, after, len(socks))
                    for s in socks:
                        s.close()
                    time.sleep(1)
            for p in ports.values():
                for k in ("proc", "proc_tls"):
                    if k in p:
                        p[k].terminate()
                        p[k].wait(10)
                        procs.remove(p[k])

        print("\nPass-through benchmark: wrk 1 thread, %d connections, %d rounds of %ds per "
              "proxy (medians), upstream nginx serving static JSON, all on the same 2 cores\n"
              % (args.connections, args.rounds, args.seconds))
        print("%-8s %-6s %-24s %-8s %10s %8s %8s %7s" % ("workers", "up", "path", "proxy",
                                                         "req/s", "p50 ms", "p99 ms", "errors"))
        for (workers, u, name), by in sorted(results.items()):
            for px in ("nginx", "haproxy", "gateway"):
                rs = by[px]
                print("%-8d %-6s %-24s %-8s %10.0f %8.2f %8.2f %7d" % (
                    workers, u, name, px, median([r["rps"] for r in rs]),
                    median([r["p50"] for r in rs]), median([r["p99"] for r in rs]),
                    sum(r["errors"] for r in rs)))
            tput = [g["rps"] / n["rps"] for g, n in zip(by["gateway"], by["nginx"])]
            p99 = [g["p99"] / n["p99"] for g, n in zip(by["gateway"], by["nginx"])]
            print("%-8s %-6s %-24s gateway/nginx: throughput %.2fx (rounds %s), p99 %.2fx\n" % (
                "", "", "", median(tput), " ".join("%.2f" % t for t in tput), median(p99)))
        if idle:
            print("RSS per idle keep-alive bot connection (one request each, one worker):")
            for px, (before, after, n) in idle.items():
                print("  %-8s %7.2f KiB  (%d connections, RSS %d -> %d KiB)" % (
                    px, (after - before) / n, n, before, after))
    finally:
        for p in reversed(procs):
            try:
                p.terminate()
                p.wait(10)
            except Exception:
                pass
        if os.environ.get("KEEP_BENCH_DIR"):
            print("kept", tmp)
        else:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
