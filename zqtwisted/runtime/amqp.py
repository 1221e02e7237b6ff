"""RabbitMQ through pika's ``TwistedProtocolConnection``: the only module that knows pika.

:class:`AMQPBroker` is a service (Twisted's ``ClientService``) that keeps one
connection up, reconnecting with the retries' jittered exponential backoff
(:class:`~zqtwisted.runtime.retry.BackoffPolicy`; ClientService logs each delay).  On every new
connection it runs each listener's ``session_started`` (which declares queues, sets
QoS and re-attaches consumers) before the connection counts as ready.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Mapping, Sequence
from typing import Any
from urllib.parse import unquote, urlsplit

import pika
from pika.adapters.twisted_connection import ClosableDeferredQueue, TwistedChannel, TwistedProtocolConnection
from pika.exceptions import AMQPError
from twisted.application.internet import ClientService
from twisted.application.service import Service
from twisted.internet.defer import CancelledError, Deferred, fail, gatherResults, maybeDeferred, succeed
from twisted.internet.endpoints import HostnameEndpoint, wrapClientTLS
from twisted.internet.error import ConnectionDone
from twisted.internet.interfaces import IDelayedCall, IProtocol, IReactorTime, IStreamClientEndpoint
from twisted.internet.protocol import Factory
from twisted.internet.ssl import optionsForClientTLS
from twisted.logger import Logger
from twisted.python.failure import Failure

from zqtwisted.config import BrokerSettings, redact_url
from zqtwisted.runtime.broker import (
    AckTracker,
    BrokerSession,
    BrokerUnavailable,
    ConsumerChannel,
    Delivery,
    PublishDeadline,
    PublishFailed,
    SessionListener,
    SessionWaiters,
)
from zqtwisted.runtime.reactor import ReactorLike
from zqtwisted.runtime.reactor import untyped_deferred as _d
from zqtwisted.runtime.retry import BackoffPolicy

PERSISTENT = 2


def connection_parameters(settings: BrokerSettings) -> pika.ConnectionParameters:
    """pika's parameters for ``settings.url`` (host and port are used by the endpoint)."""
    params = pika.URLParameters(settings.connection_url())
    params.heartbeat = settings.heartbeat
    params.blocked_connection_timeout = None  # a blocked connection stays up: each publish has its own deadline
    params.ssl_options = None  # Twisted does TLS for amqps://
    return params


def broker_endpoint(reactor: ReactorLike, settings: BrokerSettings) -> IStreamClientEndpoint:
    parts = urlsplit(settings.url)
    host = unquote(parts.hostname or "127.0.0.1")
    tls = parts.scheme == "amqps"
    port = parts.port or (5671 if tls else 5672)
    endpoint: IStreamClientEndpoint = HostnameEndpoint(reactor, host, port, timeout=settings.connect_timeout)
    if tls:
        endpoint = wrapClientTLS(optionsForClientTLS(host), endpoint)
    return endpoint


def reconnect_backoff(settings: BrokerSettings) -> BackoffPolicy:
    """The reconnect delays: the retries' backoff policy, with equal jitter (half the ceiling at least)."""
    return BackoffPolicy(settings.reconnect_initial_delay, settings.reconnect_max_delay, floor=0.5)


class AMQPConsumerChannel:
    """One queue's consumer channel; acks go nowhere once it has closed.

    Acks made in one reactor turn go out together at its end, as one multiple-ack
    where that is exact (:class:`AckTracker`): fewer frames than one ack per event.
    """

    log = Logger()

    def __init__(
        self, channel: TwistedChannel, queue: str, on_delivery: Callable[[Delivery], None], clock: IReactorTime
    ) -> None:
        self._channel = channel
        self.queue = queue
        self._on_delivery = on_delivery
        self._clock = clock
        self._tracker = AckTracker()
        self._to_ack: list[int] = []
        self._ack_flush: IDelayedCall | None = None
        self._consumer_tag: str | None = None
        self._closed = False
        self._cancelled = False
        self._waiters: list[Deferred[None]] = []

    @property
    def is_open(self) -> bool:
        return not self._closed and bool(self._channel.is_open)

    def start(self, queue_object: ClosableDeferredQueue, consumer_tag: str) -> None:
        self._consumer_tag = consumer_tag
        self._next(queue_object)

    def _next(self, queue_object: ClosableDeferredQueue) -> None:
        queue_object.get().addCallbacks(self._received, self._stopped, callbackArgs=(queue_object,))

    @property
    def channel(self) -> TwistedChannel:
        return self._channel

    def delivery(self, queue: str, message: Any) -> Delivery:
        """Track a received message and wrap it as a Delivery of this channel."""
        method, properties = message.method, message.properties
        self._tracker.delivered(method.delivery_tag)
        return Delivery(
            queue=queue,
            body=message.body,
            tag=method.delivery_tag,
            channel=self,
            redelivered=bool(method.redelivered),
            headers=properties.headers or {},
        )

    def _received(self, message: Any, queue_object: ClosableDeferredQueue) -> None:
        # Take every message already buffered in one go, then wait for more.
        while True:
            delivery = self.delivery(self.queue, message)
            try:
                self._on_delivery(delivery)
            except Exception:  # noqa: BLE001 - a bug in a handler must not stop consuming
                self.log.failure("Unhandled error handling a {queue} delivery", queue=self.queue)
            if not queue_object.pending:
                break
            message = queue_object.pending.pop(0)
        self._next(queue_object)

    def _stopped(self, failure: Failure) -> None:
        """The consumer's queue closed: our own cancel, or the channel/broker ended it."""
        if self._cancelled:
            return  # deliveries in hand can still be acked on the open channel
        self.close()

    def _mark_closed(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._to_ack = []
        if self._ack_flush is not None and self._ack_flush.active():
            self._ack_flush.cancel()
        self._ack_flush = None
        waiters, self._waiters = self._waiters, []
        for d in waiters:
            d.callback(None)

    def ack(self, tags: Sequence[int]) -> None:
        if not self.is_open:
            return
        self._to_ack.extend(tags)
        if self._ack_flush is None:
            self._ack_flush = self._clock.callLater(0, self.flush_acks)

    def flush_acks(self) -> None:
        """Send the acks made so far (at the end of the reactor turn, or before closing)."""
        if self._ack_flush is not None and self._ack_flush.active():
            self._ack_flush.cancel()
        self._ack_flush = None
        tags, self._to_ack = self._to_ack, []
        if not tags or not self.is_open:
            return
        try:
            for tag, multiple in self._tracker.settle(tags):
                self._channel.basic_ack(delivery_tag=tag, multiple=multiple)
        except AMQPError as e:
            self.log.warn("Ack on {queue} failed: {error}", queue=self.queue, error=e)

    def nack(self, tag: int, requeue: bool = True) -> None:
        self.flush_acks()
        if not self.is_open or not self._tracker.forget(tag):
            return
        try:
            self._channel.basic_nack(delivery_tag=tag, requeue=requeue)
        except AMQPError as e:
            self.log.warn("Nack on {queue} failed: {error}", queue=self.queue, error=e)

    def cancel(self) -> Deferred[None]:
        if not self.is_open or self._consumer_tag is None:
            return succeed(None)
        self._cancelled = True
        return _d(self._channel.basic_cancel(self._consumer_tag)).addBoth(lambda _: None)

    def when_closed(self) -> Deferred[None]:
        if self._closed:
            return succeed(None)
        d: Deferred[None] = Deferred()
        self._waiters.append(d)
        return d

    def close(self) -> None:
        self.flush_acks()
        if self._channel.is_open:
            try:
                self._channel.close()
            except AMQPError as e:
                self.log.debug("Closing the {queue} channel: {error}", queue=self.queue, error=e)
        self._mark_closed()


class AMQPSession:
    """One open AMQP connection: a confirming publish channel and consumer channels."""

    log = Logger()

    def __init__(
        self, connection: TwistedProtocolConnection, publish_channel: TwistedChannel, clock: IReactorTime
    ) -> None:
        self._connection = connection
        self._publish_channel = publish_channel
        self._clock = clock
        self._declared: set[str] = set()
        self._channels: list[AMQPConsumerChannel] = []
        self._getter: AMQPConsumerChannel | None = None
        self._lost = False

    @classmethod
    def open(cls, connection: TwistedProtocolConnection, clock: IReactorTime) -> Deferred[AMQPSession]:
        def confirming(channel: TwistedChannel) -> Deferred[AMQPSession]:
            return _d(channel.confirm_delivery()).addCallback(lambda _: cls(connection, channel, clock))

        return _d(connection.channel()).addCallback(confirming)

    @property
    def is_open(self) -> bool:
        return not self._lost and bool(self._connection.is_open)

    def declare_queue(self, name: str) -> Deferred[None]:
        if name in self._declared and self._publish_channel.is_open:
            return succeed(None)
        return self._declare_on(self._publish_channel, name)

    def _declare_on(self, channel: TwistedChannel, name: str) -> Deferred[None]:
        def declared(_: object) -> None:
            self._declared.add(name)

        return _d(channel.queue_declare(queue=name, durable=True)).addCallback(declared)

    def consume(self, queue: str, prefetch: int, on_delivery: Callable[[Delivery], None]) -> Deferred[ConsumerChannel]:
        holder: dict[str, AMQPConsumerChannel] = {}

        def opened(channel: TwistedChannel) -> Deferred[Any]:
            holder["channel"] = consumer = AMQPConsumerChannel(channel, queue, on_delivery, self._clock)
            self._channels.append(consumer)
            d = self._declare_on(channel, queue)
            d.addCallback(lambda _: channel.basic_qos(prefetch_count=prefetch))
            d.addCallback(lambda _: channel.basic_consume(queue=queue, auto_ack=False))
            return d

        def consuming(result: tuple[ClosableDeferredQueue, str]) -> ConsumerChannel:
            queue_object, consumer_tag = result
            consumer = holder["channel"]
            consumer.start(queue_object, consumer_tag)
            return consumer

        return _d(self._connection.channel()).addCallback(opened).addCallback(consuming)

    def publish(self, queue: str, body: bytes, headers: Mapping[str, Any] | None = None) -> Deferred[None]:
        if not self.is_open:
            return fail(BrokerUnavailable("connection closed"))
        properties = pika.BasicProperties(
            delivery_mode=PERSISTENT, content_type="application/json", headers=dict(headers) if headers else None
        )

        def send(_: object) -> Deferred[None]:
            publish = self._publish_channel.basic_publish
            return _d(publish(exchange="", routing_key=queue, body=body, properties=properties, mandatory=True))

        d = self.declare_queue(queue).addCallback(send)
        return d.addCallbacks(lambda _: None, _publish_failed)

    def queue_counts(self, queue: str) -> Deferred[tuple[int, int]]:
        def counts(frame: Any) -> tuple[int, int]:
            self._declared.add(queue)
            return frame.method.message_count, frame.method.consumer_count

        return _d(self._publish_channel.queue_declare(queue=queue, durable=True)).addCallback(counts)

    def purge(self, queue: str) -> Deferred[int]:
        return _d(self._publish_channel.queue_purge(queue=queue)).addCallback(lambda frame: frame.method.message_count)

    def get(self, queue: str) -> Deferred[Delivery | None]:
        def opened(channel: TwistedChannel) -> Deferred[Delivery | None]:
            if self._getter is None or not self._getter.is_open:
                self._getter = AMQPConsumerChannel(channel, queue, lambda d: None, self._clock)
            return self._get_on(self._getter, queue)

        if self._getter is not None and self._getter.is_open:
            return self._get_on(self._getter, queue)
        return _d(self._connection.channel()).addCallback(opened)

    def _get_on(self, getter: AMQPConsumerChannel, queue: str) -> Deferred[Delivery | None]:
        def received(message: Any) -> Delivery | None:
            if message is None:
                return None
            return getter.delivery(queue, message)

        return _d(getter.channel.basic_get(queue=queue, auto_ack=False)).addCallback(received)

    def close(self) -> Deferred[None]:
        if not self._connection.is_open:
            return succeed(None)
        for channel in self._channels:
            channel.flush_acks()  # acks of the last reactor turn go out before the close
        closed = self._connection.close()
        return (closed if closed is not None else succeed(None)).addBoth(lambda _: None)

    def lost(self) -> None:
        self._lost = True
        for channel in self._channels:
            channel._mark_closed()


def _publish_failed(failure: Failure) -> Failure:
    if failure.check(AMQPError):
        return Failure(PublishFailed(f"{type(failure.value).__name__}: {failure.value}"))
    return failure


class _Protocol(TwistedProtocolConnection):  # type: ignore[misc]  # pika ships no types: its classes are Any
    """pika's protocol, telling the broker when the connection is gone."""

    on_lost: Callable[[_Protocol], None] | None = None

    def connectionLost(self, reason: Failure = ConnectionDone()) -> None:  # type: ignore[assignment] # noqa: B008
        super().connectionLost(reason)
        if self.on_lost is not None:
            self.on_lost(self)


class _ProtocolFactory(Factory):
    def __init__(self, broker: AMQPBroker) -> None:
        self._broker = broker

    def buildProtocol(self, addr: object) -> _Protocol:
        protocol = _Protocol(self._broker.parameters, custom_reactor=self._broker.reactor)
        protocol.on_lost = self._broker._connection_lost
        return protocol


class AMQPBroker(Service):
    """Keeps a connection to RabbitMQ up and hands sessions to listeners."""

    log = Logger()

    def __init__(
        self,
        reactor: ReactorLike,
        settings: BrokerSettings,
        rand: Callable[[], float] = random.random,
        endpoint: IStreamClientEndpoint | None = None,
    ) -> None:
        self.reactor = reactor
        self.settings = settings
        self.parameters = connection_parameters(settings)
        self._listeners: list[SessionListener] = []
        self._session: AMQPSession | None = None
        self._sessions: dict[_Protocol, AMQPSession] = {}
        self._waiting = SessionWaiters(reactor)
        self._rand = rand
        self._backoff = reconnect_backoff(settings)
        self.reconnects = 0
        self._service = ClientService(
            endpoint if endpoint is not None else broker_endpoint(reactor, settings),
            _ProtocolFactory(self),
            retryPolicy=self._retry_delay,
            clock=reactor,
            prepareConnection=self._prepare,
        )

    def _retry_delay(self, attempt: int) -> float:
        """ClientService's retry policy (it logs the delay): ``attempt`` counts the failures in a row."""
        return self._backoff.delay(attempt, self._rand)

    def _prepare(self, protocol: IProtocol) -> Deferred[None]:
        """Wait for the AMQP handshake, open the session, run the listeners.

        ``protocol`` is ClientService's proxy; ``ready`` fires with the real one.
        """
        ready: Deferred[Any] | None = getattr(protocol, "ready", None)
        if ready is None:
            return fail(BrokerUnavailable("AMQP handshake failed"))

        def too_slow(result: object, timeout: float) -> None:
            raise BrokerUnavailable(f"AMQP handshake took longer than {timeout:.0f}s")

        ready.addTimeout(self.settings.connect_timeout, self.reactor, onTimeoutCancel=too_slow)

        def handshaken(real: _Protocol) -> Deferred[None]:
            return AMQPSession.open(real, self.reactor).addCallback(self._session_opened, real)

        d = ready.addCallback(handshaken)
        d.addErrback(self._prepare_failed, protocol)
        return d

    def _session_opened(self, session: AMQPSession, protocol: _Protocol) -> Deferred[None]:
        self._sessions[protocol] = session
        started = [maybeDeferred(listener.session_started, session) for listener in self._listeners]

        def ready(_: object) -> None:
            self._session = session
            self.log.info("Connected to {url}", url=redact_url(self.settings.url))
            self._waiting.fire(session)

        return gatherResults(started, consumeErrors=True).addCallback(ready)

    def _prepare_failed(self, failure: Failure, protocol: IProtocol) -> Failure:
        error = getattr(failure.value, "subFailure", failure)  # gatherResults' FirstError wraps the cause
        self.log.warn(
            "Could not set up the connection to {url}: {error}",
            url=redact_url(self.settings.url),
            error=getattr(error, "value", error),
        )
        transport = getattr(protocol, "transport", None)
        if transport is not None:
            transport.abortConnection()
        return failure

    def _connection_lost(self, protocol: _Protocol) -> None:
        session = self._sessions.pop(protocol, None)
        if session is None:
            return
        session.lost()
        if session is self._session:
            self._session = None
            self.reconnects += 1
            if self.running:
                self.log.warn("Lost the connection to {url}", url=redact_url(self.settings.url))
        for listener in self._listeners:
            listener.session_lost(session)

    # -- the Broker interface ---------------------------------------------------

    def add_listener(self, listener: SessionListener) -> None:
        self._listeners.append(listener)

    def current_session(self) -> AMQPSession | None:
        session = self._session
        return session if session is not None and session.is_open else None

    def session(self, timeout: float | None = None) -> Deferred[BrokerSession]:
        session = self.current_session()
        if session is not None:
            return succeed(session)
        return self._waiting.wait(timeout)

    def publish(
        self, queue: str, body: bytes, headers: Mapping[str, Any] | None = None, timeout: float | None = None
    ) -> Deferred[None]:
        """Publish, confirmed, within ``timeout``; once more on the next connection if this one dies first.

        The deadline covers the confirm too: a broker that never confirms (a memory or
        disk alarm blocks publishers) makes the publish fail with PublishTimeout.  The
        cancel reaches pika's confirm Deferred, which has no canceller: pika keeps the
        delivery tag and ignores the late confirm, so its channel stays consistent.
        """
        limit = self.settings.publish_timeout if timeout is None else timeout
        deadline = PublishDeadline(limit)
        expires = self.reactor.seconds() + limit

        def attempt(session: BrokerSession, tries: int) -> Deferred[None]:
            deadline.sending = True
            d = session.publish(queue, body, headers)
            if tries == 0:
                d.addErrback(retry_once)
            return d

        def retry_once(failure: Failure) -> Deferred[None]:
            remaining = expires - self.reactor.seconds()
            if failure.check(PublishFailed, CancelledError) or remaining <= 0:
                return fail(failure)
            deadline.sending = False
            return self.session(remaining).addCallback(attempt, 1)

        return deadline.apply(self.session(limit).addCallback(attempt, 0), self.reactor)

    # -- service -----------------------------------------------------------------

    def startService(self) -> None:
        super().startService()
        self._service.startService()

    def stopService(self) -> Deferred[None]:
        super().stopService()
        session = self._session
        self._session = None
        self._waiting.fail(BrokerUnavailable("the broker service stopped"))
        closing = session.close() if session is not None else succeed(None)
        return closing.addBoth(lambda _: self._service.stopService()).addBoth(lambda _: None)
