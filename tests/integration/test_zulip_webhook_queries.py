"""zqtwisted.zulip.webhook_queries on a database loaded from the schema fixture."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.trial import unittest

from tests.integration.test_missedmessage_postgres import require_postgres
from tests.zulip_db import ZulipTestDatabase
from zqtwisted.zulip.webhook_queries import can_access_user, fetch_bot, fetch_bot_services


class WebhookQueryTests(unittest.TestCase):
    def setUp(self) -> None:
        require_postgres(self)
        self.db = ZulipTestDatabase()
        self.addCleanup(self.db.drop)
        self.realm = self.db.realm()

    def run_query(self, query: Callable[..., Any], *args: Any) -> Any:
        with self.db.connection.cursor() as cursor:
            cursor.execute("SET search_path TO zulip")
            result = query(cursor, *args)
        self.db.connection.commit()
        return result

    def test_fetch_bot_and_services(self) -> None:
        """The bot with its realm's subdomain and owner; its services in creation order; unknown: None."""
        owner = self.db.user(self.realm, "owner@zulip.example.com", "Owner")
        bot = self.db.user(
            self.realm, "bot@zulip.example.com", "Bot", is_bot=True, bot_type=3, bot_owner_id=owner, api_key="k" * 32
        )
        self.db.service(bot, "first", "https://a.example.com/", "t1", 1)
        self.db.service(bot, "second", "https://b.example.com/", "t2", 2)
        row = self.run_query(fetch_bot, bot)
        self.assertEqual(
            (row.email, row.full_name, row.api_key, row.bot_type, row.bot_owner_id, row.realm_string_id),
            ("bot@zulip.example.com", "Bot", "k" * 32, 3, owner, "zulip"),
        )
        self.assertEqual(row.recipient_id, self.db.recipient_of_user(bot))
        self.assertNotIn("k" * 32, repr(row))
        services = self.run_query(fetch_bot_services, bot)
        self.assertEqual(
            [(s.name, s.base_url, s.token, s.interface) for s in services],
            [("first", "https://a.example.com/", "t1", 1), ("second", "https://b.example.com/", "t2", 2)],
        )
        self.assertNotIn("t1", repr(services))
        self.assertIsNone(self.run_query(fetch_bot, 9999))

    def test_can_access_user(self) -> None:
        """Members see everyone; a guest outside can_access_all_users_group sees whom it shares a channel or DM with."""
        member = self.db.user(self.realm, "m@zulip.example.com", "Member")
        stranger = self.db.user(self.realm, "s@zulip.example.com", "Stranger")
        friend = self.db.user(self.realm, "f@zulip.example.com", "Friend")
        pen_pal = self.db.user(self.realm, "p@zulip.example.com", "Pen pal")
        guest = self.db.user(self.realm, "g@zulip.example.com", "Guest", role=600)
        self.db.execute("UPDATE zulip.zerver_realm SET can_access_all_users_group_id = %s", (self.realm.members_group,))
        self.db.stream(self.realm, "shared", [guest, friend])
        self.db.message(self.realm, pen_pal, self.db.recipient_of_user(guest), "hi", "<p>hi</p>")
        self.assertTrue(self.run_query(can_access_user, member, stranger))
        self.assertTrue(self.run_query(can_access_user, guest, guest))
        self.assertTrue(self.run_query(can_access_user, guest, friend))
        self.assertTrue(self.run_query(can_access_user, guest, pen_pal))
        self.assertFalse(self.run_query(can_access_user, guest, stranger))
        self.db.execute(
            "UPDATE zulip.zerver_realm SET can_access_all_users_group_id = %s", (self.realm.everyone_group,)
        )
        self.assertTrue(self.run_query(can_access_user, guest, stranger))
        self.assertFalse(self.run_query(can_access_user, 9999, stranger))
