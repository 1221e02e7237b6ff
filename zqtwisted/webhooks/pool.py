"""The persistent HTTP connection pool of the shared resources: Twisted's, without a log line per connection.

:class:`zqtwisted.resources.Resources` builds one per purpose (webhooks, their replies,
push, the unread check) and imports this module when it builds the first, so that a
process whose queues make no HTTP request never loads Twisted's HTTP client.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IProtocolFactory, IStreamClientEndpoint
from twisted.web.client import HTTPConnectionPool
from zope.interface import implementer


@implementer(IStreamClientEndpoint)
class _QuietEndpoint:
    """An endpoint whose connections' factories log nothing when they start and stop."""

    def __init__(self, endpoint: IStreamClientEndpoint) -> None:
        self._endpoint = endpoint

    def connect(self, protocolFactory: IProtocolFactory) -> Deferred[Any]:
        protocolFactory.noisy = False  # type: ignore[attr-defined]  # Factory's public attribute
        return self._endpoint.connect(protocolFactory)

    def __repr__(self) -> str:
        return repr(self._endpoint)


class QuietConnectionPool(HTTPConnectionPool):
    """Twisted's pool, without a "Starting factory" / "Stopping factory" log line per connection.

    The pool makes one factory per connection, logged at info when it starts and when it
    stops: 200 lines for 100 connections to one bot server.  Its connections carry no
    such line here, as the SMTP client's and the HTTP endpoint's do not.  Only public
    API: every connection the pool makes goes through ``getConnection``'s endpoint.
    """

    def __init__(self, reactor: Any, persistent: bool = True) -> None:
        super().__init__(reactor, persistent)  # type: ignore[no-untyped-call]

    def getConnection(self, key: Any, endpoint: IStreamClientEndpoint) -> Deferred[Any]:
        return super().getConnection(key, _QuietEndpoint(endpoint))
