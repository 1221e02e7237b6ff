"""The runner's decisions, without I/O: what happens to an event after its consume.

From a consume's result, an event's ``failed_tries`` and the queue's policies,
:func:`decide` says: ack, retry after a delay (the successor carries the new
``failed_tries``), or dead-letter with a reason.  Plain values in, a
:class:`Verdict` out; :mod:`zqtwisted.runtime.settlement` carries it out.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from enum import Enum
from typing import Any

from twisted.python.failure import Failure

from zqtwisted.errors import DependencyUnavailable, MalformedEventError
from zqtwisted.runtime.consumer import BatchFailures
from zqtwisted.runtime.retry import Outcome, RetryPolicy, failed_tries_count


class Action(Enum):
    ACK = "ack"
    RETRY = "retry"
    DEAD_LETTER = "dead-letter"


REASONS = {
    Outcome.RETRY: "retries-exhausted",
    Outcome.PERMANENT: "permanent",
    Outcome.TIMEOUT: "timeout",
    Outcome.MALFORMED: "malformed",
}


@dataclass(frozen=True, slots=True)
class Verdict:
    """What to do with one failed event."""

    action: Action
    outcome: Outcome
    attempt: int = 0  # RETRY: the successor's failed_tries
    delay: float = 0.0  # RETRY: seconds to wait before publishing the successor
    reason: str = ""  # DEAD_LETTER: the x-zq-reason header

    @property
    def counts_as_failure(self) -> bool:
        """Whether observers hear of it as a failure (an interrupt is not one)."""
        return self.outcome is not Outcome.INTERRUPT


MALFORMED = Verdict(Action.DEAD_LETTER, Outcome.MALFORMED, reason=REASONS[Outcome.MALFORMED])


def decide(failure: Failure, failed_tries: object, policy: RetryPolicy, rand: Callable[[], float]) -> Verdict:
    """The verdict on an event whose consume ended in ``failure``."""
    outcome = policy.classify(failure)
    if outcome is Outcome.INTERRUPT:
        return Verdict(Action.ACK, outcome)
    if outcome is Outcome.RETRY and failure.check(DependencyUnavailable):
        # Not a try: the event waits for the dependency however long it is down.
        delay = policy.backoff.delay(policy.max_retries + 1, rand)
        return Verdict(Action.RETRY, outcome, attempt=attempts_of(failed_tries) - 1, delay=delay)
    if outcome is Outcome.RETRY:
        scheduled = policy.schedule(failed_tries, rand)
        if scheduled is not None:
            attempt, delay = scheduled
            return Verdict(Action.RETRY, outcome, attempt=attempt, delay=delay)
    return Verdict(Action.DEAD_LETTER, outcome, reason=REASONS[outcome])


def failures_of(result: object, n: int) -> list[tuple[int, Failure]] | None:
    """The failed events of a consume of ``n`` events, by index; None when all succeeded.

    A Failure fails every event; :class:`BatchFailures` names the failed ones (indexes
    out of range are ignored); anything else is success.
    """
    if isinstance(result, Failure):
        return [(i, result) for i in range(n)]
    if isinstance(result, BatchFailures):
        return [(i, Failure(exc)) for i, exc in sorted(result.failures.items()) if 0 <= i < n]
    return None


def attempts_of(failed_tries: object) -> int:
    """How many times an event has been tried, counting this one: ``failed_tries + 1`` (bounded)."""
    return failed_tries_count(failed_tries) + 1


def check_failed_tries(event: Mapping[str, Any]) -> None:
    """Raise :class:`MalformedEventError` unless ``failed_tries`` is absent or a non-negative integer.

    Zulip's ``retry_event`` writes it as a count from 0; anything else (a negative
    number buying a million retries, a string, a float) is not an event this service
    wrote.  Large values are valid: they count as retries exhausted.
    """
    if "failed_tries" not in event:
        return
    value = event["failed_tries"]
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        shown = repr(value) if isinstance(value, (int, float, bool)) or value is None else type(value).__name__
        raise MalformedEventError(f"field 'failed_tries': expected a non-negative integer, got {shown[:40]}")
