"""SIGHUP reload, end to end: a changed limit applies to new requests while a request in flight
completes under the configuration it started with; a file with errors is refused with
FILE:LINE and the running configuration stays; a key that needs a restart is reported and
keeps its value; a new upstream takes new requests while the old pool finishes its own; a
reload under load drops no request."""

import json
import os
import re
import signal
import threading
import time

from harness import GatewayTest, wait_for
from test_operations import samples, scrape, value


class ReloadTest(GatewayTest):
    def setUp(self):
        super().setUp()
        self.ca_, self.mock = self.tls_mock()

    def gw(self, **opts):
        return self.mock_gateway(self.mock, self.ca_, **opts)

    def forwarded(self, path):
        return [r for r in self.mock.requests()[self.mock_requests_before:] if path in r["path"]]

    def rewrite(self, gw, **changes):
        """Replace `key = value` lines of the gateway's file (a key must already be there)."""
        with open(gw.conf) as f:
            text = f.read()
        for key, val in changes.items():
            text, n = re.subn(r"(?m)^%s = .*$" % key, "%s = %s" % (key, val), text)
            self.assertEqual(n, 1, key)
        with open(gw.conf, "w") as f:
            f.write(text)

    def hup(self, gw, expect="configuration reloaded (SIGHUP)"):
        """SIGHUP, then wait until the main thread has handled it (its reload counters on
        /metrics move) and, when EXPECT is a message it logs at that level, for that line."""
        def reloads():
            ss, _ = samples(scrape(gw))
            return sum(value(ss, "gateway_config_reloads_total", result=r)
                       for r in ("success", "failure"))
        before = reloads()
        gw.proc.p.send_signal(signal.SIGHUP)
        wait_for(lambda: reloads() > before, what="the reload")
        if expect:
            wait_for(lambda: gw.proc.find(expect), what=expect)

    def workers_reloaded(self, gw, count):
        wait_for(lambda: len(gw.proc.find("configuration reloaded")) >= count,
                 what="%d worker reloads" % count)

    def test_a_changed_limit_applies_to_new_requests_not_to_one_in_flight(self):
        gw = self.gw(threads=1, request_timeout="10s")
        result = {}

        def slow():
            result["old"] = gw.request("GET", "/api/OkToRun/pk1",
                                       headers={"X-Mock-Delay-Ms": "1500"})[0]
        t = threading.Thread(target=slow)
        t.start()
        wait_for(lambda: self.forwarded("OkToRun"), what="the slow request at the mock")
        self.rewrite(gw, request_timeout="500ms", max_body_size="1k")
        self.hup(gw)
        self.workers_reloaded(gw, 1)
        # new requests: the new deadline and the new body limit
        s, _, body = gw.request("GET", "/api/OkToRun/pk1", headers={"X-Mock-Delay-Ms": "1500"})
        self.assertEqual(s, 504, body)
        s, _, _ = gw.request("POST", "/api/FinishRun/", body=b"x" * 2048,
                             headers={"Content-Type": "application/json"})
        self.assertEqual(s, 413)
        t.join(10)
        self.assertEqual(result["old"], 200)  # under the 10 s it started with
        ss, _ = samples(scrape(gw))
        self.assertEqual(value(ss, "gateway_config_reloads_total", result="success"), 1)

    def test_a_file_with_errors_is_refused_and_the_running_one_stays(self):
        gw = self.gw(max_body_size="1k")
        with open(gw.conf) as f:
            good = f.read()
        with open(gw.conf, "a") as f:
            f.write("\n[server]\nmax_body_size = lots\n")
        line = len(good.split("\n")) + 2
        self.hup(gw, expect="configuration reload refused: the file has errors; the running "
                            "configuration stays")
        errors = [j["error"] for j in gw.proc.find(
            "configuration reload refused: the file has errors; the running configuration stays")]
        self.assertTrue(any(e.startswith("%s:%d: [server] max_body_size" % (gw.conf, line))
                            for e in errors), errors)
        s, _, _ = gw.request("POST", "/api/FinishRun/", body=b"x" * 2048,
                             headers={"Content-Type": "application/json"})
        self.assertEqual(s, 413)  # the old limit
        self.assertEqual(gw.request("GET", "/api/OkToRun/pk1")[0], 200)
        ss, _ = samples(scrape(gw))
        self.assertEqual(value(ss, "gateway_config_reloads_total", result="failure"), 1)
        self.assertEqual(value(ss, "gateway_config_reloads_total", result="success"), 0)

    def test_endpoint_policy_and_log_level_sections_reload(self):
        gw = self.gw(threads=1)
        self.assertEqual(gw.request("GET", "/api/OkToRun/pk1")[0], 200)
        with open(gw.conf, "a") as f:
            f.write('\n[endpoint "OkToRun"]\nenabled = off\n[policy]\nrequire_bearer = off\n')
        self.rewrite(gw, level="warn")
        self.hup(gw)  # logged at info before the level changes
        wait_for(lambda: gw.request("GET", "/api/OkToRun/pk1")[0] == 404, what="the worker")
        s, _, body = gw.request("GET", "/api/OkToRun/pk1")
        self.assertEqual((s, json.loads(body)["error"]), (404, "route.disabled"))
        # no bearer needed any more; and info lines (access lines are not levelled) stop
        infos = len([j for j in gw.proc.json_lines() if j.get("level") == "info" and
                     j.get("msg") != "access"])
        gw.request("GET", "/api/GetRules/pk1", headers={"Authorization": ""})
        self.assertTrue(self.forwarded("GetRules"))  # forwarded without a bearer (Anymate's 401)
        self.assertEqual(len([j for j in gw.proc.json_lines() if j.get("level") == "info" and
                              j.get("msg") != "access"]), infos)
        self.rewrite(gw, level="info")  # one more reload, at warn: its own line is not logged
        self.hup(gw, expect=None)
        gw.request("GET", "/api/GetRules/pk1", headers={"Authorization": ""})
        wait_for(lambda: len([j for j in gw.proc.json_lines() if j.get("level") == "info" and
                              j.get("msg") != "access"]) > infos, what="info lines again")
        later = [j for j in gw.proc.json_lines() if j.get("level") == "info" and
                 j.get("msg") != "access"]
        self.assertGreater(len(later), infos)

    def test_a_key_that_needs_a_restart_is_reported_and_kept(self):
        gw = self.gw(threads=1)
        self.rewrite(gw, threads="3", max_body_size="1k")
        self.hup(gw)
        warned = [j["error"] for j in gw.proc.find(
            "configuration reload: a key that needs a restart changed; it keeps its running "
            "value")]
        self.assertTrue(any("[server] threads: changed from 1 to 3" in w for w in warned), warned)
        self.workers_reloaded(gw, 1)
        ss, _ = samples(scrape(gw))
        self.assertEqual(value(ss, "gateway_worker_threads"), 1)
        s, _, _ = gw.request("POST", "/api/FinishRun/", body=b"x" * 2048,
                             headers={"Content-Type": "application/json"})
        self.assertEqual(s, 413)  # the reloadable key did change

    def test_a_new_upstream_takes_new_requests_while_the_old_pool_finishes(self):
        gw = self.gw(threads=1)
        from harness import Mock
        ca2 = self.ca("ca2")  # a CA of its own: the new trust store must be read
        cert, key = ca2.issue("mock2")
        d2 = os.path.join(self.tmp, "mock2")
        os.mkdir(d2)
        mock2 = self.own(Mock(d2, cert, key))  # its own request log
        result = {}

        def slow():
            result["old"] = gw.request("GET", "/api/OkToRun/pk1",
                                       headers={"X-Mock-Delay-Ms": "1000",
                                                "X-Request-Id": "on-old"})
        t = threading.Thread(target=slow)
        t.start()
        wait_for(lambda: self.forwarded("OkToRun"), what="the slow request at the first mock")
        # the second mock has its own CA: a new trust store as well as a new address
        url2 = "https://localhost:%d" % mock2.port
        self.rewrite(gw, api_url=url2, auth_url=url2, ca_file=ca2.cert)
        self.hup(gw)
        self.workers_reloaded(gw, 1)
        bearer2 = self.token(gw)  # from the new upstream's token endpoint, through the gateway
        s, _, _ = gw.request("GET", "/api/OkToRun/pk1", headers={
            "X-Request-Id": "on-new", "Authorization": "Bearer " + bearer2})
        self.assertEqual(s, 200)
        t.join(10)
        self.assertEqual(result["old"][0], 200)
        ids = lambda m: [dict((k.lower(), v) for k, v in r["headers"]).get("x-request-id")  # noqa
                         for r in m.requests()]
        self.assertIn("on-old", ids(self.mock))
        self.assertIn("on-new", ids(mock2))
        self.assertNotIn("on-new", ids(self.mock))
        line = gw.proc.find("configuration reloaded")[-1]
        self.assertEqual(line["pools_replaced"], 2)

    def test_a_thread_with_too_many_busy_old_pools_keeps_its_configuration(self):
        """Each reload that moves the upstream retires the thread's pool; a retired pool is
        freed once its calls end. With 16 retired pools still busy, the next reload is not
        taken by the thread (logged), which keeps the whole configuration it had."""
        from harness import Mock
        gw = self.gw(threads=1, response_timeout="60s", request_timeout="60s")
        cert, key = self.ca_.issue("mock2")  # the same CA: only the address changes
        d2 = os.path.join(self.tmp, "mock2")
        os.mkdir(d2)
        mock2 = self.own(Mock(d2, cert, key))
        urls = ["https://localhost:%d" % self.mock.port, "https://localhost:%d" % mock2.port]
        threads, results = [], []

        def slow(i):
            # long enough to outlast 17 reloads on a slow (sanitized, loaded) machine
            results.append(gw.request("GET", "/api/OkToRun/pk1", timeout=60, headers={
                "X-Mock-Delay-Ms": "20000", "X-Request-Id": "slow-%d" % i})[0])
        for i in range(17):
            before = len(self.mock.requests()) + len(mock2.requests())
            t = threading.Thread(target=slow, args=(i,))
            t.start()
            threads.append(t)
            wait_for(lambda: len(self.mock.requests()) + len(mock2.requests()) > before,
                     what="slow request %d upstream" % i)
            self.rewrite(gw, api_url=urls[(i + 1) % 2])
            self.hup(gw)
            if i < 16:
                self.workers_reloaded(gw, i + 1)
        refused = wait_for(lambda: gw.proc.find(
            "reload not taken by this thread: no memory for new upstream pools, or too many old "
            "ones still finishing calls; it keeps the configuration it had"), what="refusal")
        self.assertEqual(refused[0]["retired_pools"], 16)
        self.assertEqual(len(gw.proc.find("configuration reloaded")), 16)
        # the thread still sends to the upstream of its 16th reload
        s, _, _ = gw.request("GET", "/api/OkToRun/pk1", headers={"X-Request-Id": "after"})
        self.assertEqual(s, 200)
        ids = [dict((k.lower(), v) for k, v in r["headers"]).get("x-request-id")
               for r in self.mock.requests()]
        self.assertIn("after", ids)  # urls[16 % 2]: the first mock
        for t in threads:
            t.join(60)
        # every call on a retired pool finished with the upstream's own answer (the second mock
        # does not know the first one's token: 401), none with a gateway error
        self.assertEqual(len(results), 17)
        self.assertEqual(set(results) - {200, 401}, set())

    def test_reload_under_load_drops_no_request(self):
        gw = self.gw(threads=2)
        stop = threading.Event()
        statuses, errors = [], []

        def bot():
            while not stop.is_set():
                try:
                    statuses.append(gw.request("GET", "/api/OkToRun/pk1", timeout=10)[0])
                except Exception as e:  # noqa: BLE001 - any failure is what the test looks for
                    errors.append(repr(e))
        bots = [threading.Thread(target=bot) for _ in range(6)]
        for b in bots:
            b.start()
        try:
            for i in range(10):
                self.rewrite(gw, max_body_size="%dk" % (64 + i))
                self.hup(gw)
                time.sleep(0.1)
        finally:
            stop.set()
            for b in bots:
                b.join(20)
        self.assertEqual(errors, [])
        self.assertGreater(len(statuses), 50)
        self.assertEqual(set(statuses), {200})
        self.workers_reloaded(gw, 20)
        ss, _ = samples(scrape(gw))
        self.assertEqual(value(ss, "gateway_config_reloads_total", result="success"), 10)
