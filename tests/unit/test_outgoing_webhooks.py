"""Tests for zqtwisted.consumers.outgoing_webhooks: the worker, with a fake HTTP client and reply sink."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from twisted.internet.defer import CancelledError, Deferred, fail, succeed
from twisted.internet.task import Clock
from twisted.python.failure import Failure
from twisted.trial.unittest import TestCase

from tests.resource_fakes import memory_resources
from tests.unit.test_webhook_payload import private_event, stream_event
from zqtwisted.consumers.outgoing_webhooks import SPECS, OutgoingWebhookWorker, ServiceUnavailable
from zqtwisted.errors import MalformedEventError, PermanentError, TransientError
from zqtwisted.runtime.consumer import WorkerContext
from zqtwisted.testing import RecordingPublisher
from zqtwisted.webhooks.client import (
    HostBusyError,
    ResponseTooLarge,
    WebhookClient,
    WebhookConnectionError,
    WebhookResponse,
    WebhookTimeout,
)
from zqtwisted.webhooks.guard import DisallowedNetworkError
from zqtwisted.webhooks.replies import (
    FAILURE,
    OWNER_NOTICE,
    REPLY,
    QueueReplySink,
    Reply,
    ReplyRejected,
    RestReplySink,
    bot_reply,
)
from zqtwisted.webhooks.settings import OutgoingWebhookSettings

URL = "https://bots.example.com/hook"
OTHER = "https://other.example.com/hook"
LINK = "https://chat.example.com/#narrow/channel/4-devel/topic/builds/near/11"


class FakeClient:
    """Stands in for WebhookClient: answers each URL from a list of results."""

    timeout = 10.0

    def __init__(self) -> None:
        self.results: dict[str, list[Any]] = {}
        self.calls: list[tuple[str, bytes, str]] = []
        self.cancelled: list[str] = []

    def answer(self, url: str, *results: Any) -> None:
        self.results[url] = list(results)

    def post(self, url: str, body: bytes, content_type: str, headers: Mapping[str, str] | None = None) -> Any:
        self.calls.append((url, body, content_type))
        result = self.results[url].pop(0)
        if result is None:
            return Deferred(lambda _: self.cancelled.append(url))
        if isinstance(result, BaseException):
            return fail(result)
        return succeed(result)


class FakeSink:
    """Records replies; fails with ``error`` when set."""

    def __init__(self) -> None:
        self.sent: list[Reply] = []
        self.error: BaseException | None = None

    def send(self, reply: Reply) -> Deferred[None]:
        if self.error is not None:
            return fail(self.error)
        self.sent.append(reply)
        return succeed(None)


def ok(body: Any, status: int = 200) -> WebhookResponse:
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    return WebhookResponse(status, data, "application/json")


class WorkerTestCase(TestCase):
    def setUp(self) -> None:
        self.client = FakeClient()
        self.sink = FakeSink()
        settings = OutgoingWebhookSettings(realm_url="https://chat.example.com", realm_id=2)
        context = WorkerContext("outgoing_webhooks", Clock(), RecordingPublisher())
        self.worker = OutgoingWebhookWorker(context, settings=settings, client=self.client, sink=self.sink)

    def consume(self, event: dict[str, Any]) -> Deferred[None]:
        return self.worker.consume(self.worker.validate(event))

    def replies(self) -> list[tuple[str, str]]:
        return [(r.kind, r.content) for r in self.sent_replies()]

    def sent_replies(self) -> list[Reply]:
        return self.sink.sent


class DeclarationTests(WorkerTestCase):
    def test_declared_for_outgoing_webhooks_with_concurrency_100(self) -> None:
        """The worker consumes outgoing_webhooks with 100 events in flight by default."""
        (spec,) = SPECS
        self.assertEqual((spec.queue, spec.worker, spec.sharded), ("outgoing_webhooks", OutgoingWebhookWorker, False))
        self.assertEqual((spec.section, spec.settings), ("outgoing_webhooks", OutgoingWebhookSettings))
        self.assertEqual(OutgoingWebhookWorker.concurrency, 100)

    def test_validate_rejects_malformed_events(self) -> None:
        """A malformed event is refused at validation, so it is dead-lettered with the reason."""
        with self.assertRaises(MalformedEventError):
            self.worker.validate({"message": {}})

    def test_spec_builds_a_worker_from_resources(self) -> None:
        """With default settings: a client over the shared "webhooks" pool, replies published as events."""
        (spec,) = SPECS
        resources, reactor, publisher = memory_resources()
        settings = OutgoingWebhookSettings(per_host_concurrency=5)
        worker = spec.build(WorkerContext(spec.queue, reactor, publisher), settings, resources)
        assert isinstance(worker, OutgoingWebhookWorker)
        self.assertIsInstance(worker.client, WebhookClient)
        self.assertIsInstance(worker.sink, QueueReplySink)
        self.assertEqual(resources.http_pool("webhooks").maxPersistentPerHost, 5)
        self.successResultOf(worker.sink.send(bot_reply(stream_event(), "hi")))
        ((queue, _),) = publisher.published
        self.assertEqual(queue, "outgoing_webhook_responses")

    def test_rest_sink_uses_its_own_pool(self) -> None:
        """reply_sink = "rest": the sink posts through the shared "webhook_replies" pool."""
        (spec,) = SPECS
        resources, reactor, publisher = memory_resources()
        settings = OutgoingWebhookSettings(reply_sink="rest", rest_site="https://chat.example.com")
        worker = spec.build(WorkerContext(spec.queue, reactor, publisher), settings, resources)
        assert isinstance(worker, OutgoingWebhookWorker)
        self.assertIsInstance(worker.sink, RestReplySink)
        self.assertIsNot(resources.http_pool("webhook_replies"), resources.http_pool("webhooks"))


class SuccessTests(WorkerTestCase):
    def test_reply_goes_to_the_stream_and_topic(self) -> None:
        """The bot's content is posted where the message was; the generic payload was sent."""
        self.client.answer(URL, ok({"content": "pong"}))
        self.successResultOf(self.consume(stream_event()))
        url, body, content_type = self.client.calls[0]
        self.assertEqual((url, content_type), (URL, "application/json"))
        self.assertEqual(json.loads(body)["token"], "s3cret")
        [reply] = self.sent_replies()
        self.assertEqual((reply.kind, reply.content, reply.service_name), (REPLY, "pong", "ci"))
        self.assertEqual(
            reply.recipient.to_json(), {"type": "stream", "stream": "devel", "stream_id": 4, "topic": "builds"}
        )

    def test_no_reply_posts_nothing(self) -> None:
        """response_not_required posts nothing and succeeds."""
        self.client.answer(URL, ok({"response_not_required": True}))
        self.successResultOf(self.consume(stream_event()))
        self.assertEqual(self.sent_replies(), [])

    def test_direct_message_reply_goes_to_the_conversation(self) -> None:
        """A reply to a direct message goes to its participants."""
        self.client.answer(URL, ok({"content": "hi"}))
        self.successResultOf(self.consume(private_event()))
        self.assertEqual(self.sent_replies()[0].recipient.emails, ("iago@example.com", "helper-bot@example.com"))

    def test_slack_service_refuses_direct_messages_without_calling(self) -> None:
        """A Slack service gets no request for a DM; the user gets Zulip's failure text."""
        event = private_event()
        event["services"][0]["interface"] = "slack"
        self.successResultOf(self.consume(event))
        self.assertEqual(self.client.calls, [])
        self.assertEqual(self.replies(), [(FAILURE, "Failure! Slack outgoing webhooks don't support direct messages.")])

    def test_completed_services_are_recorded(self) -> None:
        """A finished service is recorded in the event."""
        self.client.answer(URL, ok({}))
        event = stream_event()
        self.successResultOf(self.consume(event))
        self.assertEqual(event["completed_services"], ["ci"])


class FailureResponseTests(WorkerTestCase):
    def test_non_2xx_replies_failure_and_notifies_owner_without_retry(self) -> None:
        """A 500 gives Zulip's failure text and owner notice; the consume succeeds (no retry)."""
        self.client.answer(URL, ok(b"boom", status=500))
        self.successResultOf(self.consume(stream_event(bot_owner_email="owner@example.com")))
        failure, notice = self.sent_replies()
        self.assertEqual(failure.content, "Failure! Third party responded with 500")
        self.assertEqual(notice.kind, OWNER_NOTICE)
        self.assertEqual(notice.recipient.emails, ("owner@example.com",))
        self.assertEqual(
            notice.content,
            f"[A message]({LINK}) to your bot @_**Helper Bot** triggered an outgoing webhook."
            "\nThe webhook got a response with status code *500*."
            "\nThe response contains the following payload:\n```\nb'boom'\n```",
        )

    def test_invalid_json_replies_failure_and_notifies_owner(self) -> None:
        """An unparsable 2xx body gives "Invalid JSON in response" and a notice quoting it."""
        self.client.answer(URL, ok(b"<html>"))
        self.successResultOf(self.consume(stream_event()))
        failure, notice = self.sent_replies()
        self.assertEqual(failure.content, "Failure! Invalid JSON in response")
        self.assertIn(
            "\nThe outgoing webhook server attempted to send a message in Zulip, but that request resulted in the "
            "following error:\n> Invalid JSON in response"
            "\nThe response contains the following payload:\n```\n'<html>'\n```",
            notice.content,
        )
        self.assertEqual(notice.recipient.type, "bot_owner")  # no bot_owner_email in the event

    def test_invalid_format_replies_failure(self) -> None:
        """A 2xx JSON body that is not an object gives "Invalid response format"."""
        self.client.answer(URL, ok([1]))
        self.successResultOf(self.consume(stream_event()))
        self.assertEqual(self.replies()[0], (FAILURE, "Failure! Invalid response format"))

    def test_oversized_response_reports_an_exception(self) -> None:
        """An oversized body is reported as Zulip reports request exceptions; no retry."""
        self.client.answer(URL, ResponseTooLarge(1024))
        self.successResultOf(self.consume(stream_event()))
        failure, notice = self.sent_replies()
        self.assertEqual(
            failure.content,
            "Failure! An exception of type *ResponseTooLarge* occurred for message `@**Helper Bot** ping`! "
            "See the Zulip server logs for more information.",
        )
        self.assertIn("an exception of type ResponseTooLarge occurred:\n```\nthe response body exceeds", notice.content)


class RetryTests(WorkerTestCase):
    def test_timeout_is_transient_with_zulip_message(self) -> None:
        """A timeout raises TransientError carrying Zulip's owner text; nothing is posted yet."""
        self.client.answer(URL, WebhookTimeout(URL, 10))
        failure = self.failureResultOf(self.consume(stream_event()), ServiceUnavailable)
        self.assertIsInstance(failure.value, TransientError)
        self.assertEqual(str(failure.value), "Request timed out after 10 seconds.")
        self.assertEqual(self.sent_replies(), [])

    def test_connection_errors_are_transient(self) -> None:
        """Connection errors and a saturated host raise TransientError with Zulip's text."""
        for error in (WebhookConnectionError("refused"), HostBusyError("busy")):
            self.client.answer(URL, error)
            failure = self.failureResultOf(self.consume(stream_event()), ServiceUnavailable)
            self.assertEqual(str(failure.value), "A connection error occurred. Is my bot server down?")

    def test_retry_calls_only_unfinished_services(self) -> None:
        """With two services, a retry calls only the one that failed, then succeeds."""
        event = stream_event()
        event["services"].append({"name": "other", "base_url": OTHER, "token": "t2"})
        self.client.answer(URL, ok({"content": "one"}))
        self.client.answer(OTHER, WebhookConnectionError("refused"), ok({"content": "two"}))
        self.failureResultOf(self.consume(event), TransientError)
        self.assertEqual(event["completed_services"], ["ci"])
        retried = dict(event, failed_tries=1)  # what the runtime re-publishes
        self.successResultOf(self.consume(retried))
        self.assertEqual([c[0] for c in self.client.calls], [URL, OTHER, OTHER])
        self.assertEqual(self.replies(), [(REPLY, "one"), (REPLY, "two")])

    def test_disallowed_network_is_permanent(self) -> None:
        """A guard refusal fails the consume with a PermanentError (dead-lettered, replayable)."""
        self.client.answer(URL, DisallowedNetworkError("bots.example.com", ["10.0.0.1"]))
        self.failureResultOf(self.consume(stream_event()), DisallowedNetworkError)

    def test_permanent_failure_wins_over_transient(self) -> None:
        """When services fail differently, the permanent failure decides."""
        event = stream_event()
        event["services"].append({"name": "other", "base_url": OTHER, "token": "t2"})
        self.client.answer(URL, WebhookConnectionError("refused"))
        self.client.answer(OTHER, DisallowedNetworkError("other.example.com", ["10.0.0.1"]))
        self.failureResultOf(self.consume(event), PermanentError)

    def test_cancelling_the_consume_cancels_the_requests(self) -> None:
        """A consume timeout (cancellation) cancels every request in flight."""
        self.client.answer(URL, None)
        d = self.consume(stream_event())
        d.cancel()
        self.failureResultOf(d, CancelledError)
        self.assertEqual(self.client.cancelled, [URL])

    def test_sink_failure_is_transient(self) -> None:
        """A reply that cannot be delivered now makes the event retry."""
        self.client.answer(URL, ok({"content": "pong"}))
        self.sink.error = TransientError("broker down")
        event = stream_event()
        self.failureResultOf(self.consume(event), TransientError)
        self.assertNotIn("completed_services", event)

    def test_rejected_reply_is_logged_not_retried(self) -> None:
        """A reply Zulip refuses (4xx) is logged; the event is done."""
        self.client.answer(URL, ok({"content": "pong"}))
        self.sink.error = ReplyRejected("stream does not exist")
        event = stream_event()
        self.successResultOf(self.consume(event))
        self.assertEqual(event["completed_services"], ["ci"])


class GiveUpTests(WorkerTestCase):
    def give_up(self, error: BaseException, reason: str, event: dict[str, Any] | None = None) -> None:
        d = self.worker.on_give_up(event or stream_event(), Failure(error), reason)
        assert d is not None
        self.successResultOf(d)

    def test_retries_exhausted_says_bot_is_unavailable(self) -> None:
        """After the last try: "Failure! Bot is unavailable" and the owner notice with the reason."""
        self.give_up(ServiceUnavailable("ci", "Request timed out after 10 seconds."), "retries-exhausted")
        failure, notice = self.sent_replies()
        self.assertEqual(failure.content, "Failure! Bot is unavailable")
        self.assertEqual(failure.service_name, "ci")
        self.assertEqual(
            notice.content,
            f"[A message]({LINK}) to your bot @_**Helper Bot** triggered an outgoing webhook."
            "\nRequest timed out after 10 seconds.",
        )

    def test_consume_timeout_says_bot_is_unavailable(self) -> None:
        """A consume that timed out as a whole is reported like an unavailable bot."""
        from twisted.internet.defer import TimeoutError

        self.give_up(TimeoutError(), "timeout")
        self.assertEqual(self.replies()[0], (FAILURE, "Failure! Bot is unavailable"))
        self.assertIn("Request timed out after 10 seconds.", self.replies()[1][1])

    def test_disallowed_network_is_reported_as_zulip_proxy_refusal(self) -> None:
        """A guard refusal is reported with Zulip's texts for its proxy's 407."""
        self.give_up(DisallowedNetworkError("bots.example.com", ["10.0.0.1"]), "permanent")
        failure, notice = self.sent_replies()
        self.assertEqual(failure.content, "Failure! Third party responded with 407")
        self.assertTrue(
            notice.content.endswith("\nThe URL configured for the webhook is for a private or disallowed network.")
        )

    def test_unexpected_errors_are_reported_as_exceptions(self) -> None:
        """Any other permanent failure is reported as Zulip reports request exceptions."""
        self.give_up(RuntimeError("bug"), "permanent")
        failure, notice = self.sent_replies()
        self.assertIn("An exception of type *RuntimeError* occurred", failure.content)
        self.assertIn("exception of type RuntimeError occurred:\n```\nbug\n```", notice.content)

    def test_malformed_events_are_not_answered(self) -> None:
        """There is nobody to tell about a malformed event."""
        self.assertIsNone(self.worker.on_give_up({"bad": 1}, Failure(MalformedEventError("x")), "malformed"))

    def test_delivery_failures_are_logged(self) -> None:
        """If the notice cannot be delivered either, the handler still completes."""
        self.sink.error = TransientError("down")
        self.give_up(ServiceUnavailable("ci", "x"), "retries-exhausted")


# -- Zulip mode ---------------------------------------------------------------------------


def zulip_mode_worker(client: FakeClient, api_poster: Any, db: Any, mark_read: bool = True) -> OutgoingWebhookWorker:
    from tests.zulip_fakes import SETTINGS
    from zqtwisted.zulip.rest import ZulipApi
    from zqtwisted.zulip.webhook_service import ZulipWebhooks

    context = WorkerContext("outgoing_webhooks", Clock(), RecordingPublisher())
    zulip = ZulipWebhooks(db, ZulipApi(api_poster, SETTINGS), SETTINGS)
    return OutgoingWebhookWorker(
        context,
        settings=OutgoingWebhookSettings(),
        client=client,
        sink=FakeSink(),
        zulip=zulip,
        mark_read=mark_read,
    )


class ZulipModeTests(TestCase):
    def setUp(self) -> None:
        from tests.unit.test_zulip_webhook_service import database, zulip_event
        from tests.zulip_fakes import FakePoster, service_row

        self.event = zulip_event()
        self.db = database(fetch_bot_services=[service_row(base_url=URL)])
        self.client = FakeClient()
        self.api = FakePoster()
        self.worker = zulip_mode_worker(self.client, self.api, self.db)

    def api_posts(self) -> list[tuple[str, dict[str, str]]]:
        from urllib.parse import parse_qsl

        return [(url.rsplit("/api/v1/", 1)[1], dict(parse_qsl(body.decode()))) for url, body, _, _ in self.api.calls]

    def test_zulip_event_calls_the_service_and_replies_as_the_bot(self) -> None:
        """The body is Zulip's (finalized message, the service's token); the reply and the read flag go to the API."""
        self.client.answer(URL, ok({"content": "pong"}))
        event = self.worker.validate(self.event)
        self.successResultOf(self.worker.consume(event))
        body = json.loads(self.client.calls[0][1])
        self.assertEqual(
            (body["token"], body["bot_email"], body["trigger"]), ("tok", "pong-bot@zulip.example.com", "mention")
        )
        self.assertNotIn("sender_delivery_email", body["message"])
        self.assertEqual(
            self.api_posts(),
            [
                ("messages", {"type": "stream", "to": "7", "topic": "castle", "content": "pong"}),
                ("messages/flags", {"messages": "[501]", "op": "add", "flag": "read"}),
            ],
        )
        self.assertEqual((event["completed_services"], event["zq_marked_read"]), (["svc"], True))
        self.assertNotIn("tok", json.dumps(event))

    def test_standalone_events_are_malformed_in_zulip_mode(self) -> None:
        """Zulip mode validates Zulip's event shape."""
        with self.assertRaises(MalformedEventError):
            self.worker.validate(stream_event())

    def test_give_up_tells_the_channel_and_the_owner(self) -> None:
        """After the last retry: "Failure! Bot is unavailable" where the message was, a notice to the owner's id."""
        from urllib.parse import parse_qsl

        failure = Failure(ServiceUnavailable("svc", "A connection error occurred. Is my bot server down?"))
        self.successResultOf(self.worker.on_give_up(self.event, failure, "retries-exhausted"))  # type: ignore[arg-type]
        posts = [dict(parse_qsl(body.decode())) for _, body, _, _ in self.api.calls]
        self.assertEqual((posts[0]["to"], posts[0]["content"]), ("7", "Failure! Bot is unavailable"))
        self.assertEqual((posts[1]["type"], posts[1]["to"]), ("private", "[11]"))
        self.assertIn("Is my bot server down?", posts[1]["content"])

    def test_give_up_without_the_database(self) -> None:
        """If the bot cannot be resolved when giving up, nothing is sent and the event is dead-lettered anyway."""
        from tests.unit.test_zulip_webhook_service import database
        from zqtwisted.zulip.pool import DatabaseUnavailable

        worker = zulip_mode_worker(self.client, self.api, database(fetch_bot=DatabaseUnavailable("down")))
        self.successResultOf(worker.on_give_up(self.event, Failure(TransientError("x")), "retries-exhausted"))  # type: ignore[arg-type]
        self.assertEqual(self.api.calls, [])

    def test_database_down_is_retried_without_counting(self) -> None:
        """The database being down fails the consume with DatabaseUnavailable (a DependencyUnavailable)."""
        from tests.unit.test_zulip_webhook_service import database
        from zqtwisted.errors import DependencyUnavailable
        from zqtwisted.zulip.pool import DatabaseUnavailable

        worker = zulip_mode_worker(self.client, self.api, database(fetch_bot=DatabaseUnavailable("down")))
        self.failureResultOf(worker.consume(self.event), DependencyUnavailable)

    def test_mark_read_failure_is_only_logged(self) -> None:
        """If the read flag cannot be set, the event still succeeds (the webhooks were called)."""
        from tests.zulip_fakes import FakePoster

        self.client.answer(URL, ok({"response_not_required": True}))
        worker = zulip_mode_worker(self.client, FakePoster(WebhookResponse(400, b'{"msg": "no"}')), self.db)
        event = worker.validate(self.event)
        self.successResultOf(worker.consume(event))
        self.assertNotIn("zq_marked_read", event)
        off = zulip_mode_worker(self.client, self.api, self.db, mark_read=False)
        self.client.answer(URL, ok({"response_not_required": True}))
        self.successResultOf(off.consume(off.validate(dict(self.event))))
        self.assertEqual(self.api.calls, [])

    def test_http_failure_logs_the_message_id(self) -> None:
        """A non-2xx answer: Zulip's failure reply; the log names the message by id, not by its content."""
        from typing import cast

        from twisted.logger import ILogObserver, globalLogPublisher

        seen: list[dict[str, Any]] = []
        observer = cast(ILogObserver, seen.append)
        globalLogPublisher.addObserver(observer)
        self.addCleanup(globalLogPublisher.removeObserver, observer)
        self.client.answer(URL, ok(b"boom", status=500))
        self.successResultOf(self.worker.consume(self.worker.validate(self.event)))
        urls = [e["url"] for e in seen if "url" in e]
        self.assertEqual(urls, ["message 501"])
        self.assertIn(
            ("messages", "Failure! Third party responded with 500"),
            [(p, f.get("content")) for p, f in self.api_posts()],
        )

    def test_spec_builds_zulip_mode_from_resources(self) -> None:
        """With [zulip] database set, the worker gets the database, the REST API and Zulip's version as user agent."""
        from zqtwisted.config import Config
        from zqtwisted.zulip.settings import ZulipSettings

        zulip = ZulipSettings(database="dbname=zulip", external_host="zulip.example.com", version="11.4")
        resources, reactor, publisher = memory_resources(Config(sections={"zulip": zulip}))
        (spec,) = SPECS
        worker = spec.build(WorkerContext(spec.queue, reactor, publisher), OutgoingWebhookSettings(), resources)
        assert isinstance(worker, OutgoingWebhookWorker)
        self.assertIsNotNone(worker.zulip)
        self.assertIs(worker.database, resources.zulip_database())
        self.assertEqual(worker.client.user_agent, "ZulipOutgoingWebhook/11.4")  # type: ignore[attr-defined]
