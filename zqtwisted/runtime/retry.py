"""Retry decisions: a pure backoff policy, a failure classifier and the retry policy.

The same :class:`BackoffPolicy` spaces event retries and AMQP reconnects.  The
scheduler that uses them (``callLater``, cancelled on stop) lives in
:mod:`zqtwisted.runtime.settlement`.
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
    """Exponential backoff with jitter: a delay in [floor * c, c] where c = min(cap, base * 2**(n-1)).

    ``floor`` 0 is full jitter (event retries); 0.5 is "equal jitter" (reconnects,
    which should not hammer a broker that is coming back).
    """

    base: float = 1.0
    cap: float = 60.0
    floor: float = 0.0

    def ceiling(self, attempt: int) -> float:
        """The largest delay before retry number ``attempt`` (1 for the first retry)."""
        factor: int = 2 ** min(max(attempt - 1, 0), 62)
        return min(self.cap, self.base * factor)

    def delay(self, attempt: int, rand: Callable[[], float] = random.random) -> float:
        ceiling = self.ceiling(attempt)
        if not self.floor:
            return rand() * ceiling
        return ceiling * self.floor + rand() * ceiling * (1.0 - self.floor)


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
    count = failed_tries_count(failed_tries) + 1
    return count if count <= max_retries else None


# The largest ``failed_tries`` counted: an event's own field is untrusted input (anyone can
# publish 2**63 or -1000000); clamped, it can neither buy retries nor overflow a header.
MAX_FAILED_TRIES = 2**31 - 2


def failed_tries_count(failed_tries: object) -> int:
    """``failed_tries`` as a count in ``0..MAX_FAILED_TRIES``: missing or not an integer is 0."""
    if not isinstance(failed_tries, int) or isinstance(failed_tries, bool):
        return 0
    return min(max(failed_tries, 0), MAX_FAILED_TRIES)


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Zulip's retry rule with backoff: how many times, and how long to wait before each."""

    max_retries: int = 3
    backoff: BackoffPolicy = BackoffPolicy()
    retry_unexpected: bool = False

    def classify(self, failure: Failure) -> Outcome:
        return classify(failure, self.retry_unexpected)

    def schedule(self, failed_tries: object, rand: Callable[[], float]) -> tuple[int, float] | None:
        """(the successor's ``failed_tries``, the delay before publishing it), or None: give up."""
        attempt = next_attempt(failed_tries, self.max_retries)
        if attempt is None:
            return None
        return attempt, self.backoff.delay(attempt, rand)
