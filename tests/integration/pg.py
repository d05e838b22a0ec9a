"""A throwaway PostgreSQL 15 cluster for the end-to-end tests.

    pg = PgCluster()          # initdb into a fresh temporary directory (nothing runs yet)
    pg.start()                # postgres on 127.0.0.1:<free port> + a unix socket; waits until ready
    pg.conninfo               # "host=127.0.0.1 port=N dbname=gateway user=postgres"
    pg.psql("select 1")       # -> [["1"]]  (NULL comes back as None)
    pg.kill(); pg.start()     # database outage: crash-stop, later start again on the same port
    pg.cleanup()              # stop and remove everything

initdb and postgres refuse to run as root: when the tests run as root (CI on a fresh Debian),
the cluster belongs to the `postgres` OS user (created by the Debian postgresql package) and the
server runs as that user; otherwise it runs as the current user. Clients (psql, the gateway)
connect over TCP as the database superuser `postgres` with trust authentication: loopback only,
in a directory nobody else uses, for the life of one test.

Readiness is polled with a deadline (pg_isready), never slept for. fsync is off (a crash of the
host loses the cluster, which is a temporary directory anyway), but synchronous_commit stays on:
a commit survives kill(), as the gateway's durability tests expect. wal_init_zero is off: a
fresh cluster creates each 16 MB WAL segment anew (zero-filled, while every committing backend
waits) until its first checkpoint lets it recycle old ones, as a cluster in service does; in
the ledger benchmark that was every p99 spike of 14-45 ms (2026-12-01: 13 of 24 ledger-on
rounds with it on, none of 12 with it off).

Only the Python standard library is used.
"""

import atexit
import csv
import io
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time

DEADLINE = float(os.environ.get("GW_TEST_DEADLINE", "20"))
NULL_MARK = "\x01NULL\x01"  # what psql prints for NULL; no real value looks like it
_LIVE = set()  # clusters not cleaned up yet: stopped at interpreter exit, should a test forget


@atexit.register
def _cleanup_all():
    for c in list(_LIVE):
        c.cleanup()


def find_bindir():
    """The directory of initdb/postgres/psql for PostgreSQL 15 (or newer), or None."""
    cands = [os.environ.get("GW_PG_BINDIR", "")]
    for v in ("15", "16", "17"):
        cands.append("/usr/lib/postgresql/%s/bin" % v)
    try:
        cands.append(subprocess.run(["pg_config", "--bindir"], stdout=subprocess.PIPE,
                                    stderr=subprocess.DEVNULL, text=True).stdout.strip())
    except OSError:
        pass
    for d in cands:
        if d and os.path.isfile(os.path.join(d, "initdb")) and \
                os.path.isfile(os.path.join(d, "postgres")):
            return d
    return None


def available():
    """(True, "") when a cluster can be made here, else (False, why): for skipUnless."""
    if find_bindir() is None:
        return False, "PostgreSQL server binaries not found (make deps installs postgresql)"
    if os.geteuid() == 0:
        try:
            pwd.getpwnam("postgres")
        except KeyError:
            return False, "running as root and there is no `postgres` OS user to run initdb as"
    return True, ""


def free_port():
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


class PgError(Exception):
    """psql failed: .returncode, .stderr (PostgreSQL's message)."""

    def __init__(self, cmd, returncode, stderr):
        super().__init__("%s exited %d: %s" % (cmd, returncode, stderr.strip()))
        self.returncode = returncode
        self.stderr = stderr


class PgCluster:
    def __init__(self, dbname="gateway", bindir=None, parent_dir=None, keep_dir=None,
                 port=None):
        """A temporary cluster, or with KEEP_DIR a cluster kept in that directory across runs
        (created on first use, reused afterwards, never removed; `make run` uses it) listening
        on PORT."""
        self.bindir = bindir or find_bindir()
        if self.bindir is None:
            raise RuntimeError(available()[1])
        self.dbname = dbname
        self.port = port
        self.proc = None
        self.keep = keep_dir is not None
        if self.keep:
            self.dir = os.path.abspath(keep_dir)
            os.makedirs(self.dir, exist_ok=True)
        else:
            self.dir = tempfile.mkdtemp(prefix="gwpg-", dir=parent_dir)
        self.data = os.path.join(self.dir, "data")
        self.sockdir = os.path.join(self.dir, "sock")
        self.logpath = os.path.join(self.dir, "postgres.log")
        os.makedirs(self.sockdir, exist_ok=True)
        self._as_user = None  # (uid, gid) to run initdb/postgres as; None = as we are
        if os.geteuid() == 0:
            pw = pwd.getpwnam("postgres")
            self._as_user = (pw.pw_uid, pw.pw_gid)
            for d in (self.dir, self.sockdir):
                os.chown(d, pw.pw_uid, pw.pw_gid)
        self._created_db = False
        _LIVE.add(self)
        if self.keep and os.path.exists(os.path.join(self.data, "PG_VERSION")):
            return
        try:
            self._initdb()
        except BaseException:
            self.cleanup()
            raise

    # ---- server lifecycle ---------------------------------------------------------------

    def _bin(self, name):
        return os.path.join(self.bindir, name)

    def _popen_kw(self):
        env = dict(os.environ, LC_ALL="C", LANG="C")
        env.pop("PGDATA", None)
        kw = {"env": env, "cwd": self.dir}
        if self._as_user is not None:
            # exec'd directly as the other user (no su/runuser parent in between), so the pid
            # we hold is the postmaster's and signals reach it.
            kw.update(user=self._as_user[0], group=self._as_user[1], extra_groups=[])
        return kw

    def _initdb(self):
        cmd = [self._bin("initdb"), "-D", self.data, "-U", "postgres", "--auth=trust",
               "--encoding=UTF8", "--locale=C", "--no-sync", "--no-instructions"]
        r = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                           **self._popen_kw())
        if r.returncode != 0:
            raise RuntimeError("initdb failed:\n" + r.stdout)
        with open(os.path.join(self.data, "postgresql.conf"), "a") as f:
            f.write("\n# anymate-gateway tests (tests/integration/pg.py)\n"
                    "listen_addresses = '127.0.0.1'\n"
                    "unix_socket_directories = '%s'\n"
                    "fsync = off\nfull_page_writes = off\nwal_init_zero = off\n"
                    "shared_buffers = 32MB\nmax_connections = 100\n"
                    "logging_collector = off\nlog_min_messages = warning\n"
                    "log_line_prefix = '%%m [%%p] '\n" % self.sockdir)

    @property
    def running(self):
        return self.proc is not None and self.proc.poll() is None

    def start(self):
        """Start the server (on the port it had before, else on a free one) and wait until it
        accepts connections; create the database on first start. Returns self."""
        if self.running:
            return self
        attempts = 1 if self.port is not None else 5
        for attempt in range(attempts):
            port = self.port if self.port is not None else free_port()
            self._spawn(port)
            try:
                self._wait_ready(port)
                self.port = port
                break
            except _StartFailed as e:
                self.proc = None
                if attempt + 1 == attempts or "could not bind" not in str(e) and \
                        "in use" not in str(e):
                    raise RuntimeError("postgres did not start on port %d:\n%s" % (port, e))
                # someone took the free port between our probe and postgres' bind: next one
        if not self._created_db:
            exists = self.psql("select 1 from pg_database where datname = '%s'" % self.dbname,
                               dbname="postgres")
            if not exists:
                self.psql("create database %s" % self.dbname, dbname="postgres")
            self._created_db = True
        return self

    def _spawn(self, port):
        log = open(self.logpath, "a")
        try:
            self.proc = subprocess.Popen([self._bin("postgres"), "-D", self.data,
                                          "-p", str(port)],
                                         stdin=subprocess.DEVNULL, stdout=log,
                                         stderr=subprocess.STDOUT, **self._popen_kw())
        finally:
            log.close()

    def _wait_ready(self, port):
        end = time.monotonic() + DEADLINE
        delay = 0.01
        while True:
            if self.proc.poll() is not None:
                raise _StartFailed(self.log_tail())
            r = subprocess.run([self._bin("pg_isready"), "-q", "-h", "127.0.0.1",
                                "-p", str(port), "-U", "postgres", "-d", "postgres"],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            if r.returncode == 0:
                return
            if time.monotonic() > end:
                self._signal(signal.SIGQUIT)
                raise _StartFailed("not ready after %.0fs\n%s" % (DEADLINE, self.log_tail()))
            time.sleep(delay)
            delay = min(delay * 2, 0.1)

    def _signal(self, sig, timeout=DEADLINE):
        if not self.running:
            return
        self.proc.send_signal(sig)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()

    def stop(self):
        """Fast shutdown (SIGINT): roll back open transactions, disconnect clients, checkpoint."""
        self._signal(signal.SIGINT)

    def kill(self):
        """Immediate shutdown (SIGQUIT), as in a crash: no checkpoint, clients cut off; the next
        start() recovers from WAL on the same port. Use it to simulate a database outage."""
        self._signal(signal.SIGQUIT)

    def pids(self):
        """The postmaster and its children (backends, writers)."""
        pid = self.proc.pid
        pids = [pid]
        try:
            with open("/proc/%d/task/%d/children" % (pid, pid)) as f:
                pids += [int(p) for p in f.read().split()]
        except OSError:
            pass
        return pids

    def freeze(self):
        """SIGSTOP the server and every backend: connections stay open, statements and commits
        hang (a frozen database, not a failing one) until thaw()."""
        for p in self.pids():
            try:
                os.kill(p, signal.SIGSTOP)
            except OSError:
                pass

    def thaw(self):
        for p in reversed(self.pids()):
            try:
                os.kill(p, signal.SIGCONT)
            except OSError:
                pass

    def restart(self):
        self.stop()
        return self.start()

    def cleanup(self):
        """Stop the server and remove the cluster directory (a kept cluster stays). Safe to
        call twice."""
        try:
            self._signal(signal.SIGINT)
        finally:
            if not self.keep:
                shutil.rmtree(self.dir, ignore_errors=True)
            _LIVE.discard(self)

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.cleanup()

    def log_tail(self, n=40):
        try:
            with open(self.logpath, errors="replace") as f:
                return "".join(f.readlines()[-n:])
        except OSError:
            return ""

    # ---- clients ------------------------------------------------------------------------

    @property
    def conninfo(self):
        """libpq connection string over TCP loopback."""
        return "host=127.0.0.1 port=%d dbname=%s user=postgres" % (self.port, self.dbname)

    @property
    def socket_conninfo(self):
        """libpq connection string over the unix socket."""
        return "host=%s port=%d dbname=%s user=postgres" % (self.sockdir, self.port, self.dbname)

    def _psql_cmd(self, dbname):
        return [self._bin("psql"), "-X", "-q", "-v", "ON_ERROR_STOP=1",
                "-d", "host=127.0.0.1 port=%d dbname=%s user=postgres connect_timeout=10"
                % (self.port, dbname or self.dbname)]

    def psql(self, sql, dbname=None, timeout=60):
        """Run SQL (one or more statements, each in its own transaction unless the text says
        otherwise) and return the rows every statement printed, in order, as lists of strings
        (None for NULL). Use one SELECT to get one result. Raises PgError."""
        cmd = self._psql_cmd(dbname) + ["--csv", "-t", "-P", "null=" + NULL_MARK]
        r = subprocess.run(cmd, input=sql, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                           text=True, timeout=timeout)
        if r.returncode != 0:
            raise PgError("psql", r.returncode, r.stderr)
        rows = list(csv.reader(io.StringIO(r.stdout)))
        return [[None if v == NULL_MARK else v for v in row] for row in rows]

    def psql_raw(self, args, input=None, dbname=None, timeout=60):
        """Run psql with extra ARGS (e.g. ["-c", "listen x", "-c", "..."]); returns the
        CompletedProcess (stdout, stderr as text) without raising."""
        return subprocess.run(self._psql_cmd(dbname) + list(args), input=input,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              timeout=timeout)

    def psql_file(self, path, dbname=None, single_transaction=True):
        """Run a SQL file, by default in one transaction (psql -1). Raises PgError."""
        args = (["-1"] if single_transaction else []) + ["-f", path]
        r = self.psql_raw(args, dbname=dbname)
        if r.returncode != 0:
            raise PgError("psql -f " + path, r.returncode, r.stderr)
        return r.stdout

    def scalar(self, sql):
        rows = self.psql(sql)
        return rows[0][0] if rows else None


class _StartFailed(Exception):
    pass
