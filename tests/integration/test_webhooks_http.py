"""Outgoing webhooks against real twisted.web servers on 127.0.0.1 (started and stopped by each test)."""

from __future__ import annotations

import base64
import json
import shutil
import socket
import tempfile
import time
from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import parse_qsl

from twisted.internet import reactor
from twisted.internet.address import IPv4Address, IPv6Address
from twisted.internet.defer import Deferred, gatherResults
from twisted.internet.interfaces import IDelayedCall, IListeningPort, ITCPTransport
from twisted.internet.task import deferLater
from twisted.python.failure import Failure
from twisted.trial.unittest import TestCase
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Request, Site

from tests.helpers import missing_requirement
from tests.resource_fakes import reactor_resources
from tests.unit.test_webhook_payload import private_event, stream_event
from zqtwisted.consumers.outgoing_webhooks import OutgoingWebhookWorker, ServiceUnavailable, build_worker
from zqtwisted.errors import TransientError
from zqtwisted.runtime.consumer import WorkerContext
from zqtwisted.runtime.deadletter import DeadLetterer
from zqtwisted.runtime.retry import BackoffPolicy
from zqtwisted.runtime.runner import QueueRunner, RunnerSettings
from zqtwisted.testing import MemoryBroker, RecordingPublisher, StoredMessage, TrackingFactory
from zqtwisted.webhooks.guard import DisallowedNetworkError
from zqtwisted.webhooks.settings import OutgoingWebhookSettings
from zqtwisted.webhooks.urls import MAX_REDIRECTS, InvalidURL, RedirectRefused, TooManyRedirects

Handler = Callable[[Request, bytes], Any]


class Hook(Resource):
    """A bot server: records each POST, answers with ``handler(request, body)``."""

    isLeaf = True

    def __init__(self, handler: Handler) -> None:
        super().__init__()
        self.handler = handler
        self.requests: list[tuple[Request, bytes]] = []
        self.lost: list[Request] = []
        self.in_flight = 0
        self.max_in_flight = 0
        self.timers: list[IDelayedCall] = []

    def render_POST(self, request: Request) -> Any:
        body = _body(request)
        self.requests.append((request, body))
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)

        def done(result: object) -> None:
            self.in_flight -= 1

        def lost(failure: object) -> None:
            self.lost.append(request)
            done(None)

        request.notifyFinish().addCallbacks(done, lost)
        return self.handler(request, body)

    def later(self, delay: float, request: Request, body: bytes, status: int = 200) -> Any:
        """Answer ``body`` after ``delay`` seconds (unless the client gave up)."""

        def answer() -> None:
            if request not in self.lost:
                request.setResponseCode(status)
                request.write(body)
                request.finish()

        call = reactor.callLater(delay, answer)
        self.timers.append(call)
        request.notifyFinish().addErrback(lambda _: call.cancel() if call.active() else None)
        return NOT_DONE_YET


def json_answer(data: Any, status: int = 200) -> Handler:
    def handler(request: Request, body: bytes) -> bytes:
        request.setResponseCode(status)
        request.setHeader(b"content-type", b"application/json")
        return json.dumps(data).encode() if not isinstance(data, bytes) else data

    return handler


class WebhookHTTPTestCase(TestCase):
    timeout = 30

    def setUp(self) -> None:
        self.publisher = RecordingPublisher()

    def temp_path(self) -> str:
        """A fresh path in a directory removed after the test (mktemp writes under the cwd with pytest)."""
        directory = tempfile.mkdtemp()
        self.addCleanup(shutil.rmtree, directory, True)
        return f"{directory}/file"

    def serve(self, resource: Resource, path: bytes = b"hook") -> str:
        """Start ``resource`` on 127.0.0.1, port 0; stopped (connections and all) at cleanup."""
        root = Resource()
        root.putChild(path, resource)
        factory = TrackingFactory(Site(root))
        port = listen_local(factory)

        async def stop() -> None:
            for call in getattr(resource, "timers", []):
                if call.active():
                    call.cancel()
            await stop_listening(port)
            await factory.close_all()

        self.addCleanup(lambda: Deferred.fromCoroutine(stop()))
        return f"http://127.0.0.1:{port_number(port)}/{path.decode()}"

    def worker(self, **settings: Any) -> OutgoingWebhookWorker:
        settings.setdefault("allow_networks", ("127.0.0.1/32",))
        settings.setdefault("realm_url", "https://chat.example.com")
        resources = reactor_resources(publisher=self.publisher)
        self.addCleanup(resources.close)  # cleanups run last-in first-out: the pools close before the servers stop
        context = WorkerContext("outgoing_webhooks", resources.reactor, resources.publisher)
        worker = build_worker(context, OutgoingWebhookSettings(**settings), resources)
        worker.start()
        return worker

    def event(self, url: str, interface: str = "generic", **changes: Any) -> dict[str, Any]:
        event = stream_event(**changes)
        event["services"] = [{"name": "ci", "base_url": url, "token": "s3cret", "interface": interface}]
        return event

    def replies(self) -> list[tuple[str, str]]:
        return [(e["kind"], e["content"]) for q, e in self.publisher.published if q == "outgoing_webhook_responses"]


class SuccessTests(WebhookHTTPTestCase):
    async def test_reply_is_posted(self) -> None:
        """A 2xx with content: the generic JSON went out with Zulip's headers, the reply is published."""
        hook = Hook(json_answer({"content": "pong"}))
        url = self.serve(hook)
        await self.worker(user_agent_version="9.4").consume(self.event(url))
        request, body = hook.requests[0]
        sent = json.loads(body)
        self.assertEqual(
            {k: sent[k] for k in ("data", "bot_email", "bot_full_name", "token", "trigger")},
            {
                "data": "@**Helper Bot** ping",
                "bot_email": "helper-bot@example.com",
                "bot_full_name": "Helper Bot",
                "token": "s3cret",
                "trigger": "mention",
            },
        )
        self.assertEqual(sent["message"]["id"], 11)
        self.assertEqual(request.getHeader(b"user-agent"), b"ZulipOutgoingWebhook/9.4")
        self.assertEqual(request.getHeader(b"content-type"), b"application/json")
        [(queue, reply)] = self.publisher.published
        self.assertEqual(queue, "outgoing_webhook_responses")
        self.assertEqual((reply["kind"], reply["content"], reply["recipient"]["topic"]), ("reply", "pong", "builds"))

    async def test_no_reply(self) -> None:
        """A 2xx with response_not_required publishes nothing."""
        url = self.serve(Hook(json_answer({"response_not_required": True})))
        await self.worker().consume(self.event(url))
        self.assertEqual(self.publisher.published, [])

    async def test_slack_form_encoding(self) -> None:
        """A Slack service receives Zulip's form-encoded fields; its text is the reply."""
        hook = Hook(json_answer({"text": "from slack"}))
        url = self.serve(hook)
        await self.worker(realm_id=2).consume(self.event(url, interface="slack"))
        request, body = hook.requests[0]
        self.assertEqual(request.getHeader(b"content-type"), b"application/x-www-form-urlencoded")
        fields = dict(parse_qsl(body.decode(), keep_blank_values=True))
        self.assertEqual(
            fields,
            {
                "token": "s3cret",
                "team_id": "T2",
                "team_domain": "chat.example.com",
                "channel_id": "C4",
                "channel_name": "devel",
                "thread_ts": "1700000000",
                "timestamp": "1700000000",
                "user_id": "U3",
                "user_name": "Iago",
                "text": "@**Helper Bot** ping",
                "trigger_word": "mention",
                "service_id": "7",
            },
        )
        self.assertEqual(self.replies(), [("reply", "from slack")])


class FailureTests(WebhookHTTPTestCase):
    async def test_non_2xx_fails_without_retry(self) -> None:
        """A 503 gives the failure reply and the owner notice; the consume succeeds; one request only."""
        hook = Hook(json_answer(b"maintenance", status=503))
        url = self.serve(hook)
        await self.worker().consume(self.event(url, bot_owner_email="owner@example.com"))
        self.assertEqual(len(hook.requests), 1)
        (kind, content), (notice_kind, notice) = self.replies()
        self.assertEqual((kind, content), ("failure", "Failure! Third party responded with 503"))
        self.assertEqual(notice_kind, "bot_owner_notice")
        self.assertIn("status code *503*.\nThe response contains the following payload:\n```\nb'maintenance'", notice)

    async def test_server_slower_than_the_deadline(self) -> None:
        """A server slower than the deadline: TransientError in about the deadline, connection dropped."""
        hook = Hook(lambda request, body: hook.later(5.0, request, b"{}"))
        url = self.serve(hook)
        started = time.monotonic()
        with self.assertRaises(ServiceUnavailable) as raised:
            await self.worker(timeout=0.3).consume(self.event(url))
        elapsed = time.monotonic() - started
        self.assertEqual(str(raised.exception), "Request timed out after 0.3 seconds.")
        self.assertLess(elapsed, 2.0)
        await deferLater(reactor, 0.05, lambda: None)
        self.assertEqual(len(hook.lost), 1)  # the server saw the connection go

    async def test_body_slower_than_the_deadline(self) -> None:
        """Headers in time but a body that stalls also hits the deadline."""

        def handler(request: Request, body: bytes) -> Any:
            request.setHeader(b"content-length", b"1000")
            request.write(b'{"content": "')
            return NOT_DONE_YET

        hook = Hook(handler)
        url = self.serve(hook)
        with self.assertRaises(ServiceUnavailable):
            await self.worker(timeout=0.3).consume(self.event(url))
        await deferLater(reactor, 0.05, lambda: None)
        self.assertEqual(len(hook.lost), 1)

    async def test_connection_refused(self) -> None:
        """Nothing listening: a TransientError with Zulip's connection text."""
        port = listen_local(Site(Resource()))
        number = port_number(port)
        await stop_listening(port)
        with self.assertRaises(TransientError) as raised:
            await self.worker().consume(self.event(f"http://127.0.0.1:{number}/hook"))
        self.assertEqual(str(raised.exception), "A connection error occurred. Is my bot server down?")

    async def test_oversized_response(self) -> None:
        """A body over max_response_bytes is refused and reported, without retry."""
        url = self.serve(Hook(json_answer({"content": "x" * 5000})))
        await self.worker(max_response_bytes=1000).consume(self.event(url))
        self.assertIn("An exception of type *ResponseTooLarge*", self.replies()[0][1])


class RetryTests(WebhookHTTPTestCase):
    async def test_retry_then_success(self) -> None:
        """The first try breaks the connection (TransientError), the retried event succeeds."""

        def handler(request: Request, body: bytes) -> Any:
            if len(hook.requests) == 1:
                abort(request)
                return NOT_DONE_YET
            return json_answer({"content": "second time lucky"})(request, body)

        hook = Hook(handler)
        url = self.serve(hook)
        worker = self.worker()
        event = worker.validate(self.event(url))
        with self.assertRaises(TransientError):
            await worker.consume(event)
        await worker.consume(worker.validate(dict(event, failed_tries=1)))
        self.assertEqual(len(hook.requests), 2)
        self.assertEqual(self.replies(), [("reply", "second time lucky")])

    async def test_retries_exhausted(self) -> None:
        """Four failed tries, then the failure handler says "Bot is unavailable" and tells the owner."""
        url = self.serve(Hook(abort_answer))
        worker = self.worker()
        event = self.event(url, bot_owner_email="owner@example.com")
        failure = None
        for tries in range(4):
            try:
                await worker.consume(worker.validate(dict(event, failed_tries=tries)))
            except TransientError as e:
                failure = e
        assert failure is not None
        await given_up(worker.on_give_up(event, Failure(failure), "retries-exhausted"))
        (kind, content), (_, notice) = self.replies()
        self.assertEqual((kind, content), ("failure", "Failure! Bot is unavailable"))
        self.assertTrue(
            notice.endswith("triggered an outgoing webhook.\nA connection error occurred. Is my bot server down?")
        )


class GuardTests(WebhookHTTPTestCase):
    async def test_private_address_is_refused(self) -> None:
        """Without an allowlist a 127.0.0.1 URL is refused: nothing is sent, the owner hears why."""
        hook = Hook(json_answer({"content": "never"}))
        url = self.serve(hook)
        worker = self.worker(allow_networks=())
        event = self.event(url)
        with self.assertRaises(DisallowedNetworkError) as raised:
            await worker.consume(event)
        self.assertIn("private or disallowed network", str(raised.exception))
        self.assertEqual(hook.requests, [])
        await given_up(worker.on_give_up(event, Failure(raised.exception), "permanent"))
        self.assertEqual(self.replies()[0], ("failure", "Failure! Third party responded with 407"))
        self.assertIn("for a private or disallowed network.", self.replies()[1][1])

    async def test_localhost_name_is_refused(self) -> None:
        """A name that resolves to loopback is refused like the address."""
        url = self.serve(Hook(json_answer({})))
        with self.assertRaises(DisallowedNetworkError):
            await self.worker(allow_networks=()).consume(self.event(url.replace("127.0.0.1", "localhost")))

    async def test_allowlist_is_exact(self) -> None:
        """127.0.0.1/32 lets 127.0.0.1 through but not 127.0.0.2."""
        hook = Hook(json_answer({"content": "ok"}))
        url = self.serve(hook)
        worker = self.worker(allow_networks=("127.0.0.1/32",))
        await worker.consume(self.event(url))
        self.assertEqual(len(hook.requests), 1)
        with self.assertRaises(DisallowedNetworkError):
            await worker.consume(self.event(url.replace("127.0.0.1", "127.0.0.2")))


class FakeZulipAPI(Resource):
    """Zulip's POST /api/v1/messages: checks each request, records the messages."""

    isLeaf = True

    def __init__(self, keys: Mapping[str, str]) -> None:
        super().__init__()
        self.keys = keys
        self.messages: list[dict[str, str]] = []
        self.problems: list[str] = []

    def render_POST(self, request: Request) -> bytes:
        request.setHeader(b"content-type", b"application/json")
        auth = (request.getHeader(b"authorization") or b"").decode()
        email, _, key = base64.b64decode(auth.removeprefix("Basic ")).decode().partition(":")
        if not auth.startswith("Basic ") or self.keys.get(email) != key:
            request.setResponseCode(401)
            return b'{"result": "error", "msg": "Invalid API key", "code": "INVALID_API_KEY"}'
        if request.getHeader(b"content-type") != b"application/x-www-form-urlencoded":
            self.problems.append("content type")
        fields = dict(parse_qsl(_body(request).decode()))
        required = {"stream": {"type", "to", "topic", "content"}, "private": {"type", "to", "content"}}
        if set(fields) != required.get(fields.get("type", ""), set()):
            self.problems.append(f"fields {sorted(fields)}")
            request.setResponseCode(400)
            return b'{"result": "error", "msg": "Missing fields"}'
        self.messages.append(dict(fields, sender=email))
        return json.dumps({"result": "success", "msg": "", "id": len(self.messages)}).encode()


class RestSinkTests(WebhookHTTPTestCase):
    def serve_zulip(self, api: FakeZulipAPI) -> str:
        """Serve ``api`` at /api/v1/messages; return the site's base URL."""
        v1 = Resource()
        v1.putChild(b"messages", api)
        api_root = Resource()
        api_root.putChild(b"v1", v1)
        return self.serve(api_root, b"api").removesuffix("/api")

    async def test_replies_are_posted_through_zulip_api(self) -> None:
        """With reply_sink = "rest", replies and notices are POSTed to /api/v1/messages as the bot."""
        zulip = FakeZulipAPI({"helper-bot@example.com": "KEY"})
        site = self.serve_zulip(zulip)
        hook_ok = self.serve(Hook(json_answer({"content": "pong"})))
        hook_bad = self.serve(Hook(json_answer(b"", status=500)))
        keys = self.temp_path()
        with open(keys, "w") as f:
            f.write('"helper-bot@example.com" = "KEY"\n')
        worker = self.worker(reply_sink="rest", rest_site=site, rest_bot_api_keys_file=keys)
        await worker.consume(self.event(hook_ok))
        await worker.consume(self.event(hook_bad, bot_owner_email="owner@example.com"))
        private = private_event()
        private["services"] = [{"name": "ci", "base_url": hook_ok, "token": "t"}]
        await worker.consume(private)
        self.assertEqual(zulip.problems, [])
        self.assertEqual(
            zulip.messages,
            [
                {
                    "type": "stream",
                    "to": "devel",
                    "topic": "builds",
                    "content": "pong",
                    "sender": "helper-bot@example.com",
                },
                {
                    "type": "stream",
                    "to": "devel",
                    "topic": "builds",
                    "content": "Failure! Third party responded with 500",
                    "sender": "helper-bot@example.com",
                },
                {
                    "type": "private",
                    "to": '["owner@example.com"]',
                    "content": zulip.messages[2]["content"],
                    "sender": "helper-bot@example.com",
                },
                {
                    "type": "private",
                    "to": '["iago@example.com", "helper-bot@example.com"]',
                    "content": "pong",
                    "sender": "helper-bot@example.com",
                },
            ],
        )
        self.assertIn("status code *500*", zulip.messages[2]["content"])

    async def test_wrong_key_is_refused_and_logged(self) -> None:
        """Zulip refusing the bot's key (401) is logged; the event is not retried."""
        zulip = FakeZulipAPI({"helper-bot@example.com": "RIGHT"})
        site = self.serve_zulip(zulip)
        hook = self.serve(Hook(json_answer({"content": "pong"})))
        worker = self.worker(reply_sink="rest", rest_site=site, rest_bot_api_keys={"helper-bot@example.com": "WRONG"})
        await worker.consume(self.event(hook))
        self.assertEqual(zulip.messages, [])


class ConcurrencyTests(WebhookHTTPTestCase):
    async def run_hundred(self, per_host: int) -> tuple[float, Hook]:
        hook = Hook(lambda request, body: hook.later(0.2, request, b'{"content": "ok"}'))
        url = self.serve(hook)
        worker = self.worker(per_host_concurrency=per_host)
        started = time.monotonic()
        await gatherResults([worker.consume(worker.validate(self.event(url))) for _ in range(100)])
        return time.monotonic() - started, hook

    async def test_hundred_requests_run_concurrently(self) -> None:
        """100 requests to a 200 ms server finish in well under 100 x 200 ms (20 s)."""
        elapsed, hook = await self.run_hundred(per_host=100)
        self.assertLess(elapsed, 2.0)
        self.assertEqual(len(hook.requests), 100)
        self.assertEqual(len(self.replies()), 100)
        self.assertGreater(hook.max_in_flight, 50)

    async def test_per_host_cap_is_honoured(self) -> None:
        """With the default cap of 25 per host, never more than 25 requests reach one server at once."""
        elapsed, hook = await self.run_hundred(per_host=25)
        self.assertEqual(hook.max_in_flight, 25)
        self.assertLess(elapsed, 4.0)  # four waves of 200 ms


class RuntimeTests(WebhookHTTPTestCase):
    """The worker under the real runtime (QueueRunner over the in-memory broker), fast backoff."""

    async def run_event(self, hook: Hook, until: Callable[[], bool]) -> MemoryBroker:
        url = self.serve(hook)
        worker = self.worker()
        broker = MemoryBroker(reactor)
        settings = RunnerSettings(concurrency=100, backoff=BackoffPolicy(0.01, 0.05), timeout=30.0)
        deadletters = DeadLetterer(broker, self.temp_path(), reactor, 5.0)
        runner = QueueRunner(worker, settings, broker, deadletters, reactor)
        await broker.connect()
        session = broker.current_session()
        assert session is not None
        await runner.attach(session)
        self.addCleanup(runner.stop, 5.0)
        await broker.publish("outgoing_webhooks", json.dumps(self.event(url)).encode())
        for _ in range(200):
            if until():
                break
            await deferLater(reactor, 0.02, lambda: None)
        return broker

    async def test_retried_by_the_runtime_then_succeeds(self) -> None:
        """Two broken connections are retried with backoff by the runtime; the third try replies."""

        def handler(request: Request, body: bytes) -> Any:
            if len(hook.requests) <= 2:
                abort(request)
                return NOT_DONE_YET
            return json_answer({"content": "third time"})(request, body)

        hook = Hook(handler)
        broker = await self.run_event(hook, lambda: bool(self.replies()))
        self.assertEqual(self.replies(), [("reply", "third time")])
        self.assertEqual(len(hook.requests), 3)
        self.assertEqual(broker.messages("outgoing_webhooks.failed"), [])

    async def test_runtime_gives_up_after_four_tries(self) -> None:
        """After 4 tries the runtime calls the failure handler and dead-letters the event."""
        hook = Hook(abort_answer)
        broker = await self.run_event(hook, lambda: len(self.replies()) >= 2)
        self.assertEqual(len(hook.requests), 4)
        self.assertEqual(self.replies()[0], ("failure", "Failure! Bot is unavailable"))
        await deferLater(reactor, 0.05, lambda: None)
        self.assertEqual(len(broker.messages("outgoing_webhooks.failed")), 1)
        self.assertEqual(len(self.flushLoggedErrors(ServiceUnavailable)), 1)  # the runtime's "Problem handling data"


class Moved(Resource):
    """A bot server that moved: ``/r/{status}`` answers that redirect to ``location``; ``/r/final`` answers
    ``{"content": "<method> <body length>"}``."""

    isLeaf = True

    def __init__(self, location: bytes = b"final") -> None:
        super().__init__()
        self.location = location
        self.seen: list[tuple[bytes, bytes, bytes, bytes | None]] = []

    def render(self, request: Request) -> bytes:
        assert request.method is not None
        name = request.postpath[0] if request.postpath else b""
        body = _body(request)
        self.seen.append((request.method, name, body, request.getHeader(b"content-type")))
        if name.isdigit():
            request.setResponseCode(int(name))
            request.setHeader(b"location", self.location)
            return b"moved"
        request.setHeader(b"content-type", b"application/json")
        return json.dumps({"content": f"{request.method.decode()} {len(body)}"}).encode()


class PermanentFailureTestCase(WebhookHTTPTestCase):
    """Runs one event under the real runtime and waits for its dead letter."""

    async def dead_letter(self, url: str, **settings: Any) -> tuple[MemoryBroker, StoredMessage]:
        worker = self.worker(**settings)
        broker = MemoryBroker(reactor)
        runner_settings = RunnerSettings(concurrency=10, backoff=BackoffPolicy(0.01, 0.05), timeout=30.0)
        runner = QueueRunner(
            worker, runner_settings, broker, DeadLetterer(broker, self.temp_path(), reactor, 5.0), reactor
        )
        await broker.connect()
        session = broker.current_session()
        assert session is not None
        await runner.attach(session)
        self.addCleanup(runner.stop, 5.0)
        event = self.event(url, bot_owner_email="owner@example.com")
        await broker.publish("outgoing_webhooks", json.dumps(event).encode())
        for _ in range(200):
            if broker.messages("outgoing_webhooks.failed") and len(self.replies()) >= 2:
                break
            await deferLater(reactor, 0.02, lambda: None)
        await deferLater(reactor, 0.2, lambda: None)  # time enough for a retry (backoff <= 50 ms), if one came
        letters = list(broker.queues.get("outgoing_webhooks.failed", ()))
        self.assertEqual(len(letters), 1, "dead-lettered once")
        self.assertEqual(broker.messages("outgoing_webhooks"), [], "not retried")
        self.assertEqual(letters[0].headers["x-zq-reason"], "permanent")
        return broker, letters[0]


class RedirectTests(PermanentFailureTestCase):
    """follow_redirects = true against a real server on 127.0.0.1 (allowlisted) that redirects the POST."""

    async def test_redirects_of_the_post_follow_rfc_9110(self) -> None:
        """307/308 and 301/302 repeat the POST with its body; 303 becomes a GET without body (was: only 303 worked)."""
        moved = Moved()
        base = self.serve(moved, b"r")
        worker = self.worker(follow_redirects=True)
        for status in (301, 302, 303, 307, 308):
            moved.seen.clear()
            await worker.consume(worker.validate(self.event(f"{base}/{status}")))
            (method, name, first, _), (final_method, final, body, content_type) = moved.seen
            self.assertEqual((method, name, final), (b"POST", str(status).encode(), b"final"))
            if status == 303:
                self.assertEqual((final_method, body, content_type), (b"GET", b"", None))
            else:
                self.assertEqual((final_method, body, content_type), (b"POST", first, b"application/json"))
        n = len(first)
        self.assertEqual(
            self.replies(), [("reply", f"POST {n}")] * 2 + [("reply", "GET 0")] + [("reply", f"POST {n}")] * 2
        )

    async def test_redirect_to_a_private_address_is_dead_lettered(self) -> None:
        """A redirect to the metadata address is refused by the guard: dead-lettered at once, Zulip's 407 texts."""
        moved = Moved(b"http://169.254.169.254/latest/meta-data/")
        url = self.serve(moved, b"r") + "/307"
        _, letter = await self.dead_letter(url, follow_redirects=True)
        self.assertEqual(len(moved.seen), 1)
        self.assertEqual(letter.headers["x-zq-exception"], "DisallowedNetworkError")
        self.assertIn(
            "169.254.169.254 resolves to 169.254.169.254, after redirect 1 (307 from", letter.headers["x-zq-message"]
        )
        self.assertEqual(self.replies()[0], ("failure", "Failure! Third party responded with 407"))
        self.assertIn("for a private or disallowed network.", self.replies()[1][1])
        self.flushLoggedErrors(DisallowedNetworkError)

    async def test_redirect_loop_is_dead_lettered(self) -> None:
        """A redirect loop stops after 5 hops (6 requests), once: TooManyRedirects, dead-lettered, Zulip's notice."""
        moved = Moved(b"308")
        url = self.serve(moved, b"r") + "/308"
        _, letter = await self.dead_letter(url, follow_redirects=True)
        self.assertEqual(len(moved.seen), MAX_REDIRECTS + 1)
        self.assertEqual(letter.headers["x-zq-exception"], "TooManyRedirects")
        self.assertEqual(self.replies()[0][0], "failure")
        self.assertIn("An exception of type *TooManyRedirects* occurred", self.replies()[0][1])
        self.assertIn("more than 5 redirects", self.replies()[1][1])
        self.flushLoggedErrors(TooManyRedirects)

    async def test_redirect_to_another_scheme_is_dead_lettered(self) -> None:
        """A redirect to a file: URL is refused, dead-lettered with the reason."""
        moved = Moved(b"file:///etc/passwd")
        url = self.serve(moved, b"r") + "/302"
        _, letter = await self.dead_letter(url, follow_redirects=True)
        self.assertEqual(letter.headers["x-zq-exception"], "RedirectRefused")
        self.assertIn("only http and https", letter.headers["x-zq-message"])
        self.flushLoggedErrors(RedirectRefused)

    async def test_unparsable_url_is_dead_lettered(self) -> None:
        """A URL IDNA refuses is dead-lettered as InvalidURL with Zulip's exception notice (was: acked)."""
        _, letter = await self.dead_letter("http://a..b/hook?token=s3cret")
        self.assertEqual(letter.headers["x-zq-exception"], "InvalidURL")
        self.assertNotIn("s3cret", letter.headers["x-zq-message"])
        self.assertIn("An exception of type *InvalidURL* occurred", self.replies()[0][1])
        self.flushLoggedErrors(InvalidURL)


class IPv6Tests(PermanentFailureTestCase):
    """IPv6-literal bot URLs against a real server on [::1] (a machine without IPv6 loopback fails under CI)."""

    def setUp(self) -> None:
        super().setUp()
        if not has_ipv6_loopback():
            missing_requirement(self, "this machine has no IPv6 loopback (::1): `ip -6 addr show lo`")

    def serve6(self, resource: Resource, path: bytes = b"hook") -> str:
        """Serve ``resource`` on [::1], port 0, until cleanup."""
        root = Resource()
        root.putChild(path, resource)
        factory = TrackingFactory(Site(root))
        port = listen_local(factory, interface="::1")

        async def stop() -> None:
            await stop_listening(port)
            await factory.close_all()

        self.addCleanup(lambda: Deferred.fromCoroutine(stop()))
        address = port.getHost()
        assert isinstance(address, IPv6Address)
        return f"http://[::1]:{address.port}/{path.decode()}"

    async def test_allowlisted_ipv6_literal_is_called(self) -> None:
        """http://[::1]:port/ with ::1/128 allowlisted reaches the server (was: an IDNA error)."""
        hook = Hook(json_answer({"content": "over IPv6"}))
        url = self.serve6(hook)
        await self.worker(allow_networks=("::1/128",)).consume(self.event(url))
        self.assertEqual(len(hook.requests), 1)
        self.assertEqual(hook.requests[0][0].getHeader(b"host"), url.split("/")[2].encode())
        self.assertEqual(self.replies(), [("reply", "over IPv6")])

    async def test_ipv6_forms_of_loopback_are_refused(self) -> None:
        """[::1], [::ffff:127.0.0.1], NAT64 and 6to4 forms of 127.0.0.1 are refused by the guard; nothing is sent."""
        hook = Hook(json_answer({"content": "never"}))
        port = self.serve6(hook).split("]:")[1].split("/")[0]
        ipv4 = Hook(json_answer({"content": "never"}))
        port4 = self.serve(ipv4).split(":")[2].split("/")[0]
        worker = self.worker(allow_networks=())
        for host, number in (
            ("::1", port),
            ("::ffff:127.0.0.1", port4),
            ("64:ff9b::7f00:1", port4),
            ("2002:7f00:1::1", port4),
        ):
            with self.assertRaises(DisallowedNetworkError, msg=host):
                await worker.consume(self.event(f"http://[{host}]:{number}/hook"))
        self.assertEqual((hook.requests, ipv4.requests), ([], []))

    async def test_private_ipv6_literal_is_dead_lettered(self) -> None:
        """Under the runtime, a refused [::1] URL is dead-lettered once with Zulip's 407 texts (was: acked)."""
        hook = Hook(json_answer({"content": "never"}))
        _, letter = await self.dead_letter(self.serve6(hook), allow_networks=())
        self.assertEqual(letter.headers["x-zq-exception"], "DisallowedNetworkError")
        self.assertEqual(hook.requests, [])
        self.assertEqual(self.replies()[0], ("failure", "Failure! Third party responded with 407"))
        self.flushLoggedErrors(DisallowedNetworkError)

    async def test_redirect_from_ipv4_to_ipv6(self) -> None:
        """A 307 from 127.0.0.1 to [::1] is followed through the guard when both are allowlisted, refused otherwise."""
        hook = Hook(json_answer({"content": "moved to IPv6"}))
        moved = Moved(self.serve6(hook).encode())
        url = self.serve(moved, b"r") + "/307"
        await self.worker(follow_redirects=True, allow_networks=("127.0.0.1/32", "::1/128")).consume(self.event(url))
        self.assertEqual(self.replies(), [("reply", "moved to IPv6")])
        self.assertEqual(hook.requests[0][1], moved.seen[0][2])
        with self.assertRaises(DisallowedNetworkError):
            await self.worker(follow_redirects=True).consume(self.event(url))
        self.assertEqual(len(hook.requests), 1)


def has_ipv6_loopback() -> bool:
    """Whether a socket can be bound to ::1 here."""
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as probe:
            probe.bind(("::1", 0))
    except OSError:
        return False
    return True


def _body(request: Request) -> bytes:
    """The request's body (twisted.web always gives a POST one)."""
    assert request.content is not None
    body: bytes = request.content.read()
    return body


def listen_local(factory: Any, interface: str = "127.0.0.1") -> IListeningPort:
    """``factory`` listening on 127.0.0.1 (or ``::1``), on a free port."""
    return reactor.listenTCP(0, factory, interface=interface)


def port_number(port: IListeningPort) -> int:
    address = port.getHost()
    assert isinstance(address, IPv4Address)
    return address.port


async def stop_listening(port: IListeningPort) -> None:
    stopping = port.stopListening()
    if stopping is not None:
        await stopping


def abort(request: Request) -> None:
    """Drop the request's connection without an answer."""
    ITCPTransport(request.transport).abortConnection()


async def given_up(result: Deferred[None] | None) -> None:
    """Wait for a failure handler's Deferred, if it returned one."""
    if result is not None:
        await result


def abort_answer(request: Request, body: bytes) -> Any:
    """A hook handler that drops the connection without answering."""
    abort(request)
    return NOT_DONE_YET
