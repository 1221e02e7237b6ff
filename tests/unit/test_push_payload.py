"""Tests for zqtwisted.push.payload: event validation and Zulip's APNs / FCM payloads, field by field."""

from __future__ import annotations

import copy
import hashlib
from typing import Any

from twisted.trial.unittest import TestCase

from zqtwisted.errors import MalformedEventError
from zqtwisted.push.payload import (
    AddEvent,
    RemoveEvent,
    build_notification,
    gravatar_url,
    parse_event,
    truncate_content,
)
from zqtwisted.push.settings import PushSettings

REALM = "https://chat.example.com"
OTHELLO_AVATAR = (
    "https://secure.gravatar.com/avatar/" + hashlib.md5(b"othello@example.com").hexdigest() + "?d=identicon&version=1"
)


def dm_event(**changes: Any) -> dict[str, Any]:
    """The issue's ``add`` event: a 1:1 direct message."""
    event: dict[str, Any] = {
        "type": "add",
        "user_profile_id": 10,
        "message_id": 501,
        "trigger": "direct_message",
        "mentioned_user_group_id": None,
        "user_uuid": "4a1c0c9e-7f1d-4c33-9a55-0b6f3c1d2e10",
        "realm_uri": REALM,
        "realm_name": "Example",
        "message": {
            "id": 501,
            "type": "private",
            "sender_full_name": "Othello",
            "sender_email": "othello@example.com",
            "sender_id": 12,
            "content": "plain text",
            "stream_name": None,
            "topic": None,
            "timestamp": 1700000000,
        },
    }
    event.update(changes)
    return event


def stream_event(**message_changes: Any) -> dict[str, Any]:
    """A mention of a user group in a channel message."""
    event = dm_event(trigger="mentioned", mentioned_user_group_id=33, mentioned_user_group_name="backend")
    event["message"].update(
        {
            "type": "stream",
            "sender_full_name": "Iago",
            "sender_email": "iago@example.com",
            "sender_id": 13,
            "stream_name": "devel",
            "stream_id": 4,
            "topic": "builds",
            "sender_avatar_url": "https://chat.example.com/user_avatars/2/iago.png",
            **message_changes,
        }
    )
    return event


def group_dm_event() -> dict[str, Any]:
    event = dm_event()
    event["message"]["display_recipient"] = [
        {"id": 12, "full_name": "Othello"},
        {"id": 10, "full_name": "Hamlet"},
        {"id": 15, "full_name": "Cordelia"},
    ]
    return event


def remove_event(**changes: Any) -> dict[str, Any]:
    event: dict[str, Any] = {
        "type": "remove",
        "user_profile_id": 10,
        "user_uuid": "4a1c0c9e-7f1d-4c33-9a55-0b6f3c1d2e10",
        "realm_uri": REALM,
        "realm_name": "Example",
        "message_ids": [502, 501],
    }
    event.update(changes)
    return event


BASE = {
    "server": "chat.example.com",
    "realm_uri": REALM,
    "realm_url": REALM,
    "realm_name": "Example",
    "user_id": 10,
}


def notification_of(event: dict[str, Any], settings: PushSettings | None = None, redact: bool = False) -> Any:
    return build_notification(parse_event(event, settings), redact)


class AddPayloadTests(TestCase):
    def test_direct_message_apns(self) -> None:
        """A 1:1 DM: the sender as title, no subtitle, the content as body, Zulip's custom data."""
        apns = notification_of(dm_event()).apns_payload
        self.assertEqual(
            apns,
            {
                "alert": {"title": "Othello", "subtitle": "", "body": "plain text"},
                "sound": "default",
                "badge": 0,
                "custom": {
                    "zulip": {
                        **BASE,
                        "sender_id": 12,
                        "sender_email": "othello@example.com",
                        "time": 1700000000,
                        "recipient_type": "private",
                        "message_ids": [501],
                    }
                },
            },
        )

    def test_direct_message_gcm(self) -> None:
        """A 1:1 DM for FCM: event=message, zulip_message_id, content, truncation flag, sender, priority high."""
        n = notification_of(dm_event())
        self.assertEqual(
            n.gcm_payload,
            {
                **BASE,
                "sender_id": 12,
                "sender_email": "othello@example.com",
                "time": 1700000000,
                "recipient_type": "private",
                "event": "message",
                "zulip_message_id": 501,
                "content": "plain text",
                "content_truncated": False,
                "sender_full_name": "Othello",
                "sender_avatar_url": OTHELLO_AVATAR,
            },
        )
        self.assertEqual(n.gcm_options, {"priority": "high"})

    def test_stream_group_mention(self) -> None:
        """A channel message: '#stream > topic' title, group mention subtitle, stream fields, group fields."""
        n = notification_of(stream_event())
        self.assertEqual(
            n.apns_payload["alert"],
            {"title": "#devel > builds", "subtitle": "Iago mentioned @backend:", "body": "plain text"},
        )
        expected_common = {
            **BASE,
            "sender_id": 13,
            "sender_email": "iago@example.com",
            "time": 1700000000,
            "mentioned_user_group_id": 33,
            "mentioned_user_group_name": "backend",
            "recipient_type": "stream",
            "stream": "devel",
            "stream_id": 4,
            "topic": "builds",
        }
        self.assertEqual(n.apns_payload["custom"]["zulip"], {**expected_common, "message_ids": [501]})
        self.assertEqual(
            n.gcm_payload,
            {
                **expected_common,
                "event": "message",
                "zulip_message_id": 501,
                "content": "plain text",
                "content_truncated": False,
                "sender_full_name": "Iago",
                "sender_avatar_url": "https://chat.example.com/user_avatars/2/iago.png",
            },
        )

    def test_subtitles_by_trigger(self) -> None:
        """Subtitles follow Zulip: 'mentioned you:', 'mentioned everyone:', 'Name:' for plain channel messages."""
        cases = {
            "mentioned": "Iago mentioned you:",
            "stream_wildcard_mentioned": "Iago mentioned everyone:",
            "topic_wildcard_mentioned": "Iago mentioned everyone:",
            "stream_wildcard_mentioned_in_followed_topic": "Iago mentioned everyone:",
            "topic_wildcard_mentioned_in_followed_topic": "Iago mentioned everyone:",
            "wildcard_mentioned": "Iago mentioned everyone:",  # legacy name
            "stream_push_notify": "Iago:",
            "followed_topic_push_notify": "Iago:",
        }
        for trigger, subtitle in cases.items():
            event = stream_event()
            event.update(trigger=trigger, mentioned_user_group_id=None)
            del event["mentioned_user_group_name"]
            self.assertEqual(notification_of(event).apns_payload["alert"]["subtitle"], subtitle, trigger)

    def test_dm_mention_subtitle(self) -> None:
        """A mention in a DM still says 'mentioned you:'; the legacy trigger private_message is direct_message."""
        self.assertEqual(
            notification_of(dm_event(trigger="mentioned")).apns_payload["alert"]["subtitle"], "Othello mentioned you:"
        )
        parsed = parse_event(dm_event(trigger="private_message"))
        assert isinstance(parsed, AddEvent)
        self.assertEqual(parsed.trigger, "direct_message")

    def test_group_dm(self) -> None:
        """A group DM: sorted names as title, 'Sender:' subtitle, pm_users of sorted ids."""
        n = notification_of(group_dm_event())
        self.assertEqual(n.apns_payload["alert"]["title"], "Cordelia, Hamlet, Othello")
        self.assertEqual(n.apns_payload["alert"]["subtitle"], "Othello:")
        self.assertEqual(n.gcm_payload["pm_users"], "10,12,15")
        self.assertEqual(n.apns_payload["custom"]["zulip"]["pm_users"], "10,12,15")
        self.assertEqual(n.gcm_payload["recipient_type"], "private")

    def test_two_person_group_is_a_dm(self) -> None:
        """A DM group of two is shown as a 1:1 DM (no pm_users, sender title, empty subtitle)."""
        event = dm_event()
        event["message"]["display_recipient"] = [{"id": 12, "full_name": "Othello"}, {"id": 10, "full_name": "Hamlet"}]
        n = notification_of(event)
        self.assertEqual(n.apns_payload["alert"]["title"], "Othello")
        self.assertEqual(n.apns_payload["alert"]["subtitle"], "")
        self.assertNotIn("pm_users", n.gcm_payload)

    def test_empty_topic_shows_general_chat(self) -> None:
        """The empty topic is shown as 'general chat', in the title and the topic field."""
        n = notification_of(stream_event(topic=""))
        self.assertEqual(n.apns_payload["alert"]["title"], "#devel > general chat")
        self.assertEqual(n.gcm_payload["topic"], "general chat")

    def test_long_content_truncated(self) -> None:
        """Content over 200 characters: 200 kept plus an ellipsis, content_truncated true on FCM."""
        event = dm_event()
        event["message"]["content"] = "x" * 250
        n = notification_of(event)
        self.assertEqual(n.gcm_payload["content"], "x" * 200 + "\u2026")
        self.assertIs(n.gcm_payload["content_truncated"], True)
        self.assertEqual(n.apns_payload["alert"]["body"], "x" * 200 + "\u2026")

    def test_redacted_content(self) -> None:
        """redact_content sends 'New message' instead of the content."""
        n = notification_of(dm_event(), redact=True)
        self.assertEqual(n.apns_payload["alert"]["body"], "New message")
        self.assertEqual(n.gcm_payload["content"], "New message")

    def test_realm_id_and_defaults(self) -> None:
        """realm_id comes from the event or [push] realm_id; server from [push] server; realm from defaults."""
        settings = PushSettings(
            realm_url="https://zulip.example.org/", realm_name="Org", realm_id=7, server="zulip:443"
        )
        event = dm_event()
        for key in ("realm_uri", "realm_name"):
            del event[key]
        data = notification_of(event, settings).gcm_payload
        self.assertEqual(
            {k: data[k] for k in ("server", "realm_id", "realm_uri", "realm_url", "realm_name")},
            {
                "server": "zulip:443",
                "realm_id": 7,
                "realm_uri": "https://zulip.example.org",
                "realm_url": "https://zulip.example.org",
                "realm_name": "Org",
            },
        )
        self.assertEqual(notification_of(dm_event(realm_id=3), settings).gcm_payload["realm_id"], 3)
        self.assertEqual(
            notification_of(dm_event(realm_url="http://localhost:9991")).gcm_payload["server"], "localhost:9991"
        )


class RemovePayloadTests(TestCase):
    def test_remove_payloads(self) -> None:
        """A remove: sorted ids joined by commas, zulip_message_id the first, priority normal, badge 0."""
        n = notification_of(remove_event())
        self.assertEqual(
            n.gcm_payload, {**BASE, "event": "remove", "zulip_message_ids": "501,502", "zulip_message_id": 501}
        )
        self.assertEqual(n.gcm_options, {"priority": "normal"})
        self.assertEqual(
            n.apns_payload,
            {"badge": 0, "custom": {"zulip": {**BASE, "event": "remove", "zulip_message_ids": "501,502"}}},
        )
        self.assertEqual(n.message_ids, (501, 502))

    def test_remove_keeps_newest_200(self) -> None:
        """More than 200 ids: only the newest 200 are sent."""
        n = notification_of(remove_event(message_ids=list(range(1000, 0, -1))))
        ids = n.gcm_payload["zulip_message_ids"].split(",")
        self.assertEqual((len(ids), ids[0], ids[-1]), (200, "801", "1000"))
        self.assertEqual(n.gcm_payload["zulip_message_id"], 801)

    def test_legacy_single_message_id(self) -> None:
        """A remove from before message_ids (one message_id) is still understood."""
        event = remove_event()
        del event["message_ids"]
        event["message_id"] = 9
        parsed = parse_event(event)
        assert isinstance(parsed, RemoveEvent)
        self.assertEqual(parsed.message_ids, (9,))


class RequestBodyTests(TestCase):
    def test_bouncer_request_shape(self) -> None:
        """The notify body is Zulip's: user_uuid, user_id, realm_uuid, apns_payload, gcm_payload, gcm_options."""
        n = notification_of(dm_event(realm_uuid="9d1e0000-0000-4000-8000-000000000001"))
        body = n.request_body()
        self.assertEqual(
            list(body), ["user_uuid", "user_id", "realm_uuid", "apns_payload", "gcm_payload", "gcm_options"]
        )
        self.assertEqual(body["user_uuid"], "4a1c0c9e-7f1d-4c33-9a55-0b6f3c1d2e10")
        self.assertEqual(body["user_id"], 10)
        self.assertEqual(body["gcm_options"], {"priority": "high"})

    def test_without_uuid(self) -> None:
        """Without user_uuid only user_id identifies the user, and realm_uuid is left out."""
        event = dm_event(realm_uuid="9d1e0000-0000-4000-8000-000000000001")
        del event["user_uuid"]
        body = notification_of(event).request_body()
        self.assertEqual(list(body), ["user_id", "apns_payload", "gcm_payload", "gcm_options"])

    def test_realm_uuid_from_settings(self) -> None:
        """[push] realm_uuid is used when the event has none."""
        body = notification_of(dm_event(), PushSettings(realm_uuid="r-uuid")).request_body()
        self.assertEqual(body["realm_uuid"], "r-uuid")


class ValidationTests(TestCase):
    def assertMalformed(self, event: Any, reason: str) -> None:
        with self.assertRaises(MalformedEventError) as caught:
            parse_event(event)
        self.assertIn(reason, str(caught.exception))

    def test_missing_type_means_add(self) -> None:
        """An event without type is an add."""
        event = dm_event()
        del event["type"]
        self.assertIsInstance(parse_event(event), AddEvent)

    def test_reasons(self) -> None:
        """Each malformed event is refused with a reason naming the field."""
        cases: list[tuple[Any, str]] = [
            ([], "expected a JSON object"),
            (dm_event(type="update"), "type:"),
            (dm_event(user_profile_id="10"), "user_profile_id: expected an integer"),
            (dm_event(user_profile_id=True), "user_profile_id: expected an integer"),
            (dm_event(trigger=""), "trigger: expected a non-empty string"),
            (dm_event(message=None), "message: expected an object"),
            (dm_event(message_id=999), "message_id: 999 differs from message.id 501"),
            (dm_event(mentioned_user_group_id=3), "mentioned_user_group_name: required"),
            (dm_event(realm_uri="ftp://x"), "realm_uri: expected an http(s):// URL"),
            (dm_event(realm_uri=None), "realm_uri: missing"),
            (dm_event(user_uuid=""), "user_uuid: expected a non-empty string"),
            (remove_event(message_ids=[]), "message_ids: expected a non-empty list"),
            (remove_event(message_ids=["1"]), "message_ids: expected a non-empty list"),
        ]
        for event, reason in cases:
            self.assertMalformed(event, reason)

    def test_message_field_reasons(self) -> None:
        """Bad message fields are named with their path."""
        cases = [
            ({"type": "huddle"}, 'message.type: expected "stream" or "private"'),
            ({"sender_id": None}, "message.sender_id: expected an integer"),
            ({"sender_email": ""}, "message.sender_email: expected a non-empty string"),
            ({"content": 5}, "message.content: expected a string"),
            ({"timestamp": "now"}, "message.timestamp"),
            ({"display_recipient": "devel"}, "message.display_recipient: expected a list"),
            ({"display_recipient": [{"id": 1}]}, "message.display_recipient[0].full_name"),
            ({"type": "stream", "stream_name": None}, "message.stream_name: expected a non-empty string"),
            ({"type": "stream", "stream_name": "devel", "topic": None}, "message.topic: expected a string"),
            ({"type": "stream", "stream_name": "devel", "topic": "t", "stream_id": "4"}, "message.stream_id"),
        ]
        for changes, reason in cases:
            event = copy.deepcopy(dm_event())
            event["message"].update(changes)
            self.assertMalformed(event, reason)

    def test_message_id_from_message(self) -> None:
        """message_id may be left out: message.id is used."""
        event = dm_event()
        del event["message_id"]
        self.assertEqual(notification_of(event).message_ids, (501,))

    def test_float_timestamp(self) -> None:
        """A float timestamp is sent as whole seconds, as Zulip's datetime_to_timestamp does."""
        event = dm_event()
        event["message"]["timestamp"] = 1700000000.75
        self.assertEqual(notification_of(event).gcm_payload["time"], 1700000000)


class HelperTests(TestCase):
    def test_truncate_content(self) -> None:
        """200 characters pass unchanged; 201 are cut to 200 plus U+2026."""
        self.assertEqual(truncate_content("a" * 200), ("a" * 200, False))
        self.assertEqual(truncate_content("a" * 201), ("a" * 200 + "\u2026", True))

    def test_gravatar_url_ignores_case(self) -> None:
        """The gravatar hash is of the lower-cased email."""
        self.assertEqual(gravatar_url("Othello@Example.com"), OTHELLO_AVATAR)
