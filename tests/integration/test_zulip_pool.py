"""zqtwisted.zulip.pool on the local PostgreSQL: the schema check, deadlines, outages through a cuttable proxy."""

from __future__ import annotations

import dataclasses
from typing import Any

from twisted.internet import reactor
from twisted.internet.defer import ensureDeferred
from twisted.internet.task import deferLater
from twisted.trial import unittest

from tests.contract import inline
from tests.integration.proxy import CuttableProxy
from tests.integration.test_missedmessage_postgres import require_postgres
from tests.zulip_db import ZulipTestDatabase
from zqtwisted.errors import StartupError
from zqtwisted.zulip.pool import DatabaseQueryError, DatabaseUnavailable, ZulipDatabase
from zqtwisted.zulip.settings import ZulipSettings


def count_services(cursor: Any) -> int:
    cursor.execute("SELECT count(*) FROM zerver_service")
    return int(cursor.fetchone()[0])


def sleep(cursor: Any, seconds: float) -> None:
    cursor.execute("SELECT pg_sleep(%s)", (seconds,))


def broken(cursor: Any) -> None:
    cursor.execute("SELECT no_such_column FROM zerver_service")


class PoolTests(unittest.TestCase):
    timeout = 60

    def setUp(self) -> None:
        require_postgres(self)
        self.db = ZulipTestDatabase()
        self.addCleanup(self.db.drop)
        self.proxy = CuttableProxy(reactor, port=5432)
        self.proxy.start()
        self.addCleanup(lambda: ensureDeferred(self.proxy.stop()))
        self.fatal: list[bool] = []

    def settings(self, **changes: Any) -> ZulipSettings:
        base = ZulipSettings(
            database=f"host=127.0.0.1 port={self.proxy.listen_port} dbname={self.db.name} user=postgres",
            external_host="zulip.example.com",
            query_timeout=2.0,
            connect_timeout=2.0,
        )
        return dataclasses.replace(base, **changes)

    def pool(self, **changes: Any) -> ZulipDatabase:
        database = ZulipDatabase(reactor, self.settings(**changes), on_fatal=lambda: self.fatal.append(True))
        self.addCleanup(database.close)
        return database

    async def until(self, predicate: Any, timeout: float = 20) -> None:
        for _ in range(int(timeout / 0.1)):
            if predicate():
                return
            await deferLater(reactor, 0.1, lambda: None)
        self.fail("condition not reached")

    @inline
    async def test_open_and_query(self) -> None:
        """On the fixture the schema check passes; named queries run in schema zulip; opening is shared."""
        database = self.pool()
        await database.open()
        await database.open()
        self.assertTrue(database.is_available())
        self.assertEqual(await database.run("count_services", count_services), 0)

    @inline
    async def test_schema_mismatch_is_one_line(self) -> None:
        """A missing column stops start-up with a StartupError naming it (no traceback to read)."""
        self.db.execute("ALTER TABLE zulip.zerver_service DROP COLUMN token")
        with self.assertRaises(StartupError) as raised:
            await self.pool().open()
        self.assertIn("zerver_service.token", str(raised.exception))
        self.assertNotIn("\n", str(raised.exception))

    @inline
    async def test_wrong_schema(self) -> None:
        """The wrong [zulip] schema names every table as missing."""
        with self.assertRaisesRegex(StartupError, "schema 'public'"):
            await self.pool(schema="public").open()

    @inline
    async def test_query_deadline(self) -> None:
        """A query slower than query_timeout fails as unavailable in time; the server stops it too."""
        database = self.pool(query_timeout=1.0)
        await database.open()
        started = reactor.seconds()
        with self.assertRaises(DatabaseUnavailable):
            await database.run("sleep", sleep, 5)
        self.assertLess(reactor.seconds() - started, 2.0)
        await self.until(lambda: database.is_available())  # the probe finds it answering again

    @inline
    async def test_query_error_is_permanent(self) -> None:
        """A failing statement is a DatabaseQueryError; the connection stays usable."""
        database = self.pool()
        await database.open()
        with self.assertRaises(DatabaseQueryError):
            await database.run("broken", broken)
        self.assertEqual(await database.run("count_services", count_services), 0)

    @inline
    async def test_outage_and_recovery(self) -> None:
        """Unreachable at start: opening waits instead of failing; queries are unavailable; back: it answers."""
        await self.proxy.refuse()
        database = self.pool()
        await database.open()
        self.assertFalse(database.is_available())
        with self.assertRaises(DatabaseUnavailable):
            await database.run("count_services", count_services)
        self.proxy.start()
        await self.until(lambda: database.is_available())
        self.assertEqual(await database.run("count_services", count_services), 0)

    @inline
    async def test_connection_cut_mid_stream(self) -> None:
        """A cut connection fails one query as unavailable and is replaced by a new one."""
        database = self.pool()
        await database.open()
        self.proxy.cut()
        await deferLater(reactor, 0.2, lambda: None)
        results: list[int | None] = []
        for _ in range(3):
            try:
                results.append(await database.run("count_services", count_services))
            except DatabaseUnavailable:
                results.append(None)
        self.assertEqual(results[-1], 0)

    @inline
    async def test_late_schema_mismatch_stops_the_service(self) -> None:
        """Found only after start-up (the database was down), a mismatch is logged and stops the service."""
        self.db.execute("ALTER TABLE zulip.zerver_pushdevice DROP COLUMN error_code")
        await self.proxy.refuse()
        database = self.pool()
        await database.open()
        self.proxy.start()
        with self.assertRaises(DatabaseUnavailable):
            await database.run("count_services", count_services)
        self.assertEqual(self.fatal, [True])
        with self.assertRaises(DatabaseUnavailable):
            await database.run("count_services", count_services)
