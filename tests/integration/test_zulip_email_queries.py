"""zqtwisted.zulip.email_queries, missed_queries and the queries of missedmessage_store on the schema fixture."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from twisted.trial import unittest

from tests.integration.test_missedmessage_postgres import require_postgres
from tests.zulip_db import ZulipTestDatabase
from zqtwisted.missedmessage.store import Shard
from zqtwisted.zulip import email_queries as eq
from zqtwisted.zulip import missed_queries as mq
from zqtwisted.zulip import missedmessage_store as ms

READ, MENTIONED = 1, 8


class Base(unittest.TestCase):
    def setUp(self) -> None:
        require_postgres(self)
        self.db = ZulipTestDatabase()
        self.addCleanup(self.db.drop)
        self.realm = self.db.realm("zulip", "Zulip Dev")
        self.hamlet = self.db.user(
            self.realm, "user10@zulip.example.com", "King Hamlet", delivery_email="hamlet@private.example.org",
            email_notifications_batching_period_seconds=30,
        )  # fmt: skip
        self.othello = self.db.user(self.realm, "othello@zulip.example.com", "Othello", is_active=False)
        self.iago = self.db.user(self.realm, "iago@zulip.example.com", "Iago", role=600)

    def run_query(self, query: Callable[..., Any], *args: Any) -> Any:
        with self.db.connection.cursor() as cursor:
            cursor.execute("SET search_path TO zulip")
            result = query(cursor, *args)
        self.db.connection.commit()
        return result


class EmailQueryTests(Base):
    def test_email_users_and_realm(self) -> None:
        """Users by id (inactive ones too) with their delivery address and realm; the realm by id."""
        found = self.run_query(eq.fetch_email_users, [self.hamlet, self.othello, 999])
        self.assertEqual(sorted(found), [self.hamlet, self.othello])
        self.assertEqual(found[self.hamlet].delivery_email, "hamlet@private.example.org")
        self.assertFalse(found[self.othello].is_active)
        self.assertEqual(found[self.hamlet].realm, eq.EmailRealm(self.realm.id, "Zulip Dev", "zulip"))
        self.assertEqual(self.run_query(eq.fetch_email_realm, self.realm.id).name, "Zulip Dev")
        self.assertIsNone(self.run_query(eq.fetch_email_realm, 999))

    def test_fetch_missed(self) -> None:
        """Unread, not deleted messages with mention flags; group DM members; the mentioned group."""
        db, realm = self.db, self.realm
        dm = db.recipient_of_user(self.hamlet)
        unread = db.message(realm, self.othello, dm, "hi", "<p>hi</p>", receivers={self.hamlet: 0})
        read = db.message(realm, self.othello, dm, "old", "<p>old</p>", receivers={self.hamlet: READ})
        deleted = db.message(realm, self.othello, dm, "(deleted)", "<p>(deleted)</p>", receivers={self.hamlet: 0})
        huddle = db.huddle([self.hamlet, self.othello, self.iago])
        group_dm = db.message(realm, self.iago, huddle, "all", "<p>all</p>", receivers={self.hamlet: MENTIONED})
        data = self.run_query(mq.fetch_missed, self.hamlet, [unread, read, deleted, group_dm], [realm.members_group])
        self.assertEqual([m.id for m in data.messages], [unread, group_dm])
        self.assertEqual([m.has_mentions for m in data.messages], [False, True])
        self.assertEqual(data.display_recipients[huddle], ((self.hamlet, "King Hamlet"), (self.othello, "Othello"),
                                                           (self.iago, "Iago")))  # fmt: skip
        self.assertEqual(data.groups, {realm.members_group: ("role:members", 2)})
        user = data.user
        self.assertEqual((user.realm_string_id, user.accounts_with_address, user.emojiset), ("zulip", 1, "google"))
        self.assertIsNone(self.run_query(mq.fetch_missed, 999, [unread], []).user)

    def test_context_with_access(self) -> None:
        """Earlier messages of the topic (case-insensitive, 15 minutes) that the user may see, newest first."""
        db, realm = self.db, self.realm
        _, public = db.stream(realm, "Denmark", [self.hamlet, self.iago])
        _, private = db.stream(realm, "Secret", [self.iago], invite_only=True, history_public_to_subscribers=False)
        before = [db.message(realm, self.iago, public, f"b{i}", f"<p>b{i}</p>", topic="Castle") for i in range(2)]
        other_topic = db.message(realm, self.iago, public, "x", "<p>x</p>", topic="moat")
        mention = db.message(realm, self.iago, public, "@hamlet", "<p>@hamlet</p>", topic="castle",
                             receivers={self.hamlet: MENTIONED})  # fmt: skip
        db.message(realm, self.iago, private, "s", "<p>s</p>", topic="castle")
        hidden = db.message(realm, self.iago, private, "@hamlet", "<p>@hamlet</p>", topic="castle",
                            receivers={self.hamlet: MENTIONED})  # fmt: skip
        data = self.run_query(mq.fetch_missed, self.hamlet, [mention, hidden], [])
        context = self.run_query(mq.fetch_context, data.user, data.messages)
        self.assertEqual([m.id for m in context[mention]], list(reversed(before)))
        self.assertNotIn(other_topic, [m.id for m in context[mention]])
        self.assertEqual(context[hidden], [])
        guest = self.run_query(mq.fetch_missed, self.iago, [mention], []).user
        self.assertEqual(mq._has_access(guest, False, False, True, realm.id, False), False)

    def test_record_missed_emails(self) -> None:
        """The unsubscribe Confirmation (content type created as Django does), the gateway address, last_reminder."""
        db = self.db
        message = db.message(self.realm, self.othello, db.recipient_of_user(self.hamlet), "hi", "<p>hi</p>")
        user = self.run_query(mq.fetch_missed, self.hamlet, [], []).user
        now = time.time()
        sent = [mq.SentEmail("k" * 24, message, "mm" + "0" * 32), mq.SentEmail("j" * 24, message)]
        self.run_query(mq.record_missed_emails, user, now, sent)
        self.run_query(mq.record_missed_emails, user, now, [])
        rows = db.execute(
            "SELECT confirmation_key, type, object_id, realm_id, expiry_date > now() + interval '100 years' "
            "FROM confirmation_confirmation ORDER BY id"
        )
        self.assertEqual(
            rows, [("k" * 24, 4, self.hamlet, self.realm.id, True), ("j" * 24, 4, self.hamlet, self.realm.id, True)]
        )
        self.assertEqual(db.execute("SELECT app_label, model FROM django_content_type"), [("zerver", "userprofile")])
        self.assertEqual(db.execute("SELECT email_token, times_used FROM zerver_missedmessageemailaddress"),
                         [("mm" + "0" * 32, 0)])  # fmt: skip
        (reminder,) = db.execute("SELECT extract(epoch FROM last_reminder) FROM zerver_userprofile WHERE id = %s",
                                 (self.hamlet,))[0]  # fmt: skip
        self.assertAlmostEqual(float(reminder), now, places=3)


class NotificationTableTests(Base):
    def event(self, message: int, trigger: str = "direct_message", group: int | None = None) -> dict[str, Any]:
        return {"user_profile_id": self.hamlet, "message_id": message, "trigger": trigger,
                "mentioned_user_group_id": group}  # fmt: skip

    def test_add_claim_delete(self) -> None:
        """Rows anchored at the first pending one; duplicates and deleted messages skipped; claims skip busy rows."""
        db = self.db
        dm = db.recipient_of_user(self.hamlet)
        ids = [db.message(self.realm, self.othello, dm, f"m{i}", f"<p>m{i}</p>") for i in range(3)]
        now = 1_800_000_000.0
        added = self.run_query(ms.add_notification, self.event(ids[0]), now, [], 120.0)
        self.assertEqual(added, ms.Added("added", now + 30))
        added = self.run_query(ms.add_notification, self.event(ids[1], "mentioned", self.realm.members_group),
                               now + 10, [], 120.0)  # fmt: skip
        self.assertEqual(added, ms.Added("added", now + 30))
        self.assertEqual(self.run_query(ms.add_notification, self.event(ids[1]), now + 11, [], 120.0).status, "pending")
        self.assertEqual(self.run_query(ms.add_notification, self.event(99999), now, [], 120.0).status, "no_message")
        self.assertEqual(self.run_query(ms.add_notification, self.event(ids[2], "mentioned", 99999), now, [],
                                        120.0).status, "no_group")  # fmt: skip
        self.assertIsNone(self.run_query(ms.add_notification, {**self.event(ids[2]), "user_profile_id": 999}, now, [],
                                         120.0))  # fmt: skip
        rows = self.run_query(ms.user_rows, self.hamlet)
        self.assertEqual([r.event["trigger"] for r in rows], ["direct_message", "mentioned"])
        self.assertEqual(rows[1].event["mentioned_user_group_id"], self.realm.members_group)
        self.assertEqual(self.run_query(ms.pending_due_times, [], None), {self.hamlet: now + 30})
        self.assertEqual(
            self.run_query(ms.pending_due_times, [], Shard(2, self.hamlet % 2 + 1)), {self.hamlet: now + 30}
        )
        self.assertEqual(self.run_query(ms.pending_due_times, [], Shard(2, (self.hamlet + 1) % 2 + 1)), {})
        self.assertEqual(self.run_query(ms.claim_due_rows, self.hamlet, now + 29, []), [])
        claimed = self.run_query(ms.claim_due_rows, self.hamlet, now + 30, [rows[0].row_id])
        self.assertEqual([r.row_id for r in claimed], [rows[1].row_id])
        # A new notification while rows are being sent starts a new batch.
        added = self.run_query(ms.add_notification, self.event(ids[2]), now + 40, [r.row_id for r in rows], 120.0)
        self.assertEqual(added, ms.Added("added", now + 70))
        self.assertEqual(self.run_query(ms.next_pending_due, self.hamlet, []), now + 30)
        self.assertEqual(self.run_query(ms.delete_rows, [r.row_id for r in rows]), 2)
        self.assertEqual(self.run_query(ms.next_pending_due, self.hamlet, []), now + 70)
