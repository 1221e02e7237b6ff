"""A reactor for building the shared resources in unit tests, and resources over it."""

from __future__ import annotations

from typing import cast

from twisted.internet.testing import MemoryReactorClock
from zope.interface import implementer

from zqtwisted.config import Config
from zqtwisted.resources import Resources
from zqtwisted.runtime.consumer import JsonPublisher
from zqtwisted.runtime.reactor import IConnectingReactor
from zqtwisted.testing import RecordingPublisher


@implementer(IConnectingReactor)
class ConnectingMemoryReactor(MemoryReactorClock):
    """A ``MemoryReactorClock`` (time, TCP, name resolution) declared as what network clients use."""


def memory_resources(config: Config | None = None) -> tuple[Resources, ConnectingMemoryReactor, RecordingPublisher]:
    """Shared resources over an in-memory reactor and a recording publisher."""
    reactor = ConnectingMemoryReactor()
    publisher = RecordingPublisher()
    return Resources(reactor, config or Config(), publisher), reactor, publisher


def reactor_resources(config: Config | None = None, publisher: JsonPublisher | None = None) -> Resources:
    """Shared resources over the global reactor (integration tests), with a recording publisher by default."""
    from twisted.internet import reactor

    return Resources(cast(IConnectingReactor, reactor), config or Config(), publisher or RecordingPublisher())
