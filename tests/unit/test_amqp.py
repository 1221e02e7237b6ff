"""The AMQP connection service with a fake endpoint and MemoryReactorClock: parameters, backoff, deadlines."""

from __future__ import annotations

from typing import Any

import pika
import pika.frame
import pika.spec
from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.error import ConnectionRefusedError
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.trial import unittest

from zqtwisted.config import BrokerSettings
from zqtwisted.runtime.amqp import AMQPBroker, broker_endpoint, connection_parameters, reconnect_backoff
from zqtwisted.runtime.broker import BrokerUnavailable, PublishTimeout
from zqtwisted.runtime.retry import BackoffPolicy


class FakeEndpoint:
    """Records each connection attempt; the test decides how it ends."""

    def __init__(self) -> None:
        self.attempts: list[tuple[Any, Deferred[Any]]] = []

    def connect(self, factory: Any) -> Deferred[Any]:
        d: Deferred[Any] = Deferred()
        self.attempts.append((factory, d))
        return d

    def refuse(self) -> None:
        self.attempts[-1][1].errback(ConnectionRefusedError())

    def accept(self) -> StringTransport:
        factory, d = self.attempts[-1]
        protocol = factory.buildProtocol(None)
        transport = StringTransport()
        protocol.makeConnection(transport)
        d.callback(protocol)
        return transport


class ParameterTests(unittest.TestCase):
    def test_heartbeat_credentials_vhost(self) -> None:
        """Heartbeats are on, and credentials and vhost come from the URL."""
        params = connection_parameters(BrokerSettings(url="amqp://zulip:pw@mq:5673/zulip", heartbeat=15))
        self.assertEqual(params.heartbeat, 15)
        self.assertEqual(params.virtual_host, "zulip")
        self.assertEqual((params.credentials.username, params.credentials.password), ("zulip", "pw"))

    def test_endpoints(self) -> None:
        """amqp:// is plain TCP on 5672; amqps:// is TLS on 5671."""
        reactor = MemoryReactorClock()
        plain = broker_endpoint(reactor, BrokerSettings(url="amqp://u:p@mq/%2F"))
        self.assertEqual((plain._hostText, plain._port), ("mq", 5672))  # type: ignore[attr-defined]
        tls = broker_endpoint(reactor, BrokerSettings(url="amqps://u:p@mq/%2F"))
        self.assertEqual(type(tls).__name__, "_WrapperEndpoint")
        self.assertEqual(tls._wrappedEndpoint._port, 5671)  # type: ignore[attr-defined]


class ReconnectTests(unittest.TestCase):
    def setUp(self) -> None:
        self.reactor = MemoryReactorClock()
        self.endpoint = FakeEndpoint()
        settings = BrokerSettings(reconnect_initial_delay=1.0, reconnect_max_delay=8.0, connect_timeout=5.0)
        self.broker = AMQPBroker(self.reactor, settings, rand=lambda: 1.0, endpoint=self.endpoint)  # type: ignore[arg-type]
        self.broker.startService()

    def tearDown(self) -> None:
        self.broker.stopService()

    def next_delay(self) -> float:
        calls = self.reactor.getDelayedCalls()
        return min(c.getTime() for c in calls) - self.reactor.seconds()

    def test_jittered_exponential_backoff_capped(self) -> None:
        """Refused connections are retried after growing delays, capped at reconnect_max_delay."""
        delays = []
        for _ in range(6):
            self.endpoint.refuse()
            delay = self.next_delay()
            delays.append(delay)
            self.reactor.advance(delay)
        self.assertEqual(delays, [1.0, 2.0, 4.0, 8.0, 8.0, 8.0])
        self.assertEqual(len(self.endpoint.attempts), 7)

    def test_jitter_spreads_delays(self) -> None:
        """With jitter the delay lies between half the ceiling and the ceiling."""
        broker = AMQPBroker(self.reactor, BrokerSettings(reconnect_initial_delay=1.0), rand=lambda: 0.0)
        self.assertEqual(broker._retry_delay(3), 2.0)
        broker = AMQPBroker(self.reactor, BrokerSettings(reconnect_initial_delay=1.0), rand=lambda: 1.0)
        self.assertEqual(broker._retry_delay(3), 4.0)

    def test_handshake_deadline(self) -> None:
        """A TCP connection whose AMQP handshake never completes is aborted after connect_timeout and retried."""
        transport = self.endpoint.accept()
        self.assertTrue(transport.value().startswith(b"AMQP"))
        self.reactor.advance(5.0)
        self.assertTrue(transport.disconnecting)
        self.assertEqual(len(self.endpoint.attempts), 1)

    def test_session_wait_is_bounded(self) -> None:
        """Waiting for a session while disconnected fails with BrokerUnavailable after the timeout."""
        waiting = self.broker.session(timeout=3)
        self.reactor.advance(3)
        self.failureResultOf(waiting, BrokerUnavailable)

    def test_stop_cancels_waiters(self) -> None:
        """Stopping the service fails pending session waits instead of leaving them hanging."""
        waiting = self.broker.session()
        self.broker.stopService()
        self.failureResultOf(waiting, BrokerUnavailable)


class NeverConfirms:
    """A session whose publishes are sent but never confirmed (RabbitMQ under a memory alarm)."""

    is_open = True

    def __init__(self) -> None:
        self.cancelled = 0

    def publish(self, queue: str, body: bytes, headers: Any = None) -> Deferred[None]:
        return Deferred(self._cancel)

    def _cancel(self, d: Deferred[None]) -> None:
        self.cancelled += 1


class PublishDeadlineTests(unittest.TestCase):
    def test_unconfirmed_publish_fails_at_its_deadline(self) -> None:
        """A publish whose confirm never comes fails with PublishTimeout at its timeout, and its wait is cancelled."""
        reactor = MemoryReactorClock()
        broker = AMQPBroker(reactor, BrokerSettings(), endpoint=FakeEndpoint())  # type: ignore[arg-type]
        session = NeverConfirms()
        broker._session = session  # type: ignore[assignment]
        published = broker.publish("q", b"x", timeout=5.0)
        reactor.advance(4.9)
        self.assertNoResult(published)
        reactor.advance(0.1)
        self.failureResultOf(published, PublishTimeout)
        self.assertEqual(session.cancelled, 1)
        self.assertEqual(reactor.getDelayedCalls(), [])

    def test_reconnect_uses_the_retry_backoff_policy(self) -> None:
        """Reconnect delays come from the same BackoffPolicy as retries, with equal jitter."""
        policy = reconnect_backoff(BrokerSettings(reconnect_initial_delay=1.0, reconnect_max_delay=8.0))
        self.assertEqual(policy, BackoffPolicy(1.0, 8.0, floor=0.5))

    def test_cancelled_confirm_leaves_pika_consistent(self) -> None:
        """Cancelling pika's confirm Deferred (a deadline) makes its late confirm a no-op, not an error."""
        from pika.adapters.twisted_connection import TwistedChannel

        class Impl:
            channel_number = 1

            def add_on_close_callback(self, cb: Any) -> None: ...

            def add_on_cancel_callback(self, cb: Any) -> None: ...

            def add_callback(self, *args: Any, **kwargs: Any) -> None: ...

            def basic_publish(self, **kwargs: Any) -> None: ...

        channel = TwistedChannel(Impl())
        channel._delivery_confirmation = True
        channel._delivery_message_id = 0
        d = channel.basic_publish(exchange="", routing_key="q", body=b"x")
        d.cancel()
        self.failureResultOf(d, CancelledError)
        frame = pika.frame.Method(1, pika.spec.Basic.Ack(delivery_tag=1))
        channel._on_delivery_confirmation(frame)
        self.assertEqual(channel._deliveries, {})
