"""Tests for zqtwisted.zulip.push_events: Zulip's push events, checked."""

from __future__ import annotations

from twisted.trial.unittest import TestCase

from tests.zulip_events import push_add_event, push_remove_event, register_push_device_event
from zqtwisted.errors import MalformedEventError
from zqtwisted.zulip.push_events import AddPush, RegisterPush, RemovePush, parse_zulip_push_event, user_of


class ParseTests(TestCase):
    def test_add_as_maybe_enqueue_notifications_builds_it(self) -> None:
        """The add event Zulip publishes parses; a missing type means add."""
        self.assertEqual(
            parse_zulip_push_event(push_add_event(12, 501, "mentioned", 5)), AddPush(12, 501, "mentioned", 5)
        )
        self.assertEqual(
            parse_zulip_push_event({"user_profile_id": 12, "message_id": 1, "trigger": "direct_message"}),
            AddPush(12, 1, "direct_message", None),
        )

    def test_remove_and_legacy_remove(self) -> None:
        """remove carries message_ids (a pre-upgrade event a single message_id)."""
        self.assertEqual(parse_zulip_push_event(push_remove_event(12, [1, 2])), RemovePush(12, (1, 2)))
        self.assertEqual(
            parse_zulip_push_event({"type": "remove", "user_profile_id": 12, "message_id": 3}), RemovePush(12, (3,))
        )

    def test_register(self) -> None:
        """register_push_device_to_bouncer carries its payload; user_of finds the user inside."""
        event = register_push_device_event(12, 99, "key", "blob")
        self.assertEqual(parse_zulip_push_event(event), RegisterPush(12, 99, "key", "blob"))
        self.assertEqual(user_of(event), 12)
        self.assertEqual(user_of(push_remove_event(7, [1])), 7)

    def test_malformed(self) -> None:
        """Each bad field is named."""
        cases = [
            ([], "JSON object"),
            ({"type": "other"}, "type"),
            ({"user_profile_id": "x", "message_id": 1, "trigger": "t"}, "user_profile_id"),
            ({"user_profile_id": 1, "message_id": 1, "trigger": ""}, "trigger"),
            ({"user_profile_id": 1, "message_id": 1, "trigger": "t", "mentioned_user_group_id": "g"}, "mentioned"),
            ({"type": "remove", "user_profile_id": 1, "message_ids": []}, "message_ids"),
            ({"type": "register_push_device_to_bouncer", "payload": 3}, "payload"),
            ({"type": "register_push_device_to_bouncer", "payload": {"user_profile_id": 1}}, "bouncer_public_key"),
        ]
        for event, field in cases:
            with self.assertRaisesRegex(MalformedEventError, field):
                parse_zulip_push_event(event)  # type: ignore[arg-type]
