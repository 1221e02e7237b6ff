"""Tests for zqtwisted.zulip.push_payload: Zulip's push payloads from database rows."""

from __future__ import annotations

import base64
import json

from nacl.secret import SecretBox
from twisted.trial.unittest import TestCase

from tests.zulip_fakes import SETTINGS, channel_message, push_message, push_user
from zqtwisted.zulip import push_payload as p

KEY = b"\x31" + bytes(range(32))


def decrypt(encrypted: str) -> object:
    return json.loads(SecretBox(KEY[1:]).decrypt(base64.b64decode(encrypted)))


class MessagePayloadTests(TestCase):
    def test_base_payload(self) -> None:
        """Legacy payloads name the server, realm id and both realm URL fields; E2EE ones do not."""
        user = push_user()
        self.assertEqual(
            p.base_payload(user, SETTINGS),
            {
                "server": "zulip.example.com",
                "realm_id": 2,
                "realm_uri": "https://zulip.zulip.example.com",
                "realm_url": "https://zulip.zulip.example.com",
                "realm_name": "Zulip Dev",
                "user_id": 12,
            },
        )
        self.assertEqual(set(p.base_payload(user, SETTINGS, legacy=False)), {"realm_url", "realm_name", "user_id"})

    def test_channel_message_with_group_mention(self) -> None:
        """A channel message names the channel and topic; a group mention its id and name."""
        data = p.message_payload(push_user(), channel_message(), p.Group(5, "leadership", 3), True, SETTINGS)
        self.assertEqual(
            {k: data[k] for k in ("sender_id", "sender_email", "recipient_type", "stream", "stream_id", "topic")},
            {"sender_id": 10, "sender_email": "user10@zulip.example.com", "recipient_type": "stream",
             "stream": "Denmark", "stream_id": 7, "topic": "castle"},
        )  # fmt: skip
        self.assertEqual((data["mentioned_user_group_id"], data["mentioned_user_group_name"]), (5, "leadership"))
        modern = p.message_payload(push_user(), channel_message(topic=""), None, True, SETTINGS, legacy=False)
        self.assertEqual(
            (modern["recipient_type"], modern["channel_name"], modern["topic"]), ("channel", "Denmark", "general chat")
        )

    def test_group_direct_message(self) -> None:
        """A group DM of three or more lists pm_users (legacy) or recipient_user_ids (E2EE)."""
        group = push_message(recipient_type=3, recipients=((10, "King Hamlet"), (12, "Othello"), (13, "Iago")))
        self.assertEqual(p.message_payload(push_user(), group, None, True, SETTINGS)["pm_users"], "10,12,13")
        modern = p.message_payload(push_user(), push_message(), None, True, SETTINGS, legacy=False)
        self.assertEqual(modern["recipient_user_ids"], [10, 12])
        self.assertEqual(p.apns_alert_title(group), "Iago, King Hamlet, Othello")
        self.assertEqual(p.apns_alert_subtitle(group, "direct_message", None, True), "King Hamlet:")

    def test_apns(self) -> None:
        """iOS: title, subtitle, body from the rendered content; no server or realm id in custom.zulip."""
        payload = p.message_payload(push_user(), push_message(), None, True, SETTINGS)
        apns = p.message_payload_apns(payload, push_message(), "direct_message", True)
        self.assertEqual(apns["alert"], {"title": "King Hamlet", "subtitle": "", "body": "hello world"})
        self.assertEqual((apns["sound"], apns["badge"]), ("default", 0))
        self.assertEqual(apns["custom"]["zulip"]["message_ids"], [501])
        self.assertNotIn("server", apns["custom"]["zulip"])
        self.assertIn("server", payload)

    def test_subtitles(self) -> None:
        """Mentions, group mentions, wildcards and inaccessible senders word the subtitle as Zulip does."""
        message = channel_message()
        self.assertEqual(p.apns_alert_subtitle(message, "mentioned", None, True), "King Hamlet mentioned you:")
        self.assertEqual(p.apns_alert_subtitle(message, "mentioned", "devs", True), "King Hamlet mentioned @devs:")
        self.assertEqual(
            p.apns_alert_subtitle(message, "stream_wildcard_mentioned", None, True), "King Hamlet mentioned everyone:"
        )
        self.assertEqual(p.apns_alert_subtitle(message, "stream_push_notify", None, False), "Unknown user:")
        self.assertEqual(p.apns_alert_title(message), "#Denmark > castle")

    def test_gcm(self) -> None:
        """Android: event, zulip_message_id, time, content, sender name and absolute avatar URL."""
        payload = p.message_payload(push_user(), push_message(), None, True, SETTINGS)
        data, options = p.message_payload_gcm(payload, push_user(), push_message(), True, SETTINGS)
        self.assertEqual(options, {"priority": "high"})
        self.assertEqual((data["event"], data["zulip_message_id"], data["time"]), ("message", 501, 1763632800))
        self.assertEqual((data["content"], data["sender_full_name"]), ("hello world", "King Hamlet"))
        self.assertTrue(data["sender_avatar_url"].startswith("https://secure.gravatar.com/"))
        hidden, _ = p.message_payload_gcm(payload, push_user(), push_message(), False, SETTINGS, legacy=False)
        self.assertEqual(
            (hidden["type"], hidden["message_id"], hidden["sender_full_name"]), ("message", 501, "Unknown user")
        )

    def test_redact(self) -> None:
        """require_e2ee_push_notifications: legacy payloads say "New message"; removals stay."""
        payload = p.message_payload(push_user(), push_message(), None, True, SETTINGS)
        apns = p.message_payload_apns(payload, push_message(), "direct_message", True)
        gcm, _ = p.message_payload_gcm(payload, push_user(), push_message(), True, SETTINGS)
        red_apns, red_gcm = p.redact(apns, gcm)
        self.assertEqual((red_apns["alert"]["body"], red_gcm["content"]), ("New message", "New message"))
        self.assertEqual(apns["alert"]["body"], "hello world")
        remove = p.remove_payload_apns(push_user(), [1], SETTINGS)
        self.assertEqual(p.redact(remove, {})[0], remove)


class RemoveAndEncryptTests(TestCase):
    def test_remove_payloads(self) -> None:
        """remove: comma-separated ids (legacy) or a list (E2EE); normal priority; APNs without server fields."""
        gcm, options = p.remove_payload_gcm(push_user(), [3, 4], SETTINGS)
        self.assertEqual((gcm["event"], gcm["zulip_message_ids"], options), ("remove", "3,4", {"priority": "normal"}))
        modern, _ = p.remove_payload_gcm(push_user(), [3, 4], SETTINGS, legacy=False)
        self.assertEqual((modern["type"], modern["message_ids"]), ("remove", [3, 4]))
        apns = p.remove_payload_apns(push_user(), [3, 4], SETTINGS)
        self.assertEqual(apns["custom"]["zulip"]["zulip_message_ids"], "3,4")
        self.assertNotIn("realm_id", apns["custom"]["zulip"])

    def test_e2ee_requests_decrypt_to_the_payload(self) -> None:
        """Each device gets the payload sealed with its key; APNs and FCM requests as Zulip shapes them."""
        payload = {"type": "message", "message_id": 1, "content": "héllo"}
        apns, fcm = p.e2ee_push_requests(payload, (("apns", 7, KEY, 70), ("fcm", 8, KEY, 80)))
        self.assertEqual(apns["http_headers"], {"apns_priority": 10, "apns_push_type": "alert"})
        self.assertEqual(apns["payload"]["aps"], {"mutable-content": 1, "alert": {"title": "New notification"}})
        self.assertEqual((fcm["device_id"], fcm["fcm_priority"], fcm["payload"]["push_account_id"]), (80, "high", 8))
        self.assertEqual(decrypt(apns["payload"]["encrypted_data"]), payload)
        removal = p.e2ee_push_requests({"type": "remove"}, (("apns", 7, KEY, 70), ("fcm", 8, KEY, 80)))
        self.assertEqual(removal[0]["http_headers"], {"apns_priority": 5, "apns_push_type": "background"})
        self.assertEqual(removal[1]["fcm_priority"], "normal")

    def test_unknown_key_algorithm(self) -> None:
        """A push key without the 0x31 prefix is refused."""
        with self.assertRaises(ValueError):
            p.encrypt({}, b"\x32" + bytes(32))
