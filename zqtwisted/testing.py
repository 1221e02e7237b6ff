"""Fakes shipped with the package: an in-memory broker behind the broker interface.

:class:`MemoryBroker` keeps queues in memory, honours prefetch, requeues unacked
deliveries when a "connection" drops, and confirms publishes (or, with
``hold_confirms``, holds the confirms back as RabbitMQ does under a memory alarm; :meth:`MemoryBroker.block`
also says so through ``blocked``, as RabbitMQ's ``connection.blocked`` does).  It passes the same
contract tests as the real AMQP broker (``tests/contract.py``).  Deliveries are
scheduled with ``callLater(0)`` on the clock it is given, like network I/O would
arrive, so tests drive it with ``Clock.advance(0)`` or :meth:`MemoryBroker.flush`.
"""

from __future__ import annotations

import itertools
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import Clock
from twisted.protocols.policies import WrappingFactory
from twisted.web.iweb import IAgent
from zope.interface import implementer

from zqtwisted.runtime.broker import (
    ORIGINAL_SIZE,
    AckTracker,
    BrokerSession,
    BrokerUnavailable,
    ConsumerChannel,
    Delivery,
    PublishDeadline,
    SessionListener,
    SessionWaiters,
)

_sequence = itertools.count()


@dataclass
class StoredMessage:
    body: bytes
    headers: Mapping[str, Any] = field(default_factory=dict)
    redelivered: bool = False
    seq: int = field(default_factory=lambda: next(_sequence))


def requeue_message(queue: deque[StoredMessage], message: StoredMessage) -> None:
    """Put ``message`` back at its original place, as RabbitMQ does when it can."""
    message.redelivered = True
    for i, other in enumerate(queue):
        if other.seq > message.seq:
            queue.insert(i, message)
            return
    queue.append(message)


class MemoryChannel:
    """A consumer channel of :class:`MemorySession`."""

    def __init__(
        self,
        session: MemorySession,
        queue: str,
        prefetch: int,
        on_delivery: Callable[[Delivery], None],
        max_body: int | None = None,
    ):
        self._session = session
        self.queue = queue
        self.prefetch = prefetch
        self.max_body = max_body
        self._on_delivery = on_delivery
        self._tags = itertools.count(1)
        self.unacked: dict[int, StoredMessage] = {}
        self._tracker = AckTracker()
        self.consuming = True
        self._open = True
        self._closed_waiters: list[Deferred[None]] = []
        self.ack_calls: list[tuple[int, bool]] = []

    @property
    def is_open(self) -> bool:
        return self._open and self._session.is_open

    def ack(self, tags: Sequence[int]) -> None:
        if not self.is_open:
            return
        for tag, multiple in self._tracker.settle(tags):
            self.ack_calls.append((tag, multiple))
            settled = [t for t in self.unacked if t <= tag] if multiple else [tag]
            for t in settled:
                self.unacked.pop(t, None)
        self._session.broker._schedule()

    def nack(self, tag: int, requeue: bool = True) -> None:
        if not self.is_open or not self._tracker.forget(tag):
            return
        message = self.unacked.pop(tag)
        if requeue:
            requeue_message(self._session.broker.queues.setdefault(self.queue, deque()), message)
        self._session.broker._schedule()

    def cancel(self) -> Deferred[None]:
        self.consuming = False
        return succeed(None)

    def when_closed(self) -> Deferred[None]:
        if not self._open:
            return succeed(None)
        d: Deferred[None] = Deferred()
        self._closed_waiters.append(d)
        return d

    def _deliver_one(self) -> bool:
        queue = self._session.broker.queues.get(self.queue)
        if not (self.is_open and self.consuming and queue and len(self.unacked) < self.prefetch):
            return False
        self._on_delivery(self.take(queue.popleft()))
        return True

    def take(self, message: StoredMessage) -> Delivery:
        """Hold ``message`` unacked on this channel and wrap it as a Delivery."""
        tag = next(self._tags)
        self.unacked[tag] = message
        self._tracker.delivered(tag)
        body, headers = message.body, dict(message.headers)
        if self.max_body is not None and len(body) > self.max_body:  # cut, as the AMQP consumer channel does
            body, headers[ORIGINAL_SIZE] = body[: self.max_body + 1], len(body)
        return Delivery(
            queue=self.queue,
            body=body,
            tag=tag,
            channel=self,
            redelivered=message.redelivered,
            headers=headers,
        )

    def _close(self) -> None:
        """Close: unacked messages go back to the head of the queue, as RabbitMQ does."""
        if not self._open:
            return
        self._open = False
        queue = self._session.broker.queues.setdefault(self.queue, deque())
        for tag in sorted(self.unacked):
            requeue_message(queue, self.unacked.pop(tag))
        waiters, self._closed_waiters = self._closed_waiters, []
        for d in waiters:
            d.callback(None)


class MemorySession:
    """One "connection" to a :class:`MemoryBroker`."""

    def __init__(self, broker: MemoryBroker) -> None:
        self.broker = broker
        self._open = True
        self.channels: list[MemoryChannel] = []

    @property
    def is_open(self) -> bool:
        return self._open

    @property
    def node(self) -> str:
        return "memory"

    @property
    def blocked(self) -> str | None:
        return self.broker.blocked

    def declare_queue(self, name: str) -> Deferred[None]:
        if not self._open:
            return fail(BrokerUnavailable("connection closed"))
        self.broker.queues.setdefault(name, deque())
        return succeed(None)

    def consume(
        self, queue: str, prefetch: int, on_delivery: Callable[[Delivery], None], max_body: int | None = None
    ) -> Deferred[ConsumerChannel]:
        if not self._open:
            return fail(BrokerUnavailable("connection closed"))
        self.broker.queues.setdefault(queue, deque())
        channel = MemoryChannel(self, queue, prefetch, on_delivery, max_body)
        self.channels.append(channel)
        self.broker._schedule()
        return succeed(channel)

    def publish(self, queue: str, body: bytes, headers: Mapping[str, Any] | None = None) -> Deferred[None]:
        if not self._open:
            return fail(BrokerUnavailable("connection closed"))
        if self.broker.publish_error is not None:
            return fail(self.broker.publish_error)
        if self.broker.hold_confirms:
            # As under a RabbitMQ memory alarm: sent, but neither routed nor confirmed
            # until released.  Cancelling the wait (a deadline) does not unsend it.
            d: Deferred[None] = Deferred()
            self.broker.unconfirmed.append((queue, bytes(body), dict(headers or {}), d))
            return d
        self.broker._store(queue, bytes(body), dict(headers or {}))
        return succeed(None)

    def queue_counts(self, queue: str) -> Deferred[tuple[int, int]]:
        self.broker.queues.setdefault(queue, deque())
        consumers = sum(
            1 for s in self.broker.sessions for c in s.channels if c.queue == queue and c.is_open and c.consuming
        )
        return succeed((len(self.broker.queues[queue]), consumers))

    def purge(self, queue: str) -> Deferred[int]:
        messages = self.broker.queues.setdefault(queue, deque())
        count = len(messages)
        messages.clear()
        return succeed(count)

    def get(self, queue: str) -> Deferred[Delivery | None]:
        if not self._open:
            return fail(BrokerUnavailable("connection closed"))
        messages = self.broker.queues.setdefault(queue, deque())
        if not messages:
            return succeed(None)
        getter = MemoryChannel(self, queue, 0, lambda d: None)
        getter.consuming = False
        self.channels.append(getter)
        return succeed(getter.take(messages.popleft()))

    def _drop(self) -> None:
        self._open = False
        for channel in self.channels:
            channel._close()


class MemoryBroker:
    """An in-memory broker with the interface of :class:`zqtwisted.runtime.amqp.AMQPBroker`."""

    def __init__(self, clock: IReactorTime | None = None, publish_timeout: float = 30.0) -> None:
        self.clock = clock if clock is not None else Clock()
        self.publish_timeout = publish_timeout
        self.queues: dict[str, deque[StoredMessage]] = {}
        self.published: list[tuple[str, bytes, dict[str, Any]]] = []
        self.sessions: list[MemorySession] = []
        self.publish_error: Exception | None = None
        self.hold_confirms = False
        self.blocked: str | None = None
        self.problem: str | None = None
        self.unconfirmed: list[tuple[str, bytes, dict[str, Any], Deferred[None]]] = []
        self._listeners: list[SessionListener] = []
        self._session: MemorySession | None = None
        self._waiting = SessionWaiters(self.clock)
        self._scheduled = False
        self.running = False

    # -- service-like life cycle ------------------------------------------------

    def startService(self) -> None:
        self.running = True
        self.connect()

    def stopService(self) -> Deferred[None]:
        self.running = False
        self.disconnect()
        return succeed(None)

    def connect(self) -> Deferred[None]:
        """Open a new session and run every listener's session_started on it."""
        session = MemorySession(self)
        self.sessions.append(session)
        from twisted.internet.defer import gatherResults, maybeDeferred

        started = [maybeDeferred(listener.session_started, session) for listener in self._listeners]

        def ready(_: object) -> None:
            self._session = session
            self._waiting.fire(session)

        return gatherResults(started, consumeErrors=True).addCallback(ready)

    def disconnect(self) -> None:
        """Drop the current session, as a broker restart would."""
        session, self._session = self._session, None
        if session is None:
            return
        session._drop()
        for listener in self._listeners:
            listener.session_lost(session)
        self._schedule()

    # -- the Broker interface ---------------------------------------------------

    def add_listener(self, listener: SessionListener) -> None:
        self._listeners.append(listener)

    def current_session(self) -> MemorySession | None:
        return self._session

    def session(self, timeout: float | None = None) -> Deferred[BrokerSession]:
        if self._session is not None:
            return succeed(self._session)
        return self._waiting.wait(timeout)

    def publish(
        self, queue: str, body: bytes, headers: Mapping[str, Any] | None = None, timeout: float | None = None
    ) -> Deferred[None]:
        limit = self.publish_timeout if timeout is None else timeout
        deadline = PublishDeadline(limit)

        def on_session(session: BrokerSession) -> Deferred[None]:
            deadline.sending = True
            deadline.session = session
            return self._publish_on(session, queue, body, headers)

        return deadline.apply(self.session(limit).addCallback(on_session), self.clock)

    @staticmethod
    def _publish_on(
        session: BrokerSession, queue: str, body: bytes, headers: Mapping[str, Any] | None
    ) -> Deferred[None]:
        return session.declare_queue(queue).addCallback(lambda _: session.publish(queue, body, headers))

    # -- helpers for tests ------------------------------------------------------

    def block(self, reason: str = "low on memory") -> None:
        """As a RabbitMQ resource alarm: publishes are held unconfirmed and sessions say they are ``blocked``."""
        self.hold_confirms = True
        self.blocked = reason

    def release_confirms(self) -> None:
        """Route and confirm the publishes held by ``hold_confirms`` (and stop holding, or being blocked)."""
        self.hold_confirms = False
        self.blocked = None
        held, self.unconfirmed = self.unconfirmed, []
        for queue, body, headers, d in held:
            self._store(queue, body, headers)
            d.callback(None)  # a no-op if its deadline already cancelled it

    def _store(self, queue: str, body: bytes, headers: dict[str, Any]) -> None:
        # Like AMQPSession.publish, the queue is declared (durable) before publishing to it.
        self.queues.setdefault(queue, deque()).append(StoredMessage(body, headers))
        self.published.append((queue, body, headers))
        self._schedule()

    def messages(self, queue: str) -> list[bytes]:
        """Bodies waiting in ``queue`` (not those delivered and unacked)."""
        return [m.body for m in self.queues.get(queue, ())]

    def unacked(self, queue: str) -> int:
        return sum(len(c.unacked) for s in self.sessions for c in s.channels if c.queue == queue and c.is_open)

    def flush(self) -> None:
        """Deliver everything deliverable now (advances a Clock by 0)."""
        if isinstance(self.clock, Clock):
            for _ in range(100_000):
                if not self.clock.getDelayedCalls() or min(c.getTime() for c in self.clock.getDelayedCalls()) > (
                    self.clock.seconds()
                ):
                    break
                self.clock.advance(0)

    def _schedule(self) -> None:
        if not self._scheduled:
            self._scheduled = True
            self.clock.callLater(0, self._pump)

    def _pump(self) -> None:
        self._scheduled = False
        progress = True
        while progress:
            progress = False
            for session in self.sessions:
                for channel in list(session.channels):
                    if channel._deliver_one():
                        progress = True


class TrackingFactory(WrappingFactory):
    """Wraps a server factory and knows its open connections, to close them all in a test."""

    def __init__(self, factory: Any) -> None:
        super().__init__(factory)
        self._idle: list[Deferred[None]] = []

    def unregisterProtocol(self, p: Any) -> None:
        super().unregisterProtocol(p)
        if not self.protocols:
            waiting, self._idle = self._idle, []
            for d in waiting:
                d.callback(None)

    def close_all(self) -> Deferred[None]:
        """Abort every open connection; fires once all are closed."""
        if not self.protocols:
            return succeed(None)
        d: Deferred[None] = Deferred()
        self._idle.append(d)
        for protocol in list(self.protocols):
            protocol.transport.abortConnection()
        return d


class RecordingPublisher:
    """A :class:`zqtwisted.runtime.publisher.Publisher` stand-in that records what is published.

    ``errors`` fail the next calls, one each; with ``hold`` set, publishes stay
    unconfirmed (their Deferreds are in ``held``) until the test fires them.
    """

    def __init__(self, *errors: BaseException) -> None:
        self.published: list[tuple[str, Mapping[str, Any]]] = []
        self.errors: list[BaseException] = list(errors)
        self.hold = False
        self.held: list[Deferred[None]] = []

    def publish_json(
        self, queue: str, event: Mapping[str, Any], headers: Mapping[str, Any] | None = None
    ) -> Deferred[None]:
        if self.errors:
            return fail(self.errors.pop(0))
        self.published.append((queue, event))
        if self.hold:
            d: Deferred[None] = Deferred()
            self.held.append(d)
            return d
        return succeed(None)

    def to(self, queue: str) -> list[Mapping[str, Any]]:
        """The events published to ``queue``, in order."""
        return [event for q, event in self.published if q == queue]


@implementer(IAgent)
class FailingAgent:
    """A twisted.web agent whose every request fails with ``error`` (connection refused, ...)."""

    def __init__(self, error: BaseException) -> None:
        self.error = error

    def request(self, method: bytes, uri: bytes, headers: Any = None, bodyProducer: Any = None) -> Deferred[Any]:
        return fail(self.error)
