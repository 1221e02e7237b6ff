"""Tests for zqtwisted.zulip.email_service: Zulip's build_email over a fake database."""

from __future__ import annotations

import dataclasses
from email.message import EmailMessage
from pathlib import Path
from typing import Any

from twisted.trial.unittest import TestCase

from tests.zulip_fakes import SETTINGS, FakeDatabase
from zqtwisted.errors import PermanentError
from zqtwisted.mail.render import envelope_of
from zqtwisted.zulip.email_queries import EmailRealm, EmailUser
from zqtwisted.zulip.email_service import ZulipEmailBuilder, format_changes
from zqtwisted.zulip.email_templates import ZulipTemplates
from zqtwisted.zulip.pool import DatabaseUnavailable

TEMPLATES = Path(__file__).resolve().parents[1] / "fixtures" / "zulip_templates"
ZULIP = EmailRealm(2, "Zulip Dev", "zulip")
OTHER = EmailRealm(3, "Other", "other")
HAMLET = EmailUser(10, "King Hamlet", "hamlet@private.example.org", True, "en", ZULIP)
OTHELLO = EmailUser(11, "Othello", "othello@example.org", False, "de", ZULIP)
IAGO = EmailUser(12, "Iago", "iago@example.org", True, "en", OTHER)
SETTINGS_EMAIL = dataclasses.replace(
    SETTINGS, zulip_administrator="support@zulip.example.com", physical_address="1 Main St"
)
CONTEXT = {"device_browser": "Firefox", "device_os": "Linux", "realm_url": "https://zulip.zulip.example.com"}


def users(*found: EmailUser) -> Any:
    return lambda ids: {u.id: u for u in found if u.id in ids}


class BuildTests(TestCase):
    def builder(self, **answers: Any) -> tuple[ZulipEmailBuilder, FakeDatabase]:
        base: dict[str, Any] = {"fetch_email_users": users(HAMLET, OTHELLO, IAGO), "fetch_email_realm": ZULIP}
        db = FakeDatabase({**base, **answers})
        templates = ZulipTemplates(str(TEMPLATES))
        return ZulipEmailBuilder(db, SETTINGS_EMAIL, templates, make_message_id=lambda d: f"<1@{d}>",
                                 make_key=lambda: "tok"), db  # fmt: skip

    def build(self, builder: ZulipEmailBuilder, **event: Any) -> EmailMessage:
        return self.successResultOf(builder.build({"template_prefix": "zerver/emails/notify_new_login",
                                                   "context": CONTEXT, **event}, 1700000000))  # fmt: skip

    def test_to_user_ids(self) -> None:
        """Users' delivery addresses with their names, the realm's List-Id, noreply Reply-To and envelope."""
        builder, db = self.builder()
        message = self.build(builder, to_user_ids=[10, 11], realm_id=2)
        self.assertEqual(message["To"], "King Hamlet <hamlet@private.example.org>, Othello <othello@example.org>")
        self.assertEqual(message["From"], "Zulip <noreply@zulip.example.com>")
        self.assertEqual(message["Reply-To"], "noreply@zulip.example.com")
        self.assertEqual(message["List-Id"], "Zulip Dev <zulip.zulip.example.com>")
        self.assertEqual(message["Message-ID"], "<1@zulip.example.com>")
        self.assertEqual(message["Date"], "Tue, 14 Nov 2023 22:13:20 +0000")
        self.assertEqual(envelope_of(message, builder.envelope_from).sender, "noreply@zulip.example.com")
        self.assertEqual(db.names(), ["fetch_email_realm", "fetch_email_users"])
        text = message.get_body(("plain",)).get_content()  # type: ignore[union-attr]
        self.assertIn("Contact us at support@zulip.example.com.", text)
        self.assertIn("1 Main St", text)

    def test_realm_from_users_and_legacy_fields(self) -> None:
        """Without realm_id the users' realm gives List-Id; to_user_id and to_email are the legacy forms."""
        builder, db = self.builder()
        message = self.build(builder, to_user_id=10)
        self.assertEqual(message["List-Id"], "Zulip Dev <zulip.zulip.example.com>")
        self.assertEqual(db.names(), ["fetch_email_users"])
        message = self.build(builder, to_email="Iago <iago@example.net>", from_address="SUPPORT", from_name="Admins")
        self.assertEqual((message["To"], message["List-Id"]), ("Iago <iago@example.net>", None))
        self.assertEqual((message["From"], message["Reply-To"]), ("Admins <support@zulip.example.com>", None))
        self.assertEqual(format_changes({"to_email": None, "to_user_id": None}), {})

    def test_headers(self) -> None:
        """reply_to_email, date, threading, List-Unsubscribe (without -Post for remote servers), extra headers."""
        builder, _ = self.builder()
        context = {**CONTEXT, "unsubscribe_link": "https://z/u/1", "remote_server_email": True}
        message = self.build(builder, to_emails=["a@example.org"], reply_to_email="Help <help@example.org>",
                             date="Mon, 20 Nov 2023 10:00:00 +0000", in_reply_to="<x@y>", references="<x@y>",
                             context=context, headers={"X-Campaign": "c1"})  # fmt: skip
        self.assertEqual(message["Reply-To"], "Help <help@example.org>")
        self.assertEqual(message["Date"], "Mon, 20 Nov 2023 10:00:00 +0000")
        self.assertEqual((message["In-Reply-To"], message["References"]), ("<x@y>", "<x@y>"))
        self.assertEqual((message["List-Unsubscribe"], message["List-Unsubscribe-Post"]), ("<https://z/u/1>", None))
        self.assertEqual(message["X-Campaign"], "c1")
        message = self.build(builder, to_emails=["a@example.org"], from_address="TOKENIZED_NO_REPLY",
                             context={**CONTEXT, "unsubscribe_link": "https://z/u/2"})  # fmt: skip
        self.assertEqual(message["From"], "Zulip <noreply-tok@zulip.example.com>")
        self.assertEqual(message["List-Unsubscribe-Post"], "List-Unsubscribe=One-Click")

    def test_pre_rendered(self) -> None:
        """An event with subject and body (not Zulip's) is sent as given."""
        builder, _ = self.builder()
        message = self.successResultOf(builder.build({"to_emails": ["a@example.org"], "subject": "Hi",
                                                      "body": "text"}, 0))  # fmt: skip
        self.assertEqual((message["Subject"], message.get_content()), ("Hi", "text\n"))

    def test_permanent_failures(self) -> None:
        """Both or neither recipient field, unknown users or realm, several realms, bad address: PermanentError."""
        builder, _ = self.builder(fetch_email_realm=None)
        cases: list[tuple[dict[str, Any], str]] = [
            ({"to_user_ids": [10], "to_emails": ["a@example.org"]}, "exactly one of to_user_ids and to_emails"),
            ({}, "exactly one of to_user_ids and to_emails"),
            ({"to_user_ids": [10, 99, 98]}, "no user with id 99, 98"),
            ({"to_user_ids": [10], "realm_id": 7}, "realm 7 does not exist"),
            ({"to_user_ids": [10, 12]}, "in 2 realms"),
            ({"to_user_ids": []}, "no recipient"),
            ({"to_emails": ["a@example.org"], "context": {"unsubscribe_link": "a\nb"}}, "line break"),
        ]
        for event, error in cases:
            failure = self.failureResultOf(builder.build({"template_prefix": "zerver/emails/deactivate", **event}, 0))
            self.assertIsInstance(failure.value, PermanentError)
            self.assertIn(error, str(failure.value))

    def test_private_address_stays_out_of_errors(self) -> None:
        """A user whose delivery_email is invalid fails without the address in the error."""
        broken = dataclasses.replace(HAMLET, delivery_email="not an address")
        builder, _ = self.builder(fetch_email_users=users(broken))
        failure = self.failureResultOf(builder.build({"template_prefix": "zerver/emails/deactivate",
                                                      "to_user_ids": [10]}, 0))  # fmt: skip
        self.assertEqual(str(failure.value), "user 10 has an invalid delivery_email")
        self.assertEqual(repr(HAMLET), "EmailUser(id=10, realm_id=2)")

    def test_database_unavailable(self) -> None:
        """The database not answering is reported as DatabaseUnavailable (retried, never dead-lettered)."""
        builder, _ = self.builder(fetch_email_users=DatabaseUnavailable("down"))
        failure = self.failureResultOf(builder.build({"template_prefix": "x", "to_user_ids": [10]}, 0))
        self.assertIsInstance(failure.value, DatabaseUnavailable)
