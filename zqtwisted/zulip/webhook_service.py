"""Outgoing webhooks in Zulip mode: Zulip's event, the bot and its services read from the database.

Zulip's ``do_send_messages`` publishes ``{"message": <wide message dict>, "trigger",
"user_profile_id": <bot id>}``.  :func:`validate_zulip_event` checks that shape and
:class:`ZulipWebhooks` resolves the rest as Zulip's worker does: the bot
(``get_user_profile_by_id``), its services (``get_bot_services``), whether it may
see the sender (``check_can_access_user``), the message after ``finalize_payload``.

The result is a *view* in the shape the standalone code builds requests and replies
from (``bot_email``, ``services``, ``realm_url`` ...), kept in memory only: secrets
(tokens, the API key) never go into the event, so never into a retry or a dead letter.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from twisted.internet.defer import Deferred

from zqtwisted.errors import MalformedEventError, PermanentError
from zqtwisted.webhooks.payload import COMPLETED_KEY, FINALIZED_KEY, GENERIC, SLACK
from zqtwisted.zulip.message import finalize_payload
from zqtwisted.zulip.rest import BotReplySink, ZulipApi
from zqtwisted.zulip.settings import ZulipSettings
from zqtwisted.zulip.urls import realm_host, realm_url
from zqtwisted.zulip.webhook_queries import BotRow, ServiceRow, can_access_user, fetch_bot, fetch_bot_services

# Service.interface -> our interface names (Zulip falls back to the generic one).
INTERFACES = {1: GENERIC, 2: SLACK}
OUTGOING_WEBHOOK_BOT = 3  # UserProfile.OUTGOING_WEBHOOK_BOT


class Database(Protocol):
    def run(self, name: str, query: Any, *args: Any) -> Deferred[Any]: ...


def validate_zulip_event(event: Any) -> dict[str, Any]:
    """Check the event Zulip publishes; MalformedEventError names the first bad field."""
    if not isinstance(event, dict):
        raise MalformedEventError(f"event is a {type(event).__name__}, not an object")
    if not _is_int(event.get("user_profile_id")):
        raise MalformedEventError("user_profile_id: expected the bot's user id")
    if not isinstance(event.get("trigger"), str) or not event["trigger"]:
        raise MalformedEventError("trigger: expected a non-empty string")
    message = event.get("message")
    if not isinstance(message, dict):
        raise MalformedEventError("message: expected the message dict")
    for key in ("id", "sender_id", "recipient_id"):
        if not _is_int(message.get(key)):
            raise MalformedEventError(f"message.{key}: expected an integer")
    for key in ("content", "sender_email", "sender_full_name"):
        if not isinstance(message.get(key), str):
            raise MalformedEventError(f"message.{key}: expected a string")
    kind = message.get("type")
    if kind == "stream":
        if not _is_int(message.get("stream_id")) or not isinstance(message.get("display_recipient"), str):
            raise MalformedEventError("message: a channel message needs stream_id and display_recipient")
        if not isinstance(message.get("topic", message.get("subject")), str):
            raise MalformedEventError("message.subject: expected a string")
    elif kind == "private":
        members = message.get("display_recipient")
        if not isinstance(members, list) or not all(
            isinstance(m, dict) and isinstance(m.get("email"), str) and _is_int(m.get("id")) for m in members
        ):
            raise MalformedEventError("message.display_recipient: expected a list of users with id and email")
    else:
        raise MalformedEventError(f'message.type: expected "stream" or "private", got {kind!r}')
    return event


@dataclass(frozen=True)
class Resolved:
    """What a Zulip event resolves to: the view to build requests from, and who replies."""

    view: dict[str, Any]
    bot: BotRow
    sink: BotReplySink


class ZulipWebhooks:
    """Resolves Zulip's outgoing webhook events through the database."""

    def __init__(self, db: Database, api: ZulipApi, settings: ZulipSettings, salt: str = "") -> None:
        self.db = db
        self.api = api
        self.settings = settings
        self.salt = salt

    def resolve(self, event: Mapping[str, Any]) -> Deferred[Resolved]:
        return Deferred.fromCoroutine(self._resolve(event))

    async def _resolve(self, event: Mapping[str, Any]) -> Resolved:
        bot_id = int(event["user_profile_id"])
        bot: BotRow | None = await self.db.run("fetch_bot", fetch_bot, bot_id)
        if bot is None:
            raise PermanentError(f"bot {bot_id} does not exist")
        services: list[ServiceRow] = await self.db.run("fetch_bot_services", fetch_bot_services, bot_id)
        message = event["message"]
        can_access = await self.db.run("can_access_user", can_access_user, bot.id, int(message["sender_id"]))
        host = realm_host(bot.realm_string_id, self.settings)
        finalized = finalize_payload(
            message,
            can_access_sender=can_access,
            realm_host=host,
            is_incoming_1_to_1=message["recipient_id"] == bot.recipient_id,
            settings=self.settings,
            salt=self.salt,
        )
        view: dict[str, Any] = {
            "user_profile_id": bot.id,
            "trigger": event["trigger"],
            "message": message,
            FINALIZED_KEY: finalized,
            "bot_email": bot.email,
            "bot_full_name": bot.full_name,
            "bot_owner_id": bot.bot_owner_id,
            "realm_id": bot.realm_id,
            "realm_url": realm_url(bot.realm_string_id, self.settings),
            "services": service_views(services),
            COMPLETED_KEY: list(event.get(COMPLETED_KEY, [])),
        }
        return Resolved(view, bot, BotReplySink(self.api, bot))


def service_views(services: list[ServiceRow]) -> list[dict[str, Any]]:
    """The services in the standalone event's shape; a repeated name gets its id appended."""
    seen: set[str] = set()
    views = []
    for service in services:
        name = service.name if service.name and service.name not in seen else f"{service.name}#{service.id}"
        seen.add(name)
        views.append(
            {
                "name": name,
                "base_url": service.base_url,
                "token": service.token,
                "interface": INTERFACES.get(service.interface, GENERIC),
            }
        )
    return views


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)
