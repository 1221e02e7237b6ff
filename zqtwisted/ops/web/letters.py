"""How the dashboard shows a dead letter: its headers, its body with secrets masked, an id to act on.

A dead letter (a message of ``{queue}.failed``, see :mod:`zqtwisted.runtime.deadletter`)
has no id of its own in AMQP: :func:`letter_id` derives one from its body and its
dead-letter headers, so that "replay this one" finds it again (two identical
letters share an id, and replaying either is the same).  The body is masked as
the logs mask it (:class:`zqtwisted.ops.logs.SecretMasker`) and cut to
:data:`BODY_LIMIT` characters.  Nothing here does I/O.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from zqtwisted.runtime.deadletter import H_FIRST, H_LAST, H_QUEUE, describe

BODY_LIMIT = 16 * 1024
# Each string of an event is cut to this length before it is masked (masking costs more than linear
# time on long unbroken strings); a malformed body is shown up to twice as much.
STRING_LIMIT = 1000
PAGE_SIZE = 20
MAX_PAGE_SIZE = 100
# Listing takes every letter up to the page's end off the queue (and puts them back): bounded.
MAX_BROWSE = 1000


class Masker(Protocol):
    """Masks secrets (:class:`zqtwisted.ops.logs.SecretMasker`)."""

    def mask(self, text: str) -> str: ...

    def mask_value(self, value: Any) -> Any: ...


def _text(value: Any) -> Any:
    """A header value as JSON can carry it (pika may hand bytes)."""
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return value


def letter_id(body: bytes, headers: Mapping[str, Any]) -> str:
    """A stable id of a dead letter: a hash of its body and when and where it failed."""
    digest = hashlib.sha256(body)
    for name in (H_QUEUE, H_FIRST, H_LAST):
        digest.update(b"\0" + str(_text(headers.get(name))).encode("utf-8", "replace"))
    return digest.hexdigest()[:20]


@dataclass(frozen=True)
class LetterView:
    id: str
    reason: str | None
    exception: str | None
    message: str | None
    attempts: int | None
    first_failure: str | None
    last_failure: str | None
    original_queue: str | None
    size: int
    body: str
    truncated: bool
    malformed: bool

    def as_json(self) -> dict[str, Any]:
        return dict(vars(self))


def cut_strings(value: Any, limit: int = STRING_LIMIT) -> Any:
    """A copy of a JSON value whose strings are at most ``limit`` characters (saying how much was cut)."""
    if isinstance(value, str):
        return value if len(value) <= limit else f"{value[:limit]}… [{len(value) - limit} more characters]"
    if isinstance(value, dict):
        return {k: cut_strings(v, limit) for k, v in value.items()}
    if isinstance(value, list):
        return [cut_strings(v, limit) for v in value]
    return value


def masked_body(body: bytes, masker: Masker) -> tuple[str, bool]:
    """The body to show, secrets masked: indented JSON, or the raw text of a malformed one; and whether it is.

    Long strings are cut before masking (:data:`STRING_LIMIT`); an event nested too
    deep to walk is shown as text, like a malformed one.
    """
    try:
        event = json.loads(body)
        shown = masker.mask_value(cut_strings(event))
        return json.dumps(shown, indent=2, ensure_ascii=False, sort_keys=True), False
    except (ValueError, RecursionError):
        text = body[: 2 * STRING_LIMIT].decode("utf-8", "replace")
        return masker.mask(text), True


def letter_view(body: bytes, headers: Mapping[str, Any], masker: Masker) -> LetterView:
    info = {k: _text(v) for k, v in describe(headers).items()}
    text, malformed = masked_body(body, masker)
    cut = len(text) > BODY_LIMIT or (malformed and len(body) > 2 * STRING_LIMIT)
    attempts = info["attempts"]
    message = info["message"]
    return LetterView(
        id=letter_id(body, headers),
        reason=info["reason"],
        exception=info["exception"],
        message=masker.mask(message) if isinstance(message, str) else None,
        attempts=attempts if isinstance(attempts, int) else None,
        first_failure=info["first_failure"],
        last_failure=info["last_failure"],
        original_queue=info["queue"],
        size=len(body),
        body=text[:BODY_LIMIT],
        truncated=cut,
        malformed=malformed,
    )


@dataclass(frozen=True)
class LetterPage:
    """One page of a queue's dead letters; ``total`` counts those waiting in ``{queue}.failed``."""

    queue: str
    total: int
    offset: int
    limit: int
    letters: Sequence[LetterView]

    def as_json(self) -> dict[str, Any]:
        return {
            "queue": self.queue,
            "total": self.total,
            "offset": self.offset,
            "limit": self.limit,
            "max_offset": MAX_BROWSE - self.limit,
            "letters": [letter.as_json() for letter in self.letters],
        }


def page_bounds(offset: str | None, limit: str | None) -> tuple[int, int]:
    """``offset`` and ``limit`` of a listing from query parameters; ``ValueError`` when out of range."""
    start = int(offset) if offset else 0
    size = int(limit) if limit else PAGE_SIZE
    if start < 0 or not 1 <= size <= MAX_PAGE_SIZE:
        raise ValueError(f"offset must be >= 0 and limit between 1 and {MAX_PAGE_SIZE}")
    if start + size > MAX_BROWSE:
        raise ValueError(f"only the first {MAX_BROWSE} dead letters can be listed (offset + limit)")
    return start, size
