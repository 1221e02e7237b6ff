"""Push events -> the APNs and FCM payloads Zulip sends through its push bouncer (pure).

Two events travel on ``missedmessage_mobile_notifications`` (a missing ``type``
means ``add``)::

    {"type": "add", "user_profile_id": 10, "message_id": 501, "trigger": "direct_message",
     "mentioned_user_group_id": null, "user_uuid": "...", "realm_uri": "https://chat.example.com",
     "realm_name": "Example", "message": {"id": 501, "type": "private", ...}}
    {"type": "remove", "user_profile_id": 10, "user_uuid": "...", "message_ids": [501, 502]}

Zulip's worker reads the message and the user from its database; zqtwisted has
none, so an ``add`` event carries what the payloads need.  :func:`parse_event`
checks an event (raising :class:`MalformedEventError` with the reason) and
:func:`build_notification` turns it into the bouncer's request, field by field as
Zulip's ``get_message_payload_apns`` / ``_gcm`` and ``get_remove_payload_apns`` /
``_gcm`` build them.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, TypeGuard
from urllib.parse import urlsplit

from zqtwisted.errors import MalformedEventError
from zqtwisted.push.settings import PushSettings

MAX_CONTENT_CHARS = 200  # Zulip's truncate_content
MAX_REMOVE_IDS = 200  # Zulip's MAX_APNS_MESSAGE_IDS: APNs payloads are limited to 4 KB
REDACTED_CONTENT = "New message"  # PUSH_NOTIFICATION_REDACT_CONTENT
EMPTY_TOPIC_NAME = "general chat"  # Message.EMPTY_TOPIC_FALLBACK_NAME
APNS_BADGE = 0  # Zulip's get_apns_badge_count: always 0 for now

MENTION = "mentioned"
WILDCARD_MENTIONS = frozenset(
    {
        "topic_wildcard_mentioned",
        "stream_wildcard_mentioned",
        "topic_wildcard_mentioned_in_followed_topic",
        "stream_wildcard_mentioned_in_followed_topic",
    }
)
# Triggers renamed by Zulip; events published by older servers still use the old names.
LEGACY_TRIGGERS = {
    "wildcard_mentioned": "stream_wildcard_mentioned",
    "followed_topic_wildcard_mentioned": "stream_wildcard_mentioned_in_followed_topic",
    "private_message": "direct_message",
}
MESSAGE_TYPES = {"stream": "stream", "channel": "stream", "private": "private", "direct": "private"}


@dataclass(frozen=True)
class Realm:
    url: str
    name: str
    server: str
    id: int | None = None
    uuid: str | None = None


@dataclass(frozen=True)
class Message:
    id: int
    type: str  # "stream" or "private"
    sender_id: int
    sender_email: str
    sender_full_name: str
    content: str
    timestamp: int
    sender_avatar_url: str | None = None
    stream_name: str | None = None
    stream_id: int | None = None
    topic: str | None = None
    # Direct messages: everybody in the conversation, as (user id, full name).
    recipients: tuple[tuple[int, str], ...] = ()

    @property
    def is_group_dm(self) -> bool:
        """A direct message to more than two people (Zulip's group DM with > 2 recipients)."""
        return self.type == "private" and len(self.recipients) > 2


@dataclass(frozen=True)
class AddEvent:
    user_id: int
    user_uuid: str | None
    realm: Realm
    trigger: str
    message: Message
    mentioned_user_group_id: int | None = None
    mentioned_user_group_name: str | None = None

    kind = "add"

    @property
    def message_ids(self) -> tuple[int, ...]:
        return (self.message.id,)


@dataclass(frozen=True)
class RemoveEvent:
    user_id: int
    user_uuid: str | None
    realm: Realm
    message_ids: tuple[int, ...]

    kind = "remove"


PushEvent = AddEvent | RemoveEvent


@dataclass(frozen=True)
class Notification:
    """What goes to the bouncer for one event."""

    kind: str
    user_id: int
    user_uuid: str | None
    realm_uuid: str | None
    message_ids: tuple[int, ...]
    apns_payload: dict[str, Any] = field(default_factory=dict)
    gcm_payload: dict[str, Any] = field(default_factory=dict)
    gcm_options: dict[str, Any] = field(default_factory=dict)

    def request_body(self) -> dict[str, Any]:
        """The JSON body of ``POST /api/v1/remotes/push/notify`` (Zulip's send_notifications_to_bouncer)."""
        body: dict[str, Any] = {}
        if self.user_uuid is not None:
            body["user_uuid"] = self.user_uuid
        body["user_id"] = self.user_id
        if self.realm_uuid is not None and self.user_uuid is not None:
            # The bouncer insists that a server sending realm_uuid also sends user_uuid.
            body["realm_uuid"] = self.realm_uuid
        body["apns_payload"] = self.apns_payload
        body["gcm_payload"] = self.gcm_payload
        body["gcm_options"] = self.gcm_options
        return body


# -- validation -------------------------------------------------------------------------


def parse_event(event: Mapping[str, Any], defaults: PushSettings | None = None) -> PushEvent:
    """Check ``event``; raise MalformedEventError naming the first bad field."""
    defaults = defaults or PushSettings()
    if not isinstance(event, Mapping):
        raise MalformedEventError(f"expected a JSON object, got {type(event).__name__}")
    kind = event.get("type", "add")
    if kind is None:
        kind = "add"
    if kind not in ("add", "remove"):
        raise MalformedEventError(f'type: expected "add" or "remove", got {kind!r}')
    user_id = _int(event, "user_profile_id")
    user_uuid = _opt_str(event, "user_uuid", allow_empty=False)
    realm = _realm(event, defaults)
    if kind == "remove":
        return RemoveEvent(user_id, user_uuid, realm, _message_ids(event))
    message = _message(event)
    trigger = _str(event, "trigger", allow_empty=False)
    group_id = _opt_int(event, "mentioned_user_group_id")
    group_name = _opt_str(event, "mentioned_user_group_name")
    if group_id is not None and group_name is None:
        raise MalformedEventError("mentioned_user_group_name: required with mentioned_user_group_id")
    return AddEvent(
        user_id=user_id,
        user_uuid=user_uuid,
        realm=realm,
        trigger=LEGACY_TRIGGERS.get(trigger, trigger),
        message=message,
        mentioned_user_group_id=group_id,
        mentioned_user_group_name=group_name if group_id is not None else None,
    )


def _realm(event: Mapping[str, Any], defaults: PushSettings) -> Realm:
    url = _opt_str(event, "realm_url", allow_empty=False) or _opt_str(event, "realm_uri", allow_empty=False)
    url = url or defaults.realm_url
    if not url:
        raise MalformedEventError("realm_uri: missing (and [push] realm_url is not set)")
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise MalformedEventError(f"realm_uri: expected an http(s):// URL, got {url!r}")
    name = _opt_str(event, "realm_name")
    realm_id = _opt_int(event, "realm_id")
    if realm_id is None and defaults.realm_id:
        realm_id = defaults.realm_id
    return Realm(
        url=url.rstrip("/"),
        name=name if name is not None else defaults.realm_name,
        server=defaults.server or parts.netloc.rpartition("@")[2],
        id=realm_id,
        uuid=_opt_str(event, "realm_uuid", allow_empty=False) or defaults.realm_uuid or None,
    )


def _message_ids(event: Mapping[str, Any]) -> tuple[int, ...]:
    if "message_ids" not in event and "message_id" in event:
        return (_int(event, "message_id"),)  # a legacy event from before an upgrade
    ids = event.get("message_ids")
    if not isinstance(ids, list) or not ids:
        raise MalformedEventError("message_ids: expected a non-empty list of message ids")
    if not all(_is_int(i) for i in ids):
        raise MalformedEventError("message_ids: expected a non-empty list of message ids")
    return tuple(ids)


def _message(event: Mapping[str, Any]) -> Message:
    raw = event.get("message")
    if not isinstance(raw, Mapping):
        raise MalformedEventError("message: expected an object with the message's fields")
    message_id = _int(raw, "id", "message.id")
    if "message_id" in event and _int(event, "message_id") != message_id:
        raise MalformedEventError(f"message_id: {event['message_id']} differs from message.id {message_id}")
    raw_type = raw.get("type")
    if raw_type not in MESSAGE_TYPES:
        raise MalformedEventError(f'message.type: expected "stream" or "private", got {raw_type!r}')
    kind = MESSAGE_TYPES[raw_type]
    timestamp = raw.get("timestamp")
    if not (_is_int(timestamp) or isinstance(timestamp, float)):
        raise MalformedEventError("message.timestamp: expected seconds since the epoch")
    fields: dict[str, Any] = {}
    if kind == "stream":
        fields["stream_name"] = _str(raw, "stream_name", "message.stream_name", allow_empty=False)
        fields["stream_id"] = _opt_int(raw, "stream_id", "message.stream_id")
        fields["topic"] = _str(raw, "topic", "message.topic")
    else:
        fields["recipients"] = _recipients(raw.get("display_recipient"))
    return Message(
        id=message_id,
        type=kind,
        sender_id=_int(raw, "sender_id", "message.sender_id"),
        sender_email=_str(raw, "sender_email", "message.sender_email", allow_empty=False),
        sender_full_name=_str(raw, "sender_full_name", "message.sender_full_name"),
        content=_str(raw, "content", "message.content"),
        timestamp=int(timestamp),
        sender_avatar_url=_opt_str(raw, "sender_avatar_url", "message.sender_avatar_url", allow_empty=False),
        **fields,
    )


def _recipients(value: Any) -> tuple[tuple[int, str], ...]:
    """``display_recipient`` of a direct message: a list of {"id", "full_name", ...}; optional."""
    if value is None:
        return ()
    path = "message.display_recipient"
    if not isinstance(value, list):
        raise MalformedEventError(f'{path}: expected a list of {{"id", "full_name"}} objects')
    recipients = []
    for i, item in enumerate(value):
        if not isinstance(item, Mapping):
            raise MalformedEventError(f'{path}[{i}]: expected an object with "id" and "full_name"')
        recipients.append((_int(item, "id", f"{path}[{i}].id"), _str(item, "full_name", f"{path}[{i}].full_name")))
    return tuple(recipients)


def _is_int(value: Any) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool)


def _int(data: Mapping[str, Any], key: str, path: str = "") -> int:
    value = data.get(key)
    if not _is_int(value):
        raise MalformedEventError(f"{path or key}: expected an integer, got {value!r}")
    return value


def _opt_int(data: Mapping[str, Any], key: str, path: str = "") -> int | None:
    return None if data.get(key) is None else _int(data, key, path)


def _str(data: Mapping[str, Any], key: str, path: str = "", allow_empty: bool = True) -> str:
    value = data.get(key)
    if not isinstance(value, str) or (not allow_empty and not value):
        raise MalformedEventError(f"{path or key}: expected a{'' if allow_empty else ' non-empty'} string")
    return value


def _opt_str(data: Mapping[str, Any], key: str, path: str = "", allow_empty: bool = True) -> str | None:
    return None if data.get(key) is None else _str(data, key, path, allow_empty)


# -- payloads ---------------------------------------------------------------------------


def build_notification(event: PushEvent, redact_content: bool = False) -> Notification:
    """The bouncer request for ``event``."""
    if isinstance(event, RemoveEvent):
        ids = sorted(event.message_ids)[-MAX_REMOVE_IDS:]  # Zulip keeps the newest
        gcm_payload, gcm_options = remove_payload_gcm(event, ids)
        apns_payload = remove_payload_apns(event, ids)
        message_ids = tuple(ids)
    else:
        content = REDACTED_CONTENT if redact_content else event.message.content
        apns_payload = message_payload_apns(event, content)
        gcm_payload, gcm_options = message_payload_gcm(event, content)
        message_ids = event.message_ids
    return Notification(
        kind=event.kind,
        user_id=event.user_id,
        user_uuid=event.user_uuid,
        realm_uuid=event.realm.uuid,
        message_ids=message_ids,
        apns_payload=apns_payload,
        gcm_payload=gcm_payload,
        gcm_options=gcm_options,
    )


def truncate_content(content: str) -> tuple[str, bool]:
    """At most 200 characters, then U+2026 (Zulip's truncate_content); and whether it was cut."""
    if len(content) <= MAX_CONTENT_CHARS:
        return content, False
    return content[:MAX_CONTENT_CHARS] + "\u2026", True


def base_payload(user_id: int, realm: Realm) -> dict[str, Any]:
    """Fields of every payload (Zulip's get_base_payload)."""
    data: dict[str, Any] = {"server": realm.server}
    if realm.id is not None:
        data["realm_id"] = realm.id
    data["realm_uri"] = realm.url
    data["realm_url"] = realm.url
    data["realm_name"] = realm.name
    data["user_id"] = user_id
    return data


def message_payload(event: AddEvent) -> dict[str, Any]:
    """Fields of every ``message`` payload (Zulip's get_message_payload)."""
    message = event.message
    data = base_payload(event.user_id, event.realm)
    data["sender_id"] = message.sender_id
    data["sender_email"] = message.sender_email
    data["time"] = message.timestamp
    if event.mentioned_user_group_id is not None:
        data["mentioned_user_group_id"] = event.mentioned_user_group_id
        data["mentioned_user_group_name"] = event.mentioned_user_group_name
    if message.type == "stream":
        data["recipient_type"] = "stream"
        data["stream"] = message.stream_name
        if message.stream_id is not None:
            data["stream_id"] = message.stream_id
        data["topic"] = topic_display_name(message.topic or "")
    else:
        data["recipient_type"] = "private"
        if message.is_group_dm:
            data["pm_users"] = ",".join(str(uid) for uid in sorted(uid for uid, _ in message.recipients))
    return data


def topic_display_name(topic: str) -> str:
    return topic or EMPTY_TOPIC_NAME


def apns_alert_title(message: Message) -> str:
    """The first bold line of an iOS notification."""
    if message.is_group_dm:
        return ", ".join(sorted(name for _, name in message.recipients))
    if message.type == "stream":
        return f"#{message.stream_name} > {topic_display_name(message.topic or '')}"
    return message.sender_full_name


def apns_alert_subtitle(message: Message, trigger: str, mentioned_user_group_name: str | None = None) -> str:
    """The second bold line of an iOS notification."""
    name = message.sender_full_name
    if trigger == MENTION:
        if mentioned_user_group_name is not None:
            return f"{name} mentioned @{mentioned_user_group_name}:"
        return f"{name} mentioned you:"
    if trigger in WILDCARD_MENTIONS:
        return f"{name} mentioned everyone:"
    if message.type == "private" and not message.is_group_dm:
        return ""
    return name + ":"


def message_payload_apns(event: AddEvent, content: str) -> dict[str, Any]:
    """A ``message`` payload for iOS (Zulip's get_message_payload_apns)."""
    zulip_data = message_payload(event)
    zulip_data["message_ids"] = [event.message.id]
    body, _ = truncate_content(content)
    return {
        "alert": {
            "title": apns_alert_title(event.message),
            "subtitle": apns_alert_subtitle(event.message, event.trigger, event.mentioned_user_group_name),
            "body": body,
        },
        "sound": "default",
        "badge": APNS_BADGE,
        "custom": {"zulip": zulip_data},
    }


def message_payload_gcm(event: AddEvent, content: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """A ``message`` payload and its options for Android (Zulip's get_message_payload_gcm)."""
    message = event.message
    data = message_payload(event)
    body, truncated = truncate_content(content)
    data["event"] = "message"
    data["zulip_message_id"] = message.id  # message_id is reserved by FCM
    data["content"] = body
    data["content_truncated"] = truncated
    data["sender_full_name"] = message.sender_full_name
    data["sender_avatar_url"] = message.sender_avatar_url or gravatar_url(message.sender_email)
    return data, {"priority": "high"}


def remove_payload_gcm(event: RemoveEvent, message_ids: list[int]) -> tuple[dict[str, Any], dict[str, Any]]:
    """A ``remove`` payload and its options for Android (Zulip's get_remove_payload_gcm)."""
    data = base_payload(event.user_id, event.realm)
    data["event"] = "remove"
    data["zulip_message_ids"] = ",".join(str(i) for i in message_ids)
    # Clients older than 2019-02-13 read only zulip_message_id.
    data["zulip_message_id"] = message_ids[0]
    return data, {"priority": "normal"}


def remove_payload_apns(event: RemoveEvent, message_ids: list[int]) -> dict[str, Any]:
    """A ``remove`` payload for iOS (Zulip's get_remove_payload_apns)."""
    zulip_data = base_payload(event.user_id, event.realm)
    zulip_data["event"] = "remove"
    zulip_data["zulip_message_ids"] = ",".join(str(i) for i in message_ids)
    return {"badge": APNS_BADGE, "custom": {"zulip": zulip_data}}


def gravatar_url(email: str, version: int = 1) -> str:
    """Zulip's default avatar of a user without an uploaded one (gravatar, identicon)."""
    digest = hashlib.md5(email.lower().encode(), usedforsecurity=False).hexdigest()
    return f"https://secure.gravatar.com/avatar/{digest}?d=identicon&version={version}"
