"""The dashboard's sampler: every ``interval`` seconds, what the queues look like now.

Each tick asks RabbitMQ, through the service's own broker session, for every queue's
ready messages and consumers and for its ``{queue}.failed`` count (a queue declare,
as ``zqctl queues`` does: no management plugin needed; each call has a deadline),
reads what the runners hold unacked, and takes the counters and recent consume
durations from :class:`zqtwisted.ops.metrics.MetricsObserver`.  The rows and their
history (:mod:`.model`) are kept for the API, which serves them without any I/O:
a page that polls costs the broker nothing.

A tick that is still waiting for RabbitMQ when the next one is due makes that one
skip; stopping the service cancels the calls in flight.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol

from twisted.application.service import Service
from twisted.internet.defer import Deferred, DeferredList, succeed
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from twisted.python.failure import Failure

from zqtwisted.ops.top import QueueCounters
from zqtwisted.ops.web.model import HISTORY_SECONDS, Board, History, QueueReading, Reading, queue_rows
from zqtwisted.runtime.broker import Broker
from zqtwisted.runtime.deadletter import failed_queue

SAMPLE_INTERVAL = 2.0
CALL_TIMEOUT = 5.0


class RunnerState(Protocol):
    """What the sampler reads from a runner (:class:`zqtwisted.runtime.runner.QueueRunner`)."""

    @property
    def queue(self) -> str: ...

    @property
    def in_flight(self) -> int: ...

    @property
    def held(self) -> int: ...

    @property
    def attached(self) -> bool: ...


class DashboardSampler(Service):
    log = Logger()

    def __init__(
        self,
        clock: IReactorTime,
        broker: Broker,
        runners: Sequence[RunnerState],
        counters: Callable[[], Mapping[str, QueueCounters]],
        durations: Callable[[str], Sequence[float]],
        interval: float = SAMPLE_INTERVAL,
        history_seconds: float = HISTORY_SECONDS,
        call_timeout: float = CALL_TIMEOUT,
        reactor_lag: Callable[[], float | None] = lambda: None,
    ) -> None:
        self._clock = clock
        self._broker = broker
        self._runners = list(runners)
        self._counters = counters
        self._durations = durations
        self.interval = interval
        self._timeout = call_timeout
        self._reactor_lag = reactor_lag
        self.queues = [r.queue for r in self._runners]
        self.history = History(self.queues, history_seconds, interval)
        self.started: float | None = None
        self.board = Board(None, False, queue_rows(None, Reading(clock.seconds(), False, self._local())))
        self._previous: Reading | None = None
        self._loop: LoopingCall | None = None
        self._pending: Deferred[Any] | None = None

    def startService(self) -> None:
        super().startService()
        self.started = self._clock.seconds()
        self._loop = LoopingCall(self.tick)
        self._loop.clock = self._clock
        self._loop.start(self.interval, now=True).addErrback(self._loop_failed)

    def stopService(self) -> Any:
        if self._loop is not None and self._loop.running:
            self._loop.stop()
        self._loop = None
        pending, self._pending = self._pending, None
        if pending is not None:
            pending.cancel()
        return super().stopService()

    def _loop_failed(self, failure: Failure) -> None:
        self.log.failure("The dashboard's sampler stopped", failure)

    def tick(self) -> None:
        """Take a reading (unless the previous one is still waiting for RabbitMQ)."""
        if self._pending is not None:
            return
        d = self._read_broker()
        self._pending = d
        d.addCallback(self._record)
        d.addErrback(self._tick_failed)
        d.addBoth(self._done, d)

    def _done(self, result: object, d: Deferred[Any]) -> None:
        if self._pending is d:
            self._pending = None

    def _tick_failed(self, failure: Failure) -> None:
        self.log.failure("Dashboard sample failed", failure)

    def _within(self, d: Deferred[Any]) -> Deferred[Any]:
        return d.addTimeout(self._timeout, self._clock)

    def _read_broker(self) -> Deferred[dict[str, tuple[Any, Any]] | None]:
        """(ready, consumers) of every queue and of its dead letters; None per queue that did not answer."""
        session = self._broker.current_session()
        if session is None or not session.is_open:
            return succeed(None)
        names = [name for queue in self.queues for name in (queue, failed_queue(queue))]
        calls = [self._within(session.queue_counts(name)) for name in names]

        def collect(results: list[tuple[bool, Any]]) -> dict[str, tuple[Any, Any]]:
            return {name: value if ok else (None, None) for name, (ok, value) in zip(names, results, strict=True)}

        return DeferredList(calls, consumeErrors=True).addCallback(collect)

    def _local(self, counts: Mapping[str, tuple[Any, Any]] | None = None) -> dict[str, QueueReading]:
        readings = {}
        for runner in self._runners:
            ready, consumers = counts.get(runner.queue, (None, None)) if counts else (None, None)
            dead = counts.get(failed_queue(runner.queue), (None, None))[0] if counts else None
            readings[runner.queue] = QueueReading(
                ready=ready,
                consumers=consumers,
                dead_letters=dead,
                unacked=runner.held,
                in_flight=runner.in_flight,
                attached=runner.attached,
            )
        return readings

    def _record(self, counts: dict[str, tuple[Any, Any]] | None) -> None:
        now = self._clock.seconds()
        reading = Reading(
            time=now,
            connected=counts is not None,
            queues=self._local(counts),
            counters=self._counters(),
            durations={q: self._durations(q) for q in self.queues},
        )
        rows = queue_rows(self._previous, reading)
        self._previous = reading
        self.history.add(now, rows)
        self.board = Board(now, reading.connected, rows, self.started, self._reactor_lag())
