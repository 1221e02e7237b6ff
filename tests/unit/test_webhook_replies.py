"""Tests for zqtwisted.webhooks.replies: Zulip's reply texts, message links and the two sinks."""

from __future__ import annotations

import base64
import json
from typing import Any
from urllib.parse import parse_qsl

from treq.testing import RequestTraversalAgent
from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.trial.unittest import TestCase
from twisted.web.resource import Resource
from twisted.web.server import Request

from tests.resource_fakes import memory_resources
from tests.unit.test_webhook_payload import private_event, stream_event
from zqtwisted.errors import TransientError
from zqtwisted.testing import RecordingPublisher
from zqtwisted.webhooks.client import WebhookClient
from zqtwisted.webhooks.replies import (
    REST_CONCURRENCY,
    QueueReplySink,
    ReplyRejected,
    RestReplySink,
    bot_reply,
    build_reply_sink,
    build_rest_client,
    encode_hash_component,
    failure_reply,
    message_url,
    owner_notice,
)
from zqtwisted.webhooks.settings import OutgoingWebhookSettings

REALM_URL = "https://chat.example.com"


class TextTests(TestCase):
    def test_failure_reply_prefixes_failure(self) -> None:
        """fail_with_message's text is "Failure! " + the message, where the message was."""
        reply = failure_reply(stream_event(), "Bot is unavailable", "ci")
        self.assertEqual(
            (reply.kind, reply.content, reply.recipient.topic), ("failure", "Failure! Bot is unavailable", "builds")
        )

    def test_owner_notice_variants(self) -> None:
        """notify_bot_owner's texts: exception, failure message, 407, status, payload."""
        event = stream_event()
        link = message_url(REALM_URL, event["message"])
        head = f"[A message]({link}) to your bot @_**Helper Bot** triggered an outgoing webhook."
        self.assertEqual(owner_notice(event, REALM_URL).content, head)
        self.assertEqual(
            owner_notice(event, REALM_URL, exception=ValueError("x")).content,
            head
            + "\nWhen trying to send a request to the webhook service, an exception of type ValueError occurred:"
            + "\n```\nx\n```",
        )
        self.assertEqual(owner_notice(event, REALM_URL, failure_message="F").content, head + "\nF")
        self.assertEqual(
            owner_notice(event, REALM_URL, status_code=407).content,
            head + "\nThe URL configured for the webhook is for a private or disallowed network.",
        )
        self.assertEqual(
            owner_notice(event, REALM_URL, status_code=503, response_content=b"down").content,
            head + "\nThe webhook got a response with status code *503*."
            "\nThe response contains the following payload:\n```\nb'down'\n```",
        )

    def test_owner_notice_goes_to_the_owner(self) -> None:
        """The notice is a direct message to bot_owner_email, or marked for the application to address."""
        self.assertEqual(
            owner_notice(stream_event(bot_owner_email="o@example.com"), "").recipient.emails, ("o@example.com",)
        )
        self.assertEqual(owner_notice(stream_event(), "").recipient.type, "bot_owner")

    def test_stream_message_link_is_zulip_format(self) -> None:
        """Stream links use Zulip's channel/topic/near encoding."""
        message = dict(stream_event()["message"], display_recipient="dev ops", subject="v1.2 (rc)")
        self.assertEqual(
            message_url(REALM_URL, message),
            "https://chat.example.com/#narrow/channel/4-dev-ops/topic/v1.2E2.20.28rc.29/near/11",
        )

    def test_direct_message_links_list_user_ids(self) -> None:
        """DM links list the participants' ids, with -group from three on."""
        message = private_event()["message"]
        self.assertEqual(message_url(REALM_URL, message), "https://chat.example.com/#narrow/dm/3,7/near/11")
        message["display_recipient"].append({"id": 9, "email": "c@example.com"})
        self.assertEqual(message_url("", message), "/#narrow/dm/3,7,9-group/near/11")

    def test_hash_encoding(self) -> None:
        """Zulip's hash encoding turns % into . and escapes . ( )."""
        self.assertEqual(encode_hash_component("a.b (c)%"), "a.2Eb.20.28c.29.25")

    def test_reply_event_format(self) -> None:
        """The reply event has the documented fields."""
        event = bot_reply(stream_event(), "pong", {"w": 1}, "ci").to_event()
        self.assertEqual(
            event,
            {
                "type": "outgoing_webhook_response",
                "kind": "reply",
                "bot_user_id": 7,
                "bot_email": "helper-bot@example.com",
                "service_name": "ci",
                "message_id": 11,
                "recipient": {"type": "stream", "stream": "devel", "stream_id": 4, "topic": "builds"},
                "content": "pong",
                "widget_content": {"w": 1},
            },
        )
        self.assertEqual(
            bot_reply(private_event(), "hi").to_event()["recipient"],
            {"type": "private", "emails": ["iago@example.com", "helper-bot@example.com"]},
        )


class QueueSinkTests(TestCase):
    def test_publishes_reply_events_to_the_queue(self) -> None:
        """Replies are published as reply events to outgoing_webhook_responses."""
        publisher = RecordingPublisher()
        reply = bot_reply(stream_event(), "pong")
        self.successResultOf(QueueReplySink(publisher).send(reply))
        self.assertEqual(publisher.published, [("outgoing_webhook_responses", reply.to_event())])

    def test_publish_failure_is_transient(self) -> None:
        """A publish that fails makes a TransientError (the event is retried)."""
        sink = QueueReplySink(RecordingPublisher(RuntimeError("broker unavailable")))
        self.failureResultOf(sink.send(bot_reply(stream_event(), "pong")), TransientError)


class FakeZulip(Resource):
    """Zulip's POST /api/v1/messages, answering ``status``."""

    isLeaf = True

    def __init__(self, status: int = 200, body: bytes = b'{"result": "success", "msg": "", "id": 42}') -> None:
        super().__init__()
        self.status = status
        self.body = body
        self.requests: list[tuple[bytes, bytes | None, dict[str, str]]] = []

    def render_POST(self, request: Request) -> bytes:
        fields = dict(parse_qsl(_body(request).decode()))
        self.requests.append((request.path, request.getHeader(b"authorization"), fields))
        request.setResponseCode(self.status)
        return self.body


class RestSinkTests(TestCase):
    def make(self, resource: FakeZulip) -> tuple[RestReplySink, RequestTraversalAgent]:
        agent = RequestTraversalAgent(resource)
        client = WebhookClient(Clock(), agent)
        return RestReplySink(client, "https://chat.example.com/", {"helper-bot@example.com": "KEY"}), agent

    def send(self, sink: RestReplySink, agent: RequestTraversalAgent, reply: Any) -> Deferred[None]:
        d = sink.send(reply)
        agent.flush()
        return d

    def test_posts_stream_replies_as_the_bot(self) -> None:
        """A stream reply is POSTed to /api/v1/messages with basic auth and stream/topic fields."""
        zulip = FakeZulip()
        sink, agent = self.make(zulip)
        self.successResultOf(self.send(sink, agent, bot_reply(stream_event(), "pong")))
        path, auth, fields = zulip.requests[0]
        self.assertEqual(path, b"/api/v1/messages")
        self.assertEqual(auth, b"Basic " + base64.b64encode(b"helper-bot@example.com:KEY"))
        self.assertEqual(fields, {"type": "stream", "to": "devel", "topic": "builds", "content": "pong"})

    def test_posts_private_replies_to_the_conversation(self) -> None:
        """A DM reply goes to the JSON list of the conversation's emails."""
        zulip = FakeZulip()
        sink, agent = self.make(zulip)
        self.successResultOf(self.send(sink, agent, bot_reply(private_event(), "hi")))
        fields = zulip.requests[0][2]
        self.assertEqual(fields["type"], "private")
        self.assertEqual(json.loads(fields["to"]), ["iago@example.com", "helper-bot@example.com"])

    def test_owner_without_address_is_skipped(self) -> None:
        """A notice for an owner whose email is unknown is not sent."""
        zulip = FakeZulip()
        sink, agent = self.make(zulip)
        self.successResultOf(self.send(sink, agent, owner_notice(stream_event(), "")))
        self.assertEqual(zulip.requests, [])

    def test_unknown_bot_is_rejected(self) -> None:
        """A bot without a configured API key cannot post: ReplyRejected."""
        sink, agent = self.make(FakeZulip())
        reply = bot_reply(stream_event(bot_email="nobody@example.com"), "x")
        self.failureResultOf(self.send(sink, agent, reply), ReplyRejected)

    def test_4xx_is_rejected_and_5xx_is_transient(self) -> None:
        """Zulip's 4xx is permanent for the reply (with its msg); 5xx is retried."""
        sink, agent = self.make(FakeZulip(400, b'{"result": "error", "msg": "Stream does not exist"}'))
        failure = self.failureResultOf(self.send(sink, agent, bot_reply(stream_event(), "x")), ReplyRejected)
        self.assertIn("Stream does not exist", str(failure.value))
        sink, agent = self.make(FakeZulip(502, b"bad gateway"))
        self.failureResultOf(self.send(sink, agent, bot_reply(stream_event(), "x")), TransientError)


class BuildTests(TestCase):
    def test_builds_the_configured_sink(self) -> None:
        """reply_sink chooses the queue sink (default) or the REST sink; only the REST one asks for a client."""
        asked: list[WebhookClient] = []

        def rest_client() -> WebhookClient:
            asked.append(build_rest_client(reactor, settings, resources.http_pool("webhook_replies")))
            return asked[-1]

        resources, reactor, publisher = memory_resources()
        settings = OutgoingWebhookSettings()
        self.assertIsInstance(build_reply_sink(settings, publisher, rest_client), QueueReplySink)
        self.assertEqual(asked, [])
        settings = OutgoingWebhookSettings(reply_sink="rest", rest_site="https://chat.example.com", rest_timeout=4)
        self.assertIsInstance(build_reply_sink(settings, publisher, rest_client), RestReplySink)
        (client,) = asked
        self.assertEqual((client.timeout, client._slots.limit), (4, REST_CONCURRENCY))


def _body(request: Request) -> bytes:
    """The request's body (twisted.web always gives a POST one)."""
    assert request.content is not None
    body: bytes = request.content.read()
    return body
