"""The push payloads of Zulip mode, built from database rows as Zulip builds them (pure).

Follows zerver/lib/push_notifications.py of late 2025: ``get_base_payload``,
``get_message_payload`` (legacy and E2EE forms), ``get_message_payload_apns`` /
``_gcm``, ``get_remove_payload_apns`` / ``_gcm``, the E2EE push requests and their
encryption (libsodium's ``crypto_secretbox``, via PyNaCl).
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass
from typing import Any

from zqtwisted.zulip.avatar import absolute_url, avatar_url
from zqtwisted.zulip.mobile_content import get_mobile_push_content, truncate_content
from zqtwisted.zulip.push_queries import DIRECT_MESSAGE_GROUP, PERSONAL, PushMessage, PushUser
from zqtwisted.zulip.settings import ZulipSettings
from zqtwisted.zulip.urls import fake_email, realm_host, realm_url

EMPTY_TOPIC_NAME = "general chat"  # get_topic_display_name of "" (untranslated)
INACCESSIBLE_USER_NAME = "Unknown user"
REDACTED = "New message"
APNS_BADGE = 0  # get_apns_badge_count: always 0 for now
MAX_APNS_MESSAGE_IDS = 200
MENTION = "mentioned"
WILDCARD_MENTIONS = frozenset(
    {
        "topic_wildcard_mentioned_in_followed_topic",
        "stream_wildcard_mentioned_in_followed_topic",
        "topic_wildcard_mentioned",
        "stream_wildcard_mentioned",
    }
)
LEGACY_TRIGGERS = {
    "wildcard_mentioned": "stream_wildcard_mentioned",
    "followed_topic_wildcard_mentioned": "stream_wildcard_mentioned_in_followed_topic",
    "private_message": "direct_message",
}


@dataclass(frozen=True)
class Group:
    """The mentioned user group: id, name and (for soft reactivation) its member count."""

    id: int
    name: str
    members: int


def topic_display_name(topic: str) -> str:
    return topic or EMPTY_TOPIC_NAME


def base_payload(user: PushUser, settings: ZulipSettings, legacy: bool = True) -> dict[str, Any]:
    """Zulip's ``get_base_payload``."""
    url = realm_url(user.realm_string_id, settings)
    data: dict[str, Any] = {}
    if legacy:
        data["server"] = settings.external_host
        data["realm_id"] = user.realm_id
        data["realm_uri"] = url
    data["realm_url"] = url
    data["realm_name"] = user.realm_name
    data["user_id"] = user.id
    return data


def message_payload(
    user: PushUser,
    message: PushMessage,
    group: Group | None,
    can_access_sender: bool,
    settings: ZulipSettings,
    legacy: bool = True,
) -> dict[str, Any]:
    """Zulip's ``get_message_payload``."""
    data = base_payload(user, settings, legacy)
    data["sender_id"] = message.sender_id
    if legacy:
        if can_access_sender:
            data["sender_email"] = message.sender_email
        else:
            data["sender_email"] = fake_email(message.sender_id, realm_host(user.realm_string_id, settings), settings)
    if group is not None:
        data["mentioned_user_group_id"] = group.id
        data["mentioned_user_group_name"] = group.name
    if message.is_channel_message:
        if legacy:
            data["recipient_type"] = "stream"
            data["stream"] = message.stream_name
            data["stream_id"] = message.recipient_type_id
        else:
            data["recipient_type"] = "channel"
            data["channel_name"] = message.stream_name
            data["channel_id"] = message.recipient_type_id
        data["topic"] = topic_display_name(message.topic)
    elif legacy:
        data["recipient_type"] = "private"
        if message.recipient_type == DIRECT_MESSAGE_GROUP and len(message.recipients) > 2:
            data["pm_users"] = ",".join(str(uid) for uid in sorted(uid for uid, _ in message.recipients))
    else:
        data["recipient_type"] = "direct"
        ids = {uid for uid, _ in message.recipients}
        if len(ids) == 1:
            ids.add(message.sender_id)
        data["recipient_user_ids"] = sorted(ids)
    return data


def apns_alert_title(message: PushMessage) -> str:
    if message.recipient_type == DIRECT_MESSAGE_GROUP and len(message.recipients) > 2:
        return ", ".join(sorted(name for _, name in message.recipients))
    if message.is_channel_message:
        return f"#{message.stream_name} > {topic_display_name(message.topic)}"
    return message.sender_full_name


def apns_alert_subtitle(message: PushMessage, trigger: str, group_name: str | None, can_access_sender: bool) -> str:
    name = message.sender_full_name if can_access_sender else INACCESSIBLE_USER_NAME
    if trigger == MENTION:
        return f"{name} mentioned @{group_name}:" if group_name is not None else f"{name} mentioned you:"
    if trigger in WILDCARD_MENTIONS:
        return f"{name} mentioned everyone:"
    if message.recipient_type == PERSONAL:
        return ""
    if message.recipient_type == DIRECT_MESSAGE_GROUP and len(message.recipients) <= 2:
        return ""
    return name + ":"


def notification_text(message: PushMessage) -> str:
    content, _ = truncate_content(get_mobile_push_content(message.rendered_content or ""))
    return content


def message_payload_apns(
    payload: dict[str, Any], message: PushMessage, trigger: str, can_access: bool
) -> dict[str, Any]:
    """Zulip's ``get_message_payload_apns``."""
    zulip = copy.deepcopy(payload)
    zulip["message_ids"] = [message.id]
    zulip.pop("server", None)
    zulip.pop("realm_id", None)
    return {
        "alert": {
            "title": apns_alert_title(message),
            "subtitle": apns_alert_subtitle(message, trigger, zulip.get("mentioned_user_group_name"), can_access),
            "body": notification_text(message),
        },
        "sound": "default",
        "badge": APNS_BADGE,
        "custom": {"zulip": zulip},
    }


def message_payload_gcm(
    payload: dict[str, Any],
    user: PushUser,
    message: PushMessage,
    can_access: bool,
    settings: ZulipSettings,
    salt: str = "",
    legacy: bool = True,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Zulip's ``get_message_payload_gcm``."""
    if can_access:
        relative = avatar_url(
            user_id=message.sender_id,
            realm_id=message.sender_realm_id,
            email=message.sender_delivery_email,
            avatar_source=message.sender_avatar_source,
            avatar_version=message.sender_avatar_version,
            settings=settings,
            salt=salt,
        )
        sender_avatar_url = absolute_url(realm_url(user.realm_string_id, settings), relative)
        sender_name = message.sender_full_name
    else:
        sender_avatar_url = settings.inaccessible_avatar_url
        sender_name = INACCESSIBLE_USER_NAME
    data = copy.deepcopy(payload)
    if legacy:
        data["event"] = "message"
        data["zulip_message_id"] = message.id
    else:
        data["type"] = "message"
        data["message_id"] = message.id
    data.update(
        time=message.date_sent,
        content=notification_text(message),
        sender_full_name=sender_name,
        sender_avatar_url=sender_avatar_url,
    )
    return data, {"priority": "high"}


def remove_payload_gcm(
    user: PushUser, message_ids: list[int], settings: ZulipSettings, legacy: bool = True
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Zulip's ``get_remove_payload_gcm``."""
    data = base_payload(user, settings, legacy)
    if legacy:
        data["event"] = "remove"
        data["zulip_message_ids"] = ",".join(str(i) for i in message_ids)
    else:
        data["type"] = "remove"
        data["message_ids"] = message_ids
    return data, {"priority": "normal"}


def remove_payload_apns(user: PushUser, message_ids: list[int], settings: ZulipSettings) -> dict[str, Any]:
    """Zulip's ``get_remove_payload_apns``."""
    zulip = base_payload(user, settings)
    zulip.update(event="remove", zulip_message_ids=",".join(str(i) for i in message_ids))
    zulip.pop("server", None)
    zulip.pop("realm_id", None)
    return {"badge": APNS_BADGE, "custom": {"zulip": zulip}}


def redact(apns: dict[str, Any], gcm: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """``require_e2ee_push_notifications``: legacy clients get "New message", not the content."""
    if gcm and gcm.get("event") != "remove":
        gcm = copy.deepcopy(gcm)
        gcm["content"] = REDACTED
    if apns and apns["custom"]["zulip"].get("event") != "remove":
        apns = copy.deepcopy(apns)
        apns["alert"]["body"] = REDACTED
    return apns, gcm


def encrypt(payload: dict[str, Any], push_key: bytes) -> str:
    """Zulip's ``get_encrypted_data``: secretbox over the JSON, base64 (key: 0x31 then the secret)."""
    from nacl.encoding import Base64Encoder
    from nacl.secret import SecretBox

    if push_key[:1] != b"\x31":
        raise ValueError("unknown push key algorithm")
    data = json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode()
    return str(SecretBox(push_key[1:]).encrypt(data, encoder=Base64Encoder).decode("utf-8"))


def e2ee_push_requests(
    payload: dict[str, Any], devices: tuple[tuple[str, int, bytes, int], ...]
) -> list[dict[str, Any]]:
    """The ``push_requests`` of ``push/e2ee/notify`` (Zulip's ``send_push_notifications``)."""
    removal = payload.get("type") == "remove"
    requests: list[dict[str, Any]] = []
    for token_kind, account_id, key, device_id in devices:
        encrypted = encrypt(payload, key)
        if token_kind == "apns":
            requests.append(
                {
                    "device_id": device_id,
                    "http_headers": {
                        "apns_priority": 5 if removal else 10,
                        "apns_push_type": "background" if removal else "alert",
                    },
                    "payload": {
                        "push_account_id": account_id,
                        "encrypted_data": encrypted,
                        "aps": {"mutable-content": 1, "alert": {"title": "New notification"}},
                    },
                }
            )
        else:
            requests.append(
                {
                    "device_id": device_id,
                    "fcm_priority": "normal" if removal else "high",
                    "payload": {"push_account_id": account_id, "encrypted_data": encrypted},
                }
            )
    return requests
