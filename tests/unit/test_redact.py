"""Secrets are masked in events and text before they reach a log line or an error file."""

from __future__ import annotations

from twisted.trial import unittest

from zqtwisted.runtime.redact import redact_event, redact_text


class RedactTests(unittest.TestCase):
    def test_secret_keys_are_masked_at_any_depth(self) -> None:
        """Values of token/password/api_key/... keys are masked, nested ones too; others kept."""
        event = {
            "services": [{"name": "ci", "token": "s3cret", "base_url": "https://bots.example.com"}],
            "smtp": {"password": "pw", "user": "u"},
            "api_key": "k",
            "empty_token": "",
            "n": 1,
        }
        self.assertEqual(
            redact_event(event),
            {
                "services": [{"name": "ci", "token": "***", "base_url": "https://bots.example.com"}],
                "smtp": {"password": "***", "user": "u"},
                "api_key": "***",
                "empty_token": "",
                "n": 1,
            },
        )
        self.assertEqual(event["api_key"], "k", "the original is not changed")

    def test_url_passwords_are_masked_in_text(self) -> None:
        """A password inside a URL is masked wherever the URL appears."""
        self.assertEqual(
            redact_text("connect amqp://zulip:hunter2@mq:5672/%2F failed"),
            "connect amqp://zulip:***@mq:5672/%2F failed",
        )
        self.assertEqual(redact_text("https://example.com/path"), "https://example.com/path")
