"""The AMQP connection service with a fake endpoint and MemoryReactorClock: parameters, backoff, deadlines."""

from __future__ import annotations

from collections.abc import Callable
from types import SimpleNamespace
from typing import Any, cast

import pika
import pika.frame
import pika.spec
from twisted.internet.defer import CancelledError, Deferred, succeed
from twisted.internet.error import ConnectionDone, ConnectionRefusedError
from twisted.internet.protocol import Factory
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.logger import ILogObserver, Logger, LogLevel, formatEvent
from twisted.python.failure import Failure
from twisted.trial import unittest

from zqtwisted.config import BrokerSettings
from zqtwisted.runtime.amqp import AMQPBroker, broker_endpoint, connection_parameters, reconnect_backoff, refusal
from zqtwisted.runtime.broker import BrokerRefused, BrokerUnavailable, PublishTimeout
from zqtwisted.runtime.declarations import QueueMismatch
from zqtwisted.runtime.retry import BackoffPolicy


class LosingTransport(StringTransport):
    """Delivers connectionLost a reactor turn after an abort or close, as a TCP transport does."""

    def __init__(self, clock: MemoryReactorClock | None) -> None:
        super().__init__()
        self.clock = clock
        self.protocol: Any = None

    def loseConnection(self) -> None:
        if self.disconnecting:
            return
        super().loseConnection()
        if self.clock is not None:
            self.clock.callLater(0, self.protocol.connectionLost, Failure(ConnectionDone()))

    abortConnection = loseConnection

    def lost_by_peer(self) -> None:
        """The other side closed the connection: the protocol hears it now, a later close does nothing."""
        self.disconnecting = True
        self.protocol.connectionLost(Failure(ConnectionDone()))


class FakeEndpoint:
    """Records each connection attempt; the test decides how it ends."""

    def __init__(self, clock: MemoryReactorClock | None = None) -> None:
        self.attempts: list[tuple[Any, Deferred[Any]]] = []
        self.clock = clock

    def connect(self, factory: Any) -> Deferred[Any]:
        d: Deferred[Any] = Deferred()
        self.attempts.append((factory, d))
        return d

    def refuse(self) -> None:
        self.attempts[-1][1].errback(ConnectionRefusedError())

    def accept(self) -> LosingTransport:
        factory, d = self.attempts[-1]
        protocol = factory.buildProtocol(None)
        transport = LosingTransport(self.clock)
        transport.protocol = protocol
        protocol.makeConnection(transport)
        d.callback(protocol)
        return transport


def constant(value: float) -> Callable[[], float]:
    return lambda: value


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

    def test_ip_addresses_are_not_resolved(self) -> None:
        """An IPv4 or IPv6 address is connected to at once, without a name resolution (and its thread)."""
        reactor = MemoryReactorClock()
        for url, kind in (("amqp://u:p@127.0.0.1/%2F", "4"), ("amqp://u:p@[::1]:5673/%2F", "6")):
            broker_endpoint(reactor, BrokerSettings(url=url, connect_timeout=7)).connect(Factory())
            host, port, _, timeout, _ = reactor.tcpClients[-1]
            self.assertEqual((host, port, timeout), ("127.0.0.1", 5672, 7) if kind == "4" else ("::1", 5673, 7))


class ReconnectTests(unittest.TestCase):
    def setUp(self) -> None:
        self.reactor = MemoryReactorClock()
        self.endpoint = FakeEndpoint(self.reactor)
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
        for rand, third in ((0.0, 2.0), (1.0, 4.0)):
            broker = AMQPBroker(self.reactor, BrokerSettings(reconnect_initial_delay=1.0), rand=constant(rand))
            delays = [broker._retry_delay(n) for n in (1, 2, 3)]
            self.assertEqual(delays[-1], third)

    def test_handshake_deadline(self) -> None:
        """A TCP connection whose AMQP handshake never completes is aborted after connect_timeout and retried."""
        transport = self.endpoint.accept()
        self.assertTrue(transport.value().startswith(b"AMQP"))
        self.reactor.advance(5.0)
        self.assertTrue(transport.disconnecting)
        self.assertEqual(len(self.endpoint.attempts), 1)
        self.reactor.advance(0)  # the aborted connection is lost: the next try after the first delay
        self.reactor.advance(self.next_delay())
        self.assertEqual(len(self.endpoint.attempts), 2)

    def test_connection_closed_during_the_handshake(self) -> None:
        """A broker that closes the connection mid-handshake (refused login) is retried, with no ClientService error."""
        transport = self.endpoint.accept()
        transport.lost_by_peer()
        self.assertEqual(self.flushLoggedErrors(), [])
        self.reactor.advance(self.next_delay())
        self.assertEqual(len(self.endpoint.attempts), 2)

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
    blocked: str | None = None
    node = "mq:5672"

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


class FakeSession:
    """What the broker needs of a session to count it ready, log it and lose it."""

    is_open = True
    cluster_name = "zqtwisted-local"
    blocked: str | None = None

    def __init__(self, node: str) -> None:
        self.node = node
        self.lost_called = False

    def close(self) -> Deferred[None]:
        return succeed(None)

    def lost(self) -> None:
        self.lost_called = True


class Listener:
    def __init__(self) -> None:
        self.events: list[tuple[str, Any]] = []

    def session_started(self, session: Any) -> None:
        self.events.append(("started", session))

    def session_lost(self, session: Any) -> None:
        self.events.append(("lost", session))


class FailoverTests(unittest.TestCase):
    URLS = ("amqp://a:1@mq1:5672/%2F", "amqp://b:2@mq2:5672/%2F", "amqp://c:3@mq3:5672/%2F")

    def setUp(self) -> None:
        self.reactor = MemoryReactorClock()
        self.endpoints = {f"mq{i}": FakeEndpoint(self.reactor) for i in (1, 2, 3)}
        settings = BrokerSettings(
            urls=self.URLS, failover_strategy="round-robin", reconnect_initial_delay=1.0, connect_timeout=5.0
        )
        self.broker = AMQPBroker(
            self.reactor,
            settings,
            rand=lambda: 1.0,
            endpoint_for=lambda node: self.endpoints[node.host],  # type: ignore[arg-type, return-value]
        )
        self.events: list[dict[str, Any]] = []
        self.broker.log = Logger(observer=cast(ILogObserver, self.events.append))
        self.broker.startService()
        self.addCleanup(self.broker.stopService)

    def attempts(self) -> list[int]:
        return [len(self.endpoints[f"mq{i}"].attempts) for i in (1, 2, 3)]

    def logged(self) -> list[str]:
        return [formatEvent(e) for e in self.events]

    def test_a_refused_node_is_skipped_at_once(self) -> None:
        """A node that refuses is followed by the next at once; after the whole round, the backoff."""
        self.assertEqual(self.attempts(), [1, 0, 0])
        self.endpoints["mq1"].refuse()
        self.reactor.advance(0)
        self.assertEqual(self.attempts(), [1, 1, 0])
        self.endpoints["mq2"].refuse()
        self.reactor.advance(0)
        self.assertEqual(self.attempts(), [1, 1, 1])
        self.endpoints["mq3"].refuse()
        self.reactor.advance(0.9)
        self.assertEqual(self.attempts(), [1, 1, 1])
        self.reactor.advance(0.1)
        self.assertEqual(self.attempts(), [2, 1, 1])

    def test_a_silent_node_costs_one_connect_timeout(self) -> None:
        """A node that accepts but never completes the handshake is left after connect_timeout for the next."""
        self.endpoints["mq1"].accept()
        self.reactor.advance(5.0)
        self.reactor.advance(0)
        self.assertEqual(self.attempts(), [1, 1, 0])
        self.assertTrue(any("Could not set up the connection to amqp://a:***@mq1" in line for line in self.logged()))

    def test_each_node_gets_its_own_credentials(self) -> None:
        """The protocol for a node is built with that node's URL (user, password, vhost)."""
        self.endpoints["mq1"].refuse()
        self.reactor.advance(0)
        transport = self.endpoints["mq2"].accept()
        self.assertTrue(transport.value().startswith(b"AMQP"))
        protocol = self.broker._build_protocol()
        assert protocol.node is not None
        self.assertEqual((protocol.node.host, self.broker.parameters.credentials.username), ("mq2", "b"))

    def test_lost_connection_fails_over_after_the_first_backoff(self) -> None:
        """A lost connection is logged with its node; the next try goes to the next node, after the first delay."""
        listener = Listener()
        self.broker.add_listener(listener)
        protocol = self.broker._build_protocol()
        session = FakeSession("mq1:5672")
        self.successResultOf(self.broker._session_opened(session, protocol))  # type: ignore[arg-type]
        self.assertIs(self.broker.current_session(), session)
        self.assertIn("Connected to amqp://a:***@mq1:5672/%2F (node 1 of 3), cluster zqtwisted-local", self.logged())
        self.broker._connection_lost(protocol)
        self.assertTrue(session.lost_called)
        self.assertEqual(listener.events, [("started", session), ("lost", session)])
        self.assertIn("Lost the connection to amqp://a:***@mq1:5672/%2F (node 1 of 3)", self.logged())
        self.assertEqual(self.broker._retry_delay(1), 1.0)
        self.assertEqual(self.broker.rotation.current.host, "mq2")
        self.assertIsNone(self.broker.current_session())

    def test_queue_mismatch_is_logged_as_an_error(self) -> None:
        """A refused declaration while setting up is an error naming the node, with the message saying what to do."""
        self.broker._prepare_failed(Failure(QueueMismatch("do this")), self.broker._build_protocol())
        errors = [e for e in self.events if e.get("log_level") == LogLevel.error]
        self.assertEqual(
            [formatEvent(e) for e in errors],
            ["Could not set up the connection to amqp://a:***@mq1:5672/%2F (node 1 of 3): do this"],
        )

    def test_one_node_logs_its_url_alone(self) -> None:
        """With one node the log names its URL only."""
        broker = AMQPBroker(self.reactor, BrokerSettings(url="amqp://u:secret@mq/%2F"), endpoint=FakeEndpoint())  # type: ignore[arg-type]
        self.assertEqual(broker._describe(None), "amqp://u:***@mq/%2F")


def broker_says(protocol: Any, *methods: Any) -> None:
    """Feed ``protocol`` the frames of these connection methods, as the broker sends them."""
    for method in methods:
        protocol.dataReceived(pika.frame.Method(0, method).marshal())


START = pika.spec.Connection.Start(
    version_major=0, version_minor=9, server_properties={"product": "RabbitMQ"}, mechanisms="PLAIN", locales="en_US"
)


class RefusalTests(unittest.TestCase):
    """A broker that refuses the connection itself: one clear line per try, retried with backoff."""

    URL = "amqp://zulip:s3cret-pw@mq:5672/zulip"

    def setUp(self) -> None:
        self.reactor = MemoryReactorClock()
        self.endpoint = FakeEndpoint(self.reactor)
        self.events: list[dict[str, Any]] = []

    def start(self, **kwargs: Any) -> AMQPBroker:
        settings = BrokerSettings(url=self.URL, reconnect_initial_delay=1.0, reconnect_max_delay=8.0)
        broker = AMQPBroker(self.reactor, settings, rand=lambda: 1.0, endpoint=self.endpoint, **kwargs)  # type: ignore[arg-type]
        broker.log = Logger(observer=cast(ILogObserver, self.events.append))
        broker.startService()
        self.addCleanup(broker.stopService)
        return broker

    def refuse(self, code: int, text: str) -> None:
        """The next connection: TCP up, then the broker closes it at the login with ``code``."""
        transport = self.endpoint.accept()
        broker_says(transport.protocol, START, pika.spec.Connection.Close(code, text, 0, 0))
        self.reactor.advance(0)

    def logged(self) -> list[str]:
        return [formatEvent(e) for e in self.events]

    def test_refused_credentials_are_one_clear_line_per_try(self) -> None:
        """ACCESS_REFUSED is logged once per try as an error naming node and user (never the password), and retried."""
        broker = self.start()
        refused = "ACCESS_REFUSED - Login was refused using authentication mechanism PLAIN."
        self.refuse(403, refused)
        line = (
            "RabbitMQ at mq:5672 refused the credentials of user zulip (ACCESS_REFUSED): "
            "check [broker] url / password_file"
        )
        self.assertEqual(self.logged(), [line])
        self.assertEqual(self.events[0]["log_level"], LogLevel.error)
        self.assertEqual(broker.problem, line)
        self.assertEqual(self.flushLoggedErrors(), [])  # no ClientService "Unhandled Error"
        self.reactor.advance(1.0)
        self.assertEqual(len(self.endpoint.attempts), 2)
        self.refuse(403, refused)
        self.assertEqual(self.logged(), [line, line])
        self.assertNotIn("s3cret", " ".join(self.logged()))

    def test_a_refused_vhost_says_so(self) -> None:
        """NOT_ALLOWED (a vhost the user may not use, or that does not exist) names the vhost."""
        broker = self.start()
        self.refuse(530, "NOT_ALLOWED - vhost zulip not found")
        self.assertEqual(
            broker.problem,
            "RabbitMQ at mq:5672 refused user zulip access to vhost 'zulip' (NOT_ALLOWED - vhost zulip not found): "
            "check the vhost in [broker] url and the user's permissions",
        )

    def test_refusal_text_for_other_codes(self) -> None:
        """Any other close during set-up is reported with the broker's own code and text."""
        error = refusal("mq:5672", pika.URLParameters(self.URL), 320, "CONNECTION_FORCED - shutdown")
        self.assertIsInstance(error, BrokerRefused)
        self.assertEqual(
            str(error),
            "RabbitMQ at mq:5672 closed the connection while setting it up: 320 CONNECTION_FORCED - shutdown",
        )

    def test_a_lost_handshake_is_not_pikas_number_of_attempts(self) -> None:
        """A connection lost mid-handshake (not a refusal) fails with what happened, not pika's "1"."""
        broker = self.start()
        transport = self.endpoint.accept()
        broker_says(transport.protocol, START)
        transport.lost_by_peer()
        self.assertIn("the AMQP handshake failed", broker.problem or "")
        self.assertNotIn(": 1", broker.problem or "")

    def test_zqctl_gives_up_at_the_first_refusal(self) -> None:
        """With give_up_when_refused, waiters fail with the refusal once the connection is gone; nothing is logged."""
        broker = self.start(give_up_when_refused=True)
        waiting = broker.session(30)
        self.refuse(403, "ACCESS_REFUSED - Login was refused")
        error = self.failureResultOf(waiting, BrokerRefused)
        self.assertIn("refused the credentials of user zulip", error.getErrorMessage())
        self.assertEqual(self.logged(), [])
        self.successResultOf(broker.stopService())
        self.assertEqual(self.flushLoggedErrors(), [])

    def test_an_unreachable_node_is_the_problem_until_connected(self) -> None:
        """A refused TCP connection is the broker's problem (for /ready); a ready session clears it."""
        broker = self.start()
        self.endpoint.refuse()
        self.assertIn("cannot connect to RabbitMQ at mq:5672", broker.problem or "")
        session = FakeSession("mq:5672")
        self.successResultOf(broker._session_opened(session, broker._build_protocol()))  # type: ignore[arg-type]
        self.assertIsNone(broker.problem)


class StuckSession(FakeSession):
    """A session whose closing handshake is never answered; records aborts."""

    def __init__(self, node: str, blocked: str | None = None) -> None:
        super().__init__(node)
        self.blocked = blocked
        self.closing: Deferred[None] | None = None
        self.aborted = 0

    def close(self) -> Deferred[None]:
        self.closing = Deferred()
        return self.closing

    def abort(self) -> None:
        self.aborted += 1


class StopDeadlineTests(unittest.TestCase):
    """Stopping never waits on the broker for long."""

    def setUp(self) -> None:
        self.reactor = MemoryReactorClock()
        self.broker = AMQPBroker(self.reactor, BrokerSettings(), endpoint=FakeEndpoint(), close_timeout=3.0)  # type: ignore[arg-type]
        self.events: list[dict[str, Any]] = []
        self.broker.log = Logger(observer=cast(ILogObserver, self.events.append))
        self.broker.startService()

    def test_an_unanswered_close_is_dropped_after_the_close_timeout(self) -> None:
        """A broker that does not answer the close: the connection is aborted after close_timeout, the stop ends."""
        session = StuckSession("mq:5672")
        self.broker._session = session  # type: ignore[assignment]
        stopped = self.broker.stopService()
        self.reactor.advance(2.9)
        self.assertNoResult(stopped)
        self.assertEqual(session.aborted, 0)
        self.reactor.advance(0.1)
        self.assertEqual(session.aborted, 1)
        self.successResultOf(stopped)
        self.assertEqual(
            [formatEvent(e) for e in self.events],
            ["RabbitMQ at mq:5672 did not close the connection within 3s; dropping it"],
        )

    def test_a_blocked_connection_is_dropped_at_once(self) -> None:
        """A connection the broker blocks (it would never answer the close) is aborted at once, without a close."""
        session = StuckSession("mq:5672", blocked="low on memory")
        self.broker._session = session  # type: ignore[assignment]
        self.successResultOf(self.broker.stopService())
        self.assertEqual((session.aborted, session.closing), (1, None))
        self.assertIn("blocks this connection (low on memory): dropping it", formatEvent(self.events[0]))

    def test_connections_clientservice_cannot_close_are_aborted(self) -> None:
        """If ClientService's own stop hangs (a connection that never closes), every live connection is aborted."""
        hanging: Deferred[None] = Deferred()
        self.broker._service = SimpleNamespace(stopService=lambda: hanging)  # type: ignore[assignment]
        protocol = self.broker._build_protocol()
        transport = StringTransport()
        protocol.makeConnection(transport)
        stopped = self.broker.stopService()
        self.reactor.advance(0.9)
        self.assertFalse(transport.disconnecting)
        self.reactor.advance(0.1)
        self.assertTrue(transport.disconnecting)
        hanging.callback(None)
        self.successResultOf(stopped)
        self.assertEqual(self.reactor.getDelayedCalls(), [])
