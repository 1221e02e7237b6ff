"""The SQL stores of pending notifications: SQLite (default) and PostgreSQL.

Both run their statements in threads through :mod:`twisted.enterprise.adbapi`,
so the reactor never waits for the database; every method's Deferred fires once
the transaction is committed.

- SQLite: one file, one connection (``cp_min = cp_max = 1``), WAL journal.  Meant
  for one worker per file (several processes work, serialised by SQLite's lock).
- PostgreSQL: several workers on several machines share one table.  A batch is
  claimed with ``SELECT ... FOR UPDATE SKIP LOCKED`` inside the claiming
  ``UPDATE``, so two workers never send the same batch; a statement timeout and
  a connect timeout bound every call.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping, Sequence
from typing import Any

from twisted.enterprise import adbapi
from twisted.internet.defer import Deferred, fail, succeed

from zqtwisted.missedmessage.settings import MissedMessageSettings
from zqtwisted.missedmessage.store import PendingRow, Shard, StoreClosed

DEFAULT_TABLE = "zq_missedmessage_pending"
_IDENTIFIER = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")

# When a row can next be taken: its due time, or the end of its claim.
_READY_AT = "CASE WHEN claimed_until IS NULL OR claimed_until < due THEN due ELSE claimed_until END"
_AVAILABLE = "(claimed_until IS NULL OR claimed_until <= ?)"


class SQLStore:
    """A :class:`~zqtwisted.missedmessage.store.PendingStore` over a DB-API module via adbapi."""

    # Set by the subclasses.
    schema: Sequence[str] = ()
    claim_lock = ""

    def __init__(self, table: str = DEFAULT_TABLE) -> None:
        if not _IDENTIFIER.match(table):
            raise ValueError(f"invalid table name {table!r}")
        self.table = table
        self._pool: adbapi.ConnectionPool | None = None

    # -- to be provided by the dialects ------------------------------------------------

    def make_pool(self) -> adbapi.ConnectionPool:
        raise NotImplementedError

    def sql(self, statement: str) -> str:
        """``statement`` (written with ``?`` placeholders) in the driver's paramstyle."""
        return statement.replace("{t}", self.table)

    def create_schema(self, txn: Any) -> None:
        for statement in self.schema:
            txn.execute(self.sql(statement))

    # -- PendingStore ----------------------------------------------------------------

    def open(self) -> Deferred[None]:
        if self._pool is not None:
            return succeed(None)
        try:
            self._pool = self.make_pool()
        except Exception as e:  # noqa: BLE001 - reported through the Deferred
            return fail(e)
        d: Deferred[None] = self._pool.runInteraction(self.create_schema)

        def failed(failure: Any) -> Any:
            self._close_pool()
            return failure

        return d.addErrback(failed)

    def close(self) -> Deferred[None]:
        self._close_pool()
        return succeed(None)

    def add(self, event: Mapping[str, Any], now: float, period: float) -> Deferred[float | None]:
        user, message = int(event["user_profile_id"]), int(event["message_id"])
        body = json.dumps(event, separators=(",", ":"))

        def run(txn: Any) -> float:
            txn.execute(self.sql(f"SELECT MIN(due) FROM {{t}} WHERE user_profile_id = ? AND {_AVAILABLE}"), (user, now))
            (pending,) = txn.fetchone()
            due = now + period if pending is None else min(float(pending), now + period)
            txn.execute(
                self.sql(
                    "INSERT INTO {t} (user_profile_id, message_id, due, created, event) VALUES (?, ?, ?, ?, ?) "
                    "ON CONFLICT (user_profile_id, message_id) DO NOTHING"
                ),
                (user, message, due, now, body),
            )
            txn.execute(self.sql(f"SELECT MIN({_READY_AT}) FROM {{t}} WHERE user_profile_id = ?"), (user,))
            return float(txn.fetchone()[0])

        return self._run(run)

    def due_times(self, shard: Shard | None = None) -> Deferred[dict[int, float]]:
        def run(txn: Any) -> dict[int, float]:
            where = ""
            params: tuple[int, ...] = ()
            if shard is not None and shard.count > 1:
                where, params = "WHERE user_profile_id % ? = ?", (shard.count, shard.index - 1)
            txn.execute(self.sql(f"SELECT user_profile_id, MIN({_READY_AT}) FROM {{t}} {where} GROUP BY 1"), params)
            return {int(user): float(ready) for user, ready in txn.fetchall()}

        return self._run(run)

    def next_due(self, user_profile_id: int) -> Deferred[float | None]:
        def run(txn: Any) -> float | None:
            txn.execute(self.sql(f"SELECT MIN({_READY_AT}) FROM {{t}} WHERE user_profile_id = ?"), (user_profile_id,))
            (ready,) = txn.fetchone()
            return None if ready is None else float(ready)

        return self._run(run)

    def claim(self, user_profile_id: int, now: float, until: float, token: str) -> Deferred[list[PendingRow]]:
        def run(txn: Any) -> list[PendingRow]:
            txn.execute(
                self.sql(
                    "UPDATE {t} SET claim_token = ?, claimed_until = ? WHERE id IN ("
                    f"SELECT id FROM {{t}} WHERE user_profile_id = ? AND due <= ? AND {_AVAILABLE}"
                    f"{self.claim_lock})"
                ),
                (token, until, user_profile_id, now, now),
            )
            return self._select(txn, "claim_token = ?", (token,))

        return self._run(run)

    def delete(self, token: str) -> Deferred[int]:
        def run(txn: Any) -> int:
            txn.execute(self.sql("DELETE FROM {t} WHERE claim_token = ?"), (token,))
            return int(txn.rowcount)

        return self._run(run)

    def release(self, token: str) -> Deferred[None]:
        def run(txn: Any) -> None:
            txn.execute(
                self.sql("UPDATE {t} SET claim_token = NULL, claimed_until = NULL WHERE claim_token = ?"), (token,)
            )

        return self._run(run)

    def rows(self, user_profile_id: int) -> Deferred[list[PendingRow]]:
        return self._run(lambda txn: self._select(txn, "user_profile_id = ?", (user_profile_id,)))

    # -- helpers ------------------------------------------------------------------------

    def _select(self, txn: Any, where: str, params: tuple[Any, ...]) -> list[PendingRow]:
        txn.execute(
            self.sql(f"SELECT id, user_profile_id, message_id, due, event FROM {{t}} WHERE {where} ORDER BY id"), params
        )
        return [
            PendingRow(int(row_id), int(user), int(message), float(due), json.loads(body))
            for row_id, user, message, due, body in txn.fetchall()
        ]

    def _run(self, interaction: Any) -> Deferred[Any]:
        if self._pool is None:
            return fail(StoreClosed("the store is not open"))
        d: Deferred[Any] = self._pool.runInteraction(interaction)
        return d

    def _close_pool(self) -> None:
        pool, self._pool = self._pool, None
        if pool is not None:
            pool.close()


class SQLiteStore(SQLStore):
    """Pending notifications in an SQLite file (created with its directory)."""

    schema = (
        "CREATE TABLE IF NOT EXISTS {t} ("
        " id INTEGER PRIMARY KEY AUTOINCREMENT,"
        " user_profile_id INTEGER NOT NULL,"
        " message_id INTEGER NOT NULL,"
        " due REAL NOT NULL,"
        " created REAL NOT NULL,"
        " claim_token TEXT,"
        " claimed_until REAL,"
        " event TEXT NOT NULL,"
        " UNIQUE (user_profile_id, message_id))",
        "CREATE INDEX IF NOT EXISTS {t}_user_due ON {t} (user_profile_id, due)",
        "CREATE INDEX IF NOT EXISTS {t}_claim ON {t} (claim_token)",
    )

    def __init__(self, reactor: Any, path: str, table: str = DEFAULT_TABLE, busy_timeout: float = 30.0) -> None:
        super().__init__(table)
        self.reactor = reactor
        self.path = path
        self.busy_timeout = busy_timeout

    def make_pool(self) -> adbapi.ConnectionPool:
        directory = os.path.dirname(os.path.abspath(self.path))
        os.makedirs(directory, exist_ok=True)
        return adbapi.ConnectionPool(
            "sqlite3",
            self.path,
            check_same_thread=False,
            timeout=self.busy_timeout,
            cp_min=1,
            cp_max=1,
            cp_reactor=self.reactor,
            cp_openfun=_sqlite_setup,
            cp_noisy=False,
        )


def _sqlite_setup(connection: Any) -> None:
    connection.execute("PRAGMA journal_mode=WAL")
    connection.execute("PRAGMA synchronous=FULL")


class PostgresStore(SQLStore):
    """Pending notifications in a PostgreSQL table shared by several workers."""

    schema = (
        "SELECT pg_advisory_xact_lock(hashtext('{t}'))",
        "CREATE TABLE IF NOT EXISTS {t} ("
        " id BIGSERIAL PRIMARY KEY,"
        " user_profile_id BIGINT NOT NULL,"
        " message_id BIGINT NOT NULL,"
        " due DOUBLE PRECISION NOT NULL,"
        " created DOUBLE PRECISION NOT NULL,"
        " claim_token TEXT,"
        " claimed_until DOUBLE PRECISION,"
        " event TEXT NOT NULL,"
        " UNIQUE (user_profile_id, message_id))",
        "CREATE INDEX IF NOT EXISTS {t}_user_due ON {t} (user_profile_id, due)",
        "CREATE INDEX IF NOT EXISTS {t}_claim ON {t} (claim_token)",
    )
    claim_lock = " FOR UPDATE SKIP LOCKED"

    def __init__(
        self, reactor: Any, dsn: str, table: str = DEFAULT_TABLE, timeout: float = 30.0, pool_size: int = 3
    ) -> None:
        super().__init__(table)
        self.reactor = reactor
        self.dsn = dsn
        self.timeout = timeout
        self.pool_size = pool_size

    def sql(self, statement: str) -> str:
        return super().sql(statement).replace("%", "%%").replace("?", "%s")

    def make_pool(self) -> adbapi.ConnectionPool:
        timeout_ms = max(1, int(self.timeout * 1000))

        def setup(connection: Any) -> None:
            with connection.cursor() as cursor:
                cursor.execute(f"SET statement_timeout = {timeout_ms}")
                cursor.execute(f"SET lock_timeout = {timeout_ms}")
            connection.commit()

        return adbapi.ConnectionPool(
            "psycopg2",
            self.dsn,
            connect_timeout=max(1, int(self.timeout)),
            cp_min=1,
            cp_max=self.pool_size,
            cp_reconnect=True,
            cp_reactor=self.reactor,
            cp_openfun=setup,
            cp_noisy=False,
        )


def build_store(reactor: Any, settings: MissedMessageSettings) -> SQLStore:
    """The store ``[missedmessage] store`` names, not yet opened.

    ``reactor`` runs the store's thread pool (``IReactorThreads`` and ``IReactorCore``);
    :meth:`zqtwisted.resources.Resources.missedmessage_store` builds it once.
    """
    if settings.store == "postgres":
        return PostgresStore(reactor, settings.dsn(), timeout=settings.postgres_timeout)
    return SQLiteStore(reactor, settings.sqlite_path)
