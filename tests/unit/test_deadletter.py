"""Dead letters: Zulip's error-file line and the headers of the .failed message."""

from __future__ import annotations

import json
import os
import time
from datetime import UTC, datetime

from twisted.internet.defer import TimeoutError as DeferredTimeout
from twisted.python.failure import Failure
from twisted.trial import unittest

from zqtwisted.errors import BodyTooLarge, PermanentError
from zqtwisted.runtime.deadletter import (
    EXCERPT_BYTES,
    H_FIRST,
    DeadLetter,
    append_locked,
    describe,
    error_entries,
    error_file_line,
    failed_queue,
    failure_message,
    letter_for,
    malformed_entry,
    replay_body,
    replayable,
    safe_headers,
)


class DeadLetterTests(unittest.TestCase):
    def test_describes_the_brokers_own_dead_letters(self) -> None:
        """A message RabbitMQ dead-lettered (a quorum queue's delivery limit) is described from its x-death."""
        when = datetime(2026, 11, 30, 5, 2, 55, tzinfo=UTC)
        headers = {
            "x-death": [{"count": 1, "reason": "delivery_limit", "queue": "push", "time": when, "exchange": ""}],
            "x-first-death-reason": "delivery_limit",
        }
        described = describe(headers)
        self.assertEqual(
            (described["reason"], described["queue"], described["last_failure"]),
            ("broker: delivery_limit", "push", "2026-11-30T05:02:55.000Z"),
        )
        self.assertIsNone(describe({"x-death": "garbage"})["reason"])

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


class ReplayBodyTests(unittest.TestCase):
    def test_replay_body(self) -> None:
        """A replayed event loses failed_tries; a malformed body or a non-object goes back as it was."""
        self.assertEqual(json.loads(replay_body(b'{"a": 1, "failed_tries": 3}')), {"a": 1})
        self.assertEqual(replay_body(b"{oops"), b"{oops")
        self.assertEqual(replay_body(b"[1]"), b"[1]")


class HugeBodyTests(unittest.TestCase):
    def test_a_body_too_large_becomes_an_excerpt_with_its_size(self) -> None:
        """The dead letter of a body refused as too large keeps EXCERPT_BYTES of it and says its size."""
        body = b"z" * (EXCERPT_BYTES * 3)
        letter = letter_for("q", body, None, {}, Failure(BodyTooLarge(50_000_000, 1_048_576)), "malformed")
        self.assertEqual((letter.body, letter.original_size), (body[:EXCERPT_BYTES], 50_000_000))
        headers = letter.headers(0.0)
        self.assertEqual(headers["x-zq-original-size"], 50_000_000)
        self.assertEqual(describe(headers)["original_size"], 50_000_000)
        self.assertFalse(replayable(headers, letter.body))
        [entry] = error_entries([letter])
        self.assertEqual(entry, "z" * 1000)

    def test_other_failures_keep_the_whole_body(self) -> None:
        """Any other failure keeps the body whole, with no size header: it can be replayed."""
        letter = letter_for("q", b"{oops", None, {}, Failure(PermanentError("no")), "permanent")
        self.assertEqual((letter.body, letter.original_size), (b"{oops", None))
        self.assertNotIn("x-zq-original-size", letter.headers(0.0))
        self.assertNotIn("original_size", describe(letter.headers(0.0)))
        self.assertTrue(replayable(letter.headers(0.0), letter.body))
        self.assertTrue(replayable({"x-zq-original-size": 5}, b"{oops"))


class ZulipFormatTests(unittest.TestCase):
    def test_line_is_compact_utf8_json_as_orjson_writes_it(self) -> None:
        """Item 4: no spaces, no \\u escapes, non-finite numbers as null: orjson.dumps(events).decode()."""
        line = error_file_line([{"name": "Zoë 😀", "n": [1, 2.5], "x": float("nan")}], 0.0)
        self.assertEqual(line.split("\t", 1)[1], '[{"name":"Zoë 😀","n":[1,2.5],"x":null}]\n')

    def test_malformed_body_is_the_object_when_it_parses(self) -> None:
        """A body that is a JSON object (it failed validation) is recorded as the object; anything else as text."""
        self.assertEqual(malformed_entry(b'{"user_profile_id": 1e40}'), {"user_profile_id": 1e40})
        self.assertEqual(malformed_entry(b"[1, 2]"), "[1, 2]")
        self.assertEqual(malformed_entry(b"\xff\xfeoops"), "\ufffd\ufffdoops")
        self.assertEqual(len(malformed_entry(b"x" * 5000)), 1000)

    def test_secrets_in_malformed_bodies_are_masked(self) -> None:
        """Defect 4: password / api_key / token values of a raw body, and ?token= in URLs, never reach the file."""
        raw = b'{"password": "hunter2", "api_key": "k3y-abc", "bot": {"token": "tok-123"'  # cut: not JSON
        parsed = b'{"service": {"base_url": "https://bot.example.com/hook?token=tok-456&x=1"}, "api_key": "k"}'
        line = error_file_line(error_entries([letter(raw), letter(parsed)]), 0.0)
        for secret in ("hunter2", "k3y-abc", "tok-123", "tok-456"):
            self.assertNotIn(secret, line)
        self.assertIn("token=***", line)
        self.assertIn('"api_key":"***"', line)

    def test_headers_are_always_encodable(self) -> None:
        """Defect 1: attempts and first-failure headers fit what pika can encode, whatever the event said."""
        import pika.data

        failure = Failure(ValueError("boom"))
        event = {"failed_tries": 2**63 - 1}
        dead = letter_for("q", b"{}", event, {H_FIRST: 2**70}, failure, "permanent")
        headers = dead.headers(0.0)
        pika.data.encode_table([], headers)
        self.assertLess(headers["x-zq-attempts"], 2**31)
        self.assertEqual(headers[H_FIRST], headers["x-zq-last-failure"], "a first-failure that is not text is replaced")
        self.assertEqual(safe_headers({"a": 2**80, "b": -(2**80), "c": 1.5, "d": None})["a"], 2**63 - 1)

    def test_append_uses_zulips_lock_file(self) -> None:
        """Lines are appended (bytes, UTF-8) next to Zulip's {file}.lock."""
        root = self.mktemp()
        os.makedirs(root)
        path = os.path.join(root, "q.errors")
        append_locked(path, "é\n".encode())
        append_locked(path, b"b\n")
        with open(path, encoding="utf-8") as f:
            self.assertEqual(f.read(), "é\nb\n")
        self.assertTrue(os.path.exists(path + ".lock"))


def letter(body: bytes) -> DeadLetter:
    return DeadLetter(queue="q", body=body, event=None, reason="malformed", exception="E", message="m", attempts=1)


class FailureMessageTests(unittest.TestCase):
    def test_a_consume_time_limit_reads_as_timed_out(self) -> None:
        """A dead letter of a timed-out consume says "timed out after N s", not Twisted's "(5, 'Deferred')"."""
        self.assertEqual(failure_message(Failure(DeferredTimeout(5, "Deferred"))), "timed out after 5 s")
        self.assertEqual(failure_message(Failure(ValueError("bad"))), "bad")
