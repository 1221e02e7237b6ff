"""The named queries of missed-message emails in Zulip mode.

They follow the ORM code of Zulip's ``handle_missedmessage_emails`` and
``do_send_missedmessage_events_reply_in_zulip`` (zerver/lib/email_notifications.py):
the user and realm, the user's unread messages among the notified ones (deleted
ones left out), the context of a channel mention (``get_context_for_message`` +
``bulk_access_messages``), group DM members, the mentioned groups; and what sending
writes: the unsubscribe link's ``Confirmation`` (``one_click_unsubscribe_link``),
the email gateway's ``MissedMessageEmailAddress`` and ``last_reminder``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from zqtwisted.zulip.push_queries import fetch_mentioned_group

ROLE_GUEST = 600
STREAM, PERSONAL, DIRECT_MESSAGE_GROUP = 2, 1, 3
READ = 1
# UserMessage.flags: mentioned | stream_wildcard_mentioned | topic_wildcard_mentioned | group_mentioned
ANY_MENTION = 8 | 16 | 32 | 64
UNSUBSCRIBE = 4  # Confirmation.UNSUBSCRIBE
UNSUBSCRIBE_VALIDITY_DAYS = 1000000
CONTEXT_MINUTES = 15
CONTEXT_LIMIT = 10


@dataclass(frozen=True)
class MissedUser:
    """The user an email is for (``delivery_email`` is private: never in a repr)."""

    id: int
    full_name: str
    delivery_email: str
    is_bot: bool
    long_term_idle: bool
    role: int
    enable_offline_email_notifications: bool
    message_content_in_email_notifications: bool
    realm_name_in_email_notifications_policy: int
    default_language: str
    emojiset: str
    realm_id: int
    realm_string_id: str
    realm_name: str
    realm_message_content_allowed: bool
    # Active human accounts with the same delivery_email in active realms (the subject's realm name).
    accounts_with_address: int

    def __repr__(self) -> str:
        return f"MissedUser(id={self.id}, realm_id={self.realm_id})"


@dataclass(frozen=True)
class MissedMessage:
    id: int
    sender_id: int
    sender_full_name: str
    realm_id: int
    recipient_id: int
    recipient_type: int
    recipient_type_id: int
    topic: str
    content: str
    rendered_content: str | None
    date_sent: float
    stream_name: str | None
    has_mentions: bool = False

    @property
    def is_stream_message(self) -> bool:
        return self.recipient_type == STREAM


@dataclass
class MissedData:
    user: MissedUser | None
    messages: list[MissedMessage] = field(default_factory=list)
    # recipient id -> the group DM's members (id, full name), by id (Zulip's display recipient)
    display_recipients: dict[int, tuple[tuple[int, str], ...]] = field(default_factory=dict)
    # group id -> (name, members counted through subgroups)
    groups: dict[int, tuple[str, int]] = field(default_factory=dict)


_MESSAGE_COLUMNS = (
    "m.id, m.sender_id, s.full_name, m.realm_id, m.recipient_id, rc.type, rc.type_id, m.subject, m.content, "
    "m.rendered_content, extract(epoch FROM m.date_sent)::float8, st.name"
)
_MESSAGE_JOINS = (
    "FROM zerver_message m JOIN zerver_recipient rc ON rc.id = m.recipient_id "
    "JOIN zerver_userprofile s ON s.id = m.sender_id "
    "LEFT JOIN zerver_stream st ON rc.type = 2 AND st.id = rc.type_id "
)


def fetch_missed(cursor: Any, user_id: int, message_ids: Sequence[int], group_ids: Sequence[int]) -> MissedData:
    """The user, their unread notified messages (by id), group DM members and the mentioned groups."""
    cursor.execute(
        "SELECT u.id, u.full_name, u.delivery_email, u.is_bot, u.long_term_idle, u.role, "
        "u.enable_offline_email_notifications, u.message_content_in_email_notifications, "
        "u.realm_name_in_email_notifications_policy, u.default_language, u.emojiset, "
        "r.id, r.string_id, r.name, r.message_content_allowed_in_email_notifications, "
        "(SELECT count(*) FROM zerver_userprofile o JOIN zerver_realm orr ON orr.id = o.realm_id "
        " WHERE o.delivery_email = u.delivery_email AND o.is_active AND NOT o.is_bot AND NOT orr.deactivated) "
        "FROM zerver_userprofile u JOIN zerver_realm r ON r.id = u.realm_id WHERE u.id = %s",
        (user_id,),
    )
    row = cursor.fetchone()
    if row is None:
        return MissedData(None)
    user = MissedUser(*row)
    cursor.execute(
        f"SELECT {_MESSAGE_COLUMNS}, (um.flags & %s) <> 0 {_MESSAGE_JOINS}"
        "JOIN zerver_usermessage um ON um.message_id = m.id AND um.user_profile_id = %s "
        "WHERE m.id = ANY(%s) AND (um.flags & %s) = 0 AND m.content <> '(deleted)' ORDER BY m.id",
        (ANY_MENTION, user_id, list(message_ids), READ),
    )
    messages = [_message(r) for r in cursor.fetchall()]
    data = MissedData(user, messages)
    for recipient_id in sorted({m.recipient_id for m in messages if m.recipient_type == DIRECT_MESSAGE_GROUP}):
        cursor.execute(
            "SELECT u.id, u.full_name FROM zerver_subscription s JOIN zerver_userprofile u ON u.id = s.user_profile_id "
            "WHERE s.recipient_id = %s ORDER BY u.id",
            (recipient_id,),
        )
        data.display_recipients[recipient_id] = tuple((int(i), str(n)) for i, n in cursor.fetchall())
    for group_id in sorted(set(group_ids)):
        cursor.execute(
            "SELECT EXISTS (SELECT 1 FROM zerver_namedusergroup WHERE usergroup_ptr_id = %s AND realm_id = %s)",
            (group_id, user.realm_id),
        )
        found = fetch_mentioned_group(cursor, group_id) if cursor.fetchone()[0] else None
        if found is not None:
            data.groups[group_id] = found
    return data


def fetch_context(cursor: Any, user: MissedUser, messages: Sequence[MissedMessage]) -> dict[int, list[MissedMessage]]:
    """Zulip's ``get_context_for_message`` of each message, filtered by ``bulk_access_messages``."""
    result: dict[int, list[MissedMessage]] = {}
    for message in messages:
        cursor.execute(
            f"SELECT {_MESSAGE_COLUMNS}, false, st.invite_only, st.history_public_to_subscribers, st.realm_id, "
            "EXISTS (SELECT 1 FROM zerver_usermessage um WHERE um.message_id = m.id AND um.user_profile_id = %s), "
            "EXISTS (SELECT 1 FROM zerver_subscription sub WHERE sub.recipient_id = m.recipient_id "
            "        AND sub.user_profile_id = %s AND sub.active) "
            f"{_MESSAGE_JOINS}"
            "WHERE m.realm_id = %s AND m.recipient_id = %s AND upper(m.subject::text) = upper(%s) "
            "AND m.is_channel_message AND m.id < %s "
            "AND m.date_sent > to_timestamp(%s) - make_interval(mins => %s) ORDER BY m.id DESC LIMIT %s",
            (
                user.id,
                user.id,
                message.realm_id,
                message.recipient_id,
                message.topic,
                message.id,
                message.date_sent,
                CONTEXT_MINUTES,
                CONTEXT_LIMIT,
            ),
        )
        allowed = []
        for row in cursor.fetchall():
            *fields, invite_only, history_public, stream_realm, has_user_message, subscribed = row
            if _has_access(user, has_user_message, invite_only, history_public, stream_realm, subscribed):
                allowed.append(_message(fields))
        result[message.id] = allowed
    return result


def _has_access(
    user: MissedUser,
    has_user_message: bool,
    invite_only: bool | None,
    history_public: bool | None,
    stream_realm: int | None,
    subscribed: bool,
) -> bool:
    """Zulip's ``has_message_access`` for a channel message."""
    if has_user_message:
        return True
    if stream_realm != user.realm_id:
        return False
    if not invite_only and user.role != ROLE_GUEST:
        return True
    return bool(history_public) and subscribed


def _message(row: Sequence[Any]) -> MissedMessage:
    (mid, sender, sender_name, realm, recipient, rtype, type_id, topic, content, rendered, sent, stream, mentions) = row
    return MissedMessage(
        int(mid),
        int(sender),
        str(sender_name),
        int(realm),
        int(recipient),
        int(rtype),
        int(type_id),
        str(topic),
        str(content),
        rendered,
        float(sent),
        stream,
        bool(mentions),
    )


@dataclass(frozen=True)
class SentEmail:
    """What sending one missed-message email writes: the unsubscribe key, and a gateway token (or None)."""

    confirmation_key: str
    message_id: int
    email_token: str | None = None


def record_missed_emails(cursor: Any, user: MissedUser, now: float, sent: Sequence[SentEmail]) -> None:
    """The ``Confirmation`` rows of the unsubscribe links, the gateway addresses, ``last_reminder``."""
    cursor.execute(
        "INSERT INTO django_content_type (app_label, model) VALUES ('zerver', 'userprofile') "
        "ON CONFLICT (app_label, model) DO NOTHING"
    )
    cursor.execute("SELECT id FROM django_content_type WHERE app_label = 'zerver' AND model = 'userprofile'")
    content_type = int(cursor.fetchone()[0])
    for email in sent:
        cursor.execute(
            "INSERT INTO confirmation_confirmation (content_type_id, object_id, date_sent, confirmation_key, "
            "expiry_date, realm_id, type) VALUES (%s, %s, to_timestamp(%s), %s, "
            "to_timestamp(%s) + make_interval(days => %s), %s, %s)",
            (
                content_type,
                user.id,
                now,
                email.confirmation_key,
                now,
                UNSUBSCRIBE_VALIDITY_DAYS,
                user.realm_id,
                UNSUBSCRIBE,
            ),
        )
        if email.email_token is not None:
            cursor.execute(
                "INSERT INTO zerver_missedmessageemailaddress (message_id, user_profile_id, email_token, timestamp, "
                "times_used) VALUES (%s, %s, %s, to_timestamp(%s), 0)",
                (email.message_id, user.id, email.email_token, now),
            )
    cursor.execute("UPDATE zerver_userprofile SET last_reminder = to_timestamp(%s) WHERE id = %s", (now, user.id))
