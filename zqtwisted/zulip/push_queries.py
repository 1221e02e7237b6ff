"""The named queries of mobile push in Zulip mode.

Each follows the ORM code of Zulip's ``handle_push_notification``,
``handle_remove_push_notification``, ``send_notifications_to_bouncer``,
``send_push_notifications`` and ``handle_register_push_device_to_bouncer``
(zerver/lib/push_notifications.py, zerver/lib/push_registration.py).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

ROLE_GUEST = 600
STREAM = 2  # Recipient.STREAM
PERSONAL = 1
DIRECT_MESSAGE_GROUP = 3
READ = 1  # UserMessage.flags.read
ACTIVE_MOBILE_PUSH_NOTIFICATION = 1 << 12  # UserMessage.flags.active_mobile_push_notification
APNS = 1  # PushDeviceToken.APNS
FCM = 2  # PushDeviceToken.FCM


@dataclass(frozen=True)
class PushUser:
    """The user a notification is for, with their realm."""

    id: int
    uuid: str
    is_active: bool
    is_bot: bool
    role: int
    long_term_idle: bool
    enable_offline_push_notifications: bool
    enable_online_push_notifications: bool
    realm_id: int
    realm_string_id: str
    realm_name: str
    realm_uuid: str
    require_e2ee_push_notifications: bool


@dataclass(frozen=True)
class PushMessage:
    """A message and its sender, channel and conversation, as the payloads need them."""

    id: int
    sender_id: int
    sender_email: str
    sender_delivery_email: str
    sender_full_name: str
    sender_avatar_source: str
    sender_avatar_version: int
    sender_realm_id: int
    realm_id: int
    recipient_id: int
    recipient_type: int
    recipient_type_id: int
    topic: str
    rendered_content: str | None
    date_sent: int
    stream_name: str | None = None
    # Direct messages: the conversation's members as (id, full name), by id (Zulip's display recipient).
    recipients: tuple[tuple[int, str], ...] = ()

    @property
    def is_channel_message(self) -> bool:
        return self.recipient_type == STREAM


@dataclass(frozen=True)
class Claim:
    """What ``claim_push_message`` found: "claimed", "read", "no_access", "archived" or "no_usermessage"."""

    status: str
    message: PushMessage | None = None


@dataclass(frozen=True)
class Devices:
    """A user's registered devices: legacy tokens (kind, token, ios_app_id) and E2EE push devices."""

    apple: tuple[tuple[str, str | None], ...] = ()
    android: tuple[str, ...] = ()
    # (token_kind "apns"/"fcm", push_account_id, push_key, bouncer_device_id)
    e2ee: tuple[tuple[str, int, bytes, int], ...] = field(default=())


def fetch_push_user(cursor: Any, user_id: int) -> PushUser | None:
    """Zulip's ``get_user_profile_by_id`` with the realm fields the payloads use."""
    cursor.execute(
        "SELECT u.id, u.uuid::text, u.is_active, u.is_bot, u.role, u.long_term_idle, "
        "u.enable_offline_push_notifications, u.enable_online_push_notifications, "
        "r.id, r.string_id, r.name, r.uuid::text, r.require_e2ee_push_notifications "
        "FROM zerver_userprofile u JOIN zerver_realm r ON r.id = u.realm_id WHERE u.id = %s",
        (user_id,),
    )
    row = cursor.fetchone()
    return None if row is None else PushUser(*row)


_MESSAGE = (
    "SELECT m.id, m.sender_id, s.email, s.delivery_email, s.full_name, s.avatar_source, s.avatar_version, "
    "s.realm_id, m.realm_id, m.recipient_id, rc.type, rc.type_id, m.subject, m.rendered_content, "
    "extract(epoch from m.date_sent)::bigint, st.name, st.realm_id, st.invite_only, "
    "st.history_public_to_subscribers, st.recipient_id "
    "FROM zerver_message m JOIN zerver_recipient rc ON rc.id = m.recipient_id "
    "JOIN zerver_userprofile s ON s.id = m.sender_id "
    "LEFT JOIN zerver_stream st ON rc.type = 2 AND st.id = rc.type_id "
    "WHERE m.id = %s FOR UPDATE OF m"
)


def claim_push_message(cursor: Any, user: PushUser, message_id: int, already_claimed: bool = False) -> Claim:
    """Zulip's ``access_message_and_usermessage`` and flag check, in one transaction.

    Unread and not yet notified: the ``active_mobile_push_notification`` flag is set
    (so that a later ``remove`` revokes it) and the message returned as "claimed".
    ``already_claimed`` (a retry of an event that set the flag itself): only "read" stops it.
    """
    cursor.execute(_MESSAGE, (message_id,))
    row = cursor.fetchone()
    if row is None:
        cursor.execute("SELECT EXISTS (SELECT 1 FROM zerver_archivedmessage WHERE id = %s)", (message_id,))
        return Claim("archived" if cursor.fetchone()[0] else "no_access")
    (*fields, stream_realm_id, invite_only, history_public, stream_recipient_id) = row
    cursor.execute(
        "SELECT id, flags FROM zerver_usermessage WHERE user_profile_id = %s AND message_id = %s FOR UPDATE",
        (user.id, message_id),
    )
    user_message = cursor.fetchone()
    recipient_type = fields[10]
    if recipient_type != STREAM:
        allowed = user_message is not None
    elif stream_realm_id != user.realm_id:
        allowed = False
    elif not invite_only and user.role != ROLE_GUEST:
        allowed = True
    else:
        cursor.execute(
            "SELECT EXISTS (SELECT 1 FROM zerver_subscription WHERE user_profile_id = %s AND recipient_id = %s "
            "AND active)",
            (user.id, stream_recipient_id),
        )
        subscribed = bool(cursor.fetchone()[0])
        allowed = subscribed if history_public else subscribed and user_message is not None
    if not allowed:
        return Claim("no_access")
    if user_message is not None:
        if user_message[1] & (READ if already_claimed else READ | ACTIVE_MOBILE_PUSH_NOTIFICATION):
            return Claim("read")
        cursor.execute(
            "UPDATE zerver_usermessage SET flags = flags | %s WHERE id = %s",
            (ACTIVE_MOBILE_PUSH_NOTIFICATION, user_message[0]),
        )
    message = dataclasses.replace(
        PushMessage(*fields), recipients=_conversation(cursor, fields[10], fields[11], fields[9])
    )
    return Claim("claimed" if user_message is not None else "no_usermessage", message)


def _conversation(cursor: Any, recipient_type: int, type_id: int, recipient_id: int) -> tuple[tuple[int, str], ...]:
    if recipient_type == PERSONAL:
        cursor.execute("SELECT id, full_name FROM zerver_userprofile WHERE id = %s", (type_id,))
    elif recipient_type == DIRECT_MESSAGE_GROUP:
        cursor.execute(
            "SELECT u.id, u.full_name FROM zerver_subscription s JOIN zerver_userprofile u ON u.id = s.user_profile_id "
            "WHERE s.recipient_id = %s ORDER BY u.id",
            (recipient_id,),
        )
    else:
        return ()
    return tuple((int(uid), str(name)) for uid, name in cursor.fetchall())


def fetch_mentioned_group(cursor: Any, group_id: int) -> tuple[str, int] | None:
    """The group's name and its members (recursively, through subgroups): Zulip's ``get_mentioned_user_group``."""
    cursor.execute(
        """
        WITH RECURSIVE groups(id) AS (
            SELECT %(group)s::integer
            UNION
            SELECT g.subgroup_id FROM zerver_groupgroupmembership g JOIN groups ON g.supergroup_id = groups.id
        )
        SELECT n.name, (
            SELECT count(DISTINCT m.user_profile_id) FROM zerver_usergroupmembership m
            JOIN groups ON m.user_group_id = groups.id
        )
        FROM zerver_namedusergroup n WHERE n.usergroup_ptr_id = %(group)s
        """,
        {"group": group_id},
    )
    row = cursor.fetchone()
    return None if row is None else (str(row[0]), int(row[1]))


def fetch_devices(cursor: Any, user_id: int) -> Devices:
    """The user's legacy device tokens (by id, as Zulip orders them) and registered E2EE devices."""
    cursor.execute(
        "SELECT kind, token, ios_app_id FROM zerver_pushdevicetoken WHERE user_id = %s ORDER BY id", (user_id,)
    )
    apple: list[tuple[str, str | None]] = []
    android: list[str] = []
    for kind, token, ios_app_id in cursor.fetchall():
        if kind == APNS:
            apple.append((token, ios_app_id))
        else:
            android.append(token)
    cursor.execute(
        "SELECT token_kind, push_account_id, push_key, bouncer_device_id FROM zerver_pushdevice "
        "WHERE user_id = %s AND bouncer_device_id IS NOT NULL ORDER BY id",
        (user_id,),
    )
    e2ee = tuple((str(kind), int(account), bytes(key), int(device)) for kind, account, key, device in cursor.fetchall())
    return Devices(tuple(apple), tuple(android), e2ee)


def delete_device_tokens(cursor: Any, android: Sequence[str], apple: Sequence[str]) -> int:
    """Delete the tokens the bouncer reported deleted (APNs tokens compared case-insensitively)."""
    cursor.execute("DELETE FROM zerver_pushdevicetoken WHERE kind = %s AND token = ANY(%s)", (FCM, list(android)))
    deleted = int(cursor.rowcount)
    cursor.execute(
        "DELETE FROM zerver_pushdevicetoken WHERE kind = %s AND lower(token) = ANY(%s)",
        (APNS, [token.lower() for token in apple]),
    )
    return deleted + int(cursor.rowcount)


def delete_push_devices(cursor: Any, user_id: int, device_ids: Sequence[int]) -> int:
    """Delete the E2EE devices the bouncer reported gone."""
    cursor.execute(
        "DELETE FROM zerver_pushdevice WHERE user_id = %s AND bouncer_device_id = ANY(%s)", (user_id, list(device_ids))
    )
    return int(cursor.rowcount)


def clear_active_push_flags(cursor: Any, user_id: int, message_ids: Sequence[int]) -> int:
    """Clear ``active_mobile_push_notification`` on the user's messages (all of them, not only the sent ones)."""
    cursor.execute(
        "UPDATE zerver_usermessage SET flags = flags & %s WHERE user_profile_id = %s AND message_id = ANY(%s)",
        (~ACTIVE_MOBILE_PUSH_NOTIFICATION, user_id, list(message_ids)),
    )
    return int(cursor.rowcount)


def set_push_device_registered(cursor: Any, user_id: int, push_account_id: int, device_id: int) -> int:
    """Record the bouncer's device id of a registration (it is now "active")."""
    cursor.execute(
        "UPDATE zerver_pushdevice SET bouncer_device_id = %s WHERE user_id = %s AND push_account_id = %s",
        (device_id, user_id, push_account_id),
    )
    return int(cursor.rowcount)


def set_push_device_error(cursor: Any, user_id: int, push_account_id: int, error_code: str) -> int:
    """Record why a registration failed (it is now "failed")."""
    cursor.execute(
        "UPDATE zerver_pushdevice SET error_code = %s WHERE user_id = %s AND push_account_id = %s",
        (error_code, user_id, push_account_id),
    )
    return int(cursor.rowcount)
