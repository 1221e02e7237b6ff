"""Tests for zqtwisted.webhooks.response: how a bot server's answer is understood."""

from __future__ import annotations

import json
from typing import Any

from twisted.trial.unittest import TestCase

from zqtwisted.webhooks.response import (
    INVALID_FORMAT,
    INVALID_JSON,
    BotReply,
    HttpFailure,
    InvalidResponse,
    NoReply,
    classify_response,
    decode_text,
)


def generic(data: Any, status: int = 200) -> object:
    return classify_response("generic", status, json.dumps(data).encode())


class GenericTests(TestCase):
    def test_content_is_a_reply(self) -> None:
        """{"content": ...} is a reply with that content."""
        self.assertEqual(generic({"content": "pong"}), BotReply("pong"))

    def test_widget_content_travels_with_content(self) -> None:
        """widget_content is kept next to the content."""
        self.assertEqual(generic({"content": "c", "widget_content": {"w": 1}}), BotReply("c", {"w": 1}))

    def test_response_string_is_still_honoured(self) -> None:
        """The deprecated response_string wins over content, as in Zulip."""
        self.assertEqual(generic({"response_string": 42, "content": "x"}), BotReply("42"))

    def test_response_not_required_means_no_reply(self) -> None:
        """response_not_required: true means no reply, even with content."""
        self.assertIsInstance(generic({"response_not_required": True, "content": "x"}), NoReply)

    def test_no_content_means_no_reply(self) -> None:
        """An object without content is no reply."""
        self.assertIsInstance(generic({"other": 1}), NoReply)

    def test_blank_content_means_no_reply(self) -> None:
        """Content that is empty or only whitespace is no reply."""
        self.assertIsInstance(generic({"content": "  \n"}), NoReply)

    def test_empty_body_means_no_reply(self) -> None:
        """An empty (or blank) body is no reply."""
        self.assertIsInstance(classify_response("generic", 200, b""), NoReply)
        self.assertIsInstance(classify_response("generic", 204, b" \r\n"), NoReply)

    def test_json_empty_string_means_no_reply(self) -> None:
        """Old zulip_botserver's json.dumps("") is no reply."""
        self.assertIsInstance(generic(""), NoReply)

    def test_invalid_json_is_invalid(self) -> None:
        """A body that is not JSON fails with Zulip's text and keeps the text."""
        self.assertEqual(classify_response("generic", 200, b"<html>"), InvalidResponse(INVALID_JSON, "<html>"))
        self.assertEqual(INVALID_JSON, "Invalid JSON in response")

    def test_non_object_json_is_invalid_format(self) -> None:
        """JSON that is not an object fails with "Invalid response format"."""
        for data in ([1, 2], 3, "text", None):
            outcome = generic(data)
            self.assertIsInstance(outcome, InvalidResponse)
            assert isinstance(outcome, InvalidResponse)
            self.assertEqual(outcome.message, INVALID_FORMAT)
        self.assertEqual(INVALID_FORMAT, "Invalid response format")

    def test_any_2xx_is_success(self) -> None:
        """201 and 299 are successes like 200."""
        self.assertEqual(generic({"content": "a"}, 201), BotReply("a"))
        self.assertEqual(generic({"content": "a"}, 299), BotReply("a"))


class SlackTests(TestCase):
    def test_text_is_a_reply(self) -> None:
        """Slack's {"text": ...} is the reply."""
        self.assertEqual(classify_response("slack", 200, b'{"text": "hi"}'), BotReply("hi"))

    def test_content_is_ignored(self) -> None:
        """A Slack service's content field means nothing."""
        self.assertIsInstance(classify_response("slack", 200, b'{"content": "hi"}'), NoReply)

    def test_null_text_is_no_reply(self) -> None:
        """text: null is no reply."""
        self.assertIsInstance(classify_response("slack", 200, b'{"text": null}'), NoReply)


class FailureTests(TestCase):
    def test_non_2xx_is_a_failure_with_zulip_text(self) -> None:
        """Any status outside 2xx is a failure: "Third party responded with {status}"."""
        for status in (500, 404, 302, 101):
            outcome = classify_response("generic", status, b"oops")
            self.assertEqual(outcome, HttpFailure(status, b"oops"))
            assert isinstance(outcome, HttpFailure)
            self.assertEqual(outcome.message, f"Third party responded with {status}")


class DecodeTests(TestCase):
    def test_charset_of_the_content_type_is_used(self) -> None:
        """The Content-Type charset decides the decoding; UTF-8 otherwise."""
        self.assertEqual(decode_text("é".encode("latin-1"), "application/json; charset=ISO-8859-1"), "é")
        self.assertEqual(decode_text("é".encode()), "é")

    def test_bad_bytes_and_unknown_charsets_do_not_fail(self) -> None:
        """Undecodable bytes are replaced; an unknown charset falls back to UTF-8."""
        self.assertEqual(decode_text(b"\xff", None), "\ufffd")
        self.assertEqual(decode_text(b"ok", 'text/plain; charset="nonsense"'), "ok")
