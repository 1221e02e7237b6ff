"""The broker contract: the same tests run against MemoryBroker and the real RabbitMQ.

A subclass provides ``make_broker()``, ``drop_connection()`` and ``settle()``; the
fake cannot drift from the real thing while both pass these.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any

from twisted.internet.defer import Deferred, ensureDeferred

from tests.helpers import unique_queue
from zqtwisted.runtime.broker import ORIGINAL_SIZE, Broker, BrokerSession, BrokerUnavailable, Delivery, PublishTimeout


def inline(f: Callable[..., Coroutine[Any, Any, None]]) -> Callable[..., Deferred[None]]:
    @functools.wraps(f)
    def run(self: Any) -> Deferred[None]:
        return ensureDeferred(f(self))

    return run


if TYPE_CHECKING:
    from twisted.trial.unittest import TestCase

    _ContractBase = TestCase
else:
    _ContractBase = object


class BrokerContract(_ContractBase):
    """Mixin for a trial TestCase; ``self.broker`` is started in setUp."""

    broker: Broker
    queues: list[str]  # declared queues, deleted after the test

    # -- provided by subclasses ---------------------------------------------------

    def make_broker(self) -> Broker:
        raise NotImplementedError

    async def drop_connection(self, reconnect: bool = True) -> None:
        raise NotImplementedError

    async def settle(self, predicate: Callable[[], bool], timeout: float = 10.0) -> None:
        raise NotImplementedError

    # -- helpers ------------------------------------------------------------------

    async def session(self) -> BrokerSession:
        return await self.broker.session(10)

    async def new_queue(self, messages: int = 0) -> tuple[str, BrokerSession]:
        """A fresh declared queue (deleted after the test) holding ``messages`` bodies b"0", b"1", ..."""
        queue = unique_queue()
        self.queues.append(queue)
        session = await self.session()
        await session.declare_queue(queue)
        for n in range(messages):
            await session.publish(queue, str(n).encode())
        return queue, session

    async def consume(self, queue: str, prefetch: int = 10) -> tuple[Any, list[Delivery]]:
        received: list[Delivery] = []
        session = await self.session()
        channel = await session.consume(queue, prefetch, received.append)
        return channel, received

    # -- the contract ------------------------------------------------------------------

    @inline
    async def test_publish_then_consume(self) -> None:
        """A published body and its headers reach the consumer unchanged."""
        queue, session = await self.new_queue()
        await session.publish(queue, b'{"a": 1}', {"x-zq-reason": "why"})
        _, received = await self.consume(queue)
        await self.settle(lambda: len(received) == 1)
        self.assertEqual(received[0].body, b'{"a": 1}')
        self.assertEqual(received[0].headers.get("x-zq-reason"), "why")
        self.assertFalse(received[0].redelivered)

    @inline
    async def test_ack_removes_and_unacked_return_on_drop(self) -> None:
        """Acked messages are gone; unacked ones come back, redelivered, after the connection drops."""
        queue, _ = await self.new_queue(3)
        _, received = await self.consume(queue)
        await self.settle(lambda: len(received) == 3)
        received[0].channel.ack([received[0].tag])
        await self.settle_time(0.3)  # acks are not confirmed: let it reach the broker
        await self.drop_connection()
        self.assertFalse(received[0].channel.is_open)
        received[1].channel.ack([received[1].tag])  # on a dead channel: a no-op, not an error
        _, again = await self.consume(queue)
        await self.settle(lambda: len(again) == 2)
        self.assertEqual(sorted(d.body for d in again), [b"1", b"2"])
        self.assertTrue(all(d.redelivered for d in again))

    @inline
    async def test_prefetch_limits_unacked(self) -> None:
        """No more than prefetch messages are delivered unacked."""
        queue, session = await self.new_queue(10)
        _, received = await self.consume(queue, prefetch=4)
        await self.settle(lambda: len(received) == 4)
        self.assertEqual((await session.queue_counts(queue))[0], 6)
        received[0].channel.ack([d.tag for d in received])
        await self.settle(lambda: len(received) == 8)

    @inline
    async def test_multiple_ack_and_nack_requeue(self) -> None:
        """A batch of tags is acked exactly; a nacked message is delivered again."""
        queue, session = await self.new_queue(4)
        _, received = await self.consume(queue)
        await self.settle(lambda: len(received) == 4)
        channel = received[0].channel
        channel.ack([received[1].tag, received[2].tag])
        channel.nack(received[0].tag, requeue=True)
        await self.settle(lambda: len(received) == 5)
        self.assertEqual(received[4].body, b"0")
        channel.ack([received[3].tag, received[4].tag])
        await self.settle(lambda: True)
        counts = await session.queue_counts(queue)
        self.assertEqual(counts, (0, 1))

    @inline
    async def test_counts_purge_and_get(self) -> None:
        """queue_counts, purge and get behave like RabbitMQ's declare, purge and basic.get."""
        queue, session = await self.new_queue()
        self.assertIsNone(await session.get(queue))
        for n in range(3):
            await session.publish(queue, str(n).encode())
        self.assertEqual(await session.queue_counts(queue), (3, 0))
        got = await session.get(queue)
        assert got is not None
        self.assertEqual(got.body, b"0")
        got.nack(requeue=True)
        await self.settle(lambda: True)
        self.assertEqual(await session.purge(queue), 3)
        self.assertEqual(await session.queue_counts(queue), (0, 0))

    @inline
    async def test_ack_after_cancel(self) -> None:
        """After cancel() no new delivery arrives, but deliveries in hand can still be acked."""
        queue, session = await self.new_queue(3)
        channel, received = await self.consume(queue, prefetch=2)
        await self.settle(lambda: len(received) == 2)
        await channel.cancel()
        self.assertTrue(channel.is_open)
        channel.ack([d.tag for d in received])
        await self.settle_time(0.3)
        self.assertEqual(len(received), 2)
        self.assertEqual(await session.queue_counts(queue), (1, 0))

    @inline
    async def test_channel_reports_closing(self) -> None:
        """when_closed fires when the connection under a consumer channel drops."""
        queue, _ = await self.new_queue()
        channel, _ = await self.consume(queue)
        closed = channel.when_closed()
        await self.drop_connection()
        await self.settle(lambda: closed.called)
        self.assertFalse(channel.is_open)

    @inline
    async def test_publish_waits_for_reconnect(self) -> None:
        """A publish made while disconnected goes through on the next connection."""
        queue, session = await self.new_queue()
        await self.drop_connection(reconnect=False)
        published = self.broker.publish(queue, b"late", timeout=10)
        self.assertFalse(published.called)
        await self.reconnect()
        await published
        session = await self.session()
        self.assertEqual((await session.queue_counts(queue))[0], 1)

    @inline
    async def test_publish_fails_loudly_after_timeout(self) -> None:
        """A publish that finds no connection within its timeout fails with BrokerUnavailable."""
        await self.drop_connection(reconnect=False)
        published = self.broker.publish(unique_queue(), b"x", timeout=0.5)
        await self.settle_time(1.0)
        with self.assertRaises(BrokerUnavailable):
            await published
        await self.reconnect()

    @inline
    async def test_unconfirmed_publish_fails_at_its_deadline(self) -> None:
        """A publish the broker does not confirm in time fails with PublishTimeout; the broker works afterwards."""
        queue, session = await self.new_queue()
        await self.hold_confirms()
        try:
            published = self.broker.publish(queue, b"stuck", timeout=1.0)
            await self.settle_time(1.5)
            self.assertEqual(session.blocked, "low on memory")  # the broker said so (connection.blocked)
            with self.assertRaises(PublishTimeout) as raised:
                await published
            self.assertIn("blocks publishing (low on memory)", str(raised.exception))
        finally:
            await self.release_confirms()
        self.assertIsNone(session.blocked)
        await self.broker.publish(queue, b"after", timeout=10)
        await self.settle(lambda: True)
        self.assertIn((await session.queue_counts(queue))[0], (1, 2))  # the stuck one may still land: at least once

    @inline
    async def test_a_body_over_max_body_arrives_cut_with_its_size(self) -> None:
        """A consumer with max_body gets a larger body cut to max_body + 1 bytes, its size in x-zq-original-size."""
        queue, session = await self.new_queue()
        big = bytes(range(256)) * 1200  # 307,200 bytes: three body frames at RabbitMQ's default frame_max
        await session.publish(queue, big, {"x-zq-first-failure": "then"})
        await session.publish(queue, big[:1000])
        await session.publish(queue, big)
        received: list[Delivery] = []
        await session.consume(queue, 10, received.append, max_body=1000)
        await self.settle(lambda: len(received) == 3)
        cut, whole, again = received
        self.assertEqual(cut.body, big[:1001])
        self.assertEqual(dict(cut.headers), {"x-zq-first-failure": "then", ORIGINAL_SIZE: len(big)})
        self.assertEqual((whole.body, dict(whole.headers)), (big[:1000], {}))
        self.assertEqual((again.body, again.headers.get(ORIGINAL_SIZE)), (big[:1001], len(big)))
        cut.channel.ack([d.tag for d in received])

    async def hold_confirms(self) -> None:
        """Make the broker stop confirming publishes (a memory alarm: it says it blocks publishing, "low on memory")."""
        raise NotImplementedError

    async def release_confirms(self) -> None:
        raise NotImplementedError

    async def reconnect(self) -> None:
        raise NotImplementedError

    async def settle_time(self, seconds: float) -> None:
        raise NotImplementedError
