"""Shared resources: one pool per purpose, one mailer, one store, all closed together."""

from __future__ import annotations

import os
import shutil
import tempfile
import types
from collections.abc import Callable

from twisted.internet.defer import Deferred, succeed
from twisted.trial.unittest import TestCase

from tests.resource_fakes import memory_resources
from zqtwisted.config import Config
from zqtwisted.mail.backends import FileMailer, LogMailer
from zqtwisted.mail.settings import MailSettings
from zqtwisted.missedmessage.settings import MissedMessageSettings
from zqtwisted.missedmessage.sqlstore import SQLiteStore
from zqtwisted.webhooks.client import PoolOptions
from zqtwisted.webhooks.pool import QuietConnectionPool


class PoolTests(TestCase):
    def test_one_pool_per_purpose(self) -> None:
        """Each purpose has one persistent pool, built once with the options of its first request."""
        resources, _, _ = memory_resources()
        pool = resources.http_pool("push", PoolOptions(max_per_host=9, idle_timeout=12, retry=False))
        self.assertIs(resources.http_pool("push", PoolOptions(max_per_host=1)), pool)
        self.assertTrue(pool.persistent)
        self.assertEqual((pool.maxPersistentPerHost, pool.cachedConnectionTimeout), (9, 12))
        self.assertFalse(pool.retryAutomatically)
        self.assertIsNot(resources.http_pool("webhooks"), pool)

    def test_unknown_purpose(self) -> None:
        """A purpose outside the known ones is refused (a typo would otherwise open another pool)."""
        resources, _, _ = memory_resources()
        with self.assertRaises(ValueError):
            resources.http_pool("webhook")

    def test_pools_are_quiet(self) -> None:
        """The pools log no line per connection (tests/unit/test_webhook_pool.py)."""
        resources, _, _ = memory_resources()
        self.assertIsInstance(resources.http_pool("unread"), QuietConnectionPool)


class MailerAndStoreTests(TestCase):
    def test_mailer_built_once_from_the_mail_section(self) -> None:
        """The mailer [mail] names is built on first use and then shared."""
        config = Config(sections=types.MappingProxyType({"mail": MailSettings(backend="log")}))
        resources, _, _ = memory_resources(config)
        mailer = resources.mailer()
        self.assertIsInstance(mailer, LogMailer)
        self.assertIs(resources.mailer(), mailer)
        self.assertIsInstance(memory_resources()[0].mailer(), FileMailer)

    def test_store_built_once_from_the_missedmessage_section(self) -> None:
        """The store [missedmessage] names is built (not opened) on first use and then shared."""
        settings = MissedMessageSettings(sqlite_path="/nonexistent/mm.sqlite3")
        resources, _, _ = memory_resources(Config(sections=types.MappingProxyType({"missedmessage": settings})))
        store = resources.missedmessage_store()
        assert isinstance(store, SQLiteStore)
        self.assertEqual(store.path, "/nonexistent/mm.sqlite3")
        self.assertIs(resources.missedmessage_store(), store)


def recorder(closed: list[str], name: str) -> Callable[[], Deferred[None]]:
    """A ``close`` that records ``name`` in ``closed``."""

    def close() -> Deferred[None]:
        closed.append(name)
        return succeed(None)

    return close


class CloseTests(TestCase):
    def test_close_releases_everything_built(self) -> None:
        """close() closes every pool, the mailer and the store, after one reactor turn; then nothing is held."""
        directory = tempfile.mkdtemp()
        self.addCleanup(shutil.rmtree, directory)
        settings = MissedMessageSettings(sqlite_path=os.path.join(directory, "mm.sqlite3"))
        resources, reactor, _ = memory_resources(Config(sections=types.MappingProxyType({"missedmessage": settings})))
        closed: list[str] = []
        for purpose in ("webhooks", "push"):
            self.patch(resources.http_pool(purpose), "closeCachedConnections", recorder(closed, purpose))
        self.patch(resources.mailer(), "close", recorder(closed, "mailer"))
        self.patch(resources.missedmessage_store(), "close", recorder(closed, "store"))
        closing = resources.close()
        self.assertNoResult(closing)
        reactor.advance(0)
        self.successResultOf(closing)
        self.assertEqual(sorted(closed), ["mailer", "push", "store", "webhooks"])

    def test_zulip_database_built_once_and_closed(self) -> None:
        """Zulip's database is built on first use from [zulip], shared, and closed with the rest."""
        from zqtwisted.zulip.settings import ZulipSettings

        zulip = ZulipSettings(database="dbname=zulip", external_host="zulip.example.com")
        resources, _, _ = memory_resources(Config(sections={"zulip": zulip}))
        self.assertIsNone(resources.built_zulip_database)
        database = resources.zulip_database()
        self.assertIs(resources.zulip_database(), database)
        self.assertIs(resources.built_zulip_database, database)
        self.assertEqual(database.settings, zulip)
        fatal: list[bool] = []
        resources.on_fatal = lambda: fatal.append(True)
        resources._fatal()
        self.assertEqual(fatal, [True])
        closing = resources.close()
        resources.reactor.advance(0)  # type: ignore[attr-defined]
        self.successResultOf(closing)
        self.assertIsNone(resources.built_zulip_database)

    def test_close_with_nothing_built(self) -> None:
        """close() of unused resources fires at once (after one turn)."""
        resources, reactor, _ = memory_resources()
        closing = resources.close()
        reactor.advance(0)
        self.successResultOf(closing)
