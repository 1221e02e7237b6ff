"""The worker service: every queue's runner on one reactor, one broker connection.

Start: start each worker, then the broker connection; on every new connection
each runner declares its queue and re-attaches.  Stop: drain the runners (bounded
by the drain timeout), stop the workers, then close the connection.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from twisted.application.service import MultiService, Service
from twisted.internet.defer import Deferred, DeferredList, gatherResults, maybeDeferred
from twisted.logger import Logger
from twisted.python.failure import Failure

from zqtwisted.broker import Broker, BrokerSession
from zqtwisted.publisher import Publisher, set_default_publisher
from zqtwisted.runner import QueueRunner


class WorkerService(MultiService):
    """Owns the runners; the broker and other services are its children."""

    log = Logger()

    def __init__(
        self,
        broker: Broker,
        broker_service: Service,
        runners: Sequence[QueueRunner],
        publisher: Publisher,
        drain_timeout: float,
        on_fatal: Callable[[], None],
    ) -> None:
        super().__init__()
        self.broker = broker
        self.runners = list(runners)
        self.publisher = publisher
        self.drain_timeout = drain_timeout
        self._broker_service = broker_service
        self._on_fatal = on_fatal
        self._started: Deferred[object] | None = None
        broker.add_listener(self)

    @property
    def ready(self) -> bool:
        """Connected, and every queue's consumer attached."""
        return self.broker.current_session() is not None and all(r.attached for r in self.runners)

    def startService(self) -> None:
        set_default_publisher(self.publisher)
        self.log.info("Starting workers for {queues}", queues=", ".join(r.queue for r in self.runners))
        self._started = gatherResults([maybeDeferred(r.worker.start) for r in self.runners], consumeErrors=True)
        self._started.addErrback(self._start_failed)
        super().startService()
        self._broker_service.startService()

    def _start_failed(self, failure: Failure) -> None:
        self.log.failure("A worker failed to start; stopping", failure)
        self._on_fatal()

    def session_started(self, session: BrokerSession) -> Deferred[object]:
        """Attach every runner to a new connection (after the workers have started)."""

        def attach(_: object) -> Deferred[object]:
            return gatherResults([r.attach(session) for r in self.runners], consumeErrors=True)

        started = self._started
        if started is None or started.called:
            return attach(None)
        waiter: Deferred[object] = Deferred()
        started.addBoth(lambda r: (waiter.callback(None), r)[1])
        return waiter.addCallback(attach)

    def session_lost(self, session: BrokerSession) -> None:
        if self.running:
            self.log.warn("Broker connection lost; events in hand will be redelivered, consumers re-attach")

    def stopService(self) -> Deferred[None]:
        self.log.info("Stopping: draining {n} queues (up to {timeout}s)", n=len(self.runners), timeout=self.drain_timeout)
        drained = DeferredList([r.stop(self.drain_timeout) for r in self.runners], consumeErrors=True)

        def stop_workers(_: object) -> DeferredList[object]:
            return DeferredList([maybeDeferred(r.worker.stop) for r in self.runners], consumeErrors=True)

        def stop_children(_: object) -> Deferred[None]:
            set_default_publisher(None)
            return gatherResults(
                [maybeDeferred(self._broker_service.stopService), maybeDeferred(MultiService.stopService, self)],
                consumeErrors=True,
            ).addBoth(lambda _: None)

        return drained.addCallback(stop_workers).addCallback(stop_children)
