"""Tests for zqtwisted.zulip.bouncer: Zulip mode's bouncer requests and how answers are sorted."""

from __future__ import annotations

import json
from urllib.parse import parse_qsl

from twisted.trial.unittest import TestCase

from tests.zulip_fakes import FakePoster
from zqtwisted.push.bouncer import BouncerRefused, BouncerRetryLater
from zqtwisted.webhooks.client import WebhookConnectionError, WebhookRequestError, WebhookResponse, WebhookTimeout
from zqtwisted.zulip.bouncer import ZulipBouncer, bouncer_answer, remotes_url


class BouncerTests(TestCase):
    def test_urls(self) -> None:
        """Endpoints are under /api/v1/remotes/ of the bouncer's host (any path replaced)."""
        self.assertEqual(
            remotes_url("https://push.example.com/x", "push/e2ee/notify"),
            "https://push.example.com/api/v1/remotes/push/e2ee/notify",
        )

    def test_json_post_as_the_server(self) -> None:
        """post_json sends compact JSON with the server's basic auth and returns the answer."""
        poster = FakePoster(WebhookResponse(200, b'{"result": "success", "device_id": 5}'))
        answer = self.successResultOf(
            ZulipBouncer(poster, "https://push.example.com", "uuid", "key").post_json("push/notify", {"a": 1})
        )
        self.assertEqual(answer["device_id"], 5)
        url, body, content_type, headers = poster.calls[0]
        self.assertEqual(
            (url, json.loads(body), content_type),
            ("https://push.example.com/api/v1/remotes/push/notify", {"a": 1}, "application/json"),
        )
        self.assertEqual(headers["Authorization"], "Basic dXVpZDprZXk=")

    def test_form_post(self) -> None:
        """post_form sends the fields form-encoded."""
        poster = FakePoster()
        self.successResultOf(
            ZulipBouncer(poster, "https://push.example.com", "u", "k").post_form(
                "push/e2ee/register", {"push_account_id": 7}
            )
        )
        self.assertEqual(dict(parse_qsl(poster.calls[0][1].decode())), {"push_account_id": "7"})

    def test_answers(self) -> None:
        """5xx and 429 retry later; 4xx carry code and msg; other statuses are refusals; bad JSON is empty."""
        self.assertRaises(BouncerRetryLater, bouncer_answer, 502, b"")
        self.assertRaises(BouncerRetryLater, bouncer_answer, 429, b"")
        with self.assertRaises(BouncerRefused) as refused:
            bouncer_answer(400, b'{"msg": "expired", "code": "REQUEST_EXPIRED"}')
        self.assertEqual((refused.exception.code, refused.exception.msg), ("REQUEST_EXPIRED", "expired"))
        with self.assertRaises(BouncerRefused) as other:
            bouncer_answer(302, b"")
        self.assertIn("302", other.exception.msg)
        self.assertEqual(bouncer_answer(200, b"not json"), {})

    def test_transport_failures(self) -> None:
        """Timeouts and connection errors retry later; other request errors are refusals."""
        for error, kind in (
            (WebhookTimeout("u", 5), BouncerRetryLater),
            (WebhookConnectionError("x"), BouncerRetryLater),
            (WebhookRequestError("bad"), BouncerRefused),
        ):
            bouncer = ZulipBouncer(FakePoster(error), "https://push.example.com", "u", "k")
            self.failureResultOf(bouncer.post_json("push/notify", {}), kind)
