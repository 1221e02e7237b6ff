"""Tests for zqtwisted.zulip.rest: replies and read flags through Zulip's REST API, as the bot."""

from __future__ import annotations

import json
from urllib.parse import parse_qsl

from twisted.internet.task import Clock
from twisted.trial.unittest import TestCase

from tests.zulip_fakes import SETTINGS, FakePoster, bot_row
from zqtwisted.errors import TransientError
from zqtwisted.webhooks.client import WebhookConnectionError, WebhookResponse
from zqtwisted.webhooks.replies import Recipient, Reply, ReplyRejected
from zqtwisted.zulip.rest import BotReplySink, ZulipApi, build_api_client, message_fields
from zqtwisted.zulip.settings import ZulipSettings


def reply(recipient: Recipient, content: str = "pong") -> Reply:
    return Reply("reply", 30, "pong-bot@zulip.example.com", 501, recipient, content)


class RestTests(TestCase):
    def test_fields(self) -> None:
        """Channel replies go to the channel id and topic; DMs to the members' ids (or emails); no address: none."""
        channel = Recipient("stream", stream="Denmark", stream_id=7, topic="castle")
        self.assertEqual(
            message_fields(reply(channel)), [("type", "stream"), ("to", "7"), ("topic", "castle"), ("content", "pong")]
        )
        dm = Recipient("private", emails=("a@x", "b@x"), user_ids=(10, 30))
        self.assertEqual((message_fields(reply(dm)) or [])[1], ("to", json.dumps([10, 30])))
        by_email = message_fields(reply(Recipient("private", emails=("a@x",)))) or []
        self.assertEqual(by_email[1], ("to", json.dumps(["a@x"])))
        self.assertIsNone(message_fields(reply(Recipient("bot_owner"))))

    def test_posts_as_the_bot_at_the_realm(self) -> None:
        """A reply is posted to the realm's API with the bot's basic auth."""
        poster = FakePoster()
        sink = BotReplySink(ZulipApi(poster, SETTINGS), bot_row())
        self.successResultOf(sink.send(reply(Recipient("stream", stream_id=7, topic="t"))))
        url, _, _, headers = poster.calls[0]
        self.assertEqual(url, "https://zulip.zulip.example.com/api/v1/messages")
        self.assertEqual(headers, {"Authorization": "Basic cG9uZy1ib3RAenVsaXAuZXhhbXBsZS5jb206Ym90a2V5"})

    def test_api_url_and_host_header(self) -> None:
        """With api_url the request goes there, the realm's host in Host; mark_read posts the flag."""
        poster = FakePoster()
        settings = ZulipSettings(external_host="zulip.example.com", api_url="http://127.0.0.1:9991")
        self.successResultOf(ZulipApi(poster, settings).mark_read(bot_row(), 501))
        url, body, _, headers = poster.calls[0]
        self.assertEqual(
            (url, headers["Host"]), ("http://127.0.0.1:9991/api/v1/messages/flags", "zulip.zulip.example.com")
        )
        self.assertEqual(dict(parse_qsl(body.decode())), {"messages": "[501]", "op": "add", "flag": "read"})

    def test_answers(self) -> None:
        """4xx rejects the reply, 5xx and transport errors retry; no owner: nothing sent."""
        api = ZulipApi(
            FakePoster(
                WebhookResponse(400, b'{"msg": "no such channel"}'),
                WebhookResponse(503, b""),
                WebhookConnectionError("x"),
            ),
            SETTINGS,
        )
        channel = Recipient("stream", stream_id=7, topic="t")
        self.failureResultOf(api.send(bot_row(), reply(channel)), ReplyRejected)
        self.failureResultOf(api.send(bot_row(), reply(channel)), TransientError)
        self.failureResultOf(api.send(bot_row(), reply(channel)), TransientError)
        self.successResultOf(api.send(bot_row(), reply(Recipient("bot_owner"))))

    def test_client(self) -> None:
        """The API client has [zulip] api_timeout and the OutgoingWebhookResponse user agent."""
        from twisted.web.client import HTTPConnectionPool

        clock = Clock()
        client = build_api_client(clock, SETTINGS, HTTPConnectionPool(clock))  # type: ignore[arg-type]
        self.assertEqual((client.timeout, client.user_agent), (10.0, "OutgoingWebhookResponse/11.4"))
