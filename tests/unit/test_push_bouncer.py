"""Tests for zqtwisted.push.bouncer: the bouncer request, its deadline, error sorting, the log backend."""

from __future__ import annotations

import base64
import json
from typing import Any, cast

from OpenSSL import SSL
from treq.testing import RequestTraversalAgent
from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.error import ConnectionRefusedError
from twisted.internet.task import Clock
from twisted.logger import ILogObserver, Logger
from twisted.python.failure import Failure
from twisted.trial.unittest import TestCase
from twisted.web.client import ResponseNeverReceived

from tests.resource_fakes import memory_resources
from tests.unit.test_push_payload import dm_event, remove_event
from zqtwisted.errors import PermanentError, TransientError
from zqtwisted.push.bouncer import (
    BouncerBackend,
    BouncerRefused,
    BouncerResult,
    BouncerRetryLater,
    LogBackend,
    basic_auth,
    bouncer_pool_options,
    build_backend,
    build_bouncer_client,
    classify_response,
    notify_url,
    summary,
)
from zqtwisted.push.payload import Notification, build_notification, parse_event
from zqtwisted.push.settings import PushSettings
from zqtwisted.push.testing import FakeBouncer, error_body
from zqtwisted.testing import FailingAgent
from zqtwisted.webhooks.client import WebhookClient

SERVER_UUID = "6cde5f7a-1f7e-4978-9716-49f69ebfc9fe"
API_KEY = "k3y-of-the-server"
BOUNCER = "https://push.example.com"


def notification(event: dict[str, Any] | None = None) -> Notification:
    return build_notification(parse_event(event or dm_event()))


class BackendTestCase(TestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.bouncer = FakeBouncer({SERVER_UUID: API_KEY})

    def backend(self, agent: Any = None, api_key: str = API_KEY, timeout: float = 15.0) -> BouncerBackend:
        self.agent = agent or RequestTraversalAgent(self.bouncer)
        client = WebhookClient(self.clock, self.agent, timeout=timeout, user_agent="ZulipServer/9.4")
        return BouncerBackend(client, BOUNCER, SERVER_UUID, api_key)

    def send(self, backend: BouncerBackend, n: Notification | None = None) -> Deferred[BouncerResult | None]:
        d = backend.send(n or notification())
        if isinstance(self.agent, RequestTraversalAgent):
            self.agent.flush()
        return d


class RequestTests(BackendTestCase):
    def test_add_is_posted_as_zulip_does(self) -> None:
        """POST {bouncer}/api/v1/remotes/push/notify, basic auth, JSON body, ZulipServer User-Agent."""
        result = self.successResultOf(self.send(self.backend()))
        self.assertEqual(result, BouncerResult(1, 1, {"android_devices": [], "apple_devices": []}, None))
        (received,) = self.bouncer.requests
        self.assertEqual(received.server_uuid, SERVER_UUID)
        self.assertEqual(received.body, notification().request_body())
        self.assertEqual(received.headers["content-type"], "application/json")
        self.assertEqual(received.headers["user-agent"], "ZulipServer/9.4")
        expected = base64.b64encode(f"{SERVER_UUID}:{API_KEY}".encode()).decode()
        self.assertEqual(received.headers["authorization"], f"Basic {expected}")
        self.assertEqual(received.request.uri, b"/api/v1/remotes/push/notify")

    def test_remove_is_posted(self) -> None:
        """A remove goes to the same endpoint with its own payloads."""
        self.successResultOf(self.send(self.backend(), notification(remove_event())))
        (received,) = self.bouncer.requests
        self.assertEqual(received.body["gcm_payload"]["event"], "remove")
        self.assertEqual(received.body["gcm_options"], {"priority": "normal"})

    def test_url_path_is_replaced(self) -> None:
        """Like Zulip's urljoin, a path in bouncer_url is replaced by the API path."""
        self.assertEqual(notify_url("https://push.example.com/some/prefix/"), f"{BOUNCER}/api/v1/remotes/push/notify")
        self.assertEqual(notify_url("http://127.0.0.1:8080"), "http://127.0.0.1:8080/api/v1/remotes/push/notify")

    def test_basic_auth(self) -> None:
        """The Authorization header is HTTP basic of uuid:key."""
        self.assertEqual(basic_auth("u", "k"), "Basic dTpr")


class ErrorTests(BackendTestCase):
    def test_5xx_is_retry_later(self) -> None:
        """HTTP >= 500 is a transient 'Received N from push notification bouncer'."""
        for status in (500, 502, 503, 504):
            self.bouncer.answer(status, b"oops")
            failure = self.failureResultOf(self.send(self.backend()), BouncerRetryLater)
            self.assertIsInstance(failure.value, TransientError)
            self.assertEqual(str(failure.value), f"Received {status} from push notification bouncer")

    def test_4xx_is_refused_with_code(self) -> None:
        """A 4xx is permanent and carries the bouncer's code and msg."""
        self.bouncer.answer(400, error_body("Invalid GCM option to bouncer: priority 'x'", "BAD_REQUEST"))
        failure = self.failureResultOf(self.send(self.backend()), BouncerRefused)
        error = failure.value
        assert isinstance(error, BouncerRefused)
        self.assertIsInstance(error, PermanentError)
        self.assertEqual(
            (error.status, error.code, error.msg), (400, "BAD_REQUEST", "Invalid GCM option to bouncer: priority 'x'")
        )
        self.assertIn("code BAD_REQUEST", str(error))

    def test_wrong_credentials(self) -> None:
        """Wrong credentials: the bouncer's 401 INVALID_ZULIP_SERVER, permanent."""
        failure = self.failureResultOf(self.send(self.backend(api_key="wrong")), BouncerRefused)
        self.assertEqual(failure.value.code, "INVALID_ZULIP_SERVER")
        self.assertEqual(self.bouncer.requests, [])

    def test_429_is_retry_later(self) -> None:
        """A rate limit (429) is retried later, not dead-lettered."""
        self.bouncer.answer(429, error_body("API usage exceeded rate limit", "RATE_LIMIT_HIT"))
        self.failureResultOf(self.send(self.backend()), BouncerRetryLater)

    def test_timeout_aborts_and_is_retry_later(self) -> None:
        """No answer within the deadline: retry later, and the connection is dropped."""
        self.bouncer.hold()
        d = self.send(self.backend(timeout=15))
        self.clock.advance(14.9)
        self.assertNoResult(d)
        self.clock.advance(0.1)
        self.agent.flush()
        failure = self.failureResultOf(d, BouncerRetryLater)
        self.assertIn("Timeout while trying to connect to push notification bouncer", str(failure.value))
        self.assertEqual(self.bouncer.lost, self.bouncer.held)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_cancelling_aborts_the_request(self) -> None:
        """Cancelling the send (the consume timeout) drops the connection and leaves no timer."""
        self.bouncer.hold()
        d = self.send(self.backend())
        d.cancel()
        self.agent.flush()
        self.failureResultOf(d, CancelledError)
        self.assertEqual(len(self.bouncer.lost), 1)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_connection_and_tls_errors_are_retry_later(self) -> None:
        """Connection refused and a failed TLS handshake are both 'retry later'."""
        errors = [
            ConnectionRefusedError(),
            ResponseNeverReceived([Failure(SSL.Error([("SSL routines", "", "certificate verify failed")]))]),
        ]
        for error in errors:
            failure = self.failureResultOf(self.send(self.backend(FailingAgent(error))), BouncerRetryLater)
            self.assertIn("ConnectionError while trying to connect to push notification bouncer", str(failure.value))


class ClassifyTests(TestCase):
    def test_success_body(self) -> None:
        """A 200 body gives the device counts and the realm's push status."""
        body = json.dumps(
            {
                "result": "success",
                "total_android_devices": 2,
                "total_apple_devices": 3,
                "deleted_devices": {"android_devices": ["a"], "apple_devices": []},
                "realm": {"can_push": True, "expected_end_timestamp": None},
            }
        ).encode()
        self.assertEqual(
            classify_response(200, body),
            BouncerResult(
                2,
                3,
                {"android_devices": ["a"], "apple_devices": []},
                {"can_push": True, "expected_end_timestamp": None},
            ),
        )

    def test_success_with_odd_body(self) -> None:
        """A 200 whose body is not the expected JSON is still a success (the bouncer accepted it)."""
        self.assertEqual(classify_response(200, b"ok"), BouncerResult())
        self.assertEqual(classify_response(200, b'{"total_android_devices": "2"}'), BouncerResult())

    def test_4xx_without_json(self) -> None:
        """A 4xx that is not Zulip's JSON error is refused without a code."""
        with self.assertRaises(BouncerRefused) as caught:
            classify_response(404, b"<html>not found</html>")
        self.assertEqual(
            (caught.exception.code, caught.exception.msg), (None, "Error received from push notification bouncer")
        )

    def test_unexpected_status(self) -> None:
        """A status that is neither 200, 4xx nor 5xx is refused (Zulip: unexpected status code)."""
        with self.assertRaises(BouncerRefused) as caught:
            classify_response(302, b"")
        self.assertIn("unexpected status code 302", str(caught.exception))


class LogBackendTests(TestCase):
    def test_logs_what_it_would_send(self) -> None:
        """The log backend succeeds and logs the notification's title, subtitle, body and request."""
        logged: list[dict[str, Any]] = []
        backend = LogBackend()
        backend.log = Logger(observer=cast(ILogObserver, logged.append))
        n = notification()
        self.assertIsNone(self.successResultOf(backend.send(n)))
        (line,) = logged
        self.assertEqual(line["summary"], "message 501: Othello | plain text")
        self.assertEqual(line["request"], n.request_body())
        self.assertEqual(line["user_id"], 10)

    def test_summary_of_remove(self) -> None:
        """A remove is summarised by its message ids."""
        self.assertEqual(summary(notification(remove_event())), "messages 501,502")


class BuildBackendTests(TestCase):
    def test_log_without_bouncer_url(self) -> None:
        """Without bouncer_url the log backend is chosen, and no HTTP client is built."""
        asked: list[str] = []

        def client() -> WebhookClient:
            asked.append("client")
            raise AssertionError("no client for the log backend")

        self.assertIsInstance(build_backend(PushSettings(), client), LogBackend)
        self.assertEqual(asked, [])

    def test_bouncer_backend(self) -> None:
        """With a bouncer: its URL, the timeout and the caps, over the shared "push" pool."""
        settings = PushSettings(
            bouncer_url=BOUNCER, server_uuid=SERVER_UUID, api_key=API_KEY, timeout=7, max_connections=9
        )
        resources, reactor, _ = memory_resources()
        pool = resources.http_pool("push", bouncer_pool_options(settings))
        backend = build_backend(settings, lambda: build_bouncer_client(reactor, settings, pool))
        assert isinstance(backend, BouncerBackend)
        self.assertEqual(backend.url, f"{BOUNCER}/api/v1/remotes/push/notify")
        client = backend.client
        self.assertEqual((client.timeout, client._slots.limit), (7, 9))
        self.assertTrue(client.user_agent.startswith("ZulipServer/"))
        self.assertEqual(pool.maxPersistentPerHost, 9)
        self.assertFalse(pool.retryAutomatically)
