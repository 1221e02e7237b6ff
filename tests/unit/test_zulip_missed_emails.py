"""Tests for zqtwisted.zulip.missed_emails: Zulip's handle_missedmessage_emails over a fake database."""

from __future__ import annotations

import dataclasses
from typing import Any

from twisted.internet.task import Clock
from twisted.trial.unittest import TestCase

from tests.zulip_fakes import SETTINGS, FakeDatabase
from zqtwisted.errors import PermanentError
from zqtwisted.testing import RecordingPublisher
from zqtwisted.zulip.missed_emails import (
    Missed,
    ZulipMissedMessages,
    direct_message_group_display_name,
    include_realm_name,
    mentioned_group,
)
from zqtwisted.zulip.missed_queries import MissedData, MissedMessage, MissedUser

USER = MissedUser(
    id=10, full_name="King Hamlet", delivery_email="hamlet@private.example.org", is_bot=False, long_term_idle=False,
    role=400, enable_offline_email_notifications=True, message_content_in_email_notifications=True,
    realm_name_in_email_notifications_policy=1, default_language="en", emojiset="google", realm_id=2,
    realm_string_id="zulip", realm_name="Zulip Dev", realm_message_content_allowed=True, accounts_with_address=1,
)  # fmt: skip
REALM_URL = "https://zulip.zulip.example.com"


def msg(
    mid: int, sender: int = 11, name: str = "Othello", rtype: int = 1, recipient: int = 110, **kw: Any
) -> MissedMessage:
    values: dict[str, Any] = dict(
        id=mid, sender_id=sender, sender_full_name=name, realm_id=2, recipient_id=recipient, recipient_type=rtype,
        recipient_type_id=10 if rtype == 1 else 7, topic="" if rtype != 2 else "castle", content=f"m{mid}",
        rendered_content=f"<p>m{mid}</p>", date_sent=1000.0 + mid, stream_name="Denmark" if rtype == 2 else None,
    )  # fmt: skip
    values.update(kw)
    return MissedMessage(**values)


def note(mid: int, trigger: str = "direct_message", group: int | None = None) -> dict[str, Any]:
    return {"user_profile_id": 10, "message_id": mid, "trigger": trigger, "mentioned_user_group_id": group}


class Case(TestCase):
    def service(
        self, data: MissedData, context: Any = None, **settings: Any
    ) -> tuple[ZulipMissedMessages, FakeDatabase, RecordingPublisher]:
        db = FakeDatabase({"fetch_missed": data, "fetch_context": context or {}, "record_missed_emails": None})
        publisher = RecordingPublisher()
        clock = Clock()
        clock.advance(1234)
        keys = iter(f"key{i}" for i in range(100))
        service = ZulipMissedMessages(db, dataclasses.replace(SETTINGS, **settings), publisher, clock=clock,
                                      make_key=lambda: next(keys), make_token=lambda: "mmtoken")  # fmt: skip
        return service, db, publisher

    def build(self, service: ZulipMissedMessages, *notes: dict[str, Any]) -> list[dict[str, Any]]:
        return self.successResultOf(service.build(10, list(notes)))


class BuildTests(Case):
    def test_direct_messages(self) -> None:
        """One email per 1:1 conversation, least recently active first, with Zulip's event and context."""
        data = MissedData(USER, [msg(501), msg(502, sender=12, name="Iago", recipient=110), msg(503)])
        service, db, _ = self.service(data)
        emails = self.build(service, note(501), note(502), note(503))
        self.assertEqual(len(emails), 2)
        iago, othello = emails
        self.assertEqual(iago["template_prefix"], "zerver/emails/missed_message")
        self.assertEqual(iago["to_user_ids"], [10])
        self.assertEqual(iago["from_name"], "zulip.example.com notifications")
        self.assertEqual((iago["from_address"], iago["reply_to_email"]), ("noreply@zulip.example.com",) * 2)
        context = othello["context"]
        self.assertEqual(context["message_count"], 2)
        self.assertEqual((context["private_message"], context["sender_str"]), (True, "Othello"))
        self.assertEqual(context["narrow_url"], f"{REALM_URL}/#narrow/dm/11-Othello")
        self.assertEqual(context["unsubscribe_link"], f"{REALM_URL}/accounts/unsubscribe/missed_messages/key1")
        self.assertEqual((context["realm_url"], context["user_name"], context["name"]), (REALM_URL, "King Hamlet",
                                                                                          "King Hamlet"))  # fmt: skip
        block = context["messages"]
        self.assertEqual(block["header"]["plain"], "You and Othello")
        self.assertEqual([c["plain"] for c in block["senders"][0]["content"]], ["> m501", "> m503"])
        self.assertFalse(context["mention"])
        name, (user, now, sent) = db.calls[-1]
        self.assertEqual((name, user, now), ("record_missed_emails", USER, 1234.0))
        self.assertEqual([(s.confirmation_key, s.message_id, s.email_token) for s in sent],
                         [("key0", 502, None), ("key1", 501, None)])  # fmt: skip

    def test_group_dm(self) -> None:
        """A group DM: its members' names in the subject context and narrow; senders shown per message."""
        members = ((10, "King Hamlet"), (11, "Othello"), (12, "Iago"))
        data = MissedData(USER, [msg(501, rtype=3, recipient=300), msg(502, sender=12, name="Iago", rtype=3,
                                                                        recipient=300)], {300: members})  # fmt: skip
        service, _, _ = self.service(data)
        (email,) = self.build(service, note(501), note(502))
        context = email["context"]
        self.assertEqual(
            (context["group_pm"], context["direct_message_group_display_name"]), (True, "Othello and Iago")
        )
        self.assertEqual(context["narrow_url"], f"{REALM_URL}/#narrow/dm/11,12-group")
        self.assertEqual(context["messages"]["header"]["plain"], "You and Othello, Iago")
        self.assertEqual([s["sender"] for s in context["messages"]["senders"]], ["Othello", "Iago"])
        self.assertEqual(direct_message_group_display_name(["A", "B", "C"]), "A, B, and C")
        self.assertEqual(direct_message_group_display_name(["A", "B", "C", "D"]), "A, B, and 2 others")

    def test_channel_mention_with_context(self) -> None:
        """A mention in a channel: the topic's earlier messages added, senders who mentioned, resolved topics."""
        mention = msg(510, rtype=2, recipient=107, topic="\u2714 castle", has_mentions=True)
        earlier = msg(505, sender=12, name="Iago", rtype=2, recipient=107, topic="\u2714 castle")
        data = MissedData(USER, [mention], groups={})
        service, db, _ = self.service(data, context={510: [earlier]})
        (email,) = self.build(service, note(510, "mentioned"))
        context = email["context"]
        self.assertEqual(db.calls[1][0], "fetch_context")
        self.assertEqual((context["channel_name"], context["topic_name"], context["topic_resolved"]),
                         ("Denmark", "castle", True))  # fmt: skip
        self.assertEqual(context["sender_str"], "Othello")
        self.assertEqual(context["message_count"], 1)
        self.assertTrue(context["mention"] and context["personal_mentioned"])
        self.assertEqual([s["sender"] for s in context["messages"]["senders"]], ["Iago", "Othello"])
        self.assertIn("<a href='https://zulip.zulip.example.com/#narrow/channel/7-Denmark'>Denmark</a>",
                      context["messages"]["header"]["html"])  # fmt: skip

    def test_stream_email_and_group_mentions(self) -> None:
        """Channel notifications and group mentions: the smallest mentioned group's name; no personal mention."""
        data = MissedData(USER, [msg(510, rtype=2, recipient=107), msg(511, rtype=2, recipient=107, topic="CASTLE")],
                          groups={5: ("leadership", 3), 6: ("everyone", 40)})  # fmt: skip
        service, db, _ = self.service(data)
        (email,) = self.build(service, note(510, "mentioned", 6), note(511, "mentioned", 5))
        context = email["context"]
        self.assertEqual((context["mentioned_user_group_name"], context["personal_mentioned"]), ("leadership", False))
        self.assertNotIn("fetch_context", db.names())
        data = MissedData(USER, [msg(510, rtype=2, recipient=107)])
        service, _, _ = self.service(data)
        (email,) = self.build(service, note(510, "stream_email_notify"))
        self.assertTrue(email["context"]["stream_email_notify"])
        self.assertEqual(mentioned_group([Missed(msg(1), "mentioned", None)], {5: ("x", 1)}), None)

    def test_content_disabled_and_gateway(self) -> None:
        """Content hidden by the realm or the user; an email gateway gives a per-email reply address."""
        user = dataclasses.replace(USER, realm_message_content_allowed=False)
        service, db, _ = self.service(MissedData(user, [msg(501)]), email_gateway_pattern="%s@in.zulip.example.com")
        (email,) = self.build(service, note(501))
        context = email["context"]
        self.assertEqual((context["show_message_content"], context["messages"], context["reply_to_zulip"]),
                         (False, [], False))  # fmt: skip
        self.assertTrue(context["message_content_disabled_by_realm"])
        self.assertEqual(email["reply_to_email"], "Zulip <mmtoken@in.zulip.example.com>")
        self.assertEqual(db.calls[-1][1][2][0].email_token, "mmtoken")

    def test_skipped(self) -> None:
        """Bots, users with offline emails off and batches with nothing unread send nothing; missing users fail."""
        for data in (MissedData(dataclasses.replace(USER, is_bot=True), [msg(501)]),
                     MissedData(dataclasses.replace(USER, enable_offline_email_notifications=False), [msg(501)]),
                     MissedData(USER, [])):  # fmt: skip
            service, db, _ = self.service(data)
            self.assertEqual(self.build(service, note(501)), [])
            self.assertEqual(db.names(), ["fetch_missed"])
        service, _, _ = self.service(MissedData(None))
        self.assertIsInstance(self.failureResultOf(service.build(10, [note(501)])).value, PermanentError)
        service, _, _ = self.service(MissedData(USER, [msg(510, rtype=2, recipient=107)]))
        failure = self.failureResultOf(service.build(10, [note(510, "stream_push_notify")]))
        self.assertIn("Invalid messages!", str(failure.value))

    def test_soft_reactivation(self) -> None:
        """A long-term idle user with a DM or a personal / small-group mention is queued for soft reactivation."""
        idle = dataclasses.replace(USER, long_term_idle=True)
        cases = [
            (note(501), [msg(501)], {}, True),
            (note(510, "mentioned"), [msg(510, rtype=2, recipient=107)], {}, True),
            (note(510, "mentioned", 5), [msg(510, rtype=2, recipient=107)], {5: ("big", 40)}, False),
            (note(510, "stream_wildcard_mentioned"), [msg(510, rtype=2, recipient=107)], {}, False),
        ]
        for event, messages, groups, expected in cases:
            service, _, publisher = self.service(MissedData(idle, messages, groups=groups))
            self.build(service, event)
            sent = [e for q, e in publisher.published if q == "deferred_work"]
            self.assertEqual(sent, [{"type": "soft_reactivate", "user_profile_id": 10}] if expected else [])

    def test_realm_name_in_subject(self) -> None:
        """Automatic: only when the address has accounts in several realms; always; never."""
        self.assertFalse(include_realm_name(USER))
        self.assertTrue(include_realm_name(dataclasses.replace(USER, accounts_with_address=2)))
        self.assertTrue(include_realm_name(dataclasses.replace(USER, realm_name_in_email_notifications_policy=2)))
        self.assertFalse(include_realm_name(dataclasses.replace(USER, realm_name_in_email_notifications_policy=3)))
