"""One queue's consumer channel on pika's ``TwistedChannel``: deliveries in, acks out.

Part of the AMQP broker (:mod:`zqtwisted.runtime.amqp`); the ``runtime/amqp*.py`` modules
are the only ones that know pika.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from types import MappingProxyType
from typing import Any

from pika.adapters.twisted_connection import ClosableDeferredQueue, TwistedChannel
from pika.exceptions import AMQPError
from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure

from zqtwisted.runtime.broker import AckTracker, Delivery
from zqtwisted.runtime.reactor import untyped_deferred as _d

NO_HEADERS: Mapping[str, Any] = MappingProxyType({})  # one read-only empty mapping for every message without headers


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
        """Take the consumer's messages from ``queue_object`` (what pika's ``basic_consume`` gave).

        pika's ``TwistedChannel`` hands each message to ``queue_object.put``, and
        ``DeferredQueue.put`` fires one Deferred per message for a ``get()`` waiting on
        it: a Deferred built, called back and dropped, and another ``get()``, for every
        delivery (about a tenth of the consumer's CPU per event).  So ``put`` of this
        queue object is this channel's own handler: each message goes straight to
        ``on_delivery``.  pika still owns the queue object's life: it closes it when the
        consumer is cancelled (by us or by the broker), the queue deleted or the channel
        closed, and the one ``get()`` kept waiting on it fails then, which is how this
        channel hears of it.
        """
        self._consumer_tag = consumer_tag
        queue_object.put = self._put
        while queue_object.pending:  # any buffered before now, in order
            self._put(queue_object.pending.pop(0))
        queue_object.get().addErrback(self._stopped)

    def _put(self, message: Any) -> None:
        """One message from pika (``ReceivedMessage``): hand it over as a Delivery."""
        try:
            self._on_delivery(self.delivery(self.queue, message))
        except Exception:  # noqa: BLE001 - a bug in a handler must not stop consuming
            self.log.failure("Unhandled error handling a {queue} delivery", queue=self.queue)

    @property
    def channel(self) -> TwistedChannel:
        return self._channel

    def delivery(self, queue: str, message: Any) -> Delivery:
        """Track a received message and wrap it as a Delivery of this channel."""
        method = message.method
        tag = method.delivery_tag
        self._tracker.delivered(tag)
        headers = message.properties.headers
        return Delivery(queue, message.body, tag, self, bool(method.redelivered), headers or NO_HEADERS)

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
        if self._closed:
            return  # a channel that closes otherwise drops them in flush_acks
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
