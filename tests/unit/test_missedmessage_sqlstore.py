"""The SQL stores without a database: table names, dialects and build_store, on a MemoryReactor.

Their statements run on real SQLite and PostgreSQL in tests/integration/.
"""

from __future__ import annotations

from twisted.internet.testing import MemoryReactor
from twisted.trial import unittest

from zqtwisted.missedmessage.settings import MissedMessageSettings
from zqtwisted.missedmessage.sqlstore import PostgresStore, SQLiteStore, build_store
from zqtwisted.missedmessage.store import StoreClosed


class SQLStoreTests(unittest.TestCase):
    def setUp(self) -> None:
        self.reactor = MemoryReactor()

    def test_invalid_table_name(self) -> None:
        """A table name that is not a plain identifier is refused."""
        with self.assertRaises(ValueError):
            SQLiteStore(self.reactor, "x.sqlite3", table="x; DROP TABLE y")

    def test_build_store(self) -> None:
        """build_store picks the store the settings name."""
        sqlite = build_store(self.reactor, MissedMessageSettings(sqlite_path="p.sqlite3"))
        self.assertIsInstance(sqlite, SQLiteStore)
        pg = build_store(self.reactor, MissedMessageSettings(store="postgres", postgres_dsn="dbname=x"))
        self.assertIsInstance(pg, PostgresStore)

    def test_postgres_placeholders(self) -> None:
        """PostgreSQL statements use %s placeholders and escape the modulo operator."""
        store = PostgresStore(self.reactor, "dbname=x")
        self.assertEqual(
            store.sql("SELECT 1 FROM {t} WHERE user_profile_id % ? = ?"),
            "SELECT 1 FROM zq_missedmessage_pending WHERE user_profile_id %% %s = %s",
        )

    def test_sqlite_keeps_qmark_placeholders(self) -> None:
        """SQLite statements keep ? placeholders and get the configured table name."""
        store = SQLiteStore(self.reactor, "x.sqlite3", table="other_table")
        self.assertEqual(store.sql("SELECT 1 FROM {t} WHERE a % ? = ?"), "SELECT 1 FROM other_table WHERE a % ? = ?")

    def test_unopened_store_fails(self) -> None:
        """Calls before open() fail with StoreClosed, without touching a database."""
        store = SQLiteStore(self.reactor, "never-created.sqlite3")
        self.failureResultOf(store.rows(10), StoreClosed)
        self.successResultOf(store.close())

    def test_failing_pool_fails_open(self) -> None:
        """A pool that cannot be made fails open() through its Deferred and leaves the store closed."""
        store = SQLiteStore(self.reactor, "x.sqlite3")

        def broken() -> object:
            raise OSError("read-only file system")

        store.make_pool = broken  # type: ignore[assignment,method-assign]
        self.failureResultOf(store.open(), OSError)
        self.failureResultOf(store.rows(10), StoreClosed)
