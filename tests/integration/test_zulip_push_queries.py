"""zqtwisted.zulip.push_queries on a database loaded from the schema fixture."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.trial import unittest

from tests.integration.test_missedmessage_postgres import require_postgres
from tests.zulip_db import ZulipTestDatabase
from zqtwisted.zulip import push_queries as q

KEY = b"\x31" + bytes(32)


class PushQueryTests(unittest.TestCase):
    def setUp(self) -> None:
        require_postgres(self)
        self.db = ZulipTestDatabase()
        self.addCleanup(self.db.drop)
        self.realm = self.db.realm("zulip", "Zulip Dev")
        self.hamlet = self.db.user(self.realm, "user10@zulip.example.com", "King Hamlet")
        self.othello = self.db.user(self.realm, "othello@zulip.example.com", "Othello")
        self.iago = self.db.user(self.realm, "iago@zulip.example.com", "Iago")

    def run_query(self, query: Callable[..., Any], *args: Any) -> Any:
        with self.db.connection.cursor() as cursor:
            cursor.execute("SET search_path TO zulip")
            result = query(cursor, *args)
        self.db.connection.commit()
        return result

    def user(self, user_id: int) -> q.PushUser:
        user = self.run_query(q.fetch_push_user, user_id)
        assert isinstance(user, q.PushUser)
        return user

    def test_fetch_push_user(self) -> None:
        """The user's uuid and settings with the realm's name and uuid."""
        user = self.user(self.othello)
        self.assertEqual(
            (user.realm_string_id, user.realm_name, user.realm_uuid), ("zulip", "Zulip Dev", self.realm.uuid)
        )
        self.assertTrue(user.enable_offline_push_notifications)
        self.assertIsNone(self.run_query(q.fetch_push_user, 9999))

    def test_claim_direct_message(self) -> None:
        """Unread: claimed (the flag set) with the sender and conversation; then read; read messages are read."""
        message = self.db.message(
            self.realm,
            self.hamlet,
            self.db.recipient_of_user(self.othello),
            "hi",
            "<p>hi</p>",
            receivers={self.othello: 0},
        )
        claim = self.run_query(q.claim_push_message, self.user(self.othello), message)
        self.assertEqual(claim.status, "claimed")
        assert claim.message is not None
        self.assertEqual(
            (claim.message.sender_full_name, claim.message.recipients), ("King Hamlet", ((self.othello, "Othello"),))
        )
        self.assertEqual(self.db.flags(self.othello, message), q.ACTIVE_MOBILE_PUSH_NOTIFICATION)
        self.assertEqual(self.run_query(q.claim_push_message, self.user(self.othello), message).status, "read")
        self.assertEqual(self.run_query(q.claim_push_message, self.user(self.othello), message, True).status, "claimed")
        read = self.db.message(
            self.realm,
            self.hamlet,
            self.db.recipient_of_user(self.othello),
            "x",
            "<p>x</p>",
            receivers={self.othello: q.READ},
        )
        self.assertEqual(self.run_query(q.claim_push_message, self.user(self.othello), read).status, "read")

    def test_claim_access(self) -> None:
        """No UserMessage for a DM: no access; a public channel: no UserMessage row; missing: archived or not."""
        dm = self.db.message(
            self.realm, self.hamlet, self.db.recipient_of_user(self.iago), "x", "<p>x</p>", receivers={self.iago: 0}
        )
        self.assertEqual(self.run_query(q.claim_push_message, self.user(self.othello), dm).status, "no_access")
        stream_id, recipient = self.db.stream(self.realm, "Denmark", [self.hamlet])
        public = self.db.message(self.realm, self.hamlet, recipient, "x", "<p>x</p>", topic="castle")
        claim = self.run_query(q.claim_push_message, self.user(self.othello), public)
        self.assertEqual(claim.status, "no_usermessage")
        assert claim.message is not None
        self.assertEqual(
            (claim.message.stream_name, claim.message.topic, claim.message.recipient_type_id),
            ("Denmark", "castle", stream_id),
        )
        _, private = self.db.stream(
            self.realm, "secret", [self.hamlet], invite_only=True, history_public_to_subscribers=False
        )
        hidden = self.db.message(self.realm, self.hamlet, private, "x", "<p>x</p>", topic="t")
        self.assertEqual(self.run_query(q.claim_push_message, self.user(self.othello), hidden).status, "no_access")
        self.assertEqual(self.run_query(q.claim_push_message, self.user(self.othello), 9999).status, "no_access")
        transaction = self.db.insert(
            "zerver_archivetransaction", timestamp="now()", restored=False, protect_from_deletion=False, type=1
        )
        self.db.execute(
            "INSERT INTO zulip.zerver_archivedmessage (id, sender_id, recipient_id, realm_id, subject, content, "
            "date_sent, "
            "sending_client_id, has_attachment, has_image, has_link, is_channel_message, archive_transaction_id) "
            "VALUES (8888, %s, %s, %s, '', 'x', now(), %s, false, false, false, false, %s)",
            (self.hamlet, private, self.realm.id, self.db.client_id, transaction),
        )
        self.assertEqual(self.run_query(q.claim_push_message, self.user(self.othello), 8888).status, "archived")

    def test_group_dm_members(self) -> None:
        """A group DM's conversation is its members, by id."""
        recipient = self.db.huddle([self.hamlet, self.othello, self.iago])
        message = self.db.message(self.realm, self.hamlet, recipient, "x", "<p>x</p>", receivers={self.othello: 0})
        claim = self.run_query(q.claim_push_message, self.user(self.othello), message)
        assert claim.message is not None
        self.assertEqual([uid for uid, _ in claim.message.recipients], sorted([self.hamlet, self.othello, self.iago]))

    def test_mentioned_group(self) -> None:
        """A group's name and its members through subgroups, counted once."""
        ((group,),) = self.db.execute(
            "SELECT usergroup_ptr_id FROM zulip.zerver_namedusergroup WHERE name = 'role:everyone' AND realm_id = %s",
            (self.realm.id,),
        )
        self.db.insert("zerver_groupgroupmembership", supergroup_id=group, subgroup_id=self.realm.members_group)
        self.assertEqual(self.run_query(q.fetch_mentioned_group, group), ("role:everyone", 3))
        self.assertIsNone(self.run_query(q.fetch_mentioned_group, 9999))

    def test_devices(self) -> None:
        """Tokens by kind in creation order, registered E2EE devices only; deletions as the bouncer reports them."""
        self.db.device_token(self.othello, 1, "ABCdef", "org.zulip.Zulip")
        self.db.device_token(self.othello, 2, "fcm-1")
        self.db.insert(
            "zerver_pushdevice",
            user_id=self.othello,
            token_kind="fcm",
            push_account_id=7,
            push_key=KEY,
            bouncer_device_id=70,
        )
        self.db.insert("zerver_pushdevice", user_id=self.othello, token_kind="apns", push_account_id=8, push_key=KEY)
        devices = self.run_query(q.fetch_devices, self.othello)
        self.assertEqual((devices.apple, devices.android), ((("ABCdef", "org.zulip.Zulip"),), ("fcm-1",)))
        self.assertEqual(devices.e2ee, (("fcm", 7, KEY, 70),))
        self.assertEqual(self.run_query(q.delete_device_tokens, ["fcm-1"], ["abcdef"]), 2)
        self.assertEqual(self.run_query(q.delete_push_devices, self.othello, [70]), 1)
        self.assertEqual(self.run_query(q.fetch_devices, self.othello), q.Devices())

    def test_flags_and_registrations(self) -> None:
        """Clearing the push flag touches only that bit; registration results are stored on the device."""
        message = self.db.message(
            self.realm,
            self.hamlet,
            self.db.recipient_of_user(self.othello),
            "x",
            "<p>x</p>",
            receivers={self.othello: 8 | q.ACTIVE_MOBILE_PUSH_NOTIFICATION},
        )
        self.assertEqual(self.run_query(q.clear_active_push_flags, self.othello, [message, 9999]), 1)
        self.assertEqual(self.db.flags(self.othello, message), 8)
        self.db.insert("zerver_pushdevice", user_id=self.othello, token_kind="fcm", push_account_id=7, push_key=KEY)
        self.assertEqual(self.run_query(q.set_push_device_registered, self.othello, 7, 70), 1)
        self.assertEqual(self.run_query(q.set_push_device_error, self.othello, 7, "REQUEST_EXPIRED"), 1)
        self.assertEqual(
            self.db.execute("SELECT bouncer_device_id, error_code FROM zulip.zerver_pushdevice"),
            [(70, "REQUEST_EXPIRED")],
        )
