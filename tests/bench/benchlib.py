"""What the benchmarks share: installing a tool on demand, one wrk run (its Lua script prints a
RESULT line from wrk's summary), medians."""
import json
import os
import re
import shutil
import subprocess

# Appended to every wrk script: one machine-readable line with requests, duration (us),
# p50, p99 and max latency (us) and the error count.
WRK_DONE = """
done = function(summary, latency, requests)
  io.write(string.format("RESULT %d %d %.1f %.1f %.1f %d\\n", summary.requests,
    summary.duration, latency:percentile(50), latency:percentile(99), latency.max,
    summary.errors.status + summary.errors.connect + summary.errors.read +
    summary.errors.write + summary.errors.timeout))
end
"""


def need(tool, package):
    """Install PACKAGE with apt-get unless TOOL is on the PATH."""
    if shutil.which(tool):
        return
    subprocess.run(["apt-get", "install", "-y", "-qq", package], check=True,
                   env=dict(os.environ, DEBIAN_FRONTEND="noninteractive"))


def wrk(url, script, seconds, conns):
    """One wrk run (one thread): req/s, p50/p99/max in ms, errors."""
    out = subprocess.run(["wrk", "-t1", "-c%d" % conns, "-d%ds" % seconds, "--latency", "-s",
                          script, url], capture_output=True, text=True, check=True).stdout
    m = re.search(r"RESULT (\d+) (\d+) ([\d.]+) ([\d.]+) ([\d.]+) (\d+)", out)
    reqs, dur_us, p50, p99, mx, errors = m.groups()
    return dict(rps=int(reqs) / (int(dur_us) / 1e6), p50=float(p50) / 1000,
                p99=float(p99) / 1000, max=float(mx) / 1000, errors=int(errors))


def stat_cpu_seconds(stat):
    """User + system CPU seconds in the text of a /proc/PID/stat file (all its threads)."""
    fields = stat.rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime, stime


def median(xs):
    xs = sorted(xs)
    return xs[len(xs) // 2]


class FrozenDatabase:
    """A PostgreSQL cluster of its own for a spooling gateway: migrated while it runs, then
    frozen (SIGSTOP: connections stay open, commits hang) while the gateway is measured, so
    every record goes to the spool the way it does when a real database stalls."""

    def __init__(self, pg):
        self.cluster = pg.PgCluster()
        self.cluster.start()
        self.conninfo = self.cluster.conninfo + " connect_timeout=2"
        self.frozen = False

    def audit_section(self, spool_dir):
        return ("[audit]\ndatabase = %s\nauto_migrate = on\nspool_dir = %s\n"
                "spool_max_bytes = 16g\n" % (self.conninfo, spool_dir))

    def freeze(self):
        self.cluster.freeze()
        self.frozen = True

    def cleanup(self):
        if self.frozen:
            self.cluster.thaw()
        self.cluster.cleanup()


def spool_counters(gw):
    """The spool's counters from the gateway's /readyz."""
    c = json.loads(gw.admin("GET", "/readyz")[2])["checks"]["audit_ledger"]["counters"]
    return c["spool"]


def warm_until_spooling(gw, url, script, conns, tries=10):
    """Short runs until the gateway writes to the spool (commit_timeout has passed once and
    the database is known to stall), so measured runs see the steady state."""
    for _ in range(tries):
        wrk(url, script, 1, conns)
        if spool_counters(gw)["in_use"]:
            return
    raise RuntimeError("the spooling gateway never started spooling")
