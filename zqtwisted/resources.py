"""Shared resources, built once by the composition root and handed to the consumers' ``build``.

One object holds what several workers may share: the reactor (for the clients that
connect), the parsed configuration, the publisher, one persistent HTTP connection
pool per purpose (``"webhooks"``, ``"webhook_replies"``, ``"push"``, ``"unread"``),
and, built on first use, the mailer (from ``[mail]``) and the missed-message store
(from ``[missedmessage]``), and Zulip's database (from ``[zulip]``, Zulip mode).
Each is built once and shared: the two email queues
send through one mailer.  The workers use them and never close them;
:meth:`Resources.close` releases everything that was built, once the workers
have stopped.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from twisted.internet.defer import Deferred, DeferredList, succeed
from twisted.internet.task import deferLater
from twisted.logger import Logger

from zqtwisted.config import Config
from zqtwisted.mail.settings import MailSettings
from zqtwisted.missedmessage.settings import MissedMessageSettings
from zqtwisted.runtime.consumer import JsonPublisher
from zqtwisted.runtime.reactor import IConnectingReactor
from zqtwisted.zulip.settings import ZulipSettings

# The clients are imported when a resource is first built: a process whose queues need no
# mailer, store, database or HTTP pool does not load them (Jinja2, Twisted's HTTP client, the SQL stores...).
if TYPE_CHECKING:
    from twisted.web.client import HTTPConnectionPool

    from zqtwisted.mail.backends import Mailer
    from zqtwisted.missedmessage.sqlstore import SQLStore
    from zqtwisted.webhooks.client import PoolOptions
    from zqtwisted.zulip.pool import ZulipDatabase

__all__ = ["PoolOptions", "Resources"]

PURPOSES = ("webhooks", "webhook_replies", "push", "unread")


def __getattr__(name: str) -> Any:
    if name == "PoolOptions":  # re-exported, imported on first use
        from zqtwisted.webhooks.client import PoolOptions

        return PoolOptions
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


class Resources:
    """What the root builds once and injects; each worker's spec takes what it needs."""

    log = Logger()

    def __init__(self, reactor: IConnectingReactor, config: Config, publisher: JsonPublisher) -> None:
        self.reactor = reactor
        self.config = config
        self.publisher = publisher
        self._pools: dict[str, HTTPConnectionPool] = {}
        self._mailer: Mailer | None = None
        self._store: SQLStore | None = None
        self._zulip_db: ZulipDatabase | None = None
        # Called when a shared resource finds the service cannot go on (set by the root).
        self.on_fatal: Callable[[], None] | None = None

    def http_pool(self, purpose: str, options: PoolOptions | None = None) -> HTTPConnectionPool:
        """The one persistent connection pool of ``purpose``; ``options`` apply when it is first built."""
        if purpose not in PURPOSES:
            raise ValueError(f"unknown HTTP pool purpose {purpose!r} (known: {', '.join(PURPOSES)})")
        pool = self._pools.get(purpose)
        if pool is None:
            from zqtwisted.webhooks.client import PoolOptions
            from zqtwisted.webhooks.pool import QuietConnectionPool

            opts = options or PoolOptions()
            pool = QuietConnectionPool(self.reactor, persistent=True)
            pool.maxPersistentPerHost = opts.max_per_host
            pool.cachedConnectionTimeout = opts.idle_timeout  # type: ignore[assignment]
            pool.retryAutomatically = opts.retry
            self._pools[purpose] = pool
        return pool

    def mailer(self) -> Mailer:
        """The mailer ``[mail]`` asks for, built on first use and shared by every email queue."""
        if self._mailer is None:
            from zqtwisted.mail.backends import build_mailer

            self._mailer = build_mailer(self.reactor, self.config.section("mail", MailSettings))
        return self._mailer

    def missedmessage_store(self) -> SQLStore:
        """The store ``[missedmessage]`` names, built (not opened) on first use."""
        if self._store is None:
            from zqtwisted.missedmessage.sqlstore import build_store

            self._store = build_store(self.reactor, self.config.section("missedmessage", MissedMessageSettings))
        return self._store

    def zulip_database(self) -> ZulipDatabase:
        """Zulip's database (``[zulip]``), built (not opened) on first use and shared by every consumer."""
        if self._zulip_db is None:
            from zqtwisted.zulip.pool import ZulipDatabase

            self._zulip_db = ZulipDatabase(
                self.reactor, self.config.section("zulip", ZulipSettings), on_fatal=self._fatal
            )
        return self._zulip_db

    @property
    def built_zulip_database(self) -> ZulipDatabase | None:
        """The database if a consumer asked for it (for ``/ready``)."""
        return self._zulip_db

    def _fatal(self) -> None:
        if self.on_fatal is not None:
            self.on_fatal()

    def close(self) -> Deferred[None]:
        """Close every pool, the mailer and the store (whatever was built); never fails.

        One reactor turn first: a response that has just completed returns its
        connection to its pool only after its readers have run.
        """
        return deferLater(self.reactor, 0, lambda: None).addCallback(lambda _: self._close())

    def _close(self) -> Deferred[None]:
        closing: list[Deferred[Any]] = [pool.closeCachedConnections() for pool in self._pools.values()]
        self._pools.clear()
        mailer, self._mailer = self._mailer, None
        store, self._store = self._store, None
        database, self._zulip_db = self._zulip_db, None
        for resource in (mailer, store, database):
            if resource is not None:
                closing.append(resource.close())
        if not closing:
            return succeed(None)
        return DeferredList(closing, consumeErrors=True).addCallback(self._closed)

    def _closed(self, results: list[tuple[bool, Any]]) -> None:
        for ok, value in results:
            if not ok:
                self.log.failure("Could not close a shared resource", value)
