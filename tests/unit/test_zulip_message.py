"""Tests for zqtwisted.zulip.message: Zulip's finalize_payload for outgoing webhooks."""

from __future__ import annotations

from typing import Any

from twisted.trial.unittest import TestCase

from tests.zulip_fakes import SETTINGS
from zqtwisted.zulip.message import PRIVATE_FIELDS, finalize_payload


def wide(**changes: Any) -> dict[str, Any]:
    """A wide message dict as MessageDict.wide_dict builds it (a channel message)."""
    obj: dict[str, Any] = {
        "id": 501, "sender_id": 10, "content": "@**Bot** ping", "recipient_type_id": 7, "recipient_type": 2,
        "recipient_id": 107, "timestamp": 1763632800, "client": "website", "subject": "castle",
        "sender_realm_id": 2, "topic_links": [], "rendered_content": "<p>ping</p>", "is_me_message": False,
        "reactions": [], "submessages": [], "sender_recipient_id": 110, "sender_full_name": "King Hamlet",
        "sender_email": "user10@zulip.example.com", "sender_delivery_email": "hamlet@private.example.org",
        "sender_realm_str": "zulip", "sender_avatar_source": "G", "sender_avatar_version": 1,
        "sender_is_mirror_dummy": False, "sender_email_address_visibility": 3, "display_recipient": "Denmark",
        "type": "stream", "stream_id": 7,
    }  # fmt: skip
    obj.update(changes)
    return obj


class FinalizeTests(TestCase):
    def test_private_fields_removed_and_fields_added(self) -> None:
        """The real address and internal fields go; avatar_url and content_type come; rendered content stays."""
        original = wide()
        sent = finalize_payload(
            original,
            can_access_sender=True,
            realm_host="zulip.zulip.example.com",
            is_incoming_1_to_1=False,
            settings=SETTINGS,
        )
        for name in (*PRIVATE_FIELDS, "sender_recipient_id"):
            self.assertNotIn(name, sent)
        self.assertNotIn("hamlet@private.example.org", repr(sent))
        self.assertEqual(sent["content_type"], "text/x-markdown")
        self.assertTrue(sent["avatar_url"].startswith("https://secure.gravatar.com/avatar/"))
        self.assertEqual(sent["rendered_content"], "<p>ping</p>")
        self.assertEqual(original["sender_delivery_email"], "hamlet@private.example.org")

    def test_incoming_direct_message_gets_the_senders_recipient(self) -> None:
        """For a 1:1 DM to the bot, recipient_id is the sender's own recipient."""
        sent = finalize_payload(
            wide(recipient_id=130),
            can_access_sender=True,
            realm_host="h.example.com",
            is_incoming_1_to_1=True,
            settings=SETTINGS,
        )
        self.assertEqual(sent["recipient_id"], 110)

    def test_inaccessible_sender(self) -> None:
        """A sender the bot cannot see is "Unknown user" with a fake address and the unknown-user avatar."""
        sent = finalize_payload(
            wide(),
            can_access_sender=False,
            realm_host="zulip.zulip.example.com",
            is_incoming_1_to_1=False,
            settings=SETTINGS,
        )
        self.assertEqual(sent["sender_full_name"], "Unknown user")
        self.assertEqual(sent["sender_email"], "user10@zulip.zulip.example.com")
        self.assertEqual(sent["avatar_url"], SETTINGS.inaccessible_avatar_url)

    def test_edit_history_cleaned(self) -> None:
        """prev_rendered_content_version is removed from each edit history entry."""
        history = [{"prev_content": "a", "prev_rendered_content_version": 1, "timestamp": 1}]
        sent = finalize_payload(
            wide(edit_history=history),
            can_access_sender=True,
            realm_host="h.example.com",
            is_incoming_1_to_1=False,
            settings=SETTINGS,
        )
        self.assertEqual(sent["edit_history"], [{"prev_content": "a", "timestamp": 1}])
        self.assertIn("prev_rendered_content_version", history[0])
