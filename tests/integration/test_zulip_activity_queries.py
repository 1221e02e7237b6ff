"""zqtwisted.zulip.activity_queries on a database loaded from the schema fixture (and through the real pool)."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from twisted.internet import reactor
from twisted.internet.defer import DeferredList
from twisted.trial import unittest

from tests.contract import inline
from tests.integration.test_missedmessage_postgres import require_postgres
from tests.zulip_db import ZulipTestDatabase
from zqtwisted.zulip.activity import MIN_INTERVAL_LENGTH, ActivityRow, deduplicate, parse_activity_event
from zqtwisted.zulip.activity_queries import CREATED, EXTENDED, NO_USER, update_activity_interval, upsert_user_activity
from zqtwisted.zulip.pool import ZulipDatabase
from zqtwisted.zulip.settings import ZulipSettings

T0 = datetime(2025, 11, 20, 10, 0, 0, tzinfo=UTC)


class ActivityQueryTests(unittest.TestCase):
    timeout = 60

    def setUp(self) -> None:
        require_postgres(self)
        self.db = ZulipTestDatabase()
        self.addCleanup(self.db.drop)
        realm = self.db.realm("zulip", "Zulip Dev")
        self.hamlet = self.db.user(realm, "hamlet@zulip.example.com", "King Hamlet")
        self.othello = self.db.user(realm, "othello@zulip.example.com", "Othello")
        self.website = self.db.client_id
        self.mobile = self.db.insert("zerver_client", name="ZulipMobile")

    def run_query(self, query: Callable[..., Any], *args: Any) -> Any:
        with self.db.connection.cursor() as cursor:
            cursor.execute("SET search_path TO zulip")
            result = query(cursor, *args)
        self.db.connection.commit()
        return result

    def activity(self) -> dict[tuple[int, int, str], tuple[int, float]]:
        rows = self.db.execute(
            "SELECT user_profile_id, client_id, query, count, extract(epoch from last_visit)::float8 "
            "FROM zerver_useractivity"
        )
        return {(u, c, q): (n, t) for u, c, q, n, t in rows}

    def test_upsert_inserts_then_adds(self) -> None:
        """New keys are inserted; a second batch adds its counts and keeps the greatest last_visit, as Zulip's SQL."""
        first = [ActivityRow(self.hamlet, self.website, "/json/messages", 3, 1000.0)]
        self.assertEqual(self.run_query(upsert_user_activity, first), [])
        second = [
            ActivityRow(self.hamlet, self.website, "/json/messages", 2, 900.0),
            ActivityRow(self.hamlet, self.mobile, "/json/messages", 1, 950.5),
        ]
        self.assertEqual(self.run_query(upsert_user_activity, second), [])
        self.assertEqual(
            self.activity(),
            {
                (self.hamlet, self.website, "/json/messages"): (5, 1000.0),
                (self.hamlet, self.mobile, "/json/messages"): (1, 950.5),
            },
        )
        self.assertEqual(self.run_query(upsert_user_activity, []), [])

    def test_unknown_user_or_client_skipped_and_named(self) -> None:
        """A key whose user or client does not exist is skipped and returned; the others of the batch are written."""
        rows = [
            ActivityRow(self.hamlet, self.website, "/a", 1, 10.0),
            ActivityRow(99999, self.website, "/a", 2, 10.0),
            ActivityRow(self.othello, 777, "/a", 3, 10.0),
        ]
        skipped = self.run_query(upsert_user_activity, rows)
        self.assertEqual(sorted(skipped), [(self.othello, 777, "/a"), (99999, self.website, "/a")])
        self.assertEqual(list(self.activity()), [(self.hamlet, self.website, "/a")])

    def test_zulips_limits_fit(self) -> None:
        """A 50-character query (non-ASCII too) and times with fractions fit the columns as parsed events allow."""
        event = parse_activity_event(
            {"query": "é" * 50, "user_profile_id": self.hamlet, "client_id": self.website, "time": 1763632800.25}
        )
        self.assertEqual(self.run_query(upsert_user_activity, deduplicate([event, event])), [])
        self.assertEqual(self.activity(), {(self.hamlet, self.website, "é" * 50): (2, 1763632800.25)})

    def intervals(self, user: int) -> list[tuple[datetime, datetime]]:
        rows = self.db.execute(
            'SELECT start, "end" FROM zerver_useractivityinterval WHERE user_profile_id = %s ORDER BY start', (user,)
        )
        return [(start, end) for start, end in rows]

    def test_intervals_follow_zulips_test(self) -> None:
        """Zulip's test_new_user_input: t0 creates, t0+600 s extends, t0+6000 s adds a second interval."""
        second, third = T0 + timedelta(seconds=600), T0 + timedelta(seconds=6000)
        self.assertEqual(self.run_query(update_activity_interval, self.hamlet, T0), CREATED)
        self.assertEqual(self.intervals(self.hamlet), [(T0, T0 + MIN_INTERVAL_LENGTH)])
        self.assertEqual(self.run_query(update_activity_interval, self.hamlet, second), EXTENDED)
        self.assertEqual(self.intervals(self.hamlet), [(T0, second + MIN_INTERVAL_LENGTH)])
        self.assertEqual(self.run_query(update_activity_interval, self.hamlet, third), CREATED)
        self.assertEqual(
            self.intervals(self.hamlet),
            [(T0, second + MIN_INTERVAL_LENGTH), (third, third + MIN_INTERVAL_LENGTH)],
        )
        self.assertEqual(self.intervals(self.othello), [])

    def test_latest_interval_is_the_one_extended(self) -> None:
        """Only the interval that ends last is compared (Zulip's order_by("-end").first())."""
        self.run_query(update_activity_interval, self.hamlet, T0 + timedelta(hours=2))
        self.db.execute(
            'INSERT INTO zerver_useractivityinterval (user_profile_id, start, "end") VALUES (%s, %s, %s)',
            (self.hamlet, T0, T0 + MIN_INTERVAL_LENGTH),
        )
        self.assertEqual(self.run_query(update_activity_interval, self.hamlet, T0 + timedelta(minutes=5)), CREATED)
        self.assertEqual(len(self.intervals(self.hamlet)), 3)

    def test_unknown_user(self) -> None:
        """An interval for a user who does not exist writes nothing and says so."""
        self.assertEqual(self.run_query(update_activity_interval, 99999, T0), NO_USER)
        self.assertEqual(self.db.execute("SELECT count(*) FROM zerver_useractivityinterval"), [(0,)])


class PoolConcurrencyTests(unittest.TestCase):
    timeout = 60

    def setUp(self) -> None:
        require_postgres(self)
        self.db = ZulipTestDatabase()
        self.addCleanup(self.db.drop)
        realm = self.db.realm("zulip", "Zulip Dev")
        self.users = [self.db.user(realm, f"u{i}@zulip.example.com", f"U{i}") for i in range(20)]
        settings = ZulipSettings(
            database=f"host=127.0.0.1 port=5432 dbname={self.db.name} user=postgres",
            external_host="zulip.example.com",
        )
        self.pool = ZulipDatabase(reactor, dataclasses.replace(settings, pool_max=5))
        self.addCleanup(self.pool.close)

    @inline
    async def test_concurrent_batches_on_the_same_keys(self) -> None:
        """Ten batches over the same keys at once (five connections): every count arrives, no deadlock."""
        await self.pool.open()
        client = self.db.client_id
        batches = [
            deduplicate(
                [
                    parse_activity_event({"query": f"/q{q}", "user_profile_id": u, "client_id": client, "time": b})
                    for u in self.users
                    for q in range(5)
                ]
            )
            for b in range(10)
        ]
        results = await DeferredList(
            [self.pool.run("user_activity", upsert_user_activity, rows) for rows in batches], consumeErrors=True
        )
        self.assertEqual([ok for ok, _ in results], [True] * 10, results)
        ((total, rows, latest),) = self.db.execute(
            "SELECT sum(count), count(*), max(extract(epoch from last_visit)) FROM zerver_useractivity"
        )
        self.assertEqual((total, rows, latest), (1000, 100, 9))


class FakeCursor:
    """A cursor whose UPSERT skips ``skipped`` rows and whose follow-up query finds ``found`` keys."""

    def __init__(self, skipped: int, found: list[tuple[int, int, str]]) -> None:
        self.skipped = skipped
        self.found = found
        self.rowcount = -1
        self.statements: list[str] = []

    def execute(self, statement: str, params: Any) -> None:
        self.statements.append(statement)
        self.rowcount = len(params[0]) - self.skipped

    def fetchall(self) -> list[tuple[int, int, str]]:
        return self.found


class SkipAccountingTests(unittest.TestCase):
    def test_one_statement_when_nothing_is_skipped(self) -> None:
        """A batch whose rows all exist is one statement; skipped rows are named by a second query."""
        rows = [ActivityRow(1, 1, "/a", 1, 1.0), ActivityRow(2, 1, "/a", 1, 1.0)]
        cursor = FakeCursor(0, [])
        self.assertEqual(upsert_user_activity(cursor, rows), [])
        self.assertEqual(len(cursor.statements), 1)
        cursor = FakeCursor(1, [(2, 1, "/a")])
        self.assertEqual(upsert_user_activity(cursor, rows), [(2, 1, "/a")])
        self.assertEqual(len(cursor.statements), 2)

    def test_unaccounted_skip_rolls_back(self) -> None:
        """Rows skipped but not found missing a moment later (a user created meanwhile): the batch is retried."""
        from zqtwisted.zulip.activity_queries import UnexpectedSkip

        with self.assertRaises(UnexpectedSkip):
            upsert_user_activity(FakeCursor(1, []), [ActivityRow(1, 1, "/a", 1, 1.0)])
