"""How the dashboard shows dead letters: ids, masked bodies, headers, pages."""

from __future__ import annotations

import json

from twisted.trial.unittest import TestCase

from zqtwisted.ops.logs import SecretMasker
from zqtwisted.ops.web.letters import (
    BODY_LIMIT,
    MAX_BROWSE,
    MAX_PAGE_SIZE,
    PAGE_SIZE,
    STRING_LIMIT,
    LetterPage,
    letter_id,
    letter_view,
    masked_body,
    page_bounds,
)
from zqtwisted.runtime.deadletter import DeadLetter

HEADERS = DeadLetter("q", b"{}", {}, "permanent", "PermanentError", "boom", 3, "2026-01-01T00:00:00.000Z").headers(
    1_800_000_000.0
)


class IdTests(TestCase):
    def test_id_is_stable_and_tells_letters_apart(self) -> None:
        """The same letter gets the same id; another body or failure time gets another."""
        self.assertEqual(letter_id(b'{"a":1}', HEADERS), letter_id(b'{"a":1}', dict(HEADERS)))
        self.assertNotEqual(letter_id(b'{"a":1}', HEADERS), letter_id(b'{"a":2}', HEADERS))
        later = {**HEADERS, "x-zq-last-failure": "2027-01-01T00:00:00.000Z"}
        self.assertNotEqual(letter_id(b'{"a":1}', HEADERS), letter_id(b'{"a":1}', later))

    def test_id_accepts_bytes_headers(self) -> None:
        """Header values that pika hands as bytes give the same id as strings."""
        raw = {k: v.encode() if isinstance(v, str) else v for k, v in HEADERS.items()}
        self.assertEqual(letter_id(b"x", raw), letter_id(b"x", HEADERS))


class ViewTests(TestCase):
    def setUp(self) -> None:
        self.masker = SecretMasker()
        self.masker.register("hunter2-broker-password")

    def test_view_shows_headers_and_masks_the_body(self) -> None:
        """Reason, exception, attempts and times come from the headers; secrets in the body are masked."""
        body = json.dumps(
            {"id": 7, "api_key": "abc123", "url": "https://u:pw@example.com", "note": "hunter2-broker-password"}
        )
        view = letter_view(body.encode(), HEADERS, self.masker)
        self.assertEqual(
            (view.reason, view.exception, view.message, view.attempts, view.original_queue),
            ("permanent", "PermanentError", "boom", 3, "q"),
        )
        self.assertEqual(view.first_failure, "2026-01-01T00:00:00.000Z")
        self.assertTrue(view.last_failure and view.last_failure.startswith("2027-01-15"))
        shown = json.loads(view.body)
        self.assertEqual(shown["api_key"], "***")
        self.assertEqual(shown["url"], "https://u:***@example.com")
        self.assertEqual(shown["note"], "***")
        self.assertFalse(view.malformed or view.truncated)
        self.assertEqual(view.size, len(body))
        self.assertEqual(view.as_json()["id"], view.id)

    def test_malformed_body_is_shown_as_text_masked(self) -> None:
        """A body that is not JSON is shown as text, still masked."""
        text, malformed = masked_body(b"not json token=abcdef123 \xff", self.masker)
        self.assertTrue(malformed)
        self.assertIn("token=***", text)
        self.assertNotIn("abcdef123", text)

    def test_long_strings_and_big_bodies_are_cut(self) -> None:
        """Each string is cut (saying how much) before masking; the whole body to BODY_LIMIT, flagged."""
        view = letter_view(json.dumps({"text": "x" * (STRING_LIMIT + 5)}).encode(), {}, self.masker)
        self.assertIn("x" * STRING_LIMIT + "… [5 more characters]", json.loads(view.body)["text"])
        self.assertFalse(view.truncated)
        self.assertIsNone(view.reason)
        self.assertIsNone(view.attempts)
        many = {f"k{i}": "y" * STRING_LIMIT for i in range(2 * BODY_LIMIT // STRING_LIMIT)}
        view = letter_view(json.dumps(many).encode(), {}, self.masker)
        self.assertEqual(len(view.body), BODY_LIMIT)
        self.assertTrue(view.truncated)

    def test_malformed_or_too_deep_bodies_are_shown_as_cut_text(self) -> None:
        """A malformed body shows its first 2 x STRING_LIMIT bytes; an event nested too deep is shown as text."""
        view = letter_view(b"{" * (3 * STRING_LIMIT), {}, self.masker)
        self.assertTrue(view.malformed and view.truncated)
        self.assertEqual(len(view.body), 2 * STRING_LIMIT)
        deep = b"[" * 100_000 + b"]" * 100_000
        view = letter_view(deep, {}, self.masker)
        self.assertTrue(view.malformed)

    def test_message_is_masked(self) -> None:
        """The failure message is masked too (it was written before a secret was registered, perhaps)."""
        view = letter_view(b"{}", {**HEADERS, "x-zq-message": "hunter2-broker-password rejected"}, self.masker)
        self.assertEqual(view.message, "*** rejected")


class PageTests(TestCase):
    def test_bounds(self) -> None:
        """offset/limit default to the first page; out-of-range values are errors."""
        self.assertEqual(page_bounds(None, None), (0, PAGE_SIZE))
        self.assertEqual(page_bounds("40", "20"), (40, 20))
        for offset, limit in (("-1", "20"), ("0", "0"), ("0", str(MAX_PAGE_SIZE + 1)), (str(MAX_BROWSE), "1")):
            with self.assertRaises(ValueError):
                page_bounds(offset, limit)
        with self.assertRaises(ValueError):
            page_bounds("x", None)

    def test_page_json(self) -> None:
        """A page says its queue, total, position and how far listing can go."""
        view = letter_view(b"{}", HEADERS, SecretMasker())
        body = LetterPage("q", 45, 20, 20, [view]).as_json()
        self.assertEqual((body["queue"], body["total"], body["offset"], body["limit"]), ("q", 45, 20, 20))
        self.assertEqual(body["max_offset"], MAX_BROWSE - 20)
        self.assertEqual(body["letters"][0]["reason"], "permanent")
