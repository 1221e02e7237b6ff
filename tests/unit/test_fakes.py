"""Every shipped fake, and the real class it stands in for, satisfies the same Protocol or zope Interface.

Each check is written twice.  Statically: an annotated assignment
(``broker: Broker = MemoryBroker(clock)``) that mypy rejects when the fake drifts
from the Protocol.  At run time: ``drift()`` compares the members of the Protocol
with those of the object (present, same parameters), and ``verifyObject`` checks
zope interfaces -- so that a drift also fails under pytest alone.
"""

from __future__ import annotations

import inspect
from typing import Any, Generic, Protocol

from twisted.internet.defer import Deferred, fail
from twisted.internet.interfaces import IProtocolFactory
from twisted.internet.protocol import Factory
from twisted.internet.task import Clock
from twisted.internet.testing import MemoryReactor
from twisted.trial import unittest
from twisted.web.client import Agent
from twisted.web.iweb import IAgent
from twisted.web.resource import IResource
from zope.interface.verify import verifyObject

from zqtwisted.config import BrokerSettings
from zqtwisted.mail.backends import FileMailer, LogMailer, Mailer, SMTPMailer
from zqtwisted.mail.smtp import SMTPOptions, SMTPTransport
from zqtwisted.mail.testing import FakeMailer
from zqtwisted.missedmessage.sqlstore import PostgresStore, SQLiteStore
from zqtwisted.missedmessage.store import MemoryStore, PendingStore
from zqtwisted.missedmessage.unread import HTTPUnreadChecker, UnreadChecker
from zqtwisted.push.bouncer import BouncerBackend, LogBackend, PushBackend
from zqtwisted.push.testing import FakeBouncer
from zqtwisted.runtime.amqp import AMQPBroker
from zqtwisted.runtime.amqp_channel import AMQPConsumerChannel
from zqtwisted.runtime.amqp_session import AMQPSession
from zqtwisted.runtime.broker import Broker, BrokerSession, ConsumerChannel, Delivery
from zqtwisted.runtime.consumer import JsonPublisher
from zqtwisted.runtime.publisher import Publisher
from zqtwisted.testing import (
    FailingAgent,
    MemoryBroker,
    MemoryChannel,
    MemorySession,
    RecordingPublisher,
    TrackingFactory,
)
from zqtwisted.webhooks.client import WebhookClient

_MISSING = object()


def members(protocol: type) -> list[str]:
    """The public methods, properties and attributes a Protocol declares (its bases' included)."""
    names: set[str] = set()
    for base in protocol.__mro__:
        if base in (object, Protocol, Generic):
            continue
        names.update(vars(base))
        names.update(getattr(base, "__annotations__", {}))
    return sorted(n for n in names if not n.startswith("_"))


def _parameters(function: Any) -> list[tuple[str, Any, bool]]:
    """(name, kind, has a default) of each parameter after ``self``."""
    parameters = list(inspect.signature(function).parameters.values())[1:]
    return [(p.name, p.kind, p.default is not inspect.Parameter.empty) for p in parameters]


def drift(candidate: object, protocol: type) -> list[str]:
    """How ``candidate`` (an instance, or a class) differs from ``protocol``; empty when it conforms."""
    problems = []
    for name in members(protocol):
        expected = inspect.getattr_static(protocol, name, None)
        actual = inspect.getattr_static(candidate, name, _MISSING)
        if actual is _MISSING:
            problems.append(f"{name}: missing")
        elif isinstance(expected, property):
            if isinstance(candidate, type) and not isinstance(actual, property):
                problems.append(f"{name}: not a property")
        elif inspect.isfunction(expected):
            if not inspect.isfunction(actual):
                problems.append(f"{name}: not a method")
            elif _parameters(actual) != _parameters(expected):
                problems.append(f"{name}: parameters {_parameters(actual)} instead of {_parameters(expected)}")
    return problems


def _refused(factory: IProtocolFactory) -> Deferred[Any]:
    return fail(ConnectionRefusedError())


class DriftCheckTests(unittest.TestCase):
    """The run-time checker itself, on small synthetic protocols."""

    def test_conforming_object_has_no_drift(self) -> None:
        """An object with every member, with the same parameters, conforms."""

        class Sink(Protocol):
            size: int

            def put(self, item: str, urgent: bool = False) -> None: ...

        class Good:
            size = 0

            def put(self, item: str, urgent: bool = False) -> None:
                pass

        self.assertEqual(members(Sink), ["put", "size"])
        self.assertEqual(drift(Good(), Sink), [])

    def test_drift_is_reported_by_member(self) -> None:
        """A missing member, a renamed parameter and a lost default are each reported."""

        class Sink(Protocol):
            size: int

            def put(self, item: str, urgent: bool = False) -> None: ...

            def flush(self) -> None: ...

        class Bad:
            def put(self, thing: str, urgent: bool) -> None:
                pass

        self.assertEqual(
            [problem.split(":")[0] for problem in drift(Bad(), Sink)],
            ["flush", "put", "size"],
        )


class BrokerFakeTests(unittest.TestCase):
    def test_memory_broker_session_and_channel(self) -> None:
        """MemoryBroker, MemorySession and MemoryChannel are a Broker, a BrokerSession and a ConsumerChannel."""
        clock = Clock()
        memory = MemoryBroker(clock)
        broker: Broker = memory
        self.successResultOf(memory.connect())
        session: BrokerSession = self.successResultOf(memory.session())
        self.assertIsInstance(session, MemorySession)
        received: list[Delivery] = []
        channel: ConsumerChannel = self.successResultOf(session.consume("q", 1, received.append))
        self.assertIsInstance(channel, MemoryChannel)
        self.assertEqual(drift(broker, Broker), [])
        self.assertEqual(drift(session, BrokerSession), [])
        self.assertEqual(drift(channel, ConsumerChannel), [])

    def test_amqp_broker_session_and_channel(self) -> None:
        """AMQPBroker, AMQPSession and AMQPConsumerChannel are a Broker, a BrokerSession and a ConsumerChannel."""
        broker: Broker = AMQPBroker(MemoryReactor(), BrokerSettings())
        self.assertEqual(drift(broker, Broker), [])
        self.assertEqual(drift(AMQPSession, BrokerSession), [])
        self.assertEqual(drift(AMQPConsumerChannel, ConsumerChannel), [])


def _static_amqp(session: AMQPSession, channel: AMQPConsumerChannel) -> tuple[BrokerSession, ConsumerChannel]:
    """Never called: mypy checks that the AMQP classes (which need a live connection) fit the Protocols."""
    return session, channel


class PublisherFakeTests(unittest.TestCase):
    def test_recording_publisher(self) -> None:
        """RecordingPublisher is a JsonPublisher."""
        publisher: JsonPublisher = RecordingPublisher()
        self.assertEqual(drift(publisher, JsonPublisher), [])

    def test_publisher(self) -> None:
        """The real Publisher is a JsonPublisher."""
        publisher: JsonPublisher = Publisher(MemoryBroker(Clock()))
        self.assertEqual(drift(publisher, JsonPublisher), [])


class HTTPFakeTests(unittest.TestCase):
    def test_failing_agent(self) -> None:
        """FailingAgent provides IAgent, as twisted.web's Agent does."""
        agent: IAgent = FailingAgent(ConnectionRefusedError())
        self.assertTrue(verifyObject(IAgent, agent))
        real: IAgent = Agent(MemoryReactor())
        self.assertTrue(verifyObject(IAgent, real))

    def test_tracking_factory(self) -> None:
        """TrackingFactory is an IProtocolFactory, like the factory it wraps."""
        factory: IProtocolFactory = TrackingFactory(Factory())
        self.assertTrue(verifyObject(IProtocolFactory, factory))


class MailFakeTests(unittest.TestCase):
    def test_fake_mailer(self) -> None:
        """FakeMailer is a Mailer."""
        mailer: Mailer = FakeMailer()
        self.assertEqual(drift(mailer, Mailer), [])

    def test_real_mailers(self) -> None:
        """SMTPMailer, FileMailer and LogMailer are Mailers."""
        clock = Clock()
        mailers: list[Mailer] = [
            SMTPMailer(SMTPTransport(clock, _refused, SMTPOptions("localhost", 25))),
            FileMailer("never-written", clock),
            LogMailer(),
        ]
        for mailer in mailers:
            self.assertEqual(drift(mailer, Mailer), [], type(mailer).__name__)


class PushFakeTests(unittest.TestCase):
    def test_fake_bouncer(self) -> None:
        """FakeBouncer is a twisted.web IResource, served where the bouncer would be."""
        bouncer: IResource = FakeBouncer({"uuid": "key"})
        self.assertTrue(verifyObject(IResource, bouncer))

    def test_push_backends(self) -> None:
        """BouncerBackend and LogBackend are PushBackends."""
        client = WebhookClient(Clock(), FailingAgent(ConnectionRefusedError()))
        backends: list[PushBackend] = [BouncerBackend(client, "https://push.example.com/", "uuid", "key"), LogBackend()]
        for backend in backends:
            self.assertEqual(drift(backend, PushBackend), [], type(backend).__name__)


class MissedMessageFakeTests(unittest.TestCase):
    def test_stores(self) -> None:
        """MemoryStore, SQLiteStore and PostgresStore are PendingStores."""
        reactor = MemoryReactor()
        stores: list[PendingStore] = [
            MemoryStore(),
            SQLiteStore(reactor, "never-opened.sqlite3"),
            PostgresStore(reactor, "dbname=never-opened"),
        ]
        for store in stores:
            self.assertEqual(drift(store, PendingStore), [], type(store).__name__)

    def test_unread_checker(self) -> None:
        """HTTPUnreadChecker is an UnreadChecker."""
        client = WebhookClient(Clock(), FailingAgent(ConnectionRefusedError()))
        checker: UnreadChecker = HTTPUnreadChecker(client, "https://chat.example.com/unread")
        self.assertEqual(drift(checker, UnreadChecker), [])
