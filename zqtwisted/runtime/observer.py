"""What the runtime reports as it works: stats files, metrics and logs listen here."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

from twisted.python.failure import Failure


class RunnerObserver(Protocol):
    def consume_started(self, queue: str, events: int) -> None:
        """A consume of ``events`` events (1, or a batch) starts."""

    def consumed(self, queue: str, events: int, seconds: float) -> None:
        """A consume finished; ``events`` of its events succeeded."""

    def failed(self, queue: str, events: int, outcome: str) -> None:
        """``events`` events failed with ``outcome`` (retry, permanent, timeout, ...)."""

    def retried(self, queue: str, delay: float) -> None: ...

    def dead_lettered(self, queue: str, events: int, reason: str) -> None: ...

    def gave_up(self, queue: str, events: Sequence[Any], failure: Failure, reason: str) -> None:
        """``events`` ended in ``failure`` (one report per failure: a whole batch shares one)."""

    def idle(self, queue: str) -> None:
        """The queue's local buffer emptied and nothing is in flight."""

    def attached(self, queue: str, attached: bool) -> None:
        """The queue's consumer was attached to (or lost) a broker channel."""


class NullObserver:
    def consume_started(self, queue: str, events: int) -> None:
        pass

    def consumed(self, queue: str, events: int, seconds: float) -> None:
        pass

    def failed(self, queue: str, events: int, outcome: str) -> None:
        pass

    def retried(self, queue: str, delay: float) -> None:
        pass

    def dead_lettered(self, queue: str, events: int, reason: str) -> None:
        pass

    def gave_up(self, queue: str, events: Sequence[Any], failure: Failure, reason: str) -> None:
        pass

    def idle(self, queue: str) -> None:
        pass

    def attached(self, queue: str, attached: bool) -> None:
        pass


class FanOut(NullObserver):
    """Forwards every report to several observers (skipping the methods they leave as no-ops)."""

    def __init__(self, observers: Sequence[RunnerObserver]) -> None:
        self.observers = list(observers)

        def targets(name: str) -> list[Any]:
            return [
                getattr(o, name)
                for o in self.observers
                if getattr(type(o), name, None) is not getattr(NullObserver, name)
            ]

        self._consume_started = targets("consume_started")
        self._consumed = targets("consumed")
        self._failed = targets("failed")
        self._retried = targets("retried")
        self._dead_lettered = targets("dead_lettered")
        self._gave_up = targets("gave_up")
        self._idle = targets("idle")
        self._attached = targets("attached")

    def consume_started(self, queue: str, events: int) -> None:
        for f in self._consume_started:
            f(queue, events)

    def consumed(self, queue: str, events: int, seconds: float) -> None:
        for f in self._consumed:
            f(queue, events, seconds)

    def failed(self, queue: str, events: int, outcome: str) -> None:
        for f in self._failed:
            f(queue, events, outcome)

    def retried(self, queue: str, delay: float) -> None:
        for f in self._retried:
            f(queue, delay)

    def dead_lettered(self, queue: str, events: int, reason: str) -> None:
        for f in self._dead_lettered:
            f(queue, events, reason)

    def gave_up(self, queue: str, events: Sequence[Any], failure: Failure, reason: str) -> None:
        for f in self._gave_up:
            f(queue, events, failure, reason)

    def idle(self, queue: str) -> None:
        for f in self._idle:
            f(queue)

    def attached(self, queue: str, attached: bool) -> None:
        for f in self._attached:
            f(queue, attached)
