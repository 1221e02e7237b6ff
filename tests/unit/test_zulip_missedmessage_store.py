"""Tests for zqtwisted.zulip.missedmessage_store: Zulip's event, and the claims kept beside Zulip's table."""

from __future__ import annotations

from typing import Any, cast

from twisted.internet.defer import Deferred, succeed
from twisted.internet.task import Clock
from twisted.trial.unittest import TestCase

from tests.zulip_fakes import FakeDatabase
from zqtwisted.errors import MalformedEventError, PermanentError
from zqtwisted.missedmessage.store import PendingRow, Shard
from zqtwisted.zulip.missedmessage_store import Added, ZulipNotificationStore, validate_zulip_event

EVENT = {"user_profile_id": 10, "message_id": 501, "trigger": "direct_message", "mentioned_user_group_id": None}


class OpeningDatabase(FakeDatabase):
    def open(self) -> Deferred[None]:
        return succeed(cast(None, "opened"))


def row(row_id: int, message: int, due: float = 100.0, user: int = 10) -> PendingRow:
    return PendingRow(row_id, user, message, due, {**EVENT, "user_profile_id": user, "message_id": message})


class ValidateTests(TestCase):
    def test_zulip_events(self) -> None:
        """maybe_enqueue_notifications' event passes; wrong types, ranges and empty triggers are malformed."""
        self.assertEqual(validate_zulip_event(EVENT), EVENT)
        self.assertEqual(validate_zulip_event({**EVENT, "mentioned_user_group_id": 5})["mentioned_user_group_id"], 5)
        cases: list[tuple[dict[str, Any], str]] = [
            ({"message_id": None}, "'message_id': expected an int"),
            ({"user_profile_id": True}, "expected an int, got bool"),
            ({"message_id": 2**31}, "expected an id in 1..2147483647"),
            ({"mentioned_user_group_id": "x"}, "expected an int, got str"),
            ({"trigger": ""}, "non-empty string"),
        ]
        for change, error in cases:
            with self.assertRaisesRegex(MalformedEventError, error):
                validate_zulip_event({**EVENT, **change})


class StoreTests(TestCase):
    def store(self, **answers: Any) -> tuple[ZulipNotificationStore, FakeDatabase, Clock]:
        db = OpeningDatabase(answers)
        clock = Clock()
        clock.advance(50)
        return ZulipNotificationStore(db, 120.0, clock), db, clock

    def test_add(self) -> None:
        """add returns the user's next due time; a missing user is a PermanentError; the period is Zulip's."""
        store, db, _ = self.store(add_notification=Added("added", 170.0))
        self.assertEqual(self.successResultOf(store.add(EVENT, 50.0, 1.0)), 170.0)
        self.assertEqual(db.calls[0], ("add_notification", (EVENT, 50.0, [], 120.0)))
        store, _, _ = self.store(add_notification=Added("no_message", None))
        self.assertIsNone(self.successResultOf(store.add(EVENT, 50.0, 1.0)))
        store, _, _ = self.store(add_notification=None)
        self.assertIsInstance(self.failureResultOf(store.add(EVENT, 50.0, 1.0)).value, PermanentError)
        self.assertEqual(self.successResultOf(store.open()), "opened")
        self.assertIsNone(self.successResultOf(store.close()))

    def test_claims(self) -> None:
        """Claimed rows are busy until deleted, released or expired; due times count a live claim's end."""
        rows = [row(1, 501), row(2, 502)]
        store, db, clock = self.store(
            claim_due_rows=rows, delete_notification_rows=2, pending_due_times={11: 300.0}, next_pending_due=None,
            user_rows=rows,
        )  # fmt: skip
        self.assertEqual(self.successResultOf(store.claim(10, 100.0, 400.0, "t1")), rows)
        self.assertEqual(store._busy(10), [1, 2])
        self.assertEqual(self.successResultOf(store.due_times()), {11: 300.0, 10: 400.0})
        self.assertEqual(self.successResultOf(store.due_times(Shard(2, 2))), {11: 300.0})
        self.assertEqual(self.successResultOf(store.next_due(10)), 400.0)
        self.assertEqual(self.successResultOf(store.delete("t1")), 2)
        self.assertEqual(store._busy(), [])
        self.assertEqual(self.successResultOf(store.delete("t1")), 0)
        self.successResultOf(store.claim(10, 100.0, 60.0, "t2"))
        self.assertEqual(store._busy(), [1, 2])
        clock.advance(20)  # the claim expired
        self.assertEqual(store._busy(), [])
        self.successResultOf(store.claim(10, 100.0, 900.0, "t3"))
        self.successResultOf(store.release("t3"))
        self.assertEqual(store._busy(), [])
        self.assertIsNone(self.successResultOf(store.next_due(10)))
        self.assertEqual(self.successResultOf(store.rows(10)), rows)
        self.assertEqual([name for name, _ in db.calls].count("claim_due_rows"), 3)

    def test_empty_claim(self) -> None:
        """Nothing due: no claim is kept."""
        store, _, _ = self.store(claim_due_rows=[])
        self.assertEqual(self.successResultOf(store.claim(10, 100.0, 400.0, "t")), [])
        self.assertEqual(store._claims, {})

    def test_wall_clock(self) -> None:
        """Without a clock the store uses the wall clock for claim expiry."""
        store = ZulipNotificationStore(OpeningDatabase({"claim_due_rows": [row(1, 501)]}))
        self.successResultOf(store.claim(10, 0.0, 10.0, "old"))
        self.assertEqual(store._busy(), [])
