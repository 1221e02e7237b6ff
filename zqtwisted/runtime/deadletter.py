"""Dead letters: Zulip's error file plus a durable ``{queue}.failed`` queue for replay.

Nothing is dropped: an event that ends in failure is appended to
``{error_dir}/{queue}.errors`` (Zulip's format, secrets masked) and published,
confirmed, to ``{queue}.failed`` with headers that say why.  Only then is the
original delivery acked (by :mod:`zqtwisted.runtime.settlement`); a dead letter that
is not confirmed within the publish timeout fails, and the original is requeued.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from twisted.internet.defer import Deferred, gatherResults
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure

from zqtwisted.runtime.broker import Broker
from zqtwisted.runtime.decisions import attempts_of
from zqtwisted.runtime.redact import redact_event, redact_text

FAILED_SUFFIX = ".failed"
MESSAGE_LIMIT = 1000
RAW_LIMIT = 1000

H_REASON = "x-zq-reason"
H_EXCEPTION = "x-zq-exception"
H_MESSAGE = "x-zq-message"
H_ATTEMPTS = "x-zq-attempts"
H_FIRST = "x-zq-first-failure"
H_LAST = "x-zq-last-failure"
H_QUEUE = "x-zq-original-queue"


def failed_queue(queue: str) -> str:
    return queue + FAILED_SUFFIX


def iso_time(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def error_file_line(events: Sequence[Any], now: float) -> str:
    """One line of Zulip's error file: asctime, TAB, JSON list of the events."""
    return f"{time.asctime(time.localtime(now))}\t{json.dumps([redact_event(e) for e in events])}\n"


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

    def headers(self, now: float) -> dict[str, Any]:
        last = iso_time(now)
        return {
            H_REASON: self.reason,
            H_EXCEPTION: self.exception,
            H_MESSAGE: redact_text(self.message)[:MESSAGE_LIMIT],
            H_ATTEMPTS: self.attempts,
            H_FIRST: self.first_failure or last,
            H_LAST: last,
            H_QUEUE: self.queue,
        }


def exception_name(failure: Failure) -> str:
    cls = failure.type
    return getattr(cls, "__qualname__", str(cls))


def describe_failure(failure: Failure) -> str:
    """``ExceptionName: message``, for log lines."""
    return f"{exception_name(failure)}: {failure.value}"


def letter_for(
    queue: str, body: bytes, event: Any, headers: Mapping[str, Any], failure: Failure, reason: str
) -> DeadLetter:
    """The dead letter of a delivery (its ``body`` and ``headers``) whose event ended in ``failure``."""
    return DeadLetter(
        queue=queue,
        body=body,
        event=event,
        reason=reason,
        exception=exception_name(failure),
        message=str(failure.value),
        attempts=attempts_of(event.get("failed_tries") if isinstance(event, dict) else None),
        first_failure=headers.get(H_FIRST),
    )


def error_entries(letters: Sequence[DeadLetter]) -> list[Any]:
    """What the error file records for ``letters``: the events, then the raw bodies of malformed ones."""
    events = [letter.event for letter in letters if letter.event is not None]
    raw = [letter.body[:RAW_LIMIT].decode("utf-8", "replace") for letter in letters if letter.event is None]
    return [*events, *raw]


class DeadLetterer:
    log = Logger()

    def __init__(self, broker: Broker, error_dir: str, clock: IReactorTime, publish_timeout: float) -> None:
        self._broker = broker
        self._error_dir = error_dir
        self._clock = clock
        self._timeout = publish_timeout

    def error_path(self, queue: str) -> str:
        return os.path.join(self._error_dir, f"{queue}.errors")

    def write_error_file(self, queue: str, events: Sequence[Any]) -> None:
        """Append one line for ``events`` (a whole batch shares one line, as in Zulip)."""
        try:
            os.makedirs(self._error_dir, exist_ok=True)
            with open(self.error_path(queue), "a") as f:
                f.write(error_file_line(events, self._clock.seconds()))
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
    return {short: headers.get(h) for h, short in names.items()}
