"""End-to-end test harness: real binaries on loopback, ports chosen at run time.

Starts the mock Anymate server (build/anymate-mock), over TLS with a CA made here by the
openssl command line, and the real gateway (build/anymate-gateway) with a generated config.
Readiness is polled with a deadline, never slept for. Everything a test starts is stopped by
the test's cleanup, and every process's output is kept under the test's temporary directory
for post-mortems (printed when a test fails).

Only the Python standard library is used, so the tests run on a fresh Debian with python3.
"""

import base64
import json
import os
import queue
import shutil
import signal
import socket
import ssl
import subprocess
import tempfile
import threading
import time
import http.client
import unittest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BUILD = os.environ.get("GW_BUILD", os.path.join(ROOT, "build"))
DEADLINE = float(os.environ.get("GW_TEST_DEADLINE", "20"))


def wait_for(pred, timeout=DEADLINE, what="condition"):
    """Poll PRED until it returns a true value or TIMEOUT passes."""
    end = time.monotonic() + timeout
    delay = 0.005
    while True:
        v = pred()
        if v:
            return v
        if time.monotonic() > end:
            raise AssertionError("timed out waiting for " + what)
        time.sleep(delay)
        delay = min(delay * 2, 0.1)


def run(cmd, **kw):
    return subprocess.run(cmd, check=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE, **kw)


class TestCA:
    """A throwaway CA plus server certificates, made with the openssl CLI."""

    def __init__(self, d, name="ca"):
        self.dir = d
        self.key = os.path.join(d, name + ".key")
        self.cert = os.path.join(d, name + ".pem")
        run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
             "-nodes", "-keyout", self.key, "-out", self.cert, "-days", "2",
             "-subj", "/CN=anymate-gateway test CA " + name,
             "-addext", "basicConstraints=critical,CA:TRUE",
             "-addext", "keyUsage=critical,keyCertSign,cRLSign"])

    def issue(self, name, dns=("localhost",), ips=("127.0.0.1",)):
        key = os.path.join(self.dir, name + ".key")
        csr = os.path.join(self.dir, name + ".csr")
        cert = os.path.join(self.dir, name + ".pem")
        ext = os.path.join(self.dir, name + ".ext")
        sans = ["DNS:" + d for d in dns] + ["IP:" + i for i in ips]
        with open(ext, "w") as f:
            f.write("subjectAltName=" + ",".join(sans) + "\n")
            f.write("extendedKeyUsage=serverAuth\nbasicConstraints=CA:FALSE\n")
        run(["openssl", "req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
             "-keyout", key, "-out", csr, "-subj", "/CN=" + (dns[0] if dns else ips[0])])
        run(["openssl", "x509", "-req", "-in", csr, "-CA", self.cert, "-CAkey", self.key,
             "-CAcreateserial", "-out", cert, "-days", "2", "-extfile", ext])
        return cert, key


class Proc:
    """A child process whose stdout/stderr lines are collected by reader threads."""

    def __init__(self, name, argv, logdir, env=None, preexec_fn=None):
        self.name = name
        self.argv = argv
        self.expect_failure = False
        self.lines = []
        self.lock = threading.Lock()
        self.logpath = os.path.join(logdir, name + ".log")
        self.logfile = open(self.logpath, "w")
        self.p = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                  env=env, text=True, errors="replace", preexec_fn=preexec_fn)
        self.first_stdout = queue.Queue()
        self.reading = threading.Event()  # cleared: the readers stop taking lines (a stalled sink)
        self.reading.set()
        self.readers = [threading.Thread(target=self._read, args=(self.p.stdout, True),
                                         daemon=True),
                        threading.Thread(target=self._read, args=(self.p.stderr, False),
                                         daemon=True)]
        for t in self.readers:
            t.start()

    def pause_reading(self):
        """Stop reading the process's output, so its pipes fill up."""
        self.reading.clear()

    def resume_reading(self):
        self.reading.set()

    def _read(self, stream, is_stdout):
        first = True
        for line in stream:
            self.reading.wait()
            with self.lock:
                self.lines.append(line.rstrip("\n"))
                if not self.logfile.closed:
                    self.logfile.write(line)
                    self.logfile.flush()
            if is_stdout and first:
                self.first_stdout.put(line)
                first = False

    def json_lines(self):
        out = []
        with self.lock:
            lines = list(self.lines)
        for line in lines:
            try:
                out.append(json.loads(line))
            except ValueError:
                pass
        return out

    def find(self, msg):
        return [j for j in self.json_lines() if j.get("msg") == msg]

    def stop(self, sig=signal.SIGTERM, timeout=DEADLINE):
        if self.p.poll() is None:
            self.p.send_signal(sig)
            try:
                self.p.wait(timeout)
            except subprocess.TimeoutExpired:
                self.p.kill()
                self.p.wait()
        return self.p.returncode

    def close(self):
        self.stop()
        for t in self.readers:  # the pipes reach EOF once the process is gone
            t.join(5)
        with self.lock:
            self.logfile.close()
        return self.p.returncode


class Mock:
    def __init__(self, logdir, cert=None, key=None, extra=()):
        self.reqlog = os.path.join(logdir, "mock-requests.jsonl")
        argv = [os.path.join(BUILD, "anymate-mock"), "--listen", "127.0.0.1:0",
                "--log", self.reqlog] + list(extra)
        if cert:
            argv += ["--tls-cert", cert, "--tls-key", key]
        self.tls = cert is not None
        self.proc = Proc("mock", argv, logdir)
        try:
            line = self.proc.first_stdout.get(timeout=DEADLINE)
        except queue.Empty:
            raise AssertionError("mock did not start: " + "\n".join(self.proc.lines))
        self.port = json.loads(line)["port"]

    def requests(self):
        """Every request the mock received, from its log file (method, path, headers, body)."""
        out = []
        if not os.path.exists(self.reqlog):
            return out
        with open(self.reqlog) as f:
            for line in f:
                if line.strip():
                    r = json.loads(line)
                    r["body"] = base64.b64decode(r.get("body_b64") or "")
                    out.append(r)
        return [r for r in out if not r["path"].startswith("/_mock/")]

    def control(self, method, path, ca=None):
        if self.tls:
            ctx = ssl.create_default_context(cafile=ca)
            c = http.client.HTTPSConnection("localhost", self.port, context=ctx, timeout=10)
        else:
            c = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        c.request(method, path)
        r = c.getresponse()
        body = r.read()
        c.close()
        return json.loads(body)

    def close(self):
        self.proc.close()


DEFAULT_CONF = """
[server]
listen = 127.0.0.1:0
threads = {threads}
request_timeout = {request_timeout}
shutdown_timeout = {shutdown_timeout}
max_header_size = {max_header_size}
max_body_size = {max_body_size}
{server_extra}

[admin]
listen = 127.0.0.1:0

[upstream]
api_url = {api_url}
auth_url = {auth_url}
{ca_line}
connect_timeout = {connect_timeout}
response_timeout = {response_timeout}
{upstream_extra}

[log]
level = {log_level}
{log_extra}

{extra_sections}
"""


class Gateway:
    def __init__(self, logdir, api_url, auth_url=None, ca_file=None, preexec_fn=None, **opts):
        values = dict(threads=2, request_timeout="10s", shutdown_timeout="5s",
                      max_header_size="16k", max_body_size="1m", connect_timeout="2s",
                      response_timeout="5s", log_level="info", server_extra="",
                      upstream_extra="", log_extra="", extra_sections="")
        values.update(opts)
        values["api_url"] = api_url
        values["auth_url"] = auth_url or api_url
        values["ca_line"] = ("ca_file = " + ca_file) if ca_file else ""
        self.default_headers = {}
        self.conf = os.path.join(logdir, "gateway.conf")
        with open(self.conf, "w") as f:
            f.write(DEFAULT_CONF.format(**values))
        self.proc = Proc("gateway", [os.path.join(BUILD, "anymate-gateway"), "-c", self.conf],
                         logdir, preexec_fn=preexec_fn)

        def listening():
            if self.proc.p.poll() is not None:
                raise AssertionError("gateway exited %s:\n%s" % (self.proc.p.returncode,
                                                                "\n".join(self.proc.lines)))
            found = self.proc.find("listening")
            return found[0] if found else None
        info = wait_for(listening, what="gateway listening line")
        self.port = int(info["server"].rsplit(":", 1)[1])
        self.admin_port = int(info["admin"].rsplit(":", 1)[1])

    def wait_ready(self):
        def ready():
            try:
                s, _, _ = self.admin("GET", "/readyz")
                return s == 200
            except OSError:
                return False
        wait_for(ready, what="gateway /readyz")

    def conn(self, timeout=10):
        return http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)

    def request(self, method, path, body=None, headers=None, conn=None, timeout=10):
        own = conn is None
        c = conn or self.conn(timeout)
        h = dict(self.default_headers)
        h.update(headers or {})
        c.request(method, path, body=body, headers=h)
        r = c.getresponse()
        data = r.read()
        if own:
            c.close()
        return r.status, dict((k.lower(), v) for k, v in r.getheaders()), data

    def admin(self, method, path):
        c = http.client.HTTPConnection("127.0.0.1", self.admin_port, timeout=5)
        c.request(method, path)
        r = c.getresponse()
        data = r.read()
        c.close()
        return r.status, r.getheaders(), data

    def raw(self, data, timeout=5):
        """Send raw bytes on a new connection; return (everything read, whether the gateway
        closed the connection) after the close or TIMEOUT seconds."""
        s = socket.create_connection(("127.0.0.1", self.port), timeout=timeout)
        s.sendall(data)
        out = b""
        closed = False
        try:
            while True:
                chunk = s.recv(65536)
                if not chunk:
                    closed = True
                    break
                out += chunk
        except socket.timeout:
            pass
        except ConnectionResetError:
            closed = True
        s.close()
        return out, closed

    def access(self):
        return self.proc.find("access")

    def close(self):
        return self.proc.close()


class GatewayTest(unittest.TestCase):
    """Base class: a temporary directory per test, kept (and its logs printed) on failure."""

    def setUp(self):
        self.tmp = tempfile.mkdtemp(prefix="gwtest-")
        self._procs = []

    SANITIZER_MARKS = ("ERROR: AddressSanitizer", "ERROR: LeakSanitizer", "runtime error:")

    def tearDown(self):
        problems = []
        for p in reversed(self._procs):
            try:
                p.close()
            except Exception as e:
                problems.append("%s: %s" % (p.name, e))
                continue
            # Under `make asan` a sanitizer report anywhere fails the test that caused it.
            p = getattr(p, "proc", p)
            for line in p.lines:
                if any(m in line for m in self.SANITIZER_MARKS):
                    problems.append("%s: %s" % (p.name, line))
            if p.p.returncode not in (0, -signal.SIGTERM) and not p.expect_failure:
                problems.append("%s exited with status %s" % (p.name, p.p.returncode))
        failed = self._failed() or bool(problems)
        if failed:
            for name in sorted(os.listdir(self.tmp)):
                if name.endswith(".log"):
                    with open(os.path.join(self.tmp, name)) as f:
                        tail = f.readlines()[-40:]
                    print("\n--- %s (last lines) ---\n%s" % (name, "".join(tail)))
        else:
            shutil.rmtree(self.tmp, ignore_errors=True)
        if problems and not failed:
            self.fail("after the test: " + "; ".join(problems[:5]))

    def _failed(self):
        """True when this test (or one of its subtests) has failed or errored so far."""
        result = getattr(self._outcome, "result", None)
        if not getattr(self._outcome, "success", True):
            return True
        for test, _ in (getattr(result, "errors", []) + getattr(result, "failures", [])):
            if test is self or getattr(test, "test_case", None) is self:
                return True
        return False

    def own(self, p):
        self._procs.append(p)
        return p

    def ca(self, name="ca"):
        return TestCA(self.tmp, name)

    def tls_mock(self, **kw):
        ca = self.ca()
        cert, key = ca.issue("mock")
        mock = self.own(Mock(self.tmp, cert, key, **kw))
        return ca, mock

    def gateway(self, url, ca_file=None, ready=True, **opts):
        gw = self.own(Gateway(self.tmp, url, ca_file=ca_file, **opts))
        if ready:
            gw.wait_ready()
        return gw

    def mock_gateway(self, mock, ca, **opts):
        """A ready gateway in front of MOCK (over TLS with CA) that sends a bot token on every
        request; the mock's requests before it are not counted by forwarded()."""
        gw = self.gateway("https://localhost:%d" % mock.port, ca_file=ca.cert, **opts)
        self.bearer = self.token(gw)
        gw.default_headers = {"Authorization": "Bearer " + self.bearer}
        self.mock_requests_before = len(mock.requests())
        return gw

    def token(self, gw, user="mate1"):
        body = "client_id=acme&client_secret=secret&grant_type=password&username=%s&password=pw" \
            % user
        status, _, data = gw.request("POST", "/connect/token", body=body, headers={
            "Content-Type": "application/x-www-form-urlencoded"})
        self.assertEqual(status, 200, data)
        return json.loads(data)["access_token"]
