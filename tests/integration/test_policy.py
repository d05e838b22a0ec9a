"""Payload policy end to end (issue 3): invalid FinishRun / task-action bodies and odd path
spellings are refused with a precise code and never reach Anymate; valid bodies arrive byte for
byte; bearer, endpoint allow-list, per-endpoint body limits and KPI bounds."""

import json

from harness import GatewayTest, wait_for

JSON = {"Content-Type": "application/json"}

# (body, status, error code) for FinishRun
FINISHRUN_BAD = [
    (b'{}', 422, "finishrun.runid_missing"),
    (b'{"runId": null}', 422, "finishrun.runid_missing"),
    (b'{"overwriteEntries": 5}', 422, "finishrun.runid_missing"),
    (b'{"runId": "501"}', 422, "finishrun.runid_not_integer"),
    (b'{"runId": 501.0}', 422, "finishrun.runid_not_integer"),
    (b'{"runId": 5e2}', 422, "finishrun.runid_not_integer"),
    (b'{"runId": true}', 422, "finishrun.runid_not_integer"),
    (b'{"runId": 0}', 422, "finishrun.runid_out_of_range"),
    (b'{"runId": -1}', 422, "finishrun.runid_out_of_range"),
    (b'{"runId": 9223372036854775808}', 422, "finishrun.runid_out_of_range"),
    (b'{"runId": 501, "overwriteSecondsSaved": -1}', 422, "kpi.seconds_out_of_range"),
    (b'{"runId": 501, "overwriteSecondsSaved": 2147483648}', 422, "kpi.seconds_out_of_range"),
    (b'{"runId": 501, "overwriteSecondsSaved": 1.5}', 422, "kpi.seconds_not_integer"),
    (b'{"runId": 501, "overwriteEntries": "5"}', 422, "kpi.entries_not_integer"),
    (b'{"runId": 501, "overwriteEntries": 2147483648}', 422, "kpi.entries_out_of_range"),
    (b'{"runId": 501, "RunId": 502}', 400, "json.duplicate_key"),
    (b'{"runId": 501, "runId": 501}', 400, "json.duplicate_key"),
    (b'{"runId": 501, "$type": "x"}', 400, "json.metadata_key"),
    (u'{"runId": 501, "overwr\u0131teEntries": 5}'.encode(), 400, "json.confusable_key"),
    (u'{"run\u0130d": 501}'.encode(), 400, "json.confusable_key"),
    (b'\xef\xbb\xbf{"runId": 501}', 400, "json.bom"),
    (b'{"runId": 501} x', 400, "json.trailing_data"),
    (b'{"runId": 501}{"runId": 502}', 400, "json.trailing_data"),
    (b'{"runId": NaN}', 400, "json.syntax"),
    (b'{"runId": 501,}', 400, "json.syntax"),
    (b'{"runId": 0501}', 400, "json.syntax"),
    (b'{"a": "\\ud800", "runId": 501}', 400, "json.lone_surrogate"),
    (b'{"a": "\xc0\xaf", "runId": 501}', 400, "json.invalid_utf8"),
    (b'[501]', 400, "json.not_object"),
    (b'{"runId": 501, "x": ' + b'[' * 64 + b']' * 64 + b'}', 400, "json.too_deep"),
    (b'   ', 400, "json.empty"),
]

TASK_BAD = [
    ("/api/Solved/", b'{"reason": "ok"}', 422, "task.taskid_missing"),
    ("/api/Manual/", b'{"TaskId": "7"}', 422, "task.taskid_not_integer"),
    ("/api/Error/", b'{"taskId": 7, "reason": 5}', 422, "task.reason_not_string"),
    ("/api/Retry/", b'{"taskId": 7, "activationDate": "tomorrow"}', 422,
     "task.activation_date_invalid"),
    ("/api/SolvedAsync/", b'{"taskId": 7, "overwriteSecondsSaved": -5}', 422,
     "kpi.seconds_out_of_range"),
    ("/api/RetryAsync/", b'{"taskId": 7, "TASKID": 8}', 400, "json.duplicate_key"),
]

# The exact bodies the three SDKs send (anymate-api.md §2.4, §6)
VALID = [
    ("/api/FinishRun/", b'{"runId": 501, "overwriteSecondsSaved": null, "overwriteEntries": 5}'),
    ("/api/FinishRun/", b'{"RunId":501,"OverwriteSecondsSaved":null,"OverwriteEntries":null}'),
    ("/api/FinishRun/", b'{"runId": 9223372036854775807}'),
    ("/api/Solved/", b'{"TaskId":7,"Reason":null,"Comment":"","OverwriteSecondsSaved":null,'
                     b'"OverwriteEntries":null}'),
    ("/api/Manual/", b'{"taskId": 7, "reason": "needs a human", "AnymateEndpoint": 3, '
                     b'"ActivationDate": null}'),
    ("/api/Error/", b'{"taskId": 7, "overwriteSecondsSaved": 0, "overwriteEntries": 2147483647}'),
    ("/api/Retry/", b'{"TaskId":7,"Reason":null,"Comment":"","OverwriteSecondsSaved":null,'
                    b'"OverwriteEntries":null,"ActivationDate":"2030-01-01T00:00:00+00:00"}'),
    ("/api/Retry/", b'{"taskId": 7, "activationDate": "2030-01-01T00:00:00"}'),
    ("/api/RetryAsync/", b'{"taskId": 7, "activationDate": "2021-01-01"}'),
    ("/api/ErrorAsync/", u'{"taskId": 7, "comment": "caf\u00e9 \U0001F600", "extra": {"a": [1]}}'
                         .encode()),
]


class PolicyTest(GatewayTest):
    def setUp(self):
        super().setUp()
        self.ca_, self.mock = self.tls_mock()

    def gw(self, **opts):
        gw = self.gateway("https://localhost:%d" % self.mock.port, ca_file=self.ca_.cert,
                          **opts)
        self.bearer = self.token(gw)
        gw.default_headers = {"Authorization": "Bearer " + self.bearer}
        self.before = len(self.mock.requests())
        return gw

    def forwarded(self):
        return self.mock.requests()[self.before:]

    def refused(self, gw, method, path, body, status, code, headers=None):
        h = dict(JSON)
        h.update(headers or {})
        got_status, got_headers, data = gw.request(method, path, body=body, headers=h)
        self.assertEqual(got_status, status, data)
        err = json.loads(data)
        self.assertEqual(err["error"], code, data)
        self.assertFalse(err["succeeded"])
        self.assertTrue(err["message"])
        self.assertEqual(err["requestId"], got_headers["x-request-id"])
        return err

    def test_invalid_finishrun_bodies_are_refused_and_never_forwarded(self):
        gw = self.gw()
        for body, status, code in FINISHRUN_BAD:
            with self.subTest(body=body):
                self.refused(gw, "POST", "/api/FinishRun/", body, status, code)
        self.assertEqual(self.forwarded(), [])

    def test_messages_name_the_field(self):
        gw = self.gw()
        err = self.refused(gw, "POST", "/api/FinishRun/", b'{"RunId": 1.0}', 422,
                           "finishrun.runid_not_integer")
        self.assertIn("RunId", err["message"])
        self.assertIn("1.0", err["message"])

    def test_invalid_task_action_bodies_are_refused(self):
        gw = self.gw()
        for path, body, status, code in TASK_BAD:
            with self.subTest(path=path, body=body):
                self.refused(gw, "POST", path, body, status, code)
        self.assertEqual(self.forwarded(), [])

    def test_valid_bodies_arrive_byte_for_byte(self):
        gw = self.gw()
        for path, body in VALID:
            with self.subTest(path=path, body=body):
                status, _, data = gw.request("POST", path, body=body,
                                             headers={"Content-Type":
                                                      "application/json; charset=utf-8"})
                self.assertEqual(status, 200, data)
        got = self.forwarded()
        self.assertEqual([(r["path"], r["body"]) for r in got], VALID)

    def test_chunked_valid_body_is_forwarded_with_identical_bytes(self):
        gw = self.gw()
        body = b'{"runId": 501, "overwriteEntries": 3}'
        raw = (b"POST /api/FinishRun/ HTTP/1.1\r\nHost: g\r\nAuthorization: Bearer " +
               self.bearer.encode() + b"\r\nContent-Type: application/json\r\n"
               b"Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n" +
               b"%x\r\n" % 10 + body[:10] + b"\r\n" + b"%x\r\n" % (len(body) - 10) +
               body[10:] + b"\r\n0\r\n\r\n")
        out, _ = gw.raw(raw)
        self.assertTrue(out.startswith(b"HTTP/1.1 200"), out[:200])
        self.assertEqual(self.forwarded()[0]["body"], body)

    def test_chunk_extensions_rfc_9112_allows_are_accepted_and_not_forwarded(self):
        """llhttp 8.1 refuses these valid forms; the gateway's own chunk-line check takes
        them, and the body arrives de-chunked, without the extensions."""
        gw = self.gw()
        body = b'{"runId": 501, "overwriteEntries": 3}'
        raw = (b"POST /api/FinishRun/ HTTP/1.1\r\nHost: g\r\nAuthorization: Bearer " +
               self.bearer.encode() + b"\r\nContent-Type: application/json\r\n"
               b"Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n" +
               b"%x;a=b;c=d\r\n" % 10 + body[:10] + b"\r\n" +
               b"%x \t; q = \"x\\\"y\" ;flag\r\n" % (len(body) - 10) + body[10:] +
               b"\r\n0;last=1\r\n\r\n")
        out, _ = gw.raw(raw)
        self.assertTrue(out.startswith(b"HTTP/1.1 200"), out[:200])
        self.assertEqual(self.forwarded()[0]["body"], body)
        # and what the grammar does not allow is refused, not forwarded
        bad = raw.replace(b";flag\r\n", b";flag \r\n")
        out, _ = gw.raw(bad)
        self.assertTrue(out.startswith(b"HTTP/1.1 400"), out[:200])
        self.assertIn(b"request.invalid_chunked_body", out)
        self.assertEqual(len(self.forwarded()), 1)

    def test_media_type_and_missing_body(self):
        gw = self.gw()
        body = b'{"runId": 501}'
        for ct in ("text/plain", "application/jsonx", "application/json; charset=latin1",
                   "application/x-www-form-urlencoded"):
            with self.subTest(ct=ct):
                self.refused(gw, "POST", "/api/FinishRun/", body, 415,
                             "request.unsupported_media_type", headers={"Content-Type": ct})
        self.refused(gw, "POST", "/api/FinishRun/", b"", 400, "request.body_missing")
        out, _ = gw.raw(b"POST /api/FinishRun/ HTTP/1.1\r\nHost: g\r\nAuthorization: Bearer " +
                        self.bearer.encode() + b"\r\nContent-Type: application/json\r\n"
                        b"Connection: close\r\n\r\n")
        self.assertTrue(out.startswith(b"HTTP/1.1 411"), out[:200])
        self.assertEqual(self.forwarded(), [])

    def test_no_path_spelling_bypasses_validation(self):
        gw = self.gw()
        bad = b'{"overwriteEntries": 5}'  # no runId
        for path in ("/api/finishrun", "/API/FINISHRUN/", "/api/Fin%69shRun/",
                     "/%61pi/FinishRun", "/api/FinishRun/?x=1", "/api/%46inishRun"):
            with self.subTest(path=path):
                self.refused(gw, "POST", path, bad, 422, "finishrun.runid_missing")
        for path in ("/api/F%C4%B1nishRun/", "/api/./FinishRun/", "/api/x/../FinishRun/",
                     "/api//FinishRun/", "/api/FinishRun//", "/api/%2E%2E/api/FinishRun/",
                     "/api%5CFinishRun/", "/api/FinishRun%00/"):
            with self.subTest(path=path):
                self.refused(gw, "POST", path, bad, 400, "request.noncanonical_path")
        # %2F stays encoded for Anymate too: an unknown endpoint, not FinishRun
        self.refused(gw, "POST", "/api/FinishRun%2F", bad, 404, "route.unknown_endpoint")
        status, headers, _ = gw.request("GET", "/api/FinishRun/")
        self.assertEqual((status, headers["allow"]), (405, "POST"))
        self.assertEqual(self.forwarded(), [])

    def test_bearer_token_required_on_api(self):
        gw = self.gw()
        for auth in (None, "Basic dXNlcjpwdw==", "Bearer", "Bearer ", "Bearer a b"):
            with self.subTest(auth=auth):
                h = {"Authorization": auth} if auth is not None else {}
                gw.default_headers = {}
                status, headers, data = gw.request("GET", "/api/OkToRun/pk1", headers=h)
                self.assertEqual(status, 401)
                self.assertEqual(headers["www-authenticate"], "Bearer")
                self.assertEqual(json.loads(data)["error"], "auth.bearer_required")
        self.assertEqual(self.forwarded(), [])
        self.token(gw)  # the token endpoint itself needs no bearer

    def test_unknown_endpoints_404_unless_operator_opts_in(self):
        gw = self.gw()
        self.refused(gw, "GET", "/api/SomethingNew/pk", None, 404, "route.unknown_endpoint")
        self.assertEqual(self.forwarded(), [])

    def test_unknown_endpoints_forwarded_when_enabled(self):
        gw = self.gw(upstream_extra="", server_extra="",
                     extra_sections="[policy]\nforward_unknown_api = on\n")
        status, _, _ = gw.request("GET", "/api/SomethingNew/pk")
        self.assertEqual(status, 404)  # the mock's own 404
        self.assertEqual([r["path"] for r in self.forwarded()], ["/api/SomethingNew/pk"])

    def test_endpoint_disabled_and_endpoint_body_limit(self):
        gw = self.gw(extra_sections='[endpoint "TakeMany"]\nenabled = off\n'
                                    '[endpoint "CreateTask"]\nmax_body_size = 1k\n')
        self.refused(gw, "GET", "/api/TakeMany/pk", None, 404, "route.disabled")
        self.refused(gw, "POST", "/api/CreateTask/pk", b'{"a":"' + b"x" * 1100 + b'"}', 413,
                     "request.body_too_large")
        status, _, _ = gw.request("POST", "/api/CreateTask/pk", body=b'{"a":"x"}', headers=JSON)
        self.assertEqual(status, 200)
        self.assertEqual(len(self.forwarded()), 1)

    def test_kpi_override_bounds_from_policy(self):
        gw = self.gw(extra_sections="[policy]\nmax_overwrite_seconds_saved = 3600\n"
                                    "max_overwrite_entries = 1000\n")
        self.refused(gw, "POST", "/api/FinishRun/", b'{"runId": 501, "overwriteSecondsSaved": '
                     b'3601}', 422, "policy.seconds_above_limit")
        self.refused(gw, "POST", "/api/Solved/", b'{"taskId": 7, "overwriteEntries": 1001}',
                     422, "policy.entries_above_limit")
        status, _, _ = gw.request("POST", "/api/FinishRun/", headers=JSON,
                                  body=b'{"runId": 501, "overwriteSecondsSaved": 3600}')
        self.assertEqual(status, 200)
        self.assertEqual(len(self.forwarded()), 1)

    def test_numeric_string_ids_opt_in(self):
        gw = self.gw(extra_sections="[policy]\nnumeric_string_ids = on\n")
        body = b'{"runId": "501"}'
        status, _, _ = gw.request("POST", "/api/FinishRun/", body=body, headers=JSON)
        self.assertEqual(status, 200)
        self.assertEqual(self.forwarded()[0]["body"], body)

    def test_refusals_are_counted(self):
        gw = self.gw()
        for _ in range(3):
            gw.request("POST", "/api/FinishRun/", body=b"{}", headers=JSON)
        gw.request("GET", "/api/OkToRun/pk1")
        want = {"Token": 1, "FinishRun": 3, "OkToRun": 1}

        def counters():  # a request is counted as it ends, just after its reply went out
            c = json.loads(gw.admin("GET", "/readyz")[2])["counters"]
            return c if c["endpoints"] == want else None
        c = wait_for(counters, what="every request counted")
        self.assertEqual(c["refusals"], 3)
