"""Fakes for Zulip mode's unit tests: the data layer answering named queries, an HTTP poster, sample rows."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from twisted.internet.defer import Deferred, fail, succeed

from zqtwisted.webhooks.client import WebhookResponse
from zqtwisted.zulip.push_queries import PushMessage, PushUser
from zqtwisted.zulip.settings import ZulipSettings
from zqtwisted.zulip.webhook_queries import BotRow, ServiceRow

SETTINGS = ZulipSettings(
    database="host=127.0.0.1 dbname=zulip user=zulip", external_host="zulip.example.com", version="11.4"
)


class FakeDatabase:
    """Answers ``run(name, query, *args)`` from ``answers[name]`` (a value, a callable of the args, or an exception)."""

    def __init__(self, answers: Mapping[str, Any] | None = None) -> None:
        self.answers: dict[str, Any] = dict(answers or {})
        self.calls: list[tuple[str, tuple[Any, ...]]] = []

    def run(self, name: str, query: Callable[..., Any], *args: Any) -> Deferred[Any]:
        self.calls.append((name, args))
        answer = self.answers[name]
        if isinstance(answer, BaseException):
            return fail(answer)
        if callable(answer):
            answer = answer(*args)
        return succeed(answer)

    def names(self) -> list[str]:
        return [name for name, _ in self.calls]


class FakePoster:
    """Stands in for WebhookClient.post: records calls, answers from a list (responses or exceptions)."""

    timeout = 5.0

    def __init__(self, *answers: Any) -> None:
        self.answers = list(answers)
        self.calls: list[tuple[str, bytes, str, dict[str, str]]] = []

    def post(
        self, url: str, body: bytes, content_type: str, headers: Mapping[str, str] | None = None
    ) -> Deferred[WebhookResponse]:
        self.calls.append((url, body, content_type, dict(headers or {})))
        answer = self.answers.pop(0) if self.answers else WebhookResponse(200, b'{"result": "success"}')
        if isinstance(answer, BaseException):
            return fail(answer)
        return succeed(answer)


def bot_row(**changes: Any) -> BotRow:
    values: dict[str, Any] = {
        "id": 30,
        "email": "pong-bot@zulip.example.com",
        "full_name": "Pong Bot",
        "api_key": "botkey",
        "is_active": True,
        "bot_type": 3,
        "bot_owner_id": 11,
        "realm_id": 2,
        "realm_string_id": "zulip",
        "recipient_id": 130,
    }
    values.update(changes)
    return BotRow(**values)


def service_row(**changes: Any) -> ServiceRow:
    values: dict[str, Any] = {
        "id": 1,
        "name": "svc",
        "base_url": "https://bots.example.com/hook",
        "token": "tok",
        "interface": 1,
    }
    values.update(changes)
    return ServiceRow(**values)


def push_user(**changes: Any) -> PushUser:
    values: dict[str, Any] = {
        "id": 12,
        "uuid": "9e5a2b9b-3f2d-4c4b-8f1e-3a1f0c2d4e5f",
        "is_active": True,
        "is_bot": False,
        "role": 400,
        "long_term_idle": False,
        "enable_offline_push_notifications": True,
        "enable_online_push_notifications": True,
        "realm_id": 2,
        "realm_string_id": "zulip",
        "realm_name": "Zulip Dev",
        "realm_uuid": "0b4cd5a1-0000-4000-8000-000000000001",
        "require_e2ee_push_notifications": False,
    }
    values.update(changes)
    return PushUser(**values)


def push_message(**changes: Any) -> PushMessage:
    values: dict[str, Any] = {
        "id": 501,
        "sender_id": 10,
        "sender_email": "user10@zulip.example.com",
        "sender_delivery_email": "hamlet@private.example.org",
        "sender_full_name": "King Hamlet",
        "sender_avatar_source": "G",
        "sender_avatar_version": 1,
        "sender_realm_id": 2,
        "realm_id": 2,
        "recipient_id": 112,
        "recipient_type": 1,
        "recipient_type_id": 12,
        "topic": "\x07",
        "rendered_content": "<p>hello <strong>world</strong></p>",
        "date_sent": 1763632800,
        "stream_name": None,
        "recipients": ((12, "Othello"),),
    }
    values.update(changes)
    return PushMessage(**values)


def channel_message(**changes: Any) -> PushMessage:
    values: dict[str, Any] = {
        "recipient_type": 2,
        "recipient_type_id": 7,
        "recipient_id": 107,
        "topic": "castle",
        "stream_name": "Denmark",
        "recipients": (),
    }
    values.update(changes)
    return push_message(**values)
