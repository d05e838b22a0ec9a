"""What operators see, end to end: GET /metrics (parsed with prometheus_client's own text
parser, counters that move with the traffic, histograms that are cumulative and consistent)
and the access log (JSON lines with every field, never a token; to a file that SIGUSR1
reopens after a rotation)."""

import json
import os
import signal
import subprocess
import time
import unittest

from harness import BUILD, DEADLINE, GatewayTest, wait_for

try:
    from prometheus_client.parser import text_string_to_metric_families
except ImportError:  # make deps installs python3-prometheus-client
    text_string_to_metric_families = None

ACCESS_FIELDS = {"ts", "level", "msg", "request_id", "customer", "bot", "peer", "method", "route",
                 "path", "status", "bytes_in", "bytes_out", "seconds", "upstream_seconds",
                 "upstream_connection", "ended_by", "error", "thread"}


def scrape(gw):
    status, headers, body = gw.admin("GET", "/metrics")
    assert status == 200, body
    ctype = dict((k.lower(), v) for k, v in headers)["content-type"]
    assert ctype.startswith("text/plain; version=0.0.4"), ctype
    return body.decode()


def samples(text):
    """{(sample name, frozenset(labels)): value}, and the families by name, from the real
    parser (which raises on anything that is not valid exposition text)."""
    out, fams = {}, {}
    for fam in text_string_to_metric_families(text):
        fams[fam.name] = fam
        for s in fam.samples:
            out[(s.name, frozenset(s.labels.items()))] = s.value
    return out, fams


def value(ss, name, **labels):
    return ss.get((name, frozenset(labels.items())), 0.0)


@unittest.skipIf(text_string_to_metric_families is None, "python3-prometheus-client missing")
class MetricsTest(GatewayTest):
    def setUp(self):
        super().setUp()
        self.ca_, self.mock = self.tls_mock()

    def check_histograms(self, fams):
        """Every histogram: buckets cumulative (never decreasing as le grows), +Inf equal to
        _count, _sum not negative."""
        n = 0
        for fam in fams.values():
            if fam.type != "histogram":
                continue
            series = {}
            for s in fam.samples:
                key = frozenset((k, v) for k, v in s.labels.items() if k != "le")
                series.setdefault(key, []).append(s)
            for key, ss in series.items():
                buckets = sorted(((float(s.labels["le"]), s.value) for s in ss
                                  if s.name.endswith("_bucket")))
                counts = [v for _, v in buckets]
                self.assertEqual(counts, sorted(counts), (fam.name, key))
                self.assertEqual(buckets[-1][0], float("inf"))
                count = [s.value for s in ss if s.name.endswith("_count")][0]
                total = [s.value for s in ss if s.name.endswith("_sum")][0]
                self.assertEqual(buckets[-1][1], count, (fam.name, key))
                self.assertGreaterEqual(total, 0)
                n += 1
        return n

    def test_metrics_parse_and_move_with_the_traffic(self):
        gw = self.mock_gateway(self.mock, self.ca_)
        before, fams = samples(scrape(gw))
        self.assertGreater(self.check_histograms(fams), 0)
        for fam in fams.values():
            self.assertTrue(fam.name.startswith("gateway_"), fam.name)
        self.assertEqual(value(before, "gateway_build_info", version="0.1.0"), 1)

        for _ in range(5):
            self.assertEqual(gw.request("GET", "/api/OkToRun/pk1")[0], 200)
        s, _, _ = gw.request("POST", "/api/FinishRun/", body=b'{"runId": "x"}',
                             headers={"Content-Type": "application/json"})
        self.assertEqual(s, 422)
        self.assertEqual(gw.request("GET", "/nowhere")[0], 404)

        # a request is counted when it ends, just after its reply reached the bot
        def counted():
            got = samples(scrape(gw))
            want = ((("OkToRun", "200"), 5), (("FinishRun", "422"), 1), (("none", "404"), 1))
            done = all(value(got[0], "gateway_requests_total", route=r, code=c) -
                       value(before, "gateway_requests_total", route=r, code=c) >= n
                       for (r, c), n in want)
            return got if done else None
        after, fams = wait_for(counted, what="the last request counted")
        self.check_histograms(fams)
        d = lambda name, **l: value(after, name, **l) - value(before, name, **l)  # noqa: E731
        self.assertEqual(d("gateway_requests_total", route="OkToRun", code="200"), 5)
        self.assertEqual(d("gateway_requests_total", route="FinishRun", code="422"), 1)
        self.assertEqual(d("gateway_requests_total", route="none", code="404"), 1)
        self.assertEqual(d("gateway_request_duration_seconds_count", route="OkToRun"), 5)
        self.assertGreater(d("gateway_request_duration_seconds_sum", route="OkToRun"), 0)
        self.assertEqual(d("gateway_refusals_total", code="finishrun.runid_not_integer"), 1)
        self.assertEqual(d("gateway_refusals_total", code="route.not_found"), 1)
        self.assertGreaterEqual(d("gateway_upstream_duration_seconds_count", upstream="api"), 5)
        self.assertGreater(d("gateway_received_bytes_total"), 0)
        self.assertGreater(d("gateway_sent_bytes_total"), 0)
        self.assertGreaterEqual(value(after, "gateway_upstream_connections_open",
                                      upstream="api"), 1)
        self.assertEqual(value(after, "gateway_worker_threads"), 2)
        self.assertEqual(value(after, "gateway_audit_enabled"), 0)

    def test_upstream_errors_are_counted_by_reason(self):
        # an upstream that refuses connections: every call fails with upstream.connect
        port = self.mock.port
        self.mock.close()
        gw = self.gateway("https://localhost:%d" % port, ca_file=self.ca_.cert, ready=False)
        wait_for(lambda: gw.admin("GET", "/livez")[0] == 200, what="gateway alive")
        before, _ = samples(scrape(gw))
        s, _, body = gw.request("GET", "/api/OkToRun/pk1", headers={"Authorization": "Bearer x"})
        self.assertEqual(s, 502, body)
        after, fams = wait_for(lambda: (lambda got: got if value(
            got[0], "gateway_refusals_total", code="upstream.connect") >= 1 else None)(
                samples(scrape(gw))), what="the failure counted")
        self.check_histograms(fams)
        self.assertEqual(value(after, "gateway_upstream_errors_total", upstream="api",
                               reason="connect") -
                         value(before, "gateway_upstream_errors_total", upstream="api",
                               reason="connect"), 1)
        self.assertEqual(value(after, "gateway_refusals_total", code="upstream.connect"), 1)


class AccessLogTest(GatewayTest):
    def setUp(self):
        super().setUp()
        self.ca_, self.mock = self.tls_mock()

    def test_access_lines_have_every_field_and_never_the_token(self):
        gw = self.mock_gateway(self.mock, self.ca_, threads=1)  # one pool: acc-2 reuses
        gw.request("GET", "/api/OkToRun/pk1", headers={"X-Request-Id": "acc-1"})
        gw.request("GET", "/api/OkToRun/pk1", headers={"X-Request-Id": "acc-2"})
        gw.request("POST", "/api/FinishRun/", body=b"{}",
                   headers={"Content-Type": "application/json", "X-Request-Id": "acc-3"})
        lines = wait_for(lambda: (lambda a: a if len(a) >= 4 else None)(gw.access()),
                         what="access lines")
        by_id = {a["request_id"]: a for a in lines}
        for a in lines:
            self.assertEqual(set(a), ACCESS_FIELDS, a)
        ok = by_id["acc-1"]
        self.assertEqual((ok["method"], ok["route"], ok["path"], ok["status"], ok["ended_by"],
                          ok["error"], ok["customer"], ok["bot"]),
                         ("GET", "OkToRun", "/api/OkToRun/pk1", 200, "upstream", None, "acme",
                          "mate1"))
        self.assertEqual(ok["peer"], "127.0.0.1")
        self.assertGreater(ok["seconds"], 0)
        self.assertGreater(ok["upstream_seconds"], 0)
        self.assertIn(ok["upstream_connection"], ("new", "reused"))
        self.assertEqual(by_id["acc-2"]["upstream_connection"], "reused")
        refused = by_id["acc-3"]
        self.assertEqual((refused["status"], refused["error"], refused["upstream_connection"],
                          refused["ended_by"]), (422, "finishrun.runid_missing", None, "gateway"))
        # the token, whole or any of its three parts, appears in no line the gateway wrote
        for part in [self.bearer] + self.bearer.split("."):
            self.assertFalse([ln for ln in gw.proc.lines if part in ln], part[:12])

    def test_access_log_file_is_reopened_on_sigusr1(self):
        path = os.path.join(self.tmp, "access.log")
        gw = self.mock_gateway(self.mock, self.ca_, log_extra="access_log_file = " + path)
        gw.request("GET", "/api/OkToRun/pk1", headers={"X-Request-Id": "before-rotate"})

        def ids(p):
            if not os.path.exists(p):
                return []
            with open(p) as f:
                return [json.loads(line)["request_id"] for line in f]
        wait_for(lambda: "before-rotate" in ids(path), what="line in the access log file")
        self.assertEqual([a for a in gw.access()], [])  # not on standard output any more
        os.rename(path, path + ".1")
        gw.proc.p.send_signal(signal.SIGUSR1)
        wait_for(lambda: gw.proc.find("log files reopened (SIGUSR1)"), what="reopen")
        gw.request("GET", "/api/OkToRun/pk1", headers={"X-Request-Id": "after-rotate"})
        wait_for(lambda: "after-rotate" in ids(path), what="line in the new file")
        self.assertNotIn("after-rotate", ids(path + ".1"))
        self.assertNotIn("before-rotate", ids(path))

    def test_error_log_file_takes_the_other_lines(self):
        errpath = os.path.join(self.tmp, "error.log")
        conf = os.path.join(self.tmp, "err.conf")
        with open(conf, "w") as f:
            f.write("[server]\nlisten = 127.0.0.1:0\n[admin]\nlisten = 127.0.0.1:0\n"
                    "[upstream]\napi_url = http://127.0.0.1:9\nauth_url = http://127.0.0.1:9\n"
                    "[log]\nerror_log_file = %s\n" % errpath)
        p = subprocess.Popen([os.path.join(BUILD, "anymate-gateway"), "-c", conf],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        try:
            def listening():
                if not os.path.exists(errpath):
                    return None
                with open(errpath) as f:
                    return [json.loads(ln) for ln in f if '"listening"' in ln]
            wait_for(listening, what="listening line in the error log file")
        finally:
            p.send_signal(signal.SIGTERM)
            out, err = p.communicate(timeout=DEADLINE)
        self.assertEqual(p.returncode, 0)
        self.assertEqual(err, b"")  # everything went to the file
        with open(errpath) as f:
            msgs = [json.loads(ln)["msg"] for ln in f]
        self.assertIn("stopped", msgs)

    def test_an_unwritable_log_file_is_a_config_error(self):
        conf = os.path.join(self.tmp, "bad.conf")
        with open(conf, "w") as f:
            f.write("[upstream]\napi_url = http://127.0.0.1:9\nauth_url = http://127.0.0.1:9\n"
                    "[log]\naccess_log_file = /nonexistent/dir/access.log\n")
        out = subprocess.run([os.path.join(BUILD, "anymate-gateway"), "-t", "-c", conf],
                             capture_output=True, text=True)
        self.assertEqual(out.returncode, 1)
        self.assertIn("%s:5: [log] access_log_file: cannot write '/nonexistent/dir/access.log'"
                      % conf, out.stderr)


if __name__ == "__main__":
    unittest.main()
