"""Stand-ins for pika's Twisted connection and channel, recording what the AMQP session sends.

Only the calls :mod:`zqtwisted.runtime.amqp_session` and ``amqp_channel`` make; each
returns a Deferred as pika's ``TwistedChannel`` does.  A test refuses a declaration
with ``refuse[queue] = reply_text`` (the broker closes the channel, as RabbitMQ does).
"""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pika.spec
from pika.adapters.twisted_connection import ClosableDeferredQueue, ReceivedMessage
from pika.exceptions import ChannelClosedByBroker, ChannelWrongStateError
from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.testing import StringTransport


class FakeChannel:
    def __init__(self, connection: FakeConnection, number: int) -> None:
        self.connection = connection
        self.number = number
        self.is_open = True
        self.calls: list[tuple[str, Any]] = []
        self.confirming = False
        self.consumer: ClosableDeferredQueue | None = None
        self.publish_error: Exception | None = None
        self._channel = SimpleNamespace(_content_assembler=None)  # pika's Channel under it: its content assembler

    def _open(self) -> None:
        if not self.is_open:
            raise ChannelWrongStateError("Channel is closed.")

    def confirm_delivery(self) -> Deferred[None]:
        self.confirming = True
        return succeed(None)

    def queue_declare(self, queue: str, durable: bool = False, arguments: Any = None) -> Deferred[Any]:
        self._open()
        self.calls.append(("declare", (queue, durable, arguments)))
        refusal = self.connection.refuse.get(queue)
        if refusal is not None:
            self.is_open = False
            return fail(ChannelClosedByBroker(406, refusal))
        method = SimpleNamespace(message_count=self.connection.counts.get(queue, (0, 0))[0])
        method.consumer_count = self.connection.counts.get(queue, (0, 0))[1]
        return succeed(SimpleNamespace(method=method))

    def queue_purge(self, queue: str) -> Deferred[Any]:
        self._open()
        self.calls.append(("purge", queue))
        return succeed(SimpleNamespace(method=SimpleNamespace(message_count=3)))

    def basic_publish(self, **kwargs: Any) -> Deferred[None]:
        self._open()
        self.calls.append(("publish", kwargs))
        if self.publish_error is not None:
            return fail(self.publish_error)
        return succeed(None)

    def basic_qos(self, prefetch_count: int) -> Deferred[None]:
        self.calls.append(("qos", prefetch_count))
        return succeed(None)

    def basic_consume(self, queue: str, auto_ack: bool) -> Deferred[tuple[ClosableDeferredQueue, str]]:
        self.calls.append(("consume", queue))
        self.consumer = ClosableDeferredQueue()
        return succeed((self.consumer, "ctag-1"))

    def basic_ack(self, delivery_tag: int, multiple: bool = False) -> None:
        self._open()
        self.calls.append(("ack", (delivery_tag, multiple)))

    def basic_nack(self, delivery_tag: int, requeue: bool = True) -> None:
        self._open()
        self.calls.append(("nack", (delivery_tag, requeue)))

    def basic_cancel(self, consumer_tag: str) -> Deferred[None]:
        self.calls.append(("cancel", consumer_tag))
        return succeed(None)

    def basic_get(self, queue: str, auto_ack: bool = False) -> Deferred[Any]:
        self.calls.append(("get", queue))
        return succeed(self.connection.gets.pop(0) if self.connection.gets else None)

    def close(self) -> None:
        self.calls.append(("close", None))
        self.is_open = False

    def deliver(self, tag: int, body: bytes = b"{}", redelivered: bool = False) -> None:
        """The broker sends a message to this channel's consumer."""
        assert self.consumer is not None
        self.consumer.put(message(tag, body, redelivered))


def message(tag: int, body: bytes = b"{}", redelivered: bool = False, headers: Any = None) -> ReceivedMessage:
    method = pika.spec.Basic.Deliver(delivery_tag=tag, redelivered=redelivered)
    return ReceivedMessage(None, method, pika.spec.BasicProperties(headers=headers), body)


class FakeImpl:
    """pika's connection under the Twisted one: the broker's properties and the blocked / unblocked callbacks."""

    def __init__(self, cluster_name: bytes) -> None:
        self.server_properties = {"cluster_name": cluster_name}
        self.on_blocked: list[Any] = []
        self.on_unblocked: list[Any] = []

    def add_on_connection_blocked_callback(self, callback: Any) -> None:
        self.on_blocked.append(callback)

    def add_on_connection_unblocked_callback(self, callback: Any) -> None:
        self.on_unblocked.append(callback)

    def block(self, reason: str = "low on memory") -> None:
        """RabbitMQ sends connection.blocked (a resource alarm)."""
        frame = SimpleNamespace(method=pika.spec.Connection.Blocked(reason=reason))
        for callback in self.on_blocked:
            callback(self, frame)

    def unblock(self) -> None:
        frame = SimpleNamespace(method=pika.spec.Connection.Unblocked())
        for callback in self.on_unblocked:
            callback(self, frame)


class FakeConnection:
    """pika's TwistedProtocolConnection: channels, and the broker's name for its cluster."""

    def __init__(self, cluster_name: bytes = b"zqtwisted-local") -> None:
        self.is_open = True
        self.channels: list[FakeChannel] = []
        self.refuse: dict[str, str] = {}
        self.counts: dict[str, tuple[int, int]] = {}
        self.gets: list[Any] = []
        self.channel_error: Exception | None = None
        self._impl = FakeImpl(cluster_name)
        self.transport = StringTransport()
        self.closed = 0

    def channel(self) -> Deferred[FakeChannel]:
        if self.channel_error is not None:
            return fail(self.channel_error)
        channel = FakeChannel(self, len(self.channels) + 1)
        self.channels.append(channel)
        return succeed(channel)

    def close(self) -> Deferred[None]:
        self.closed += 1
        self.is_open = False
        return succeed(None)

    def calls(self, name: str) -> list[Any]:
        """Every call ``name`` on any channel, in channel order."""
        return [args for channel in self.channels for call, args in channel.calls if call == name]
