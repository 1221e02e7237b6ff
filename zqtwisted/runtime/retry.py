"""Retry decisions: a pure backoff policy and a failure classifier.

The scheduler that uses them (``callLater``, cancelled on stop) lives in
:mod:`zqtwisted.runtime.runner`.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum

from twisted.internet.defer import CancelledError, TimeoutError
from twisted.python.failure import Failure

from zqtwisted.errors import InterruptConsumeError, MalformedEventError, PermanentError, TransientError


@dataclass(frozen=True)
class BackoffPolicy:
    """Exponential backoff with full jitter: a delay in [0, min(cap, base * 2**(n-1))]."""

    base: float = 1.0
    cap: float = 60.0

    def ceiling(self, attempt: int) -> float:
        """The largest delay before retry number ``attempt`` (1 for the first retry)."""
        return min(self.cap, self.base * (2 ** min(max(attempt - 1, 0), 62)))

    def delay(self, attempt: int, rand: Callable[[], float] = random.random) -> float:
        return rand() * self.ceiling(attempt)


class Outcome(Enum):
    INTERRUPT = "interrupt"
    RETRY = "retry"
    PERMANENT = "permanent"
    TIMEOUT = "timeout"
    MALFORMED = "malformed"


def classify(failure: Failure, retry_unexpected: bool = False) -> Outcome:
    """What to do with an event whose consume ended in ``failure``."""
    if failure.check(InterruptConsumeError):
        return Outcome.INTERRUPT
    if failure.check(TimeoutError, CancelledError):
        return Outcome.TIMEOUT
    if failure.check(MalformedEventError):
        return Outcome.MALFORMED
    if failure.check(TransientError):
        return Outcome.RETRY
    if failure.check(PermanentError):
        return Outcome.PERMANENT
    return Outcome.RETRY if retry_unexpected else Outcome.PERMANENT


def next_attempt(failed_tries: object, max_retries: int) -> int | None:
    """Zulip's ``retry_event`` rule: the new ``failed_tries``, or None to give up.

    ``failed_tries`` counts failures so far (missing means 0); the event is
    re-published while the incremented count stays <= ``max_retries``.
    """
    count = failed_tries if isinstance(failed_tries, int) and not isinstance(failed_tries, bool) else 0
    count += 1
    return count if count <= max_retries else None
