"""The in-memory pending-notification store: MemoryStore passes the store contract, synchronously.

The SQL stores pass the same contract on a real database in
tests/integration/test_missedmessage_store.py (SQLite) and test_missedmessage_postgres.py.
"""

from __future__ import annotations

from twisted.trial import unittest

from tests.contract import inline
from tests.missedmessage_fixtures import StoreContract, stream_event
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

    def test_answers_at_once(self) -> None:
        """Every call's Deferred has fired when it returns: no thread, no reactor turn."""
        store = MemoryStore()
        self.successResultOf(store.open())
        self.assertEqual(self.successResultOf(store.add(stream_event(10, 1), 100.0, 120)), 220.0)
        self.assertEqual(self.successResultOf(store.due_times()), {10: 220.0})
        self.successResultOf(store.close())
        self.assertFalse(store.is_open)


class ShardTests(unittest.TestCase):
    def test_shard_owns(self) -> None:
        """Shard N of S owns the users with id % S + 1 == N; one shard owns everyone."""
        self.assertTrue(Shard(3, 2).owns(4))
        self.assertFalse(Shard(3, 2).owns(5))
        self.assertTrue(Shard(1, 1).owns(5))
