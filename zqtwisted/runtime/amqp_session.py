"""One open AMQP connection to one node: a confirming publish channel and the consumer channels.

Part of the AMQP broker (:mod:`zqtwisted.runtime.amqp`).  Every queue is declared with the
arguments of its type (:mod:`zqtwisted.runtime.declarations`); a declaration the broker
refuses as inequivalent fails with :class:`~zqtwisted.runtime.declarations.QueueMismatch`,
whose message says what to do, and the publish channel it closed is opened again.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import pika
from pika.adapters.twisted_connection import ClosableDeferredQueue, TwistedChannel, TwistedProtocolConnection
from pika.exceptions import AMQPError, ChannelClosedByBroker
from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure

from zqtwisted.runtime.amqp_bodies import bound_bodies
from zqtwisted.runtime.amqp_channel import AMQPConsumerChannel
from zqtwisted.runtime.broker import BrokerUnavailable, ConsumerChannel, Delivery, PublishFailed
from zqtwisted.runtime.declarations import (
    PRECONDITION_FAILED,
    QueueDeclaration,
    QueueDeclarations,
    QueueMismatch,
    explain_mismatch,
)
from zqtwisted.runtime.reactor import untyped_deferred as _d

PERSISTENT = 2


class AMQPSession:
    """One open AMQP connection, to one node: a confirming publish channel and consumer channels."""

    log = Logger()

    def __init__(
        self,
        connection: TwistedProtocolConnection,
        publish_channel: TwistedChannel,
        clock: IReactorTime,
        declarations: QueueDeclarations | None = None,
        node: str = "",
    ) -> None:
        self._connection = connection
        self._publish_channel = publish_channel
        self._clock = clock
        self._declarations = QueueDeclarations.classic() if declarations is None else declarations
        self._node = node
        self._declared: set[str] = set()
        self._channels: list[AMQPConsumerChannel] = []
        self._getter: AMQPConsumerChannel | None = None
        self._reopening: list[Deferred[TwistedChannel]] = []
        self._lost = False
        self._blocked: str | None = None
        self._blocked_at = 0.0
        self._unblocked: list[Deferred[None]] = []  # publishes waiting for the broker to unblock the connection
        connection._impl.add_on_connection_blocked_callback(self._on_blocked)
        connection._impl.add_on_connection_unblocked_callback(self._on_unblocked)

    @classmethod
    def open(
        cls,
        connection: TwistedProtocolConnection,
        clock: IReactorTime,
        declarations: QueueDeclarations | None = None,
        node: str = "",
    ) -> Deferred[AMQPSession]:
        return _confirming_channel(connection).addCallback(lambda ch: cls(connection, ch, clock, declarations, node))

    @property
    def is_open(self) -> bool:
        return not self._lost and bool(self._connection.is_open)

    @property
    def node(self) -> str:
        return self._node

    @property
    def blocked(self) -> str | None:
        """Why RabbitMQ blocks publishing on this connection (``connection.blocked``'s reason), or None."""
        return self._blocked

    @property
    def cluster_name(self) -> str:
        """The cluster's name as the broker announced it ("" if it did not)."""
        properties = getattr(getattr(self._connection, "_impl", None), "server_properties", None) or {}
        name = properties.get("cluster_name", b"")
        return name.decode("utf-8", "replace") if isinstance(name, bytes) else str(name)

    def _on_blocked(self, connection: object, frame: Any) -> None:
        """RabbitMQ blocks this connection (``connection.blocked``): a memory or disk alarm, on publishing."""
        reason = str(getattr(frame.method, "reason", "") or "a resource alarm")
        if self._blocked is None:
            self._blocked_at = self._clock.seconds()
        self._blocked = reason
        self.log.warn(
            "RabbitMQ at {node} blocks publishing on this connection: {reason} (a memory or disk alarm); "
            "publishes fail at their deadline and their events stay in the queue until it clears",
            node=self._node,
            reason=reason,
        )

    def _on_unblocked(self, connection: object, frame: Any) -> None:
        if self._blocked is None:
            return
        self._blocked = None
        self.log.info(
            "RabbitMQ at {node} unblocked publishing after {seconds:.1f}s",
            node=self._node,
            seconds=self._clock.seconds() - self._blocked_at,
        )
        waiting, self._unblocked = self._unblocked, []
        for d in waiting:
            d.callback(None)

    def _until_unblocked(self) -> Deferred[None]:
        """Fires once the broker unblocks the connection (cancellable: a publish's deadline)."""
        d: Deferred[None] = Deferred(lambda d: self._unblocked.remove(d) if d in self._unblocked else None)
        self._unblocked.append(d)
        return d

    def _publisher(self) -> Deferred[TwistedChannel]:
        """The confirming publish channel; a new one if the broker closed it (a refused declaration does)."""
        if self._publish_channel.is_open:
            return succeed(self._publish_channel)
        if not self.is_open:
            return fail(BrokerUnavailable("connection closed"))
        waiter: Deferred[TwistedChannel] = Deferred()
        self._reopening.append(waiter)
        if len(self._reopening) == 1:
            _confirming_channel(self._connection).addCallbacks(self._reopened, self._reopen_failed)
        return waiter

    def _reopened(self, channel: TwistedChannel) -> None:
        self._publish_channel = channel
        waiting, self._reopening = self._reopening, []
        for d in waiting:
            d.callback(channel)

    def _reopen_failed(self, failure: Failure) -> None:
        waiting, self._reopening = self._reopening, []
        for d in waiting:
            d.errback(failure)

    def declare_queue(self, name: str) -> Deferred[None]:
        if name in self._declared:
            return succeed(None)
        return self._publisher().addCallback(self._declare_on, name).addCallback(lambda _: None)

    def _declare_on(self, channel: TwistedChannel, name: str) -> Deferred[Any]:
        """Declare ``name`` as its configuration says; the broker's answer (counts), or QueueMismatch."""
        declaration = self._declarations(name)

        def declared(frame: Any) -> Any:
            self._declared.add(name)
            return frame

        d = _d(channel.queue_declare(queue=name, durable=True, arguments=declaration.arguments()))
        return d.addCallbacks(declared, _refused, errbackArgs=(declaration,))

    def consume(
        self, queue: str, prefetch: int, on_delivery: Callable[[Delivery], None], max_body: int | None = None
    ) -> Deferred[ConsumerChannel]:
        holder: dict[str, AMQPConsumerChannel] = {}

        def opened(channel: TwistedChannel) -> Deferred[Any]:
            bound_bodies(channel, max_body)
            holder["channel"] = consumer = AMQPConsumerChannel(channel, queue, on_delivery, self._clock)
            self._channels.append(consumer)
            d: Deferred[Any] = succeed(None)
            for name in (*self._declarations(queue).declare_first, queue):
                d.addCallback(lambda _, name: self._declare_on(channel, name), name)
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
        if self._blocked is not None:
            # RabbitMQ reads nothing from a blocked connection: sending now would only pile the
            # message up in buffers, to land (perhaps long after its deadline) as a duplicate.
            return self._until_unblocked().addCallback(lambda _: self.publish(queue, body, headers))
        properties = pika.BasicProperties(
            delivery_mode=PERSISTENT, content_type="application/json", headers=dict(headers) if headers else None
        )

        def send(channel: TwistedChannel) -> Deferred[None]:
            confirm = channel.basic_publish(
                exchange="", routing_key=queue, body=body, properties=properties, mandatory=True
            )
            return _d(confirm)

        if queue in self._declared and self._publish_channel.is_open:
            d = succeed(self._publish_channel).addCallback(send)  # the hot path
        else:
            d = self.declare_queue(queue).addCallback(lambda _: self._publisher()).addCallback(send)
        return d.addCallbacks(lambda _: None, _publish_failed)

    def queue_counts(self, queue: str) -> Deferred[tuple[int, int]]:
        def counts(frame: Any) -> tuple[int, int]:
            return frame.method.message_count, frame.method.consumer_count

        return self._publisher().addCallback(self._declare_on, queue).addCallback(counts)

    def purge(self, queue: str) -> Deferred[int]:
        def purge(channel: TwistedChannel) -> Deferred[Any]:
            return _d(channel.queue_purge(queue=queue))

        return self._publisher().addCallback(purge).addCallback(lambda frame: frame.method.message_count)

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

    def abort(self) -> None:
        """Drop the connection at once, without the closing handshake (a blocked broker never answers it)."""
        transport = getattr(self._connection, "transport", None)
        if transport is not None:
            transport.abortConnection()

    def lost(self) -> None:
        self._lost = True
        waiting, self._unblocked = self._unblocked, []
        for d in waiting:
            d.errback(BrokerUnavailable("connection closed"))
        for channel in self._channels:
            channel._mark_closed()


def _confirming_channel(connection: TwistedProtocolConnection) -> Deferred[TwistedChannel]:
    """A new channel of ``connection`` in confirm mode."""

    def confirming(channel: TwistedChannel) -> Deferred[TwistedChannel]:
        return _d(channel.confirm_delivery()).addCallback(lambda _: channel)

    return _d(connection.channel()).addCallback(confirming)


def _refused(failure: Failure, declaration: QueueDeclaration) -> Failure:
    """A declaration the broker refused as inequivalent becomes a QueueMismatch saying what to do."""
    error = failure.value
    if isinstance(error, ChannelClosedByBroker) and error.reply_code == PRECONDITION_FAILED:
        return Failure(QueueMismatch(explain_mismatch(declaration, str(error.reply_text))))
    return failure


def _publish_failed(failure: Failure) -> Failure:
    if failure.check(AMQPError):
        return Failure(PublishFailed(f"{type(failure.value).__name__}: {failure.value}"))
    return failure
