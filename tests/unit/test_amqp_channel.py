"""One queue's consumer channel over a fake pika channel: deliveries, acks of a reactor turn, nacks, cancel, close."""

from __future__ import annotations

from typing import Any, cast

from pika.exceptions import ChannelWrongStateError
from twisted.internet.task import Clock
from twisted.logger import ILogObserver, LogEvent, Logger
from twisted.trial import unittest

from tests.amqp_fakes import FakeChannel, FakeConnection
from zqtwisted.runtime.amqp_channel import AMQPConsumerChannel
from zqtwisted.runtime.broker import Delivery


class ChannelTests(unittest.TestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.pika: FakeChannel = self.successResultOf(FakeConnection().channel())
        self.received: list[Delivery] = []
        self.events: list[LogEvent] = []
        self.channel = self.consumer("q", self.received.append)

    def consumer(self, queue: str, handler: Any) -> AMQPConsumerChannel:
        channel = AMQPConsumerChannel(self.pika, queue, handler, self.clock)
        channel.log = Logger(observer=cast(ILogObserver, self.events.append))
        consuming, tag = self.successResultOf(self.pika.basic_consume(queue, auto_ack=False))
        channel.start(consuming, tag)
        return channel

    def test_deliveries_are_wrapped(self) -> None:
        """Each message arrives as a Delivery of this channel, with its tag, body and redelivered flag."""
        self.pika.deliver(1, b"a")
        self.pika.deliver(2, b"b", redelivered=True)
        self.assertEqual([(d.tag, d.body, d.redelivered) for d in self.received], [(1, b"a", False), (2, b"b", True)])
        self.assertIs(self.received[0].channel, self.channel)
        self.assertEqual(self.received[0].headers, {})

    def test_messages_buffered_before_start_come_first(self) -> None:
        """Messages pika queued before the channel took its consumer over are handed over first, in order."""
        received: list[Delivery] = []
        channel = AMQPConsumerChannel(self.pika, "q3", received.append, self.clock)
        consuming, tag = self.successResultOf(self.pika.basic_consume("q3", auto_ack=False))
        self.pika.deliver(1)
        self.pika.deliver(2)
        channel.start(consuming, tag)
        self.pika.deliver(3)
        self.assertEqual([d.tag for d in received], [1, 2, 3])
        self.assertEqual(consuming.pending, [])

    def test_acks_of_one_turn_go_out_together(self) -> None:
        """Acks made in one reactor turn are sent at its end, as one multiple-ack where that is exact."""
        for tag in (1, 2, 3):
            self.pika.deliver(tag)
        self.received[0].ack()
        self.received[1].ack()
        self.assertEqual(self.pika.calls[-1][0], "consume")
        self.clock.advance(0)
        self.assertEqual([args for call, args in self.pika.calls if call == "ack"], [(2, True)])

    def test_nack_sends_pending_acks_first(self) -> None:
        """A nack flushes the acks before it; an unknown tag is not nacked."""
        self.pika.deliver(1)
        self.pika.deliver(2)
        self.received[0].ack()
        self.received[1].nack(requeue=True)
        self.received[1].nack(requeue=True)
        sent = [(call, args) for call, args in self.pika.calls if call in ("ack", "nack")]
        self.assertEqual(sent, [("ack", (1, False)), ("nack", (2, True))])

    def test_a_failing_handler_does_not_stop_consuming(self) -> None:
        """An exception in the delivery handler is logged; later deliveries still arrive."""
        calls: list[int] = []

        def handler(delivery: Delivery) -> None:
            calls.append(delivery.tag)
            if delivery.tag == 1:
                raise RuntimeError("bug")

        self.consumer("q2", handler)
        self.pika.deliver(1)
        self.pika.deliver(2)
        self.assertEqual(calls, [1, 2])
        failures = [e["log_failure"] for e in self.events if "log_failure" in e]
        self.assertEqual([f.getErrorMessage() for f in failures], ["bug"])

    def test_cancel_keeps_deliveries_ackable(self) -> None:
        """After cancel, the consumer's queue closing does not close the channel: deliveries in hand can be acked."""
        self.pika.deliver(1)
        self.successResultOf(self.channel.cancel())
        assert self.pika.consumer is not None
        self.pika.consumer.close(RuntimeError("cancelled"))
        self.assertTrue(self.channel.is_open)
        self.received[0].ack()
        self.clock.advance(0)
        self.assertIn(("ack", (1, False)), self.pika.calls)

    def test_broker_ending_the_consumer_closes_the_channel(self) -> None:
        """When the broker ends the consumer, the channel closes and its waiters fire; later acks go nowhere."""
        self.pika.deliver(1)
        closed = self.channel.when_closed()
        assert self.pika.consumer is not None
        self.pika.consumer.close(RuntimeError("broker cancelled"))
        self.successResultOf(closed)
        self.assertFalse(self.channel.is_open)
        self.successResultOf(self.channel.when_closed())
        self.received[0].ack()
        self.clock.advance(0)
        self.assertNotIn("ack", [call for call, _ in self.pika.calls])
        self.successResultOf(self.channel.cancel())

    def test_close_flushes_acks(self) -> None:
        """close() sends the acks of the current turn before closing the channel."""
        self.pika.deliver(1)
        self.received[0].ack()
        self.channel.close()
        self.assertEqual([c for c, _ in self.pika.calls][-2:], ["ack", "close"])
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_ack_errors_are_logged(self) -> None:
        """An ack or nack pika refuses (the channel died meanwhile) is logged, not raised."""
        self.pika.deliver(1)
        self.pika.deliver(2)

        def refuse(**kwargs: Any) -> None:
            raise ChannelWrongStateError("closed")

        self.pika.basic_ack = refuse  # type: ignore[method-assign, assignment]
        self.pika.basic_nack = refuse  # type: ignore[method-assign, assignment]
        self.received[0].ack()
        self.clock.advance(0)
        self.received[1].nack()
        formats = [e.get("log_format", "") for e in self.events]
        self.assertIn("Ack on {queue} failed: {error}", formats)
        self.assertIn("Nack on {queue} failed: {error}", formats)
