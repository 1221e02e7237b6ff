"""The time limit of a consume: ``max_consume_seconds`` per event, scaled by the batch length.

A pure policy (how long, and what to log) plus :meth:`TimeLimit.apply`, which puts the
deadline on a consume's Deferred.  A consume that returned a plain value never gets
here: it needs no timer.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TypeVar

from twisted.internet.defer import Deferred, TimeoutError
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure

T = TypeVar("T")

TIMEOUT_LOG = "Timed out in {queue} after {limit} seconds processing {n} events"


@dataclass(frozen=True, slots=True)
class TimeLimit:
    """``seconds`` per event, or None for no limit."""

    seconds: float | None

    def for_events(self, n: int) -> float | None:
        """The deadline of a consume of ``n`` events."""
        return None if self.seconds is None else self.seconds * n

    def apply(self, d: Deferred[T], n: int, clock: IReactorTime) -> None:
        """Cancel ``d`` (it fails with TimeoutError) if it has not fired within the limit."""
        limit = self.for_events(n)
        if limit is not None:
            d.addTimeout(limit, clock)

    def expired(self, failure: Failure) -> bool:
        """Whether ``failure`` is this limit having run out."""
        return self.seconds is not None and failure.check(TimeoutError) is not None

    def report(self, log: Logger, queue: str, n: int) -> None:
        """Zulip's log line for a consume that ran out of time."""
        limit = self.for_events(n)
        assert limit is not None
        log.error(TIMEOUT_LOG, queue=queue, limit=seconds_text(limit), n=n)


def seconds_text(value: float) -> str:
    """``30`` for 30.0, ``2.5`` for 2.5: as Zulip prints the limit."""
    return str(int(value)) if float(value).is_integer() else str(value)
