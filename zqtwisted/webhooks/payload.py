"""Outgoing webhook events and the requests built from them, without I/O.

Zulip's worker looks a bot's services up in its database; zqtwisted has none,
so the event carries them (format in ``docs/outgoing_webhooks.md``).  The
request bodies are built as Zulip's ``GenericOutgoingWebhookService`` and
``SlackOutgoingWebhookService`` build them.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode, urlsplit

from zqtwisted.errors import MalformedEventError

GENERIC = "generic"
SLACK = "slack"
# Our names, and the names Zulip's Service.interface_name() returns.
INTERFACES: Mapping[str, str] = {
    GENERIC: GENERIC,
    "GenericService": GENERIC,
    SLACK: SLACK,
    "SlackOutgoingWebhookService": SLACK,
}

SLACK_DIRECT_MESSAGE_REFUSAL = "Slack outgoing webhooks don't support direct messages."
JSON_CONTENT_TYPE = "application/json"
FORM_CONTENT_TYPE = "application/x-www-form-urlencoded"
COMPLETED_KEY = "completed_services"
# Zulip mode: the message as Zulip's finalize_payload leaves it, for the generic body.
FINALIZED_KEY = "finalized_message"


@dataclass(frozen=True)
class Service:
    """One of the bot's outgoing webhook services."""

    name: str
    base_url: str
    token: str
    interface: str = GENERIC


@dataclass(frozen=True)
class Realm:
    """What the Slack payload and message links need to know of the realm."""

    id: int = 0
    url: str = ""

    @property
    def host(self) -> str:
        """Zulip's ``realm.host``: the host (and port, if any) of the realm's URL."""
        return urlsplit(self.url).netloc if self.url else ""


@dataclass(frozen=True)
class WebhookRequest:
    """A POST to send: URL, body and its content type."""

    service: Service
    url: str
    body: bytes
    content_type: str


@dataclass(frozen=True)
class Refusal:
    """The service will not be called; ``message`` goes to the user after "Failure! "."""

    service: Service
    message: str


# -- validation ------------------------------------------------------------------


def validate_event(event: Any) -> dict[str, Any]:
    """Check an outgoing webhook event; raise MalformedEventError saying what is wrong.

    Returns the event itself (not a copy), so that what the consumer records in
    it travels with a retry.
    """
    if not isinstance(event, dict):
        raise MalformedEventError(f"event is a {type(event).__name__}, not an object")
    _require(event, "user_profile_id", int)
    _require(event, "bot_email", str, non_empty=True)
    _require(event, "bot_full_name", str)
    _require(event, "trigger", str, non_empty=True)
    for key, kind in (("bot_owner_email", str), ("realm_id", int), ("realm_url", str)):
        if key in event and event[key] is not None:
            _require(event, key, kind)
    message = _require(event, "message", dict)
    _validate_message(message)
    services = _require(event, "services", list)
    if not services:
        raise MalformedEventError("services: the bot has no services")
    names = set()
    for i, raw in enumerate(services):
        service = _validate_service(raw, f"services[{i}]")
        if service.name in names:
            raise MalformedEventError(f"services[{i}].name: {service.name!r} appears twice")
        names.add(service.name)
    completed = event.get(COMPLETED_KEY, [])
    if not isinstance(completed, list) or not all(isinstance(n, str) for n in completed):
        raise MalformedEventError(f"{COMPLETED_KEY}: expected a list of service names")
    return event


def _validate_message(message: dict[str, Any]) -> None:
    _require(message, "id", int, "message.")
    _require(message, "content", str, "message.")
    _require(message, "sender_id", int, "message.")
    _require(message, "sender_email", str, "message.")
    _require(message, "sender_full_name", str, "message.")
    kind = _require(message, "type", str, "message.")
    if kind == "stream":
        _require(message, "stream_id", int, "message.")
        _require(message, "display_recipient", str, "message.")
        if not isinstance(message.get("topic", message.get("subject")), str):
            raise MalformedEventError("message.subject: expected a string (or message.topic)")
    elif kind == "private":
        recipients = _require(message, "display_recipient", list, "message.")
        for i, recipient in enumerate(recipients):
            if not isinstance(recipient, dict) or not isinstance(recipient.get("email"), str):
                raise MalformedEventError(f"message.display_recipient[{i}]: expected an object with an email")
    else:
        raise MalformedEventError(f'message.type: expected "stream" or "private", got {kind!r}')


def _validate_service(raw: Any, where: str) -> Service:
    if not isinstance(raw, dict):
        raise MalformedEventError(f"{where}: expected an object")
    name = _require(raw, "name", str, where + ".", non_empty=True)
    base_url = _require(raw, "base_url", str, where + ".", non_empty=True)
    parts = urlsplit(base_url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise MalformedEventError(f"{where}.base_url: expected an http:// or https:// URL")
    try:
        parts.port  # noqa: B018 - raises on a bad port
    except ValueError:
        raise MalformedEventError(f"{where}.base_url: bad port") from None
    token = _require(raw, "token", str, where + ".")
    interface = raw.get("interface", GENERIC)
    if interface not in INTERFACES:
        raise MalformedEventError(f'{where}.interface: expected "generic" or "slack", got {interface!r}')
    return Service(name=name, base_url=base_url, token=token, interface=INTERFACES[interface])


def _require(obj: Mapping[str, Any], key: str, kind: type, prefix: str = "", non_empty: bool = False) -> Any:
    value = obj.get(key)
    ok = isinstance(value, kind) and not (kind is int and isinstance(value, bool))
    if not ok:
        raise MalformedEventError(f"{prefix}{key}: expected {_KIND_NAMES[kind]}, got {_describe(value)}")
    if non_empty and not value:
        raise MalformedEventError(f"{prefix}{key}: must not be empty")
    return value


_KIND_NAMES = {int: "an integer", str: "a string", dict: "an object", list: "a list"}


def _describe(value: Any) -> str:
    return "nothing" if value is None else f"a {type(value).__name__}"


# -- reading a valid event ---------------------------------------------------------


def services_of(event: Mapping[str, Any]) -> list[Service]:
    """The services of a valid event, minus those already done in an earlier try."""
    done = set(event.get(COMPLETED_KEY, ()))
    services = [_validate_service(raw, "service") for raw in event["services"]]
    return [s for s in services if s.name not in done]


def realm_of(event: Mapping[str, Any], default: Realm) -> Realm:
    """The realm named by the event, else the configured one."""
    realm_id = event.get("realm_id")
    realm_url = event.get("realm_url")
    return Realm(
        id=realm_id if isinstance(realm_id, int) else default.id,
        url=(realm_url if isinstance(realm_url, str) and realm_url else default.url).rstrip("/"),
    )


def command_of(event: Mapping[str, Any]) -> str:
    """Zulip's ``event["command"]``: the content of the triggering message."""
    return str(event["message"]["content"])


def topic_of(message: Mapping[str, Any]) -> str:
    """Zulip's ``get_topic_from_message_info``: ``topic`` if present, else ``subject``."""
    return str(message["topic"] if "topic" in message else message["subject"])


# -- payloads ----------------------------------------------------------------------


def build_request(event: Mapping[str, Any], service: Service, realm: Realm) -> WebhookRequest | Refusal:
    """The POST for one service, built as Zulip builds it, or why there is none."""
    if service.interface == SLACK:
        if event["message"]["type"] == "private":
            return Refusal(service, SLACK_DIRECT_MESSAGE_REFUSAL)
        return WebhookRequest(
            service, service.base_url, encode_form(slack_fields(event, service, realm)), FORM_CONTENT_TYPE
        )
    body = json.dumps(generic_payload(event, service)).encode("utf-8")
    return WebhookRequest(service, service.base_url, body, JSON_CONTENT_TYPE)


def generic_payload(event: Mapping[str, Any], service: Service) -> dict[str, Any]:
    """The JSON body of the generic interface (Zulip's field names and order)."""
    return {
        "data": command_of(event),
        "message": event.get(FINALIZED_KEY, event["message"]),
        "bot_email": event["bot_email"],
        "bot_full_name": event["bot_full_name"],
        "token": service.token,
        "trigger": event["trigger"],
    }


def slack_fields(event: Mapping[str, Any], service: Service, realm: Realm) -> list[tuple[str, Any]]:
    """The form fields of Slack's legacy outgoing webhook format, as Zulip fills them."""
    message = event["message"]
    return [
        ("token", service.token),
        ("team_id", f"T{realm.id}"),
        ("team_domain", realm.host),
        ("channel_id", f"C{message['stream_id']}"),
        ("channel_name", message["display_recipient"]),
        ("thread_ts", message.get("timestamp")),
        ("timestamp", message.get("timestamp")),
        ("user_id", f"U{message['sender_id']}"),
        ("user_name", message["sender_full_name"]),
        ("text", command_of(event)),
        ("trigger_word", event["trigger"]),
        ("service_id", event["user_profile_id"]),
    ]


def encode_form(fields: Sequence[tuple[str, Any]]) -> bytes:
    """Form-encode as ``requests`` does: None values left out, others as str, UTF-8."""
    pairs = [
        (key, value if isinstance(value, (str, bytes)) else str(value)) for key, value in fields if value is not None
    ]
    return urlencode(pairs).encode("ascii")
