"""The worker service: every queue's runner on one reactor, one broker connection.

Start: start each worker, then the broker connection; on every new connection
each runner declares its queue and re-attaches.  Stop: drain the runners (bounded
by the drain timeout), stop the workers and close the shared resources (HTTP pools,
...; bounded by :data:`STOP_GRACE`), then close the connection (bounded by the
broker's close timeout): a stop ends within the drain timeout plus a few seconds,
whatever the broker or a worker does.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Protocol

from twisted.application.service import MultiService
from twisted.internet.defer import Deferred, DeferredList, FirstError, gatherResults, maybeDeferred
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure

from zqtwisted.errors import StartupError
from zqtwisted.runtime.broker import Broker, BrokerSession
from zqtwisted.runtime.runner import QueueRunner

# How long the workers' stop and the resources' close may take together, after the drain.
STOP_GRACE = 5.0


class BrokerService(Broker, Protocol):
    """A broker that is also started and stopped as a service (AMQPBroker, MemoryBroker)."""

    def startService(self) -> None: ...

    def stopService(self) -> Deferred[None] | None: ...


class Closeable(Protocol):
    """What the workers share and the service releases once they stopped (:class:`zqtwisted.resources.Resources`)."""

    def close(self) -> Deferred[None]: ...


class WorkerService(MultiService):
    """Owns the runners and the broker connection; other services are its children."""

    log = Logger()

    def __init__(
        self,
        broker: BrokerService,
        runners: Sequence[QueueRunner],
        drain_timeout: float,
        on_fatal: Callable[[], None],
        resources: Closeable | None = None,
        clock: IReactorTime | None = None,
    ) -> None:
        """``clock`` bounds the workers' stop and the resources' close (:data:`STOP_GRACE`); unbounded without."""
        super().__init__()
        self.clock = clock
        self.broker = broker
        self.runners = list(runners)
        self.drain_timeout = drain_timeout
        self.resources = resources
        self._on_fatal = on_fatal
        self._workers_started = False
        self._waiting_for_workers: list[Deferred[None]] = []
        broker.add_listener(self)

    @property
    def ready(self) -> bool:
        """Connected, and every queue's consumer attached."""
        return self.broker.current_session() is not None and all(r.attached for r in self.runners)

    def startService(self) -> None:
        self.log.info("Starting workers for {queues}", queues=", ".join(r.queue for r in self.runners))
        started = gatherResults([maybeDeferred(r.worker.start) for r in self.runners], consumeErrors=True)
        started.addCallbacks(self._workers_ready, self._start_failed)
        super().startService()
        self.broker.startService()

    def _workers_ready(self, _: object) -> None:
        self._workers_started = True
        waiting, self._waiting_for_workers = self._waiting_for_workers, []
        for d in waiting:
            d.callback(None)

    def _start_failed(self, failure: Failure) -> None:
        if isinstance(failure.value, FirstError):
            failure = failure.value.subFailure  # the worker's own error, not gatherResults' wrapper
        if failure.check(StartupError):
            self.log.error("A worker cannot start: {error}; stopping", error=failure.getErrorMessage())
        else:
            self.log.failure("A worker failed to start; stopping", failure)
        self._on_fatal()

    def session_started(self, session: BrokerSession) -> Deferred[None]:
        """Attach every runner to a new connection (once the workers have started)."""

        def attach(_: object) -> Deferred[None]:
            attached = gatherResults([r.attach(session) for r in self.runners], consumeErrors=True)
            return attached.addCallback(lambda _: None)

        if self._workers_started:
            return attach(None)
        waiter: Deferred[None] = Deferred()
        self._waiting_for_workers.append(waiter)
        return waiter.addCallback(attach)

    def session_lost(self, session: BrokerSession) -> None:
        if self.running:
            self.log.warn("Broker connection lost; events in hand will be redelivered, consumers re-attach")

    def stopService(self) -> Deferred[None]:
        self.log.info("Stopping: draining {n} queues (up to {s}s)", n=len(self.runners), s=self.drain_timeout)
        drained = DeferredList([r.stop(self.drain_timeout) for r in self.runners], consumeErrors=True)

        def stop_workers(_: object) -> Deferred[Any]:
            return DeferredList([maybeDeferred(r.worker.stop) for r in self.runners], consumeErrors=True)

        def close_resources(_: object) -> Deferred[Any] | None:
            if self.resources is None:
                return None
            closing: Deferred[Any] = maybeDeferred(self.resources.close)
            return closing.addErrback(lambda f: self.log.failure("Closing the shared resources failed", f))

        def stop_children(_: object) -> Deferred[Any]:
            return DeferredList(
                [maybeDeferred(self.broker.stopService), maybeDeferred(MultiService.stopService, self)],
                consumeErrors=True,
            )

        def bounded(_: object) -> Deferred[Any]:
            released: Deferred[Any] = maybeDeferred(stop_workers, None).addCallback(close_resources)
            if self.clock is None:
                return released
            return self._within_grace(released, self.clock)

        done: Deferred[Any] = drained.addCallback(bounded).addCallback(stop_children)
        return done.addCallback(lambda _: None)

    def _within_grace(self, released: Deferred[Any], clock: IReactorTime) -> Deferred[None]:
        """Fires when ``released`` does, or after :data:`STOP_GRACE` (a warning), whichever comes first."""
        done: Deferred[None] = Deferred()

        def too_slow() -> None:
            self.log.warn(
                "The workers did not stop (or the resources close) within {timeout:g}s; stopping anyway",
                timeout=STOP_GRACE,
            )
            done.callback(None)

        def finished(result: object) -> None:
            if timer.active():
                timer.cancel()
                done.callback(None)

        timer = clock.callLater(STOP_GRACE, too_slow)
        released.addBoth(finished)
        return done
