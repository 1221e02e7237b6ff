"""Dead letters: Zulip's error-file line and the headers of the .failed message."""

from __future__ import annotations

import json
import time

from twisted.trial import unittest

from zqtwisted.runtime.deadletter import DeadLetter, describe, error_file_line, failed_queue


class DeadLetterTests(unittest.TestCase):
    def test_error_file_line_is_zulips(self) -> None:
        """asctime, TAB, the JSON list of the events, newline; secrets masked."""
        now = 1_700_000_000.0
        line = error_file_line([{"a": 1}, {"password": "x"}], now)
        stamp, payload = line.rstrip("\n").split("\t")
        self.assertEqual(stamp, time.asctime(time.localtime(now)))
        self.assertEqual(json.loads(payload), [{"a": 1}, {"password": "***"}])
        self.assertTrue(line.endswith("\n"))

    def test_headers_name_the_reason_and_keep_the_first_failure(self) -> None:
        """The headers carry reason, exception, message, attempts, first/last failure and queue."""
        letter = DeadLetter(
            queue="email_senders",
            body=b"{}",
            event={},
            reason="retries-exhausted",
            exception="SMTPUnavailable",
            message="connect to smtp://u:pw@mail failed",
            attempts=4,
            first_failure="2026-11-23T02:00:00.000Z",
        )
        headers = letter.headers(1_700_000_000.0)
        self.assertEqual(
            describe(headers),
            {
                "reason": "retries-exhausted",
                "exception": "SMTPUnavailable",
                "message": "connect to smtp://u:***@mail failed",
                "attempts": 4,
                "first_failure": "2026-11-23T02:00:00.000Z",
                "last_failure": "2023-11-14T22:13:20.000Z",
                "queue": "email_senders",
            },
        )
        self.assertEqual(failed_queue("email_senders"), "email_senders.failed")

    def test_first_failure_defaults_to_now(self) -> None:
        """An event failing for the first time has first = last failure."""
        letter = DeadLetter("q", b"x", None, "malformed", "MalformedEventError", "bad", 1)
        headers = letter.headers(0.0)
        self.assertEqual(headers["x-zq-first-failure"], headers["x-zq-last-failure"])
