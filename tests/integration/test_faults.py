"""The HTTP layer under faults, end to end (issue 7): descriptors running out, bots vanishing
in every phase, upstreams that fail at once, a pipelined head trickled across a slow reply,
drains, deadlines, bounded memory, a stalled log sink; plus what the new layer adds (TLS
towards the bots, TLS session resumption upstream, streamed bodies, 100-continue). Run under
`make asan` too, where any sanitizer report (leaks included) fails the test that caused it."""

import json
import os
import resource
import signal
import socket
import ssl
import subprocess
import threading
import time
import unittest

from harness import BUILD, Gateway, GatewayTest, wait_for

BIG = 8 * 1024 * 1024


def head(method, path, bearer, extra=b""):
    return (method.encode() + b" " + path.encode() + b" HTTP/1.1\r\nHost: g\r\n"
            b"Authorization: Bearer " + bearer.encode() + b"\r\n" + extra)


def read_reply(s, timeout=10):
    """One HTTP reply from socket S: (status, headers dict, body); (0, {}, b"") if closed."""
    s.settimeout(timeout)
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = s.recv(65536)
        if not chunk:
            return 0, {}, b""
        data += chunk
    h, _, body = data.partition(b"\r\n\r\n")
    lines = h.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {}
    for line in lines[1:]:
        k, _, v = line.partition(":")
        headers[k.strip().lower()] = v.strip()
    n = int(headers.get("content-length", "0"))
    while len(body) < n:
        chunk = s.recv(65536)
        if not chunk:
            break
        body += chunk
    return status, headers, body[:n]


class FaultTest(GatewayTest):
    def setUp(self):
        super().setUp()
        self.ca_, self.mock = self.tls_mock()

    def gw(self, **opts):
        return self.mock_gateway(self.mock, self.ca_, **opts)

    def forwarded(self, path=None):
        got = self.mock.requests()[self.mock_requests_before:]
        return [r for r in got if path is None or path in r["path"]]

    def access(self, gw, request_id):
        return wait_for(lambda: [a for a in gw.access() if a["request_id"] == request_id],
                        what="access line of " + request_id)[0]

    def readyz(self, gw):
        return json.loads(gw.admin("GET", "/readyz")[2])

    # ---- descriptors ----

    def test_descriptor_exhaustion_is_answered_or_closed_and_recovers(self):
        def few_files():
            resource.setrlimit(resource.RLIMIT_NOFILE, (48, 48))
        gw = self.gw(threads=1, preexec_fn=few_files, server_extra="max_connections = 1000")
        warn = gw.proc.find("the open-file limit is lower than the configuration needs: the "
                            "gateway holds fewer bot connections than max_connections; raise the "
                            "hard limit (ulimit -n, systemd LimitNOFILE) or lower "
                            "max_connections or pool_max")
        self.assertEqual(len(warn), 1)
        self.assertEqual(warn[0]["limit"], 48)
        results = []
        lock = threading.Lock()

        def bot(i):
            try:
                s = socket.create_connection(("127.0.0.1", gw.port), timeout=20)
                s.sendall(head("GET", "/api/OkToRun/pk1", self.bearer,
                               b"X-Mock-Delay-Ms: 300\r\n\r\n"))
                status, _, _ = read_reply(s, timeout=20)
                s.close()
            except OSError:
                status = "closed"
            with lock:
                results.append(status)

        threads = [threading.Thread(target=bot, args=(i,)) for i in range(90)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        self.assertEqual(len(results), 90)
        # every bot got an answer (200, or 503 when no descriptor was left for the upstream)
        # or a closed connection; none hangs, the gateway does not crash
        self.assertTrue(set(results) <= {200, 503, 0, "closed"}, results)
        self.assertIn(200, results)
        self.assertIsNone(gw.proc.p.poll())
        counters = self.readyz(gw)["counters"]
        self.assertGreater(counters["accept_errors"] + counters["upstream_socket_errors"], 0,
                           counters)
        # descriptors are free again: the gateway serves
        self.assertEqual(gw.request("GET", "/api/OkToRun/pk1")[0], 200)

    # ---- bots that vanish ----

    def test_bot_closing_in_every_phase(self):
        gw = self.gw(threads=1, upstream_extra="pool_size = 1\npool_max = 1")
        phases = {
            "head": head("GET", "/api/OkToRun/pk1", self.bearer),
            "validated body": head("POST", "/api/FinishRun/", self.bearer,
                                   b"Content-Type: application/json\r\nContent-Length: 50\r\n"
                                   b"\r\n{\"runId\": 5"),
            "streamed body": head("POST", "/api/CreateTask/pk1", self.bearer,
                                  b"Content-Type: application/json\r\nContent-Length: 1000\r\n"
                                  b"\r\n{\"coreSystemKey\": \""),
        }
        for phase, raw in phases.items():
            with self.subTest(phase=phase):
                s = socket.create_connection(("127.0.0.1", gw.port))
                s.sendall(raw)
                time.sleep(0.2)
                s.close()
        time.sleep(0.3)
        self.assertEqual(self.forwarded(), [], "nothing incomplete reaches Anymate")

        # waiting for the upstream: written whole, so it runs to its end; the bot hears nothing
        s = socket.create_connection(("127.0.0.1", gw.port))
        s.sendall(head("GET", "/api/OkToRun/pk1", self.bearer,
                       b"X-Request-Id: wait-upstream\r\nX-Mock-Delay-Ms: 600\r\n\r\n"))
        wait_for(lambda: self.forwarded("OkToRun"), what="request at the mock")
        # and one queued behind it (pool_max = 1): never forwarded once its bot is gone
        q = socket.create_connection(("127.0.0.1", gw.port))
        q.sendall(head("GET", "/api/GetRules/pk1", self.bearer,
                       b"X-Request-Id: wait-queue\r\n\r\n"))
        time.sleep(0.1)
        q.close()
        s.close()
        a = self.access(gw, "wait-upstream")
        self.assertEqual((a["status"], a["error"], a["ended_by"]), (499, "client.closed",
                                                                   "client"))
        self.assertGreaterEqual(a["upstream_seconds"], 0.5)
        a = self.access(gw, "wait-queue")
        self.assertEqual((a["status"], a["error"]), (499, "client.closed"))
        self.assertEqual(self.forwarded("GetRules"), [])

        # during the reply: a large answer read in part
        s = socket.create_connection(("127.0.0.1", gw.port))
        s.sendall(head("GET", "/api/GetRules/pk1", self.bearer,
                       b"X-Request-Id: cut-reply\r\nX-Mock-Response-Bytes: %d\r\n\r\n" % BIG))
        got = s.recv(65536)
        self.assertTrue(got.startswith(b"HTTP/1.1 200"))
        s.close()
        a = self.access(gw, "cut-reply")
        self.assertEqual(a["status"], 499)
        # the gateway goes on serving, on a fresh or the pooled connection
        self.assertEqual(gw.request("GET", "/api/OkToRun/pk1")[0], 200)
        counters = self.readyz(gw)["counters"]
        self.assertGreaterEqual(counters["clients_closed"], 5)
        # nothing stays in flight; the last request ends (counted, logged) just after its reply
        # reached the bot, so the count may need a moment to reach 0
        wait_for(lambda: self.readyz(gw)["counters"]["inflight"] == 0, what="no request in flight")

    # ---- upstreams that fail ----

    def test_upstream_connect_failing_at_once(self):
        for url, codes in (("https://192.0.2.1:9", ("upstream.connect", "upstream.timeout")),
                           ("https://127.0.0.1:%d" % self.closed_port(), ("upstream.connect",))):
            with self.subTest(url=url):
                gw = self.gateway(url, connect_timeout="500ms")
                gw.default_headers = {"Authorization": "Bearer a.b.c"}
                for _ in range(3):
                    status, _, data = gw.request("GET", "/api/OkToRun/pk1")
                    self.assertIn(status, (502, 504))
                    self.assertIn(json.loads(data)["error"], codes)
                self.assertIsNone(gw.proc.p.poll())
                gw.close()

    def closed_port(self):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
        s.close()
        return port

    def test_request_deadline_on_a_reused_connection_is_504(self):
        gw = self.gw(threads=1, request_timeout="400ms", response_timeout="5s")
        self.assertEqual(gw.request("GET", "/api/OkToRun/pk1")[0], 200)  # pools a connection
        status, _, data = gw.request("GET", "/api/OkToRun/pk1",
                                     headers={"X-Mock-Delay-Ms": "2000"})
        self.assertEqual(status, 504)
        self.assertEqual(json.loads(data)["error"], "request.deadline")

    # ---- pipelining and deadlines ----

    def test_pipelined_head_trickled_across_a_slow_reply(self):
        gw = self.gw(server_extra="client_header_timeout = 300ms")
        s = socket.create_connection(("127.0.0.1", gw.port))
        second = head("GET", "/api/GetRules/pk1", self.bearer, b"\r\n")
        s.sendall(head("GET", "/api/OkToRun/pk1", self.bearer, b"X-Mock-Delay-Ms: 1200\r\n\r\n")
                  + second[:10])
        for i in range(10, len(second)):  # the rest, one byte every 100 ms: 1 s in all
            time.sleep(0.1 if i < 20 else 0)
            s.sendall(second[i:i + 1])
        first = read_reply(s)
        self.assertEqual(first[0], 200)
        self.assertEqual(read_reply(s)[0], 200)  # not 408, not closed
        s.close()
        self.assertEqual(len(self.forwarded()), 2)

    def test_expect_100_continue(self):
        gw = self.gw()
        body = b'{"runId": 501}'
        s = socket.create_connection(("127.0.0.1", gw.port))
        s.sendall(head("POST", "/api/FinishRun/", self.bearer,
                       b"Content-Type: application/json\r\nExpect: 100-continue\r\n"
                       b"Content-Length: %d\r\n\r\n" % len(body)))
        s.settimeout(5)
        self.assertEqual(s.recv(100), b"HTTP/1.1 100 Continue\r\n\r\n")
        s.sendall(body)
        self.assertEqual(read_reply(s)[0], 200)
        # refused on its head: no 100, an answer, and the body is never read
        s.sendall(head("POST", "/api/FinishRun/", self.bearer,
                       b"Content-Type: text/plain\r\nExpect: 100-continue\r\n"
                       b"Content-Length: 5\r\n\r\n"))
        status, headers, _ = read_reply(s)
        self.assertEqual(status, 415)
        self.assertEqual(headers["connection"], "close")
        s.close()
        self.assertEqual(len(self.forwarded()), 1)

    # ---- shutdown ----

    def test_drain_keeps_readyz_answering_503_and_refuses_new_requests(self):
        gw = self.gw(threads=1, shutdown_timeout="5s")
        busy = socket.create_connection(("127.0.0.1", gw.port))
        busy.sendall(head("GET", "/api/OkToRun/pk1", self.bearer,
                          b"X-Mock-Delay-Ms: 1500\r\n\r\n"))
        late = socket.create_connection(("127.0.0.1", gw.port))
        late.sendall(head("GET", "/api/OkToRun/pk1", self.bearer)[:20])  # a head under way
        wait_for(lambda: self.forwarded(), what="request at the mock")
        gw.proc.p.send_signal(signal.SIGTERM)
        ready = wait_for(lambda: (lambda r: r if r["checks"]["shutting_down"] else None)(
            self.readyz(gw)), what="draining readyz")
        self.assertFalse(ready["ready"])
        self.assertEqual(gw.admin("GET", "/readyz")[0], 503)
        late.sendall(head("GET", "/api/OkToRun/pk1", self.bearer, b"\r\n")[20:])
        status, headers, data = read_reply(late)
        self.assertEqual(status, 503)
        self.assertEqual(json.loads(data)["error"], "gateway.shutting_down")
        self.assertEqual(headers["connection"], "close")
        self.assertEqual(read_reply(busy)[0], 200)  # in flight: finished
        self.assertEqual(gw.proc.p.wait(10), 0)
        self.assertEqual(len(self.forwarded()), 1)

    # ---- bounded memory ----

    def test_body_budget_answers_503_instead_of_using_memory(self):
        gw = self.gw(threads=1, server_extra="max_buffered_body = 64k")
        pad = b'{"runId": 501, "pad": "' + b"x" * 40000 + b'"}'
        a = socket.create_connection(("127.0.0.1", gw.port))
        a.sendall(head("POST", "/api/FinishRun/", self.bearer,
                       b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n" % len(pad))
                  + pad[:10])
        time.sleep(0.2)  # A holds 40 KiB of the 64 KiB budget
        b = socket.create_connection(("127.0.0.1", gw.port))
        b.sendall(head("POST", "/api/FinishRun/", self.bearer,
                       b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n" % len(pad))
                  + pad)
        status, headers, data = read_reply(b)
        self.assertEqual(status, 503)
        self.assertEqual(json.loads(data)["error"], "gateway.overloaded")
        self.assertEqual(headers["retry-after"], "1")
        a.sendall(pad[10:])
        self.assertEqual(read_reply(a)[0], 200)
        self.assertEqual(len(self.forwarded("FinishRun")), 1)
        wait_for(lambda: self.readyz(gw)["counters"]["buffered_body_bytes"] == 0,
                 what="budget given back")

    def test_bodies_stream_through_both_ways(self):
        gw = self.gw()
        big = b'{"coreSystemKey": "' + b"k" * (700 * 1024) + b'"}'
        status, _, _ = gw.request("POST", "/api/CreateTask/pk1", body=big,
                                  headers={"Content-Type": "application/json"})
        self.assertIn(status, (200, 400))  # the mock's verdict; what matters is the bytes
        got = self.forwarded("CreateTask")
        self.assertEqual(got[-1]["body"], big)
        sent = {k.lower(): v for k, v in got[-1]["headers"]}
        self.assertEqual(sent["content-length"], str(len(big)))
        # chunked from the bot: re-chunked upstream, the same bytes
        s = socket.create_connection(("127.0.0.1", gw.port))
        part = b"x" * 100000
        s.sendall(head("POST", "/api/CreateTask/pk1", self.bearer,
                       b"Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"))
        s.sendall(b"%x\r\n" % len(part) + part + b"\r\n" + b"%x\r\n" % len(part) + part +
                  b"\r\n0\r\n\r\n")
        self.assertIn(read_reply(s, timeout=20)[0], (200, 400))
        s.close()
        self.assertEqual(self.forwarded("CreateTask")[-1]["body"], part + part)

    def test_streamed_body_over_the_limit_is_413_and_never_complete_upstream(self):
        gw = self.gw(max_body_size="64k")
        s = socket.create_connection(("127.0.0.1", gw.port))
        s.sendall(head("POST", "/api/CreateTask/pk1", self.bearer,
                       b"Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"))
        piece = b"y" * 16384
        status = None
        try:
            for _ in range(8):  # 128 KiB, twice the limit, in chunks
                s.sendall(b"%x\r\n" % len(piece) + piece + b"\r\n")
                time.sleep(0.02)
        except OSError:
            pass  # the gateway answered and closed
        status, headers, data = read_reply(s)
        self.assertEqual(status, 413)
        self.assertEqual(json.loads(data)["error"], "request.body_too_large")
        self.assertEqual(headers["connection"], "close")
        s.close()
        time.sleep(0.3)
        self.assertEqual(self.forwarded("CreateTask"), [])  # the upstream never got it whole

    # ---- TLS ----

    def test_tls_sessions_are_resumed_upstream(self):
        gw = self.gw(threads=1, upstream_extra="idle_timeout = 1s")
        self.assertEqual(gw.request("GET", "/api/OkToRun/pk1")[0], 200)
        time.sleep(1.6)  # the pooled connection was closed for idleness
        self.assertEqual(gw.request("GET", "/api/OkToRun/pk1")[0], 200)
        stats = self.mock.control("GET", "/_mock/stats", ca=self.ca_.cert)
        # one full handshake per pool (token: auth, the rest: api) and this stats request's
        # own; the reconnect resumed
        self.assertEqual(stats["tls_full_handshakes"], 3, stats)
        self.assertGreaterEqual(stats["tls_resumed_handshakes"], 1, stats)
        counters = self.readyz(gw)["counters"]
        self.assertGreaterEqual(counters["upstream_tls_resumed"], 1)

    def test_tls_towards_the_bots(self):
        cert, key = self.ca_.issue("gateway", dns=("localhost",), ips=("127.0.0.1",))
        gw = self.gateway("https://localhost:%d" % self.mock.port, ca_file=self.ca_.cert,
                          ready=True, server_extra="tls_cert = %s\ntls_key = %s" % (cert, key))
        self.assertTrue(gw.proc.find("listening")[0]["tls"])
        ctx = ssl.create_default_context(cafile=self.ca_.cert)
        import http.client
        c = http.client.HTTPSConnection("localhost", gw.port, context=ctx, timeout=10)
        body = ("client_id=acme&client_secret=secret&grant_type=password&username=mate1&"
                "password=pw")
        c.request("POST", "/connect/token", body=body,
                  headers={"Content-Type": "application/x-www-form-urlencoded"})
        r = c.getresponse()
        token = json.loads(r.read())["access_token"]
        self.assertEqual(r.status, 200)
        for _ in range(3):  # keep-alive over TLS
            c.request("GET", "/api/OkToRun/pk1", headers={"Authorization": "Bearer " + token})
            r = c.getresponse()
            r.read()
            self.assertEqual(r.status, 200)
        c.close()
        # plain HTTP on the TLS port gets no answer
        out, closed = gw.raw(b"GET /api/OkToRun/pk1 HTTP/1.1\r\nHost: g\r\n\r\n", timeout=3)
        self.assertFalse(out.startswith(b"HTTP/"))
        # TLS 1.1 is refused
        old = ssl.create_default_context(cafile=self.ca_.cert)
        old.minimum_version = ssl.TLSVersion.TLSv1
        old.maximum_version = ssl.TLSVersion.TLSv1_1
        with self.assertRaises((ssl.SSLError, OSError)):
            s = old.wrap_socket(socket.create_connection(("127.0.0.1", gw.port)),
                                server_hostname="localhost")
            s.close()

    def test_tls_key_without_certificate_is_a_configuration_error(self):
        cert, key = self.ca_.issue("gateway2")
        conf = os.path.join(self.tmp, "bad.conf")
        with open(conf, "w") as f:
            f.write("[server]\ntls_key = %s\n[upstream]\nclient_id = acme\n" % key)
        out = subprocess.run([os.path.join(BUILD, "anymate-gateway"), "-t", "-c", conf],
                             capture_output=True, text=True)
        self.assertEqual(out.returncode, 1)
        self.assertIn("%s:2: [server] tls_key: set without tls_cert" % conf, out.stderr)

    # ---- logging ----

    def test_a_stalled_log_sink_never_stalls_a_request(self):
        gw = self.gw(threads=1)
        # Stop reading the gateway's stderr: the pipe fills, the logging thread blocks on it,
        # the workers' queues fill, lines are dropped; requests must not wait for any of it.
        gw.proc.pause_reading()
        slow = []
        for _ in range(3000):
            t0 = time.monotonic()
            status, _, _ = gw.request("GET", "/api/OkToRun/pk1", conn=None, timeout=5)
            self.assertEqual(status, 200)
            if time.monotonic() - t0 > 1:
                slow.append(time.monotonic() - t0)
        self.assertEqual(slow, [])
        dropped = self.readyz(gw)["counters"]["log_lines_dropped"]
        self.assertGreater(dropped, 0)
        gw.proc.resume_reading()
        wait_for(lambda: [j for j in gw.proc.json_lines() if "log_dropped" in j] or
                 (gw.request("GET", "/api/OkToRun/pk1") and None), what="log_dropped line")


class BinaryTest(unittest.TestCase):
    def test_the_gateway_does_not_use_libevents_http_or_bufferevents(self):
        out = subprocess.run(["nm", "-u", os.path.join(BUILD, "anymate-gateway")],
                             capture_output=True, text=True, check=True).stdout
        used = [s for s in out.split() if s.startswith(("evhttp", "bufferevent", "evbuffer"))]
        self.assertEqual(used, [])


if __name__ == "__main__":
    unittest.main()
