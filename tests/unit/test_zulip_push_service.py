"""Tests for zqtwisted.zulip.push_service: Zulip's push handling over a fake database and bouncer."""

from __future__ import annotations

import json
from typing import Any, cast

from twisted.logger import ILogObserver, LogLevel, globalLogPublisher
from twisted.trial.unittest import TestCase

from tests.zulip_fakes import SETTINGS, FakeDatabase, FakePoster, channel_message, push_message, push_user
from zqtwisted.errors import PermanentError
from zqtwisted.push.bouncer import BouncerRefused, BouncerRetryLater
from zqtwisted.testing import RecordingPublisher
from zqtwisted.webhooks.client import WebhookResponse
from zqtwisted.zulip.bouncer import ZulipBouncer
from zqtwisted.zulip.push_events import PROGRESS_KEY, parse_zulip_push_event
from zqtwisted.zulip.push_queries import Claim, Devices
from zqtwisted.zulip.push_service import ZulipPush

KEY = b"\x31" + bytes(32)
DEVICES = Devices(apple=(("apns-1", "org.zulip.Zulip"),), android=("fcm-1",), e2ee=(("fcm", 9, KEY, 90),))
OK = WebhookResponse(
    200,
    json.dumps(
        {
            "total_android_devices": 1,
            "total_apple_devices": 1,
            "deleted_devices": {"android_devices": [], "apple_devices": []},
        }
    ).encode(),
)
E2EE_OK = WebhookResponse(
    200, b'{"android_successfully_sent_count": 1, "apple_successfully_sent_count": 0, "delete_device_ids": []}'
)


def db(**answers: Any) -> FakeDatabase:
    base: dict[str, Any] = {
        "fetch_push_user": push_user(),
        "claim_push_message": Claim("claimed", push_message()),
        "fetch_devices": DEVICES,
        "can_access_user": True,
        "fetch_mentioned_group": ("leadership", 3),
        "delete_device_tokens": 1,
        "delete_push_devices": 1,
        "clear_active_push_flags": 1,
        "set_push_device_error": 1,
        "set_push_device_registered": 1,
    }
    base.update(answers)
    return FakeDatabase(base)


class Case(TestCase):
    def setUp(self) -> None:
        self.logged: list[str] = []

        def observe(event: dict[str, Any]) -> None:
            if event.get("log_format") and event.get("log_level") in (LogLevel.info, LogLevel.warn, LogLevel.error):
                self.logged.append(
                    event["log_format"].format(**{k: event[k] for k in event if not k.startswith("log_")})
                )

        observer = cast(ILogObserver, observe)
        globalLogPublisher.addObserver(observer)
        self.addCleanup(globalLogPublisher.removeObserver, observer)

    def service(
        self, database: FakeDatabase, *answers: Any, configured: bool = True
    ) -> tuple[ZulipPush, FakePoster, RecordingPublisher]:
        poster = FakePoster(*answers)
        bouncer = ZulipBouncer(poster, "https://push.example.com", "uuid", "key") if configured else None
        publisher = RecordingPublisher()
        return ZulipPush(database, bouncer, SETTINGS, publisher), poster, publisher

    def handle(self, service: ZulipPush, event: dict[str, Any]) -> Any:
        return service.handle(parse_zulip_push_event(event), event)


class AddTests(Case):
    def test_legacy_and_e2ee_requests(self) -> None:
        """An add goes to push/notify with the uuids and tokens, and encrypted to push/e2ee/notify."""
        database = db()
        service, poster, _ = self.service(database, OK, E2EE_OK)
        event = {
            "type": "add",
            "user_profile_id": 12,
            "message_id": 501,
            "trigger": "direct_message",
            "mentioned_user_group_id": None,
        }
        self.successResultOf(self.handle(service, event))
        (url, body, _, _), (e2ee_url, e2ee_body, _, _) = poster.calls
        self.assertTrue(url.endswith("/api/v1/remotes/push/notify"))
        sent = json.loads(body)
        self.assertEqual(
            (sent["user_uuid"], sent["user_id"], sent["realm_uuid"]), (push_user().uuid, 12, push_user().realm_uuid)
        )
        self.assertEqual((sent["apple_devices"], sent["android_devices"]), (["apns-1"], ["fcm-1"]))
        self.assertEqual(sent["gcm_payload"]["content"], "hello world")
        self.assertTrue(e2ee_url.endswith("/push/e2ee/notify"))
        self.assertEqual(json.loads(e2ee_body)["push_requests"][0]["device_id"], 90)
        self.assertEqual(event[PROGRESS_KEY], ["claimed", "legacy", "e2ee"])
        self.assertIn("Sending push notifications to mobile clients for user 12", self.logged)

    def test_skips(self) -> None:
        """Not configured, inactive, bots, read, archived, inaccessible or missing rows: nothing is sent."""
        event = {"type": "add", "user_profile_id": 12, "message_id": 501, "trigger": "direct_message"}
        cases = [
            (db(), False, None),
            (db(fetch_push_user=push_user(is_active=False)), True, "deactivated user 12"),
            (db(fetch_push_user=push_user(is_bot=True)), True, "bot user 12"),
            (
                db(
                    fetch_push_user=push_user(
                        enable_offline_push_notifications=False, enable_online_push_notifications=False
                    )
                ),
                True,
                None,
            ),
            (db(claim_push_message=Claim("read")), True, "Message 501 is already read"),
            (db(claim_push_message=Claim("archived")), True, None),
            (
                db(claim_push_message=Claim("no_access")),
                True,
                "Unexpected message access failure handling push notifications: 12 501",
            ),
            (
                db(claim_push_message=Claim("no_usermessage", push_message())),
                True,
                "Could not find UserMessage with message_id 501 and user_id 12",
            ),
        ]
        for database, configured, line in cases:
            service, poster, _ = self.service(database, configured=configured)
            self.successResultOf(self.handle(service, dict(event)))
            self.assertEqual(poster.calls, [])
            if line:
                self.assertTrue(any(line in logged for logged in self.logged), line)

    def test_no_devices(self) -> None:
        """Without devices both paths say they skip, as Zulip logs it."""
        service, poster, _ = self.service(db(fetch_devices=Devices()))
        self.successResultOf(
            self.handle(service, {"user_profile_id": 12, "message_id": 501, "trigger": "direct_message"})
        )
        self.assertEqual(poster.calls, [])
        self.assertIn(
            "Skipping legacy push notifications for user 12 because there are no registered devices", self.logged
        )
        self.assertIn(
            "Skipping E2EE push notifications for user 12 because there are no registered devices", self.logged
        )

    def test_unknown_user(self) -> None:
        """An event for a user that does not exist is a permanent error."""
        service, _, _ = self.service(db(fetch_push_user=None))
        self.failureResultOf(
            self.handle(service, {"user_profile_id": 99, "message_id": 1, "trigger": "t"}), PermanentError
        )

    def test_group_mention_channel_and_redaction(self) -> None:
        """A group mention names the group; a channel message checks access; e2ee-only realms get redacted content."""
        database = db(
            claim_push_message=Claim("claimed", channel_message()),
            fetch_push_user=push_user(require_e2ee_push_notifications=True),
            fetch_devices=Devices(android=("fcm-1",)),
        )
        service, poster, _ = self.service(database, OK)
        self.successResultOf(
            self.handle(
                service,
                {"user_profile_id": 12, "message_id": 501, "trigger": "mentioned", "mentioned_user_group_id": 5},
            )
        )
        sent = json.loads(poster.calls[0][1])
        self.assertEqual(
            (sent["gcm_payload"]["mentioned_user_group_name"], sent["gcm_payload"]["content"]),
            ("leadership", "New message"),
        )
        self.assertEqual(sent["apns_payload"], {})
        self.assertIn("can_access_user", database.names())

    def test_soft_reactivation(self) -> None:
        """A long-term idle user personally notified is queued for soft reactivation (deferred_work)."""
        service, _, publisher = self.service(
            db(fetch_push_user=push_user(long_term_idle=True), fetch_devices=Devices())
        )
        self.successResultOf(
            self.handle(service, {"user_profile_id": 12, "message_id": 501, "trigger": "direct_message"})
        )
        self.assertEqual(publisher.to("deferred_work"), [{"type": "soft_reactivate", "user_profile_id": 12}])
        big, _, quiet = self.service(
            db(
                fetch_push_user=push_user(long_term_idle=True),
                fetch_devices=Devices(),
                fetch_mentioned_group=("everyone", 50),
            )
        )
        self.successResultOf(
            self.handle(
                big, {"user_profile_id": 12, "message_id": 501, "trigger": "mentioned", "mentioned_user_group_id": 5}
            )
        )
        self.assertEqual(quiet.to("deferred_work"), [])

    def test_retry_resumes_where_it_stopped(self) -> None:
        """After the legacy request went out, a retry sends only the E2EE one and skips the flag check."""
        service, poster, _ = self.service(db(), OK, BouncerRetryLater("later"))
        event: dict[str, Any] = {"user_profile_id": 12, "message_id": 501, "trigger": "direct_message"}
        poster.answers = [OK, WebhookResponse(503, b"")]
        self.failureResultOf(self.handle(service, event), BouncerRetryLater)
        self.assertEqual(event[PROGRESS_KEY], ["claimed", "legacy"])
        database = db()
        again, poster2, _ = self.service(database, E2EE_OK)
        self.successResultOf(self.handle(again, event))
        self.assertEqual(len(poster2.calls), 1)
        self.assertEqual(database.calls[1], ("claim_push_message", (push_user(), 501, True)))

    def test_bouncer_answers(self) -> None:
        """Deleted devices are deleted locally; a disallowed realm is a warning; other refusals fail."""
        deleted = WebhookResponse(
            200,
            json.dumps(
                {
                    "total_android_devices": 0,
                    "total_apple_devices": 0,
                    "deleted_devices": {"android_devices": ["fcm-1"], "apple_devices": ["APNS-1"]},
                }
            ).encode(),
        )
        gone = WebhookResponse(
            200,
            b'{"android_successfully_sent_count": 0, "apple_successfully_sent_count": 0, "delete_device_ids": [90]}',
        )
        database = db()
        service, _, _ = self.service(database, deleted, gone)
        self.successResultOf(
            self.handle(service, {"user_profile_id": 12, "message_id": 501, "trigger": "direct_message"})
        )
        self.assertIn(("delete_device_tokens", (["fcm-1"], ["APNS-1"])), database.calls)
        self.assertIn(("delete_push_devices", (12, [90])), database.calls)
        disallowed = WebhookResponse(400, b'{"msg": "no plan", "code": "PUSH_NOTIFICATIONS_DISALLOWED"}')
        service, _, _ = self.service(
            db(), disallowed, WebhookResponse(400, b'{"msg": "gone", "code": "MISSING_REMOTE_REALM"}')
        )
        self.successResultOf(
            self.handle(service, {"user_profile_id": 12, "message_id": 501, "trigger": "direct_message"})
        )
        self.assertIn("Bouncer refused to send push notification: no plan", self.logged)
        self.assertIn("Bouncer refused to send E2EE push notification: gone", self.logged)
        service, _, _ = self.service(db(), WebhookResponse(400, b'{"msg": "bad", "code": "BAD_REQUEST"}'))
        self.failureResultOf(
            self.handle(service, {"user_profile_id": 12, "message_id": 501, "trigger": "direct_message"}),
            BouncerRefused,
        )


class RemoveAndRegisterTests(Case):
    def test_remove(self) -> None:
        """A remove sends both kinds of payload and clears the flags of every message."""
        database = db()
        service, poster, _ = self.service(database, OK, E2EE_OK)
        self.successResultOf(self.handle(service, {"type": "remove", "user_profile_id": 12, "message_ids": [5, 3]}))
        sent = json.loads(poster.calls[0][1])
        self.assertEqual(sent["gcm_payload"]["zulip_message_ids"], "3,5")
        self.assertEqual(database.calls[-1], ("clear_active_push_flags", (12, [5, 3])))
        unconfigured, poster2, _ = self.service(db(), configured=False)
        self.successResultOf(self.handle(unconfigured, {"type": "remove", "user_profile_id": 12, "message_ids": [1]}))
        self.assertEqual(poster2.calls, [])

    def register(self, *answers: Any, database: FakeDatabase | None = None) -> tuple[Any, FakeDatabase, FakePoster]:
        database = database or db()
        service, poster, _ = self.service(database, *answers)
        event = {
            "type": "register_push_device_to_bouncer",
            "payload": {
                "user_profile_id": 12,
                "bouncer_public_key": "k",
                "encrypted_push_registration": "blob",
                "push_account_id": 7,
            },
        }
        return self.handle(service, event), database, poster

    def test_register_success(self) -> None:
        """The registration is posted (form) with the realm uuid; the bouncer's device id is stored."""
        d, database, poster = self.register(WebhookResponse(200, b'{"device_id": 70}'))
        self.successResultOf(d)
        self.assertTrue(poster.calls[0][0].endswith("/push/e2ee/register"))
        self.assertEqual(database.calls[-1], ("set_push_device_registered", (12, 7, 70)))

    def test_register_failures(self) -> None:
        """Registration errors are stored; admin errors and 5xx retry; an answer without a device id retries."""
        d, database, _ = self.register(WebhookResponse(400, b'{"msg": "x", "code": "REQUEST_EXPIRED"}'))
        self.successResultOf(d)
        self.assertEqual(database.calls[-1], ("set_push_device_error", (12, 7, "REQUEST_EXPIRED")))
        self.assertIn("Push device registration request for user_id=12, push_account_id=7 expired.", self.logged)
        d, database, _ = self.register(WebhookResponse(400, b'{"msg": "x"}'))
        self.successResultOf(d)
        self.assertEqual(database.calls[-1], ("set_push_device_error", (12, 7, "BAD_REQUEST")))
        for answer in (
            WebhookResponse(400, b'{"msg": "x", "code": "MISSING_REMOTE_REALM"}'),
            WebhookResponse(502, b""),
            WebhookResponse(200, b"{}"),
        ):
            d, _, _ = self.register(answer)
            self.failureResultOf(d, BouncerRetryLater)
        service, poster, _ = self.service(db(), configured=False)
        event = {
            "type": "register_push_device_to_bouncer",
            "payload": {
                "user_profile_id": 12,
                "bouncer_public_key": "k",
                "encrypted_push_registration": "b",
                "push_account_id": 7,
            },
        }
        self.successResultOf(self.handle(service, event))
        self.assertEqual(poster.calls, [])
