"""Shared resources, built once by the composition root and handed to the consumers' ``build``.

One object holds what several workers may share: the reactor (for the clients that
connect), the parsed configuration, the publisher, one HTTP connection pool per
purpose, and (built on first use) the mailer and the stores.  ``close()`` releases
everything it built; the root calls it once the workers have stopped.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import Deferred, DeferredList
from twisted.web.client import HTTPConnectionPool

from zqtwisted.config import Config
from zqtwisted.runtime.publisher import Publisher


class Resources:
    """What the root builds once and injects; each worker's spec takes what it needs."""

    def __init__(self, reactor: Any, config: Config, publisher: Publisher) -> None:
        self.reactor = reactor
        self.config = config
        self.publisher = publisher
        self._pools: dict[str, HTTPConnectionPool] = {}

    def http_pool(self, purpose: str) -> HTTPConnectionPool:
        """The one persistent connection pool for ``purpose`` ("webhooks", "push", ...)."""
        pool = self._pools.get(purpose)
        if pool is None:
            pool = self._pools[purpose] = HTTPConnectionPool(self.reactor, persistent=True)
        return pool

    def close(self) -> Deferred[None]:
        """Close every pool (and whatever else was built)."""
        closing = [pool.closeCachedConnections() for pool in self._pools.values()]
        self._pools.clear()
        return DeferredList(closing, consumeErrors=True).addCallback(lambda _: None)
