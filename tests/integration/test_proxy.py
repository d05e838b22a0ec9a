"""Gateway core, end to end: routing, proxying over verified TLS, pooling, limits, failures,
smuggling-shaped requests and graceful shutdown (issue 2)."""

import json
import os
import re
import signal
import socket
import subprocess
import threading
import time
import unittest

from harness import BUILD, GatewayTest, wait_for

UUID7 = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$")

# (method, path without trailing slash, body) for every endpoint of anymate-api.md §2.3
ENDPOINTS = [
    ("GET", "/api/OkToRun/pk1", None),
    ("GET", "/api/StartOrGetRun/pk1", None),
    ("GET", "/api/StartRun/pk1", None),
    ("GET", "/api/GetRules/pk1", None),
    ("POST", "/api/CreateTask/pk1", b'{"coreSystemKey":"A1","comment":"c"}'),
    ("POST", "/api/CreateTasks/pk1", b'[{"coreSystemKey":"A2"},{"coreSystemKey":"A3"}]'),
    ("POST", "/api/CreateAndTakeTask/pk1", b'{"coreSystemKey":"A4"}'),
    ("GET", "/api/TakeNext/pk1", None),
    ("GET", "/api/TakeMany/pk1", None),
    ("POST", "/api/UpdateTask", b'{"taskId":1001,"comment":"updated"}'),
    ("POST", "/api/Solved", b'{"taskId":1001,"reason":"ok","comment":null,'
                            b'"overwriteSecondsSaved":null,"overwriteEntries":null}'),
    ("POST", "/api/Manual", b'{"TaskId":1002,"Reason":null,"Comment":"",'
                            b'"OverwriteSecondsSaved":null,"OverwriteEntries":null}'),
    ("POST", "/api/Retry", b'{"taskId":1003,"activationDate":"2030-01-01T00:00:00+00:00"}'),
    ("POST", "/api/Error", b'{"taskId":1004,"reason":"broken"}'),
    ("POST", "/api/SolvedAsync", b'{"taskId":1005}'),
    ("POST", "/api/ManualAsync", b'{"taskId":1006}'),
    ("POST", "/api/RetryAsync", b'{"taskId":1007}'),
    ("POST", "/api/ErrorAsync", b'{"taskId":1008}'),
    ("POST", "/api/Return", b'[{"taskId":1009,"action":"Solved"}]'),
    ("POST", "/api/Failure", b'{"processKey":"pk1","message":"it broke"}'),
    ("POST", "/api/FinishRun", b'{"runId": 501, "overwriteSecondsSaved": null, '
                               b'"overwriteEntries": 5}'),
]


class ProxyTest(GatewayTest):
    def setUp(self):
        super().setUp()
        self.ca_, self.mock = self.tls_mock()

    def gw(self, **opts):
        """A ready gateway in front of the mock, with a bot token sent on every request."""
        return self.mock_gateway(self.mock, self.ca_, **opts)

    def forwarded(self):
        """What the mock received after the token call of gw()."""
        return self.mock.requests()[self.mock_requests_before:]

    def test_token_and_every_endpoint_with_and_without_trailing_slash(self):
        gw = self.gw()
        token = self.token(gw)
        self.assertEqual(len(token.split(".")), 3)
        for slash in ("", "/"):
            for method, path, body in ENDPOINTS:
                with self.subTest(method=method, path=path + slash):
                    before = len(self.mock.requests())
                    hdrs = {"Authorization": "Bearer " + token}
                    if body is not None:
                        hdrs["Content-Type"] = "application/json; charset=utf-8"
                    status, headers, data = gw.request(method, path + slash, body=body,
                                                       headers=hdrs)
                    self.assertEqual(status, 200, data)
                    self.assertTrue(headers["content-type"].startswith("application/json"))
                    json.loads(data)
                    got = self.mock.requests()[before:]
                    self.assertEqual(len(got), 1)
                    self.assertEqual(got[0]["method"], method)
                    self.assertEqual(got[0]["path"], path + slash)
                    self.assertEqual(got[0]["body"], body or b"")
                    sent = {k.lower(): v for k, v in got[0]["headers"]}
                    self.assertEqual(sent["host"], "localhost:%d" % self.mock.port)
                    self.assertEqual(sent["authorization"], "Bearer " + token)
                    self.assertEqual(sent["x-request-id"], headers["x-request-id"])
        # the token call went to the auth URL with the form body unchanged
        tok = [r for r in self.mock.requests() if r["path"] == "/connect/token"]
        self.assertEqual(len(tok), 2)  # gw() and this test each asked for one
        self.assertEqual(tok[-1]["body"], b"client_id=acme&client_secret=secret&"
                         b"grant_type=password&username=mate1&password=pw")

    def test_unknown_paths_get_404_json_and_are_not_forwarded(self):
        gw = self.gw()
        for path in ("/", "/health", "/apix/OkToRun/pk1", "/connect/authorize"):
            status, headers, data = gw.request("GET", path)
            self.assertEqual(status, 404, path)
            body = json.loads(data)
            self.assertEqual(body["succeeded"], False)
            self.assertEqual(body["error"], "route.not_found")
            self.assertEqual(body["requestId"], headers["x-request-id"])
        self.assertEqual(self.forwarded(), [])

    def test_wrong_method_on_known_endpoint_is_405_with_allow(self):
        gw = self.gw()
        status, headers, data = gw.request("GET", "/api/FinishRun/")
        self.assertEqual(status, 405)
        self.assertEqual(headers["allow"], "POST")
        self.assertEqual(json.loads(data)["error"], "route.method_not_allowed")
        self.assertEqual(self.forwarded(), [])

    def test_request_id_accepted_minted_and_echoed(self):
        gw = self.gw()
        status, headers, _ = gw.request("GET", "/api/OkToRun/pk1",
                                        headers={"X-Request-Id": "bot-42.a:b_c"})
        self.assertEqual(headers["x-request-id"], "bot-42.a:b_c")
        for bad in ("has space", "x" * 65, "ünï"):
            status, headers, _ = gw.request("GET", "/api/OkToRun/pk1",
                                            headers={"X-Request-Id": bad.encode().decode(
                                                "latin-1")})
            self.assertRegex(headers["x-request-id"], UUID7)
        status, headers, _ = gw.request("GET", "/api/OkToRun/pk1")
        self.assertRegex(headers["x-request-id"], UUID7)
        ids = self.forwarded()
        sent = [dict((k.lower(), v) for k, v in r["headers"])["x-request-id"] for r in ids]
        self.assertEqual(sent[0], "bot-42.a:b_c")
        for s in sent[1:]:
            self.assertRegex(s, UUID7)

    def test_hop_by_hop_headers_are_not_forwarded(self):
        gw = self.gw()
        raw = (b"GET /api/OkToRun/pk1 HTTP/1.1\r\nHost: gateway.internal\r\n"
               b"Authorization: Bearer " + self.bearer.encode() + b"\r\n"
               b"Connection: keep-alive, X-Secret-Hop\r\nKeep-Alive: timeout=5\r\n"
               b"X-Secret-Hop: 1\r\nTE: trailers\r\nUpgrade: h2c\r\nProxy-Authorization: x\r\n"
               b"X-Forwarded-For: 10.1.2.3\r\nX-End-To-End: kept\r\n\r\n")
        out, _ = gw.raw(raw, timeout=2)
        self.assertTrue(out.startswith(b"HTTP/1.1 200"), out[:200])
        sent = {k.lower(): v for k, v in self.mock.requests()[-1]["headers"]}
        for h in ("connection", "keep-alive", "x-secret-hop", "te", "upgrade",
                  "proxy-authorization", "x-forwarded-for"):
            self.assertNotIn(h, sent)
        self.assertEqual(sent["x-end-to-end"], "kept")
        self.assertEqual(sent["host"], "localhost:%d" % self.mock.port)

    def test_x_forwarded_for_when_enabled(self):
        gw = self.gw(server_extra="x_forwarded_for = on")
        gw.request("GET", "/api/OkToRun/pk1")
        sent = {k.lower(): v for k, v in self.mock.requests()[-1]["headers"]}
        self.assertEqual(sent["x-forwarded-for"], "127.0.0.1")

    def test_keep_alive_reuses_upstream_connections(self):
        gw = self.gw(threads=1)
        conn = gw.conn()
        seen = []
        for i in range(20):
            status, headers, _ = gw.request("GET", "/api/OkToRun/pk1", conn=conn)
            self.assertEqual(status, 200)
            # the mock numbers its TCP connections and the requests on each
            seen.append((headers["x-mock-connection"], int(headers["x-mock-request"])))
        conn.close()
        self.assertEqual(len({c for c, _ in seen}), 1, seen)
        self.assertEqual([n for _, n in seen], list(range(seen[0][1], seen[0][1] + 20)))
        # and a new bot connection (same worker thread) still uses the pooled connection
        status, headers, _ = gw.request("GET", "/api/OkToRun/pk1")
        self.assertEqual(headers["x-mock-connection"], seen[0][0])

    def test_pooled_connections_retire_after_max_requests_and_idle_timeout(self):
        gw = self.gw(threads=1, upstream_extra="max_requests_per_conn = 3\nidle_timeout = 1s")
        conn = gw.conn()
        seen = [gw.request("GET", "/api/OkToRun/pk1", conn=conn)[1]["x-mock-connection"]
                for _ in range(7)]
        # 3 + 3 + 1 requests: three upstream connections, in order
        self.assertEqual(len(set(seen)), 3)
        self.assertEqual(seen[0:3], [seen[0]] * 3)
        self.assertEqual(seen[3:6], [seen[3]] * 3)
        time.sleep(1.5)  # longer than idle_timeout: the pooled connection is closed
        after = gw.request("GET", "/api/OkToRun/pk1", conn=conn)[1]["x-mock-connection"]
        self.assertNotIn(after, seen)
        conn.close()

    def test_large_response(self):
        gw = self.gw()
        status, _, data = gw.request("GET", "/api/GetRules/pk1",
                                     headers={"X-Mock-Response-Bytes": str(8 * 1024 * 1024)})
        self.assertEqual(status, 200)
        self.assertGreaterEqual(len(data), 8 * 1024 * 1024)
        json.loads(data)

    def test_concurrent_requests_across_threads(self):
        gw = self.gw(threads=2)
        results = []
        lock = threading.Lock()

        def client():
            conn = gw.conn()
            for _ in range(10):
                s, _, _ = gw.request("GET", "/api/OkToRun/pk1", conn=conn,
                                     headers={"X-Mock-Delay-Ms": "5"})
                with lock:
                    results.append(s)
            conn.close()

        threads = [threading.Thread(target=client) for _ in range(40)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        self.assertEqual(results, [200] * 400)
        wait_for(lambda: len(gw.access()) >= 400, what="access log lines")
        used = {a["thread"] for a in gw.access()}
        self.assertEqual(used, {0, 1})
        ids = [a["request_id"] for a in gw.access()]
        self.assertEqual(len(ids), len(set(ids)))

    def test_upstream_hangs_gives_504(self):
        gw = self.gw(response_timeout="300ms")
        t0 = time.monotonic()
        status, _, data = gw.request("GET", "/api/OkToRun/pk1",
                                     headers={"X-Mock-Delay-Ms": "3000"})
        self.assertEqual(status, 504)
        self.assertEqual(json.loads(data)["error"], "upstream.timeout")
        self.assertLess(time.monotonic() - t0, 2.5)
        # the gateway keeps serving afterwards
        status, _, _ = gw.request("GET", "/api/OkToRun/pk1")
        self.assertEqual(status, 200)

    def test_written_post_is_not_retried(self):
        gw = self.gw(response_timeout="300ms")
        status, _, _ = gw.request("POST", "/api/FinishRun/", body=b'{"runId":501}',
                                  headers={"Content-Type": "application/json",
                                           "X-Mock-Delay-Ms": "1000"})
        self.assertEqual(status, 504)
        time.sleep(0)  # nothing to wait for: the mock logs a request when it arrives
        finish = [r for r in self.forwarded() if r["path"] == "/api/FinishRun/"]
        self.assertEqual(len(finish), 1)

    def test_malformed_requests_get_json_with_a_precise_code_and_close(self):
        gw = self.gw(max_header_size="2k", max_body_size="1k")
        auth = b"Authorization: Bearer " + self.bearer.encode() + b"\r\n"
        cases = [
            (b"POST /api/CreateTask/pk1 HTTP/1.1\r\nHost: g\r\n" + auth +
             b"Content-Length: 5000\r\n\r\n", b"413", "request.body_too_large"),
            # 431 at any size, never a different status for heads far over the limit
            (b"GET /api/OkToRun/pk1 HTTP/1.1\r\nHost: g\r\nX-Big: " + b"a" * 6000 +
             b"\r\n\r\n", b"431", "request.headers_too_large"),
            (b"GET /api/OkToRun/pk1 HTTP/1.1\r\nHost: g\r\nX-Big: " + b"a" * 2100 +
             b"\r\n\r\n", b"431", "request.headers_too_large"),
            (b"GET /api/OkToRun/pk1 HTTP/1.1 extra\r\nHost: g\r\n\r\n", b"400",
             "request.malformed"),
            (b"POST /api/CreateTask/pk1 HTTP/1.1\r\nHost: g\r\n" + auth +
             b"Transfer-Encoding: chunked\r\n\r\nzz\r\n", b"400", "request.invalid_chunked_body"),
            (b"GET /api/OkToRun/pk1 HTTP/1.1\r\n" + auth + b"\r\n", b"400",
             "request.invalid_host"),
            (b"GET /api/OkToRun/pk1 HTTP/1.1\r\nHost: a\r\nHost: b\r\n" + auth + b"\r\n",
             b"400", "request.invalid_host"),
            (b"GET /api/OkToRun/pk1 HTTP/1.1\r\nHost: g\r\nX-A: a\r\n folded\r\n\r\n", b"400",
             "request.invalid_header"),
            (b"POST /api/CreateTask/pk1 HTTP/1.1\r\nHost: g\r\n" + auth +
             b"Expect: 200-ok\r\nContent-Length: 2\r\n\r\n{}", b"417",
             "request.expectation_failed"),
        ]
        for raw, status, code in cases:
            with self.subTest(raw=raw[:60]):
                out, closed = gw.raw(raw, timeout=5)
                self.assertTrue(out.startswith(b"HTTP/1.1 " + status), out[:200])
                head, body = out.split(b"\r\n\r\n", 1)
                self.assertIn(b"\r\nX-Request-Id: ", head)
                self.assertIn(b"\r\nConnection: close", head)
                self.assertEqual(json.loads(body)["error"], code)
                self.assertTrue(closed)
        self.assertEqual(self.forwarded(), [])

    def test_pool_queue_full_gives_503(self):
        gw = self.gw(threads=1, upstream_extra="pool_size = 1\npool_max = 1\nqueue_size = 1")
        results = []

        def slow():
            results.append(gw.request("GET", "/api/OkToRun/pk1",
                                      headers={"X-Mock-Delay-Ms": "700"}))

        threads = [threading.Thread(target=slow) for _ in range(3)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        statuses = sorted(r[0] for r in results)
        # one on the only connection, one waiting in the queue, one refused at once
        self.assertEqual(statuses, [200, 200, 503])
        refused = [r for r in results if r[0] == 503][0]
        self.assertEqual(json.loads(refused[2])["error"], "upstream.queue_full")
        self.assertEqual(refused[1]["retry-after"], "1")
        self.assertEqual(len(self.forwarded()), 2)

    def test_queue_timeout_gives_503(self):
        gw = self.gw(threads=1, upstream_extra="pool_size = 1\npool_max = 1\n"
                                               "queue_timeout = 200ms")
        results = []

        def slow():
            results.append(gw.request("GET", "/api/OkToRun/pk1",
                                      headers={"X-Mock-Delay-Ms": "1500"}))

        threads = [threading.Thread(target=slow) for _ in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        statuses = sorted(r[0] for r in results)
        self.assertEqual(statuses, [200, 503])
        refused = [r for r in results if r[0] == 503][0]
        self.assertEqual(json.loads(refused[2])["error"], "upstream.queue_timeout")
        self.assertEqual(len(self.forwarded()), 1)

    def test_a_burst_waits_instead_of_being_refused(self):
        """Many bots at the same moment through a gateway with default pool settings: all are
        served (connections beyond pool_size are opened, the rest wait), none is refused."""
        gw = self.gw(threads=2)
        n = 300
        barrier = threading.Barrier(n)
        results = []
        lock = threading.Lock()

        def bot():
            c = gw.conn(timeout=30)
            barrier.wait()
            s, _, _ = gw.request("GET", "/api/OkToRun/pk1", conn=c)
            c.close()
            with lock:
                results.append(s)

        threads = [threading.Thread(target=bot) for _ in range(n)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        self.assertEqual(results, [200] * n)

    def test_limits_431_and_413(self):
        gw = self.gw(max_header_size="2k", max_body_size="1k")
        status, _, data = gw.request("GET", "/api/OkToRun/pk1", headers={"X-Big": "a" * 3000})
        self.assertEqual(status, 431)
        self.assertEqual(json.loads(data)["error"], "request.headers_too_large")
        status, _, data = gw.request("POST", "/api/CreateTask/pk1", body=b"x" * 2048,
                                     headers={"Content-Type": "application/json"})
        self.assertEqual(status, 413)
        self.assertEqual(self.forwarded(), [])

    def test_smuggling_shaped_requests_are_refused_and_not_forwarded(self):
        gw = self.gw()
        cases = [
            b"POST /api/FinishRun/ HTTP/1.1\r\nHost: g\r\nContent-Length: 13\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /x HTTP/1.1\r\n\r\n",
            b"POST /api/FinishRun/ HTTP/1.1\r\nHost: g\r\nContent-Length: 13\r\n"
            b"Content-Length: 5\r\n\r\n{\"runId\":501}",
            b"POST /api/FinishRun/ HTTP/1.1\r\nHost: g\r\nContent-Length: +13\r\n\r\n"
            b"{\"runId\":501}",
            b"POST /api/FinishRun/ HTTP/1.1\r\nHost: g\r\nContent-Length: 13, 13\r\n\r\n"
            b"{\"runId\":501}",
            b"POST /api/FinishRun/ HTTP/1.1\r\nHost: g\r\nTransfer-Encoding: gzip, chunked\r\n"
            b"\r\n0\r\n\r\n",
            b"POST /api/FinishRun/ HTTP/1.1\r\nHost: g\r\nTransfer-Encoding: chunked\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
            b"POST /api/FinishRun/ HTTP/1.1\r\nHost: g\r\nContent-Length : 13\r\n\r\n"
            b"{\"runId\":501}",
            b"GET http://evil.example/api/OkToRun/pk1 HTTP/1.1\r\nHost: g\r\n\r\n",
            b"GET /api/OkToRun/pk1 HTTP/1.15\r\nHost: g\r\n\r\n",
            b"GET /api/OkToRun/pk1 HTTP/2.0\r\nHost: g\r\n\r\n",
        ]
        for raw in cases:
            with self.subTest(raw=raw[:80]):
                out, closed = gw.raw(raw, timeout=3)
                self.assertTrue(out.startswith(b"HTTP/1.1 400"), out[:300])
                self.assertTrue(closed, "the connection must be closed after a refusal")
        self.assertEqual(self.forwarded(), [])

    def test_graceful_shutdown_finishes_in_flight_requests(self):
        gw = self.gw(shutdown_timeout="5s")
        result = {}

        def slow():
            result["r"] = gw.request("GET", "/api/OkToRun/pk1",
                                     headers={"X-Mock-Delay-Ms": "800"})

        t = threading.Thread(target=slow)
        t.start()
        wait_for(lambda: len(self.forwarded()) == 1, what="request in flight at mock")
        gw.proc.p.send_signal(signal.SIGTERM)
        t.join(10)
        self.assertEqual(result["r"][0], 200)
        self.assertEqual(gw.proc.p.wait(10), 0)
        with self.assertRaises(OSError):
            socket.create_connection(("127.0.0.1", gw.port), timeout=1).close()

    def test_shutdown_deadline_answers_503(self):
        gw = self.gw(shutdown_timeout="200ms")
        result = {}

        def slow():
            result["r"] = gw.request("GET", "/api/OkToRun/pk1",
                                     headers={"X-Mock-Delay-Ms": "4000"})

        t = threading.Thread(target=slow)
        t.start()
        wait_for(lambda: len(self.forwarded()) == 1, what="request in flight at mock")
        gw.proc.p.send_signal(signal.SIGTERM)
        t.join(10)
        self.assertEqual(result["r"][0], 503)
        self.assertEqual(json.loads(result["r"][2])["error"], "gateway.shutting_down")
        self.assertEqual(gw.proc.p.wait(10), 0)

    def test_slow_request_head_gets_408_and_is_closed(self):
        gw = self.gw(server_extra="client_header_timeout = 300ms")
        s = socket.create_connection(("127.0.0.1", gw.port), timeout=10)
        s.sendall(b"GET /api/OkToRun/pk1 HTTP/1.1\r\nHost: g\r\nX-A: ")
        out = b""
        for _ in range(200):  # a slowloris client (bounded: 10 s) never finishes its head
            try:
                s.sendall(b"a")
            except OSError:
                break
            chunk = b""
            try:
                s.settimeout(0.05)
                chunk = s.recv(65536)
            except socket.timeout:
                continue
            except OSError:
                break
            if not chunk:
                break
            out += chunk
        s.close()
        self.assertTrue(out.startswith(b"HTTP/1.1 408"), out[:200])
        body = json.loads(out.split(b"\r\n\r\n", 1)[1])
        self.assertEqual(body["error"], "request.timeout")
        self.assertEqual(self.forwarded(), [])

    def test_header_timeout_does_not_cut_idle_keepalive_or_slow_answers(self):
        gw = self.gw(server_extra="client_header_timeout = 300ms")
        conn = gw.conn()
        self.assertEqual(gw.request("GET", "/api/OkToRun/pk1", conn=conn)[0], 200)
        time.sleep(0.6)  # idle between requests is client_timeout's business, not the head's
        self.assertEqual(gw.request("GET", "/api/OkToRun/pk1", conn=conn)[0], 200)
        # an answer slower than the head timeout is not the head's either
        self.assertEqual(gw.request("GET", "/api/OkToRun/pk1", conn=conn,
                                    headers={"X-Mock-Delay-Ms": "800"})[0], 200)
        conn.close()

    def test_large_reply_on_a_closing_connection_arrives_whole(self):
        gw = self.gw()
        n = 8 * 1024 * 1024
        raw = (b"GET /api/GetRules/pk1 HTTP/1.1\r\nHost: g\r\nAuthorization: Bearer " +
               self.bearer.encode() + b"\r\nX-Mock-Response-Bytes: " + str(n).encode() +
               b"\r\nConnection: close\r\n\r\n")
        out, closed = gw.raw(raw, timeout=20)
        self.assertTrue(closed)
        head, body = out.split(b"\r\n\r\n", 1)
        length = int([h.split(b":")[1] for h in head.split(b"\r\n")
                      if h.lower().startswith(b"content-length:")][0])
        self.assertGreaterEqual(length, n)
        self.assertEqual(len(body), length)
        json.loads(body)

    def test_connection_limit_pauses_accepting(self):
        gw = self.gw(threads=1, server_extra="max_connections = 2")
        held = [gw.conn(), gw.conn()]
        for c in held:
            self.assertEqual(gw.request("GET", "/api/OkToRun/pk1", conn=c)[0], 200)
        third = socket.create_connection(("127.0.0.1", gw.port), timeout=1)
        third.sendall(b"GET /api/OkToRun/pk1 HTTP/1.1\r\nHost: g\r\nAuthorization: Bearer " +
                      self.bearer.encode() + b"\r\n\r\n")
        with self.assertRaises(socket.timeout):  # queued in the kernel, not accepted
            third.recv(100)
        held[0].close()  # a slot frees: the third is accepted and served
        third.settimeout(10)
        self.assertTrue(third.recv(100).startswith(b"HTTP/1.1 200"))
        third.close()
        held[1].close()

    def test_mutated_requests_never_crash_the_gateway(self):
        """Mutations of valid requests (seeded, so a failure reproduces): every connection gets
        an answer or a close, and the gateway keeps serving. Under `make asan` the harness also
        fails the test on any sanitizer report."""
        import random
        gw = self.gw(max_header_size="4k", max_body_size="4k",
                     server_extra="client_header_timeout = 500ms")
        rnd = random.Random(20261129)
        seeds = [
            b"POST /api/FinishRun/ HTTP/1.1\r\nHost: g\r\nAuthorization: Bearer " +
            self.bearer.encode() + b"\r\nContent-Type: application/json\r\n"
            b"Content-Length: 14\r\n\r\n{\"runId\": 501}",
            b"POST /api/Solved/ HTTP/1.1\r\nHost: g\r\nAuthorization: Bearer x\r\n"
            b"Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
            b"e\r\n{\"taskId\": 1001}\r\n0\r\n\r\n",
            b"GET /api/OkToRun/pk1/ HTTP/1.1\r\nHost: g\r\nAuthorization: Bearer x\r\n\r\n",
        ]
        alphabet = b"\r\n :{}\"%/\\.\x00\xff0123456789aZ-,;"
        for i in range(250):
            data = bytearray(rnd.choice(seeds))
            for _ in range(rnd.randint(1, 6)):
                op = rnd.random()
                pos = rnd.randrange(len(data))
                if op < 0.4:
                    data[pos] = rnd.choice(alphabet)
                elif op < 0.7:
                    data[pos:pos] = bytes(rnd.choice(alphabet) for _ in range(rnd.randint(1, 8)))
                else:
                    del data[pos:pos + rnd.randint(1, 8)]
            out, closed = gw.raw(bytes(data), timeout=3)
            self.assertTrue(out.startswith(b"HTTP/1.") or closed or out == b"",
                            "case %d: %r -> %r" % (i, bytes(data[:80]), out[:80]))
        self.assertEqual(gw.request("GET", "/api/OkToRun/pk1")[0], 200)
        self.assertIsNone(gw.proc.p.poll())

    def test_admin_livez_readyz(self):
        gw = self.gw()
        status, _, data = gw.admin("GET", "/livez")
        self.assertEqual(status, 200)
        status, _, data = gw.admin("GET", "/readyz")
        self.assertEqual(status, 200)
        body = json.loads(data)
        self.assertTrue(body["ready"])
        self.assertTrue(body["checks"]["upstream_api"]["resolved"])


class UpstreamFailureTest(GatewayTest):
    def gateway(self, *a, **kw):
        gw = super().gateway(*a, **kw)
        gw.default_headers = {"Authorization": "Bearer not-checked-by-the-gateway"}
        return gw

    def test_upstream_down_gives_502(self):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
        s.close()  # nothing listens there now
        gw = self.gateway("https://127.0.0.1:%d" % port)
        status, _, data = gw.request("GET", "/api/OkToRun/pk1")
        self.assertEqual(status, 502)
        self.assertEqual(json.loads(data)["error"], "upstream.connect")
        # nothing was written, so it was tried once more on a fresh connection
        failed = wait_for(lambda: gw.proc.find("upstream failed"), what="upstream failed log")
        self.assertEqual(failed[0]["attempts"], 2)

    def test_wrong_certificate_host_name_gives_502_and_sends_nothing(self):
        ca = self.ca()
        cert, key = ca.issue("wrong", dns=("wrong.example",), ips=())
        from harness import Mock
        mock = self.own(Mock(self.tmp, cert, key))
        gw = self.gateway("https://localhost:%d" % mock.port, ca_file=ca.cert)
        status, _, data = gw.request("POST", "/api/FinishRun/", body=b'{"runId":501}',
                                     headers={"Content-Type": "application/json"})
        self.assertEqual(status, 502)
        body = json.loads(data)
        self.assertEqual(body["error"], "upstream.tls")
        self.assertIn("mismatch", body["message"].lower())
        self.assertEqual(mock.requests(), [])

    def test_untrusted_ca_gives_502_and_sends_nothing(self):
        ca = self.ca("ca")
        other = self.ca("other")
        cert, key = ca.issue("mock")
        from harness import Mock
        mock = self.own(Mock(self.tmp, cert, key))
        gw = self.gateway("https://localhost:%d" % mock.port, ca_file=other.cert)
        status, _, data = gw.request("POST", "/api/FinishRun/", body=b'{"runId":501}',
                                     headers={"Content-Type": "application/json"})
        self.assertEqual(status, 502)
        self.assertEqual(json.loads(data)["error"], "upstream.tls")
        self.assertEqual(mock.requests(), [])


class CommandLineTest(unittest.TestCase):
    GW = os.path.join(BUILD, "anymate-gateway")

    def test_version_and_help(self):
        out = subprocess.run([self.GW, "--version"], capture_output=True, text=True)
        self.assertEqual(out.returncode, 0)
        self.assertTrue(out.stdout.startswith("anymate-gateway "))
        out = subprocess.run([self.GW, "--help"], capture_output=True, text=True)
        self.assertEqual(out.returncode, 0)
        self.assertIn("-t -c FILE", out.stdout)

    def test_check_reports_every_error_with_file_and_line(self):
        import tempfile
        with tempfile.NamedTemporaryFile("w", suffix=".conf", delete=False) as f:
            f.write("[server]\nthreads = lots\nbogus = 1\n[upstream]\nclient_id = acme\n")
            path = f.name
        try:
            out = subprocess.run([self.GW, "-t", "-c", path], capture_output=True, text=True)
            self.assertEqual(out.returncode, 1)
            self.assertIn("%s:2:" % path, out.stderr)
            self.assertIn("%s:3:" % path, out.stderr)
        finally:
            os.unlink(path)
        root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
        for name in ("gateway.conf", "minimal.conf"):
            out = subprocess.run([self.GW, "-t", "-c", os.path.join(root, "config", name)],
                                 capture_output=True, text=True)
            self.assertEqual(out.returncode, 0, name + ": " + out.stderr)


if __name__ == "__main__":
    unittest.main()
