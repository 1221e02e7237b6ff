"""One AMQP session over a fake pika connection: declarations with their arguments, refusals, the publish channel."""

from __future__ import annotations

from typing import Any, cast

from pika.exceptions import ChannelClosedByBroker, UnroutableError
from twisted.internet.defer import CancelledError
from twisted.internet.task import Clock
from twisted.logger import ILogObserver, Logger, formatEvent
from twisted.trial import unittest

from tests.amqp_fakes import FakeConnection, message
from zqtwisted.config import parse_config
from zqtwisted.runtime.amqp_bodies import BoundedAssembler
from zqtwisted.runtime.amqp_session import AMQPSession
from zqtwisted.runtime.broker import BrokerUnavailable, PublishFailed
from zqtwisted.runtime.declarations import QueueDeclarations, QueueMismatch

QUORUM = parse_config(
    {"queues": {"push": {"queue_type": "quorum", "delivery_limit": 4}, "q": {"queue_type": "quorum"}}},
)
REFUSAL = (
    "PRECONDITION_FAILED - inequivalent arg 'x-queue-type' for queue 'q' in vhost '/': "
    "received the value 'quorum' of type 'longstr' but current is none"
)


class SessionTests(unittest.TestCase):
    def setUp(self) -> None:
        self.connection = FakeConnection()
        self.clock = Clock()
        declarations = QueueDeclarations.from_config(QUORUM)
        opened = AMQPSession.open(self.connection, self.clock, declarations, "127.0.0.1:5682")
        self.session = self.successResultOf(opened)

    def test_node_cluster_and_confirms(self) -> None:
        """The session knows its node and the cluster's name; its publish channel confirms."""
        self.assertEqual((self.session.node, self.session.cluster_name), ("127.0.0.1:5682", "zqtwisted-local"))
        self.assertTrue(self.connection.channels[0].confirming)
        self.connection._impl.server_properties = {}
        self.assertEqual(self.session.cluster_name, "")

    def test_classic_and_quorum_declarations(self) -> None:
        """A classic queue is declared with no arguments, a quorum queue with x-queue-type; each once."""
        self.successResultOf(self.session.declare_queue("classic_q"))
        self.successResultOf(self.session.declare_queue("q"))
        self.successResultOf(self.session.declare_queue("q"))
        self.assertEqual(
            self.connection.calls("declare"),
            [("classic_q", True, None), ("q", True, {"x-queue-type": "quorum"})],
        )

    def test_publish_declares_once_then_takes_the_hot_path(self) -> None:
        """The first publish to a queue declares it as configured; later ones only publish."""
        for body in (b"1", b"2"):
            self.successResultOf(self.session.publish("q", body, {"h": 1}))
        self.assertEqual(len(self.connection.calls("declare")), 1)
        published = self.connection.calls("publish")
        self.assertEqual([p["body"] for p in published], [b"1", b"2"])
        self.assertEqual((published[0]["routing_key"], published[0]["mandatory"]), ("q", True))
        self.assertEqual(published[0]["properties"].delivery_mode, 2)
        self.assertEqual(published[0]["properties"].headers, {"h": 1})

    def test_refused_declaration_says_what_to_do_and_the_channel_reopens(self) -> None:
        """An inequivalent declaration fails with QueueMismatch; the next publish gets a new confirming channel."""
        self.connection.refuse["q"] = REFUSAL
        failure = self.failureResultOf(self.session.publish("q", b"x"), QueueMismatch)
        self.assertIn('[queues.q] queue_type = "classic"', str(failure.value))
        self.assertFalse(self.connection.channels[0].is_open)
        self.successResultOf(self.session.publish("other", b"y"))
        self.assertEqual(len(self.connection.channels), 2)
        self.assertTrue(self.connection.channels[1].confirming)
        self.assertEqual(self.connection.channels[1].calls[-1][1]["routing_key"], "other")

    def test_waiters_share_one_new_channel(self) -> None:
        """Publishes made while the publish channel reopens wait for the same new channel."""
        self.connection.channels[0].is_open = False
        self.connection.channel_error = None
        first = self.session.declare_queue("a")
        second = self.session.declare_queue("b")
        self.successResultOf(first)
        self.successResultOf(second)
        self.assertEqual(len(self.connection.channels), 2)

    def test_reopen_failure_fails_the_waiters(self) -> None:
        """When no new channel can be had, the waiting operations fail."""
        self.connection.channels[0].is_open = False
        self.connection.channel_error = ChannelClosedByBroker(504, "CHANNEL_ERROR")
        self.failureResultOf(self.session.purge("q"), ChannelClosedByBroker)

    def test_closed_connection(self) -> None:
        """On a closed connection publishing fails with BrokerUnavailable, and no channel is opened."""
        self.connection.is_open = False
        self.failureResultOf(self.session.publish("q", b"x"), BrokerUnavailable)
        self.connection.channels[0].is_open = False
        self.failureResultOf(self.session.queue_counts("q"), BrokerUnavailable)

    def test_broker_errors_become_publish_failed(self) -> None:
        """A publish the broker returns or nacks fails with PublishFailed."""
        self.connection.channels[0].publish_error = UnroutableError([])
        self.failureResultOf(self.session.publish("q", b"x"), PublishFailed)

    def test_consume_declares_the_dead_letter_queue_first(self) -> None:
        """A quorum queue's consumer declares {queue}.failed, then the queue, then sets QoS and consumes."""
        received: list[Any] = []
        channel = self.successResultOf(self.session.consume("push", 7, received.append))
        consumer = self.connection.channels[1]
        self.assertEqual(
            [call for call, _ in consumer.calls],
            ["declare", "declare", "qos", "consume"],
        )
        self.assertEqual(consumer.calls[0][1], ("push.failed", True, {"x-queue-type": "quorum"}))
        self.assertEqual(consumer.calls[1][1][2]["x-dead-letter-routing-key"], "push.failed")
        self.assertEqual(consumer.calls[2][1], 7)
        consumer.deliver(1, b'{"a": 1}')
        self.assertEqual([d.body for d in received], [b'{"a": 1}'])
        self.assertTrue(channel.is_open)

    def test_counts_purge_and_get(self) -> None:
        """Counts declare with the queue's arguments; purge counts; get takes one message or None."""
        self.connection.counts["q"] = (5, 2)
        self.assertEqual(self.successResultOf(self.session.queue_counts("q")), (5, 2))
        self.assertEqual(self.connection.calls("declare")[-1], ("q", True, {"x-queue-type": "quorum"}))
        self.assertEqual(self.successResultOf(self.session.purge("q")), 3)
        self.connection.gets.append(message(9, b"m"))
        delivery = self.successResultOf(self.session.get("q.failed"))
        assert delivery is not None
        self.assertEqual((delivery.body, delivery.tag, delivery.queue), (b"m", 9, "q.failed"))
        self.assertIsNone(self.successResultOf(self.session.get("q.failed")))

    def test_close_flushes_acks_and_lost_closes_channels(self) -> None:
        """close() sends pending acks first; lost() marks every consumer channel closed."""
        received: list[Any] = []
        channel = self.successResultOf(self.session.consume("q", 10, received.append))
        self.connection.channels[1].deliver(1)
        received[0].ack()
        self.successResultOf(self.session.close())
        self.assertEqual(self.connection.calls("ack"), [(1, False)])
        self.assertEqual(self.connection.closed, 1)
        self.successResultOf(self.session.close())
        self.session.lost()
        self.assertFalse(channel.is_open)
        self.assertFalse(self.session.is_open)


class StubImpl:
    """The pika Channel under a real TwistedChannel: accepts publishes, confirms none."""

    channel_number = 1
    is_open = True

    def add_on_close_callback(self, cb: Any) -> None: ...

    def add_on_cancel_callback(self, cb: Any) -> None: ...

    def add_callback(self, *args: Any, **kwargs: Any) -> None: ...

    def basic_publish(self, **kwargs: Any) -> None: ...


class DeadlineTests(unittest.TestCase):
    def test_cancelled_confirm_then_closed_channel(self) -> None:
        """A publish cancelled by its deadline, then its channel closed (the node died): nothing raises, others fail."""
        from pika.adapters.twisted_connection import TwistedChannel
        from twisted.internet.defer import CancelledError

        impl = StubImpl()
        channel = TwistedChannel(impl)
        channel._delivery_confirmation = True
        channel._delivery_message_id = 0
        session = AMQPSession(FakeConnection(), channel, Clock())
        session._declared.add("q")
        waiting = session.publish("q", b"x")
        confirming = session.publish("q", b"y")
        waiting.cancel()
        self.failureResultOf(waiting, CancelledError)
        channel._on_channel_closed(impl, ChannelClosedByBroker(320, "CONNECTION_FORCED - shutdown"))
        self.failureResultOf(confirming, PublishFailed)
        self.assertEqual(self.flushLoggedErrors(), [])


class BlockedTests(unittest.TestCase):
    """RabbitMQ's connection.blocked / connection.unblocked (a memory or disk alarm)."""

    def setUp(self) -> None:
        self.connection = FakeConnection()
        self.clock = Clock()
        self.session = self.successResultOf(AMQPSession.open(self.connection, self.clock, node="127.0.0.1:5672"))
        self.events: list[dict[str, Any]] = []
        self.session.log = Logger(observer=cast(ILogObserver, self.events.append))

    def logged(self) -> list[str]:
        return [formatEvent(e) for e in self.events]

    def test_blocked_and_unblocked_are_logged_and_known(self) -> None:
        """The blocked state and its reason are kept and logged; unblocking logs how long it lasted."""
        self.assertIsNone(self.session.blocked)
        self.connection._impl.block("low on memory")
        self.assertEqual(self.session.blocked, "low on memory")
        self.assertIn(
            "RabbitMQ at 127.0.0.1:5672 blocks publishing on this connection: low on memory (a memory or disk alarm); "
            "publishes fail at their deadline and their events stay in the queue until it clears",
            self.logged(),
        )
        self.clock.advance(12.5)
        self.connection._impl.unblock()
        self.assertIsNone(self.session.blocked)
        self.assertEqual(self.logged()[-1], "RabbitMQ at 127.0.0.1:5672 unblocked publishing after 12.5s")
        self.connection._impl.unblock()  # a second unblock says nothing
        self.assertEqual(len(self.events), 2)

    def test_a_publish_waits_unsent_while_blocked(self) -> None:
        """While blocked nothing is sent (it would pile up unread); on unblock the waiting publishes go, in order."""
        self.successResultOf(self.session.publish("q", b"0"))
        self.connection._impl.block()
        first, second = self.session.publish("q", b"1"), self.session.publish("q", b"2")
        self.assertNoResult(first)
        self.assertEqual([p["body"] for p in self.connection.calls("publish")], [b"0"])
        self.connection._impl.unblock()
        self.successResultOf(first)
        self.successResultOf(second)
        self.assertEqual([p["body"] for p in self.connection.calls("publish")], [b"0", b"1", b"2"])

    def test_a_deadline_cancels_the_wait_and_a_lost_connection_fails_it(self) -> None:
        """A waiting publish cancelled (its deadline) is never sent; one left when the connection is lost fails."""
        self.connection._impl.block()
        cancelled, stranded = self.session.publish("q", b"1"), self.session.publish("q", b"2")
        cancelled.cancel()
        self.failureResultOf(cancelled, CancelledError)
        self.session.lost()
        self.failureResultOf(stranded, BrokerUnavailable)
        self.connection._impl.unblock()
        self.assertEqual(self.connection.calls("publish"), [])

    def test_abort_drops_the_transport(self) -> None:
        """abort() drops the connection at once, without the closing handshake."""
        self.session.abort()
        self.assertTrue(self.connection.transport.disconnecting)
        self.assertEqual(self.connection.closed, 0)

    def test_consume_bounds_the_bodies_of_its_channel(self) -> None:
        """consume(max_body=N) puts the bounded assembler on the new channel; without, pika's own stays."""
        self.successResultOf(self.session.consume("q", 10, lambda d: None, max_body=4096))
        self.successResultOf(self.session.consume("r", 10, lambda d: None))
        bounded, unbounded = self.connection.channels[1], self.connection.channels[2]
        self.assertIsInstance(bounded._channel._content_assembler, BoundedAssembler)
        self.assertEqual(bounded._channel._content_assembler.limit, 4096)
        self.assertIsNone(unbounded._channel._content_assembler)
