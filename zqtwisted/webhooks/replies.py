"""Where bot replies, failure messages and bot-owner notices go.

Zulip posts them itself (``send_response_message``, ``fail_with_message``,
``notify_bot_owner``).  zqtwisted builds the same messages as :class:`Reply`
values (pure) and hands them to a pluggable sink:

* :class:`QueueReplySink` (default) publishes a reply event to the queue
  ``outgoing_webhook_responses`` for the application to post;
* :class:`RestReplySink` posts through Zulip's REST API as the bot.
"""

from __future__ import annotations

import base64
import json
import urllib.parse
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from twisted.internet.defer import Deferred, fail, succeed
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.client import Agent, HTTPConnectionPool

from zqtwisted._version import __version__
from zqtwisted.errors import PermanentError, TransientError
from zqtwisted.runtime.consumer import JsonPublisher
from zqtwisted.runtime.reactor import IConnectingReactor
from zqtwisted.webhooks.client import PoolOptions, WebhookClient, WebhookError, WebhookResponse
from zqtwisted.webhooks.payload import FORM_CONTENT_TYPE, encode_form, topic_of
from zqtwisted.webhooks.response import decode_text
from zqtwisted.webhooks.settings import OutgoingWebhookSettings

REPLY = "reply"
FAILURE = "failure"
OWNER_NOTICE = "bot_owner_notice"
REPLY_EVENT_TYPE = "outgoing_webhook_response"
REST_CLIENT_NAME = "OutgoingWebhookResponse"
BOT_UNAVAILABLE = "Bot is unavailable"
# Requests in flight to Zulip's API at most (the REST sink's per-host cap).
REST_CONCURRENCY = 100


@dataclass(frozen=True)
class Recipient:
    """Where a reply goes: a stream and topic, a direct message, or the bot's owner."""

    type: str  # "stream" | "private" | "bot_owner"
    stream: str | None = None
    stream_id: int | None = None
    topic: str | None = None
    emails: tuple[str, ...] = ()
    # The members' user ids, when known (Zulip mode addresses direct messages by id).
    user_ids: tuple[int, ...] = ()

    def to_json(self) -> dict[str, Any]:
        if self.type == "stream":
            return {"type": "stream", "stream": self.stream, "stream_id": self.stream_id, "topic": self.topic}
        if self.type == "private":
            return {"type": "private", "emails": list(self.emails)}
        return {"type": "bot_owner"}


@dataclass(frozen=True)
class Reply:
    """A message the bot sends in answer to an outgoing webhook event."""

    kind: str  # REPLY | FAILURE | OWNER_NOTICE
    bot_user_id: int
    bot_email: str
    message_id: int
    recipient: Recipient
    content: str
    widget_content: Any = None
    service_name: str | None = None

    def to_event(self) -> dict[str, Any]:
        """The reply event published to ``outgoing_webhook_responses``."""
        return {
            "type": REPLY_EVENT_TYPE,
            "kind": self.kind,
            "bot_user_id": self.bot_user_id,
            "bot_email": self.bot_email,
            "service_name": self.service_name,
            "message_id": self.message_id,
            "recipient": self.recipient.to_json(),
            "content": self.content,
            "widget_content": self.widget_content,
        }


# -- building replies (pure) ----------------------------------------------------


def conversation_of(message: Mapping[str, Any]) -> Recipient:
    """Zulip's ``send_response_message`` addressing: the stream and topic, or the DM's members."""
    if message["type"] == "stream":
        return Recipient(
            "stream", stream=message["display_recipient"], stream_id=message.get("stream_id"), topic=topic_of(message)
        )
    emails = tuple(r["email"] for r in message["display_recipient"]) or (message["sender_email"],)
    ids = tuple(r["id"] for r in message["display_recipient"] if isinstance(r.get("id"), int))
    return Recipient("private", emails=emails, user_ids=ids)


def bot_reply(
    event: Mapping[str, Any], content: str, widget_content: Any = None, service_name: str | None = None
) -> Reply:
    """The bot's answer, posted where the triggering message was."""
    return _reply(event, REPLY, conversation_of(event["message"]), content, widget_content, service_name)


def failure_reply(event: Mapping[str, Any], failure_message: str, service_name: str | None = None) -> Reply:
    """Zulip's ``fail_with_message``: "Failure! {message}" where the message was."""
    return _reply(event, FAILURE, conversation_of(event["message"]), "Failure! " + failure_message, None, service_name)


def owner_notice(
    event: Mapping[str, Any],
    realm_url: str,
    *,
    status_code: int | None = None,
    response_content: str | bytes | None = None,
    failure_message: str | None = None,
    exception: BaseException | None = None,
    service_name: str | None = None,
) -> Reply:
    """Zulip's ``notify_bot_owner``: a direct message from the bot to its owner."""
    url = message_url(realm_url, event["message"])
    text = f"[A message]({url}) to your bot @_**{event['bot_full_name']}** triggered an outgoing webhook."
    if exception is not None:
        text += (
            "\nWhen trying to send a request to the webhook service, an exception "
            f"of type {type(exception).__name__} occurred:\n```\n{exception}\n```"
        )
    elif failure_message:
        text += "\n" + failure_message
    elif status_code == 407:
        text += "\nThe URL configured for the webhook is for a private or disallowed network."
    elif status_code:
        text += f"\nThe webhook got a response with status code *{status_code}*."
    if response_content:
        text += f"\nThe response contains the following payload:\n```\n{response_content!r}\n```"
    owner = event.get("bot_owner_email")
    owner_id = event.get("bot_owner_id")
    if owner or isinstance(owner_id, int):
        recipient = Recipient(
            "private", emails=(owner,) if owner else (), user_ids=(owner_id,) if isinstance(owner_id, int) else ()
        )
    else:
        recipient = Recipient("bot_owner")
    return _reply(event, OWNER_NOTICE, recipient, text, None, service_name)


def _reply(
    event: Mapping[str, Any], kind: str, recipient: Recipient, content: str, widget: Any, service_name: str | None
) -> Reply:
    return Reply(
        kind=kind,
        bot_user_id=event["user_profile_id"],
        bot_email=event["bot_email"],
        message_id=event["message"]["id"],
        recipient=recipient,
        content=content,
        widget_content=widget,
        service_name=service_name,
    )


_HASH_REPLACEMENTS = {"%": ".", "(": ".28", ")": ".29", ".": ".2E"}


def encode_hash_component(text: str) -> str:
    """Zulip's narrow-URL encoding of one hash component."""
    return "".join(_HASH_REPLACEMENTS.get(c, c) for c in urllib.parse.quote(text, safe="*"))


def message_url(realm_url: str, message: Mapping[str, Any]) -> str:
    """Zulip's ``message_link_url`` (relative to the realm when its URL is unknown)."""
    if message["type"] == "stream":
        channel = f"{message['stream_id']}-{encode_hash_component(str(message['display_recipient']).replace(' ', '-'))}"
        parts = [realm_url, "#narrow", "channel", channel, "topic", encode_hash_component(topic_of(message))]
    else:
        ids = sorted(r["id"] for r in message["display_recipient"] if isinstance(r.get("id"), int))
        ids = ids or [message["sender_id"]]
        slug = ",".join(str(i) for i in ids) + ("-group" if len(ids) >= 3 else "")
        parts = [realm_url, "#narrow", "dm", slug]
    return "/".join([*parts, "near", str(message["id"])])


# -- sinks --------------------------------------------------------------------------


class ReplySink(Protocol):
    def send(self, reply: Reply) -> Deferred[None]:
        """Deliver ``reply``; fail with TransientError to have the event retried."""


class ReplyRejected(PermanentError):
    """Zulip refused the reply (4xx): trying again would not help."""


class QueueReplySink:
    """Publishes reply events (``Reply.to_event``) for the application to post."""

    def __init__(self, publisher: JsonPublisher, queue: str = "outgoing_webhook_responses") -> None:
        self._publisher = publisher
        self.queue = queue

    def send(self, reply: Reply) -> Deferred[None]:
        d = self._publisher.publish_json(self.queue, reply.to_event())

        def unpublished(failure: Failure) -> Failure:
            return Failure(TransientError(f"could not publish the reply to {self.queue}: {failure.getErrorMessage()}"))

        return d.addErrback(unpublished)


class RestReplySink:
    """Posts replies with Zulip's ``POST /api/v1/messages``, authenticated as the bot."""

    log = Logger()

    def __init__(self, client: WebhookClient, site: str, api_keys: Mapping[str, str]) -> None:
        self._client = client
        self._url = site.rstrip("/") + "/api/v1/messages"
        self._keys = api_keys

    def send(self, reply: Reply) -> Deferred[None]:
        fields = rest_fields(reply)
        if fields is None:
            self.log.warn(
                "No bot_owner_email in the event: notice for the owner of {bot} not sent", bot=reply.bot_email
            )
            return succeed(None)
        key = self._keys.get(reply.bot_email)
        if key is None:
            return fail(ReplyRejected(f"no API key configured for bot {reply.bot_email}"))
        token = base64.b64encode(f"{reply.bot_email}:{key}".encode()).decode("ascii")
        d = self._client.post(
            self._url, encode_form(fields), FORM_CONTENT_TYPE, headers={"Authorization": f"Basic {token}"}
        )
        return d.addCallbacks(self._posted, self._not_posted)

    def _posted(self, response: WebhookResponse) -> None:
        return reply_posted(response)

    def _not_posted(self, failure: Failure) -> Failure:
        return reply_not_posted(failure)


def reply_posted(response: WebhookResponse) -> None:
    """Zulip's answer to ``POST /api/v1/messages``: 2xx done, 5xx/429 retry, other 4xx rejected."""
    if 200 <= response.status <= 299:
        return None
    text = decode_text(response.body, response.content_type)
    try:
        detail = json.loads(text).get("msg", text)
    except (ValueError, AttributeError):
        detail = text
    message = f"Zulip answered {response.status} to the reply: {str(detail)[:200]}"
    if response.status >= 500 or response.status == 429:
        raise TransientError(message)
    raise ReplyRejected(message)


def reply_not_posted(failure: Failure) -> Failure:
    """A transport failure of a REST call: retried."""
    if failure.check(WebhookError):
        return Failure(TransientError(f"could not post the reply: {failure.getErrorMessage()}"))
    return failure


def rest_fields(reply: Reply) -> list[tuple[str, Any]] | None:
    """The form fields of ``POST /api/v1/messages`` for ``reply`` (None: no address)."""
    recipient = reply.recipient
    if recipient.type == "stream":
        return [("type", "stream"), ("to", recipient.stream), ("topic", recipient.topic), ("content", reply.content)]
    if recipient.type == "private":
        return [("type", "private"), ("to", json.dumps(list(recipient.emails))), ("content", reply.content)]
    return None


def rest_pool_options(settings: OutgoingWebhookSettings) -> PoolOptions:
    """How the REST sink's shared pool keeps its connections to Zulip."""
    return PoolOptions(max_per_host=REST_CONCURRENCY, idle_timeout=settings.idle_connection_timeout)


def build_rest_client(
    reactor: IConnectingReactor, settings: OutgoingWebhookSettings, pool: HTTPConnectionPool
) -> WebhookClient:
    """The client of the REST sink, over the shared ``pool`` (its owner closes it)."""
    return WebhookClient(
        reactor,
        Agent(reactor, connectTimeout=settings.rest_timeout, pool=pool),
        timeout=settings.rest_timeout,
        per_host_concurrency=REST_CONCURRENCY,
        user_agent=f"{REST_CLIENT_NAME}/{__version__}",
    )


def build_reply_sink(
    settings: OutgoingWebhookSettings, publisher: JsonPublisher, rest_client: Callable[[], WebhookClient]
) -> ReplySink:
    """The sink the configuration asks for; ``rest_client`` is called only for the REST sink."""
    if settings.reply_sink == "rest":
        return RestReplySink(rest_client(), settings.site, settings.api_keys())
    return QueueReplySink(publisher, settings.reply_queue)
