"""The PostgreSQL store on the local PostgreSQL: the store contract, and claims across workers."""

from __future__ import annotations

import os
import socket
import uuid

from twisted.internet import reactor
from twisted.internet.defer import ensureDeferred, gatherResults
from twisted.trial import unittest

from tests.contract import inline
from tests.helpers import missing_requirement
from tests.missedmessage_fixtures import StoreContract, stream_event
from zqtwisted.missedmessage.sqlstore import PostgresStore
from zqtwisted.missedmessage.store import PendingStore

DSN = os.environ.get("ZQ_TEST_POSTGRES_DSN", "host=127.0.0.1 port=5432 dbname=test user=postgres")


def require_postgres(test: unittest.TestCase) -> None:
    """Fail under CI, skip (saying so) on a developer's machine, when PostgreSQL is not there."""
    try:
        with socket.create_connection(("127.0.0.1", 5432), timeout=2):
            pass
        import psycopg2  # noqa: F401
    except (OSError, ImportError) as e:
        missing_requirement(
            test,
            f"PostgreSQL is not usable ({e}): start it on 127.0.0.1:5432 with a database 'test' and "
            "pip install psycopg2-binary (the 'postgres' extra); or set ZQ_TEST_POSTGRES_DSN",
        )


class PostgresStoreTests(StoreContract, unittest.TestCase):
    timeout = 60

    def setUp(self) -> None:
        require_postgres(self)
        self.table = f"zq_mm_test_{uuid.uuid4().hex[:10]}"

    def make_store(self) -> PendingStore:
        self.addCleanup(lambda: ensureDeferred(self._drop_table()))
        return PostgresStore(reactor, DSN, table=self.table, timeout=10)

    async def _drop_table(self) -> None:
        cleaner = PostgresStore(reactor, DSN, table=self.table, timeout=10)
        await cleaner.open()
        try:
            assert cleaner._pool is not None
            await cleaner._pool.runOperation(f"DROP TABLE IF EXISTS {self.table}")
        finally:
            await cleaner.close()

    @inline
    async def test_concurrent_claims_split_rows(self) -> None:
        """Two workers claiming the same user's batch at once never both get a row."""
        first = await self.opened()
        second = PostgresStore(reactor, DSN, table=self.table, timeout=10)
        await second.open()
        self.addCleanup(second.close)
        for i in range(1, 41):
            await first.add(stream_event(10, i), 100.0, 10)
        results = await gatherResults(
            [first.claim(10, 200.0, 900.0, "w1"), second.claim(10, 200.0, 900.0, "w2")], consumeErrors=True
        )
        ids = [r.message_id for rows in results for r in rows]
        self.assertEqual(sorted(ids), list(range(1, 41)))
        self.assertEqual(len(ids), len(set(ids)))

    @inline
    async def test_two_workers_share_rows(self) -> None:
        """A row added by one worker is seen, claimed and deleted by another."""
        first = await self.opened()
        second = PostgresStore(reactor, DSN, table=self.table, timeout=10)
        await second.open()
        self.addCleanup(second.close)
        await first.add(stream_event(10, 1), 100.0, 10)
        self.assertEqual(await second.due_times(), {10: 110.0})
        self.assertEqual([r.message_id for r in await second.claim(10, 111.0, 500.0, "t")], [1])
        self.assertEqual(await first.claim(10, 112.0, 500.0, "u"), [])
        self.assertEqual(await second.delete("t"), 1)
