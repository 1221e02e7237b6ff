"""Zulip's REST API, called as a bot: replies (``POST /api/v1/messages``) and read flags.

Zulip's worker sends a bot's replies itself (``send_response_message``,
``fail_with_message``, ``notify_bot_owner``) and marks the triggering message read
for the bot (``do_flag_service_bots_messages_as_processed``).  zqtwisted does both
through the API, authenticated as the bot (HTTP basic auth, its email and API key
from the database), at the realm's URL or at ``[zulip] api_url`` with the realm's
host in the ``Host`` header.  Channel replies are addressed by channel id and topic,
direct messages by the members' user ids.
"""

from __future__ import annotations

import base64
import json
from typing import Any

from twisted.internet.defer import Deferred, succeed
from twisted.logger import Logger
from twisted.web.client import Agent, HTTPConnectionPool

from zqtwisted._version import __version__
from zqtwisted.runtime.reactor import IConnectingReactor
from zqtwisted.webhooks.client import Poster, WebhookClient
from zqtwisted.webhooks.payload import FORM_CONTENT_TYPE, encode_form
from zqtwisted.webhooks.replies import REST_CLIENT_NAME, REST_CONCURRENCY, Reply, reply_not_posted, reply_posted
from zqtwisted.zulip.settings import ZulipSettings
from zqtwisted.zulip.urls import api_endpoint
from zqtwisted.zulip.webhook_queries import BotRow


def message_fields(reply: Reply) -> list[tuple[str, Any]] | None:
    """The form of ``POST /api/v1/messages`` for ``reply`` (None: nobody to send it to)."""
    recipient = reply.recipient
    if recipient.type == "stream":
        to = str(recipient.stream_id) if recipient.stream_id is not None else recipient.stream
        return [("type", "stream"), ("to", to), ("topic", recipient.topic), ("content", reply.content)]
    if recipient.type == "private" and (recipient.user_ids or recipient.emails):
        to = json.dumps(list(recipient.user_ids) if recipient.user_ids else list(recipient.emails))
        return [("type", "private"), ("to", to), ("content", reply.content)]
    return None


class ZulipApi:
    """Calls Zulip's REST API as a bot; every call has the client's deadline."""

    log = Logger()

    def __init__(self, client: Poster, settings: ZulipSettings) -> None:
        self._client = client
        self._settings = settings

    def _post(self, bot: BotRow, path: str, fields: list[tuple[str, Any]]) -> Deferred[None]:
        endpoint = api_endpoint(bot.realm_string_id, path, self._settings)
        token = base64.b64encode(f"{bot.email}:{bot.api_key}".encode()).decode("ascii")
        headers = {"Authorization": f"Basic {token}"}
        if endpoint.host is not None:
            headers["Host"] = endpoint.host
        d = self._client.post(endpoint.url, encode_form(fields), FORM_CONTENT_TYPE, headers)
        return d.addCallbacks(reply_posted, reply_not_posted)

    def send(self, bot: BotRow, reply: Reply) -> Deferred[None]:
        """Post ``reply`` as ``bot``; fails with TransientError (retry) or ReplyRejected."""
        fields = message_fields(reply)
        if fields is None:
            self.log.warn("Bot {bot} has no owner: a notice for its owner was not sent", bot=bot.id)
            return succeed(None)
        return self._post(bot, "messages", fields)

    def mark_read(self, bot: BotRow, message_id: int) -> Deferred[None]:
        """``POST /api/v1/messages/flags`` op=add flag=read, as ``bot``."""
        fields: list[tuple[str, Any]] = [("messages", json.dumps([message_id])), ("op", "add"), ("flag", "read")]
        return self._post(bot, "messages/flags", fields)


class BotReplySink:
    """A :class:`~zqtwisted.webhooks.replies.ReplySink` that posts as one bot."""

    def __init__(self, api: ZulipApi, bot: BotRow) -> None:
        self.api = api
        self.bot = bot

    def send(self, reply: Reply) -> Deferred[None]:
        return self.api.send(self.bot, reply)


def build_api_client(reactor: IConnectingReactor, settings: ZulipSettings, pool: HTTPConnectionPool) -> WebhookClient:
    """The REST client over the shared ``pool``: no SSRF guard (Zulip's own server), its own deadline."""
    return WebhookClient(
        reactor,
        Agent(reactor, connectTimeout=settings.api_timeout, pool=pool),
        timeout=settings.api_timeout,
        per_host_concurrency=REST_CONCURRENCY,
        user_agent=f"{REST_CLIENT_NAME}/{settings.version or __version__}",
    )
