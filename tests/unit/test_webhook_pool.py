"""The shared resources' HTTP pool: Twisted's, logging no line per connection."""

from __future__ import annotations

from typing import Any, cast

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IProtocolFactory, IStreamClientEndpoint
from twisted.internet.task import Clock
from twisted.logger import ILogObserver, LogEvent, globalLogPublisher
from twisted.trial.unittest import TestCase
from zope.interface import implementer

from zqtwisted.webhooks.pool import QuietConnectionPool


@implementer(IStreamClientEndpoint)
class RecordingEndpoint:
    """An endpoint that records the factories it is asked to connect, and never connects."""

    def __init__(self) -> None:
        self.factories: list[Any] = []

    def connect(self, protocolFactory: IProtocolFactory) -> Deferred[Any]:
        self.factories.append(protocolFactory)
        return Deferred()

    def __repr__(self) -> str:
        return "<RecordingEndpoint bots.example.com:80>"


class QuietPoolTests(TestCase):
    def test_connections_are_not_logged(self) -> None:
        """A connection's factory logs no "Starting factory" / "Stopping factory" line."""
        events: list[LogEvent] = []
        observer = cast(ILogObserver, events.append)
        globalLogPublisher.addObserver(observer)
        self.addCleanup(globalLogPublisher.removeObserver, observer)
        endpoint = RecordingEndpoint()
        QuietConnectionPool(Clock()).getConnection(("http", b"bots.example.com", 80), endpoint)
        [factory] = endpoint.factories
        factory.doStart()
        factory.doStop()
        self.assertFalse(factory.noisy)
        self.assertEqual([e["log_format"] for e in events if "factory" in e.get("log_format", "")], [])
        self.assertIn("RecordingEndpoint bots.example.com:80", repr(factory))

    def test_is_twisted_persistent_pool(self) -> None:
        """It is Twisted's HTTPConnectionPool, persistent unless told otherwise."""
        self.assertTrue(QuietConnectionPool(Clock()).persistent)
        self.assertFalse(QuietConnectionPool(Clock(), persistent=False).persistent)
