"""Dead letters: Zulip's error file plus a durable ``{queue}.failed`` queue for replay.

Nothing is dropped: an event that ends in failure is appended to
``{error_dir}/{queue}.errors`` (Zulip's format, secrets masked) and published,
confirmed, to ``{queue}.failed`` with headers that say why.  Only then is the
original delivery acked (by :mod:`zqtwisted.runtime.settlement`); a dead letter that
is not confirmed within the publish timeout fails, and the original is requeued.

A body refused as too large (:class:`~zqtwisted.errors.BodyTooLarge`) is never copied
whole: its dead letter holds its first :data:`EXCERPT_BYTES` and says its size in
``x-zq-original-size``; such a letter cannot be replayed (:func:`replayable`).
"""

from __future__ import annotations

import fcntl
import json
import math
import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from twisted.internet.defer import Deferred, TimeoutError, gatherResults
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure

from zqtwisted.errors import BodyTooLarge
from zqtwisted.runtime.broker import ORIGINAL_SIZE, Broker
from zqtwisted.runtime.decisions import attempts_of
from zqtwisted.runtime.publisher import encode_event
from zqtwisted.runtime.redact import redact_event, redact_text

FAILED_SUFFIX = ".failed"
MESSAGE_LIMIT = 1000
RAW_LIMIT = 1000
# A malformed body larger than this is recorded as an excerpt of its text, never parsed.
MAX_PARSED_BODY = 1024 * 1024
# What the dead letter of a body refused as too large keeps of it.
EXCERPT_BYTES = 64 * 1024

H_REASON = "x-zq-reason"
H_EXCEPTION = "x-zq-exception"
H_MESSAGE = "x-zq-message"
H_ATTEMPTS = "x-zq-attempts"
H_FIRST = "x-zq-first-failure"
H_LAST = "x-zq-last-failure"
H_QUEUE = "x-zq-original-queue"
H_ORIGINAL_SIZE = ORIGINAL_SIZE


def failed_queue(queue: str) -> str:
    return queue + FAILED_SUFFIX


def iso_time(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def error_file_line(events: Sequence[Any], now: float, mask: Callable[[str], str] = redact_text) -> str:
    """One line of Zulip's error file: asctime, TAB, JSON list of the events (secrets masked), newline.

    The JSON is written as Zulip's ``orjson.dumps(events).decode()`` writes it: compact,
    UTF-8 characters as they are, ``NaN`` / ``Infinity`` as ``null``.  ``mask`` masks
    what is left in the text (the registered secrets of the configuration).
    """
    return f"{time.asctime(time.localtime(now))}\t{mask(zulip_json([redact_event(e) for e in events]))}\n"


def zulip_json(value: Any) -> str:
    """``value`` as orjson writes it: compact, not ASCII-escaped, non-finite numbers as null."""
    try:
        return json.dumps(value, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    except ValueError:
        return json.dumps(_finite(value), ensure_ascii=False, separators=(",", ":"))


def _finite(value: Any) -> Any:
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


# AMQP header integers are signed 64-bit: what pika can encode.
_HEADER_INT = (-(2**63), 2**63 - 1)


def safe_headers(headers: Mapping[str, Any]) -> dict[str, Any]:
    """Header values pika can always encode: integers clamped, strings bounded, anything else as text."""
    safe: dict[str, Any] = {}
    for key, value in headers.items():
        if value is None or isinstance(value, bool):
            safe[key] = value
        elif isinstance(value, int):
            safe[key] = min(max(value, _HEADER_INT[0]), _HEADER_INT[1])
        elif isinstance(value, str):
            safe[key] = value[:MESSAGE_LIMIT]
        else:
            safe[key] = str(value)[:MESSAGE_LIMIT]
    return safe


def header_text(value: object) -> str | None:
    """A header that should hold text (``x-zq-first-failure``), or None when it holds anything else."""
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    return value[:100] if isinstance(value, str) and value else None


@dataclass(frozen=True)
class DeadLetter:
    """Why one event ended in failure."""

    queue: str
    body: bytes
    event: Any  # the decoded event, or None when the body was malformed
    reason: str
    exception: str
    message: str
    attempts: int
    first_failure: str | None = None
    original_size: int | None = None  # set when ``body`` is an excerpt of a body of this size

    def headers(self, now: float) -> dict[str, Any]:
        last = iso_time(now)
        headers = {
            H_REASON: self.reason,
            H_EXCEPTION: self.exception,
            H_MESSAGE: redact_text(self.message)[:MESSAGE_LIMIT],
            H_ATTEMPTS: self.attempts,
            H_FIRST: self.first_failure or last,
            H_LAST: last,
            H_QUEUE: self.queue,
        }
        if self.original_size is not None:
            headers[H_ORIGINAL_SIZE] = self.original_size
        return safe_headers(headers)


def exception_name(failure: Failure) -> str:
    cls = failure.type
    return getattr(cls, "__qualname__", str(cls))


def describe_failure(failure: Failure) -> str:
    """``ExceptionName: message``, for log lines."""
    return f"{exception_name(failure)}: {failure.value}"


def failure_message(failure: Failure) -> str:
    """What a dead letter says of ``failure``: its message, or "timed out after N s" for a consume time limit.

    (Twisted's ``TimeoutError`` from ``addTimeout`` prints as ``(5, 'Deferred')``.)
    """
    if failure.check(TimeoutError):
        args = failure.value.args if failure.value is not None else ()
        limit = args[0] if args else None
        return f"timed out after {limit} s" if isinstance(limit, (int, float)) else "timed out"
    return str(failure.value)


def letter_for(
    queue: str, body: bytes, event: Any, headers: Mapping[str, Any], failure: Failure, reason: str
) -> DeadLetter:
    """The dead letter of a delivery (its ``body`` and ``headers``) whose event ended in ``failure``.

    A body refused as too large is kept as an excerpt, with its size.
    """
    too_large = failure.value if isinstance(failure.value, BodyTooLarge) else None
    return DeadLetter(
        queue=queue,
        body=body[:EXCERPT_BYTES] if too_large is not None else body,
        event=event,
        reason=reason,
        exception=exception_name(failure),
        message=failure_message(failure),
        attempts=attempts_of(event.get("failed_tries") if isinstance(event, dict) else None),
        first_failure=header_text(headers.get(H_FIRST)),
        original_size=too_large.size if too_large is not None else None,
    )


def error_entries(letters: Sequence[DeadLetter]) -> list[Any]:
    """What the error file records for ``letters``: the events, then the bodies of malformed ones.

    A malformed body that is a JSON object (it failed validation) is recorded as that
    object, as Zulip would record the event; any other body as its text, cut to
    :data:`RAW_LIMIT` characters.  Secrets are masked by :func:`error_file_line`.
    """
    events = [letter.event for letter in letters if letter.event is not None]
    raw = [malformed_entry(letter.body) for letter in letters if letter.event is None]
    return [*events, *raw]


def malformed_entry(body: bytes) -> Any:
    """The error-file entry of a malformed body: the JSON object it holds, else its text (bounded)."""
    if len(body) <= MAX_PARSED_BODY:
        try:
            event = json.loads(body)
        except (UnicodeDecodeError, ValueError, RecursionError):
            event = None
        if isinstance(event, dict):
            return event
    return body[: RAW_LIMIT * 4].decode("utf-8", "replace")[:RAW_LIMIT]


class DeadLetterer:
    log = Logger()

    def __init__(
        self,
        broker: Broker,
        error_dir: str,
        clock: IReactorTime,
        publish_timeout: float,
        mask: Callable[[str], str] = redact_text,
    ) -> None:
        self._broker = broker
        self._error_dir = error_dir
        self._clock = clock
        self._timeout = publish_timeout
        self._mask = mask

    def error_path(self, queue: str) -> str:
        return os.path.join(self._error_dir, f"{queue}.errors")

    def write_error_file(self, queue: str, events: Sequence[Any]) -> None:
        """Append one line for ``events`` (a whole batch shares one line, as in Zulip)."""
        line = error_file_line(events, self._clock.seconds(), self._mask).encode("utf-8", "replace")
        try:
            os.makedirs(self._error_dir, exist_ok=True)
            append_locked(self.error_path(queue), line)
        except OSError as e:
            self.log.error("Cannot write error file {path}: {error}", path=self.error_path(queue), error=e.strerror)

    def send(self, queue: str, letters: Sequence[DeadLetter]) -> Deferred[list[None]]:
        """Record ``letters`` in the error file (one line), then publish them; fires when all are confirmed."""
        self.write_error_file(queue, error_entries(letters))
        return self.publish(letters)

    def publish(self, letters: Sequence[DeadLetter]) -> Deferred[list[None]]:
        """Publish each letter to its ``.failed`` queue; fires when all are confirmed."""
        now = self._clock.seconds()
        return gatherResults(
            [
                self._broker.publish(failed_queue(letter.queue), letter.body, letter.headers(now), self._timeout)
                for letter in letters
            ],
            consumeErrors=True,
        )


def replayable(headers: Mapping[str, Any], body: bytes) -> bool:
    """Whether a dead letter holds its whole event: not the excerpt of a body refused as too large."""
    size = headers.get(H_ORIGINAL_SIZE)
    return not (isinstance(size, int) and size > len(body))


def replay_body(body: bytes) -> bytes:
    """The event to re-publish: ``failed_tries`` removed; a malformed body as it was."""
    try:
        event = json.loads(body)
    except ValueError:
        return body
    if isinstance(event, dict):
        event.pop("failed_tries", None)
        return encode_event(event)
    return body


def append_locked(path: str, data: bytes) -> None:
    """Append ``data`` under Zulip's lock (``flock`` on ``{path}.lock``), in one write.

    The lock is only tried: if another process holds it, the single ``O_APPEND`` write
    still lands whole, and the reactor never waits on someone else's lock.
    """
    with open(path + ".lock", "w") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            pass
        with open(path, "ab") as f:
            f.write(data)


def describe(headers: Mapping[str, Any]) -> dict[str, Any]:
    """The dead-letter headers of a message, for ``zqctl failed``."""
    names = {
        H_REASON: "reason",
        H_EXCEPTION: "exception",
        H_MESSAGE: "message",
        H_ATTEMPTS: "attempts",
        H_FIRST: "first_failure",
        H_LAST: "last_failure",
        H_QUEUE: "queue",
    }
    described = {short: headers.get(h) for h, short in names.items()}
    if headers.get(H_ORIGINAL_SIZE) is not None:  # the body is an excerpt of a body this large
        described["original_size"] = headers[H_ORIGINAL_SIZE]
    if described["reason"] is None:
        described.update(broker_dead_letter(headers))
    return described


def broker_dead_letter(headers: Mapping[str, Any]) -> dict[str, Any]:
    """What RabbitMQ's own dead-lettering (``x-death``: a quorum queue's delivery limit) says, for ``describe``."""
    deaths = headers.get("x-death")
    if not isinstance(deaths, list) or not deaths or not isinstance(deaths[0], Mapping):
        return {}
    death = deaths[0]
    when = death.get("time")
    return {
        "reason": f"broker: {death.get('reason')}",
        "queue": death.get("queue"),
        "last_failure": iso_time(when.timestamp()) if isinstance(when, datetime) else None,
    }
