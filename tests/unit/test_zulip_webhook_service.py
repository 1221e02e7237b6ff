"""Tests for zqtwisted.zulip.webhook_service: Zulip's outgoing webhook event, resolved through the database."""

from __future__ import annotations

from typing import Any

from twisted.trial.unittest import TestCase

from tests.unit.test_zulip_message import wide
from tests.zulip_fakes import SETTINGS, FakeDatabase, FakePoster, bot_row, service_row
from zqtwisted.errors import MalformedEventError, PermanentError
from zqtwisted.webhooks.payload import FINALIZED_KEY
from zqtwisted.zulip.rest import ZulipApi
from zqtwisted.zulip.webhook_service import ZulipWebhooks, service_views, validate_zulip_event


def zulip_event(**message: Any) -> dict[str, Any]:
    """As do_send_messages queues it on outgoing_webhooks."""
    return {"message": wide(**message), "trigger": "mention", "user_profile_id": 30}


def database(**answers: Any) -> FakeDatabase:
    return FakeDatabase(
        {"fetch_bot": bot_row(), "fetch_bot_services": [service_row()], "can_access_user": True, **answers}
    )


class ValidateTests(TestCase):
    def test_zulip_event_is_valid(self) -> None:
        """The event do_send_messages builds passes, channel or direct message."""
        validate_zulip_event(zulip_event())
        dm = zulip_event(
            type="private", display_recipient=[{"email": "a@x", "id": 1, "full_name": "A", "is_mirror_dummy": False}]
        )
        validate_zulip_event(dm)

    def test_malformed(self) -> None:
        """Each missing or mistyped field is named."""
        cases: list[tuple[Any, str]] = [
            ([], "object"),
            ({**zulip_event(), "user_profile_id": "30"}, "user_profile_id"),
            ({**zulip_event(), "trigger": None}, "trigger"),
            ({**zulip_event(), "message": None}, "message"),
            (zulip_event(sender_id=None), "sender_id"),
            (zulip_event(content=3), "content"),
            (zulip_event(stream_id=None), "stream_id"),
            (zulip_event(subject=None), "subject"),
            (zulip_event(type="private", display_recipient=[{"email": "a@x"}]), "display_recipient"),
            (zulip_event(type="huddle"), "type"),
        ]
        for event, field in cases:
            with self.assertRaisesRegex(MalformedEventError, field):
                validate_zulip_event(event)


class ResolveTests(TestCase):
    def test_view(self) -> None:
        """The view names the bot, its owner, realm and services; the message is finalized; no secret in the event."""
        db = database()
        event = zulip_event()
        resolved = self.successResultOf(ZulipWebhooks(db, ZulipApi(FakePoster(), SETTINGS), SETTINGS).resolve(event))
        view = resolved.view
        self.assertEqual(
            (view["bot_email"], view["bot_full_name"], view["bot_owner_id"]),
            ("pong-bot@zulip.example.com", "Pong Bot", 11),
        )
        self.assertEqual((view["realm_id"], view["realm_url"]), (2, "https://zulip.zulip.example.com"))
        self.assertEqual(
            view["services"],
            [{"name": "svc", "base_url": "https://bots.example.com/hook", "token": "tok", "interface": "generic"}],
        )
        self.assertNotIn("sender_delivery_email", view[FINALIZED_KEY])
        self.assertIn("sender_delivery_email", view["message"])
        self.assertNotIn("services", event)
        self.assertEqual(db.names(), ["fetch_bot", "fetch_bot_services", "can_access_user"])
        self.assertEqual(db.calls[2][1], (30, 10))

    def test_missing_bot(self) -> None:
        """An unknown bot is a permanent error."""
        api = ZulipApi(FakePoster(), SETTINGS)
        self.failureResultOf(
            ZulipWebhooks(database(fetch_bot=None), api, SETTINGS).resolve(zulip_event()), PermanentError
        )

    def test_service_views(self) -> None:
        """Interfaces map to generic/slack (unknown: generic); repeated names get the service id."""
        rows = [
            service_row(id=1, name="a", interface=2),
            service_row(id=2, name="a", interface=9),
            service_row(id=3, name="", interface=1),
        ]
        views = service_views(rows)
        self.assertEqual(
            [(v["name"], v["interface"]) for v in views], [("a", "slack"), ("a#2", "generic"), ("#3", "generic")]
        )
