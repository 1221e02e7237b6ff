"""The dashboard over HTTP (StubTreq): the page and assets, the JSON API, the actions and their guard."""

from __future__ import annotations

import json
from typing import Any

from treq.testing import StubTreq
from twisted.internet.defer import Deferred, fail
from twisted.internet.task import Clock
from twisted.python.failure import Failure
from twisted.trial.unittest import TestCase
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET
from twisted.web.test.requesthelper import DummyRequest

from zqtwisted.ops.logs import SecretMasker
from zqtwisted.ops.web.deadletters import DeadLetters
from zqtwisted.ops.web.letters import letter_id
from zqtwisted.ops.web.resources import CSP, FailedResource, dashboard_children, load_assets
from zqtwisted.ops.web.sampler import DashboardSampler
from zqtwisted.runtime.broker import PublishFailed
from zqtwisted.runtime.deadletter import DeadLetter
from zqtwisted.testing import MemoryBroker

TOKEN = "a-long-dashboard-token"
BASE = "http://127.0.0.1:9191"


class Runner:
    queue = "q"
    in_flight = 0
    held = 1
    attached = True


def make_root(broker: MemoryBroker, clock: Clock, token: str | None) -> tuple[Resource, DashboardSampler]:
    sampler = DashboardSampler(clock, broker, [Runner()], dict, lambda q: [])
    letters = DeadLetters(broker, clock, ["q"], SecretMasker(), timeout=5)
    root = Resource()
    for path, child in dashboard_children(sampler, letters, token).items():
        root.putChild(path, child)
    return root, sampler


class Base(TestCase):
    token: str | None = TOKEN

    def setUp(self) -> None:
        self.clock = Clock()
        self.broker = MemoryBroker(self.clock)
        self.broker.connect()
        self.root, self.sampler = make_root(self.broker, self.clock, self.token)
        self.stub: Any = StubTreq(self.root)

    def request(self, method: str, path: str, **kwargs: Any) -> tuple[int, Any, Any]:
        response = self.successResultOf(self.stub.request(method, BASE + path, **kwargs))
        body = self.successResultOf(response.content())
        if response.headers.getRawHeaders(b"content-type") == [b"application/json"]:
            return response.code, json.loads(body), response
        return response.code, body, response

    def dead(self, n: int) -> list[str]:
        session = self.broker.current_session()
        assert session is not None
        ids = []
        for i in range(n):
            body = json.dumps({"id": i}).encode()
            headers = DeadLetter("q", body, None, "permanent", "E", "m", 1).headers(1_800_000_000.0 + i)
            session.publish("q.failed", body, headers)
            ids.append(letter_id(body, headers))
        return ids

    def waiting(self, queue: str = "q.failed") -> int:
        return len(self.broker.messages(queue))


class PageTests(Base):
    def test_page_and_assets(self) -> None:
        """/ is the page; its assets come from the package with their types and a strict CSP."""
        code, body, response = self.request("GET", "/")
        self.assertEqual(code, 200)
        self.assertIn(b'<script src="/static/dashboard.js"', body)
        self.assertEqual(response.headers.getRawHeaders(b"content-security-policy"), [CSP])
        self.assertEqual(response.headers.getRawHeaders(b"x-frame-options"), [b"DENY"])
        for name, kind in (("dashboard.js", b"text/javascript"), ("charts.js", b"text/javascript")):
            code, body, response = self.request("GET", f"/static/{name}")
            self.assertEqual(code, 200)
            self.assertTrue(response.headers.getRawHeaders(b"content-type")[0].startswith(kind))
        code, _, response = self.request("GET", "/static/dashboard.css")
        self.assertEqual(response.headers.getRawHeaders(b"content-type"), [b"text/css; charset=utf-8"])
        self.assertEqual(self.request("GET", "/favicon.ico")[0], 200)
        self.assertEqual(self.request("GET", "/static/nope.js")[:2], (404, {"error": "no such resource"}))

    def test_assets_are_revalidated_with_etags(self) -> None:
        """An asset answers 304 to the ETag it gave."""
        _, _, response = self.request("GET", "/static/dashboard.css")
        etag = response.headers.getRawHeaders(b"etag")[0]
        code, body, _ = self.request("GET", "/static/dashboard.css", headers={b"if-none-match": etag})
        self.assertEqual((code, body), (304, b""))

    def test_every_shipped_asset_is_loaded(self) -> None:
        """The page, its scripts, its styles and its icon ship in the package."""
        self.assertEqual(
            set(load_assets()), {"index.html", "dashboard.js", "charts.js", "dashboard.css", "favicon.svg"}
        )


class ApiTests(Base):
    def test_queues(self) -> None:
        """/api/queues has the rows and the history; ``since`` keeps only newer points."""
        self.dead(2)
        self.sampler.startService()
        self.addCleanup(self.sampler.stopService)
        self.clock.advance(2)
        code, body, response = self.request("GET", "/api/queues")
        self.assertEqual(code, 200)
        self.assertEqual(response.headers.getRawHeaders(b"cache-control"), [b"no-store"])
        self.assertEqual(body["queues"][0]["dead_letters"], 2)
        self.assertEqual(body["actions"], True)
        self.assertEqual(body["history"]["time"], [0.0, 2.0])
        _, body, _ = self.request("GET", "/api/queues?since=0")
        self.assertEqual(body["history"]["time"], [2.0])
        self.assertEqual(self.request("GET", "/api/queues?since=x")[0], 400)

    def test_failed_listing(self) -> None:
        """/api/failed/{queue} lists a page; bad bounds are 400; other queues 404; actions want POST."""
        self.dead(3)
        code, body, _ = self.request("GET", "/api/failed/q?offset=1&limit=1")
        self.assertEqual((code, body["total"], len(body["letters"])), (200, 3, 1))
        self.assertEqual(self.request("GET", "/api/failed/q?limit=0")[0], 400)
        code, body, _ = self.request("GET", "/api/failed/other")
        self.assertEqual((code, body["queues"]), (404, ["q"]))
        code, _, response = self.request("GET", "/api/failed/q/purge")
        self.assertEqual((code, response.headers.getRawHeaders(b"allow")), (405, [b"POST"]))
        self.assertEqual(self.request("GET", "/api/nope")[0], 404)


class ActionTests(Base):
    def auth(self, token: str = TOKEN) -> dict[bytes, list[bytes]]:
        return {b"authorization": [f"Bearer {token}".encode()]}

    def test_actions_without_the_token_are_refused_and_change_nothing(self) -> None:
        """No token, a wrong one, or a cross-site request: 401/403 and every letter stays."""
        [first, *_] = self.dead(3)
        paths = ("/api/failed/q/purge", "/api/failed/q/replay", f"/api/failed/q/replay/{first}")
        for path in paths:
            code, _body, response = self.request("POST", path)
            self.assertEqual(code, 401, path)
            self.assertEqual(response.headers.getRawHeaders(b"www-authenticate"), [b'Bearer realm="zqtwisted"'])
            self.assertEqual(self.request("POST", path, headers=self.auth("wrong-token"))[:2][0], 401)
            cross = {**self.auth(), b"origin": [b"http://evil.example"]}
            self.assertEqual(self.request("POST", path, headers=cross)[0], 403)
            cross = {**self.auth(), b"sec-fetch-site": [b"cross-site"]}
            self.assertEqual(self.request("POST", path, headers=cross)[0], 403)
        self.assertEqual(self.waiting(), 3)
        self.assertEqual(self.broker.messages("q"), [])
        self.flushLoggedErrors()

    def test_actions_with_the_token(self) -> None:
        """With the token: replay one, replay all and purge do what they say."""
        ids = self.dead(4)
        same_origin = {**self.auth(), b"origin": [BASE.encode()], b"host": [b"127.0.0.1:9191"]}
        code, body, _ = self.request("POST", f"/api/failed/q/replay/{ids[0]}", headers=same_origin)
        self.assertEqual((code, body), (200, {"replayed": 1}))
        self.assertEqual(self.request("POST", f"/api/failed/q/replay/{ids[0]}", headers=self.auth())[0], 404)
        code, body, _ = self.request("POST", "/api/failed/q/replay/", headers=self.auth())
        self.assertEqual((code, body), (200, {"replayed": 3, "queue": "q"}))
        self.assertEqual(len(self.broker.messages("q")), 4)
        self.dead(2)
        code, body, _ = self.request("POST", "/api/failed/q/purge", headers=self.auth())
        self.assertEqual((code, body), (200, {"purged": 2, "queue": "q"}))
        self.assertEqual(self.waiting(), 0)
        self.assertEqual(self.request("POST", "/api/failed/q/explode", headers=self.auth())[0], 404)
        self.assertEqual(self.request("POST", "/api/failed/other/purge", headers=self.auth())[0], 404)

    def test_auth_check(self) -> None:
        """POST /api/auth: 204 for the right token, 401 otherwise."""
        self.assertEqual(self.request("POST", "/api/auth", headers=self.auth())[0], 204)
        self.assertEqual(self.request("POST", "/api/auth", headers=self.auth("nope"))[0], 401)

    def test_broker_trouble_is_503(self) -> None:
        """A broker that is gone, or a publish that fails, answers 503 with the reason."""
        self.dead(1)
        self.broker.publish_error = PublishFailed("nacked")
        code, body, _ = self.request("POST", "/api/failed/q/replay", headers=self.auth())
        self.assertEqual((code, body["replayed"]), (503, 0))
        self.broker.disconnect()
        d = self.stub.request("POST", BASE + "/api/failed/q/purge", headers=self.auth())
        self.clock.advance(5)
        self.stub.flush()
        response = self.successResultOf(d)
        self.assertEqual(response.code, 503)
        self.assertIn("RabbitMQ", self.successResultOf(response.json())["error"])


class ReadOnlyTests(Base):
    token = None

    def test_without_a_token_the_dashboard_is_read_only(self) -> None:
        """No configured token: the API says so and every action is 403, even with a header."""
        self.dead(1)
        self.assertFalse(self.request("GET", "/api/queues")[1]["actions"])
        for path in ("/api/failed/q/purge", "/api/failed/q/replay", "/api/auth"):
            code, body, _ = self.request("POST", path, headers={b"authorization": [b"Bearer anything-at-all"]})
            self.assertEqual(code, 403)
            self.assertIn("read-only", body["error"])
        self.assertEqual(self.waiting(), 1)


class FailingLetters:
    queues = ["q"]

    def __init__(self, result: Deferred[Any]) -> None:
        self.result = result

    def page(self, queue: str, offset: int, limit: int) -> Deferred[Any]:
        return self.result


class AnswerTests(TestCase):
    def test_unexpected_error_is_500_and_logged(self) -> None:
        """An unexpected error answers 500 without details and is logged."""
        resource = FailedResource(FailingLetters(fail(ZeroDivisionError())), None)  # type: ignore[arg-type]
        request = DummyRequest([b"q"])
        self.assertEqual(resource.render(request), NOT_DONE_YET)
        self.assertEqual(request.responseCode, 500)
        self.assertIn(b"internal error", b"".join(request.written))
        self.assertEqual(len(self.flushLoggedErrors(ZeroDivisionError)), 1)

    def test_a_client_that_left_gets_nothing_written(self) -> None:
        """When the client went away before the answer, nothing is written."""
        pending: Deferred[Any] = Deferred()
        resource = FailedResource(FailingLetters(pending), None)  # type: ignore[arg-type]
        request = DummyRequest([b"q"])
        resource.render(request)
        request.processingFailed(Failure(ConnectionError("gone")))
        pending.callback(type("Page", (), {"as_json": lambda self: {}})())
        self.assertEqual(request.written, [])
