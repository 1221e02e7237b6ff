"""The pending-notification stores: MemoryStore and SQLiteStore pass the same contract."""

from __future__ import annotations

import os
import shutil
import tempfile

from twisted.internet import reactor
from twisted.trial import unittest

from tests.contract import inline
from tests.missedmessage_fixtures import StoreContract, stream_event
from zqtwisted.missedmessage.settings import MissedMessageSettings
from zqtwisted.missedmessage.sqlstore import PostgresStore, SQLiteStore, build_store
from zqtwisted.missedmessage.store import MemoryStore, PendingStore, Shard, StoreClosed


class MemoryStoreTests(StoreContract, unittest.TestCase):
    def make_store(self) -> PendingStore:
        return MemoryStore()

    @inline
    async def test_fail_next(self) -> None:
        """fail_next makes the next call fail with the given error, once."""
        store = await self.opened()
        assert isinstance(store, MemoryStore)
        store.fail_next(OSError("disk"))
        with self.assertRaises(OSError):
            await store.add(stream_event(10, 1), 0.0, 1)
        self.assertEqual(await store.add(stream_event(10, 1), 0.0, 1), 1.0)

    def test_unopened_store_fails(self) -> None:
        """Calls before open() fail with StoreClosed."""
        self.failureResultOf(MemoryStore().rows(10), StoreClosed)


class SQLiteStoreTests(StoreContract, unittest.TestCase):
    def setUp(self) -> None:
        self.tmp = tempfile.mkdtemp(prefix="zqtest-mm-")
        self.addCleanup(shutil.rmtree, self.tmp, True)

    def make_store(self) -> PendingStore:
        return SQLiteStore(reactor, os.path.join(self.tmp, "sub", "pending.sqlite3"))

    @inline
    async def test_rows_survive_reopen(self) -> None:
        """Rows committed by one store are there for a new store over the same file."""
        first = await self.opened()
        await first.add(stream_event(10, 1), 100.0, 120)
        await first.close()
        second = await self.opened()
        self.assertEqual(await second.due_times(), {10: 220.0})
        self.assertEqual((await second.rows(10))[0].event["user"]["email"], "hamlet@example.com")

    def test_invalid_table_name(self) -> None:
        """A table name that is not a plain identifier is refused."""
        with self.assertRaises(ValueError):
            SQLiteStore(reactor, "x.sqlite3", table="x; DROP TABLE y")

    def test_build_store(self) -> None:
        """build_store picks the store the settings name."""
        sqlite = build_store(reactor, MissedMessageSettings(sqlite_path="p.sqlite3"))
        self.assertIsInstance(sqlite, SQLiteStore)
        pg = build_store(reactor, MissedMessageSettings(store="postgres", postgres_dsn="dbname=x"))
        self.assertIsInstance(pg, PostgresStore)

    def test_postgres_placeholders(self) -> None:
        """PostgreSQL statements use %s placeholders and escape the modulo operator."""
        store = PostgresStore(reactor, "dbname=x")
        self.assertEqual(
            store.sql("SELECT 1 FROM {t} WHERE user_profile_id % ? = ?"),
            "SELECT 1 FROM zq_missedmessage_pending WHERE user_profile_id %% %s = %s",
        )

    def test_shard_owns(self) -> None:
        """Shard N of S owns the users with id % S + 1 == N; one shard owns everyone."""
        self.assertTrue(Shard(3, 2).owns(4))
        self.assertFalse(Shard(3, 2).owns(5))
        self.assertTrue(Shard(1, 1).owns(5))
