"""Missed-message emails in Zulip mode: Zulip's ``handle_missedmessage_emails``.

Given a user's due notifications (message id -> trigger and mentioned group, as
``MissedMessageWorker.maybe_send_batched_emails`` collects them), as
zerver/lib/email_notifications.py does (late 2025):

- bots and users with ``enable_offline_email_notifications`` off get nothing;
- only messages still unread, and not ``(deleted)``, are kept;
- they are bucketed: direct messages by (recipient, sender), the others by
  (recipient, lower-cased topic); a channel bucket whose first message mentions the
  user gets up to 10 earlier messages of the topic (15 minutes) the user may see;
- one email per bucket, least recently active first: the ``email_senders`` event
  ``do_send_missedmessage_events_reply_in_zulip`` publishes (``to_user_ids``,
  template ``zerver/emails/missed_message``, its context: subject parts, the
  message list with content as Zulip renders it, the narrow URL, the one-click
  unsubscribe link), which the email path then sends;
- what sending writes: the unsubscribe link's ``Confirmation``, an email-gateway
  reply address (with ``[zulip] email_gateway_pattern``), ``last_reminder``; a
  long-term idle user personally notified is queued for soft reactivation.
"""

from __future__ import annotations

import html
import secrets
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from email.headerregistry import Address
from typing import Any, Protocol

from twisted.internet.defer import Deferred
from twisted.logger import Logger

from zqtwisted.errors import PermanentError
from zqtwisted.runtime.consumer import JsonPublisher
from zqtwisted.zulip import email_content as content
from zqtwisted.zulip.email_context import FromAddress, common_context, generate_key, installation_name, static_url
from zqtwisted.zulip.missed_queries import (
    DIRECT_MESSAGE_GROUP,
    PERSONAL,
    MissedData,
    MissedMessage,
    MissedUser,
    SentEmail,
    fetch_context,
    fetch_missed,
    record_missed_emails,
)
from zqtwisted.zulip.settings import ZulipSettings
from zqtwisted.zulip.urls import realm_url

TEMPLATE = "zerver/emails/missed_message"
DIRECT_MESSAGE = "direct_message"
MENTION = "mentioned"
TOPIC_WILDCARD = "topic_wildcard_mentioned"
STREAM_WILDCARD = "stream_wildcard_mentioned"
STREAM_EMAIL = "stream_email_notify"
FOLLOWED_TOPIC_EMAIL = "followed_topic_email_notify"
TOPIC_WILDCARD_FOLLOWED = "topic_wildcard_mentioned_in_followed_topic"
STREAM_WILDCARD_FOLLOWED = "stream_wildcard_mentioned_in_followed_topic"
MENTION_TRIGGERS = (MENTION, TOPIC_WILDCARD, STREAM_WILDCARD, TOPIC_WILDCARD_FOLLOWED, STREAM_WILDCARD_FOLLOWED)
RESOLVED_TOPIC_PREFIX = "\u2714 "
MAX_GROUP_SIZE_FOR_MENTION_REACTIVATION = 11
POLICY_AUTOMATIC, POLICY_ALWAYS = 1, 2

BucketKey = tuple[int, int | str]


class Database(Protocol):
    def run(self, name: str, query: Any, *args: Any) -> Deferred[Any]: ...


@dataclass(frozen=True)
class Notification:
    trigger: str | None
    mentioned_user_group_id: int | None = None


@dataclass(frozen=True)
class Missed:
    """One message of an email, with what notified it (None for context messages)."""

    message: MissedMessage
    trigger: str | None
    mentioned_user_group_id: int | None


def bucket_key(message: MissedMessage) -> BucketKey:
    if message.recipient_type == PERSONAL:
        return (message.recipient_id, message.sender_id)
    return (message.recipient_id, message.topic.lower())


def get_topic_resolution_and_bare_name(topic: str) -> tuple[bool, str]:
    if topic.startswith(RESOLVED_TOPIC_PREFIX):
        return True, topic[len(RESOLVED_TOPIC_PREFIX) :]
    return False, topic


@dataclass(frozen=True)
class Rendering:
    """What rendering the message list needs besides the messages."""

    user: MissedUser
    realm_url: str
    static_url: str
    display_recipients: Mapping[int, tuple[tuple[int, str], ...]]


def message_header(r: Rendering, message: MissedMessage) -> dict[str, Any]:
    if message.recipient_type == PERSONAL:
        grouping: dict[str, Any] = {"user": message.sender_id}
        narrow = content.personal_narrow_url(r.realm_url, message.sender_id, message.sender_full_name)
        header = f"You and {message.sender_full_name}"
        header_html = f"<a style='color: #ffffff;' href='{html.escape(narrow)}'>{html.escape(header)}</a>"
    elif message.recipient_type == DIRECT_MESSAGE_GROUP:
        grouping = {"huddle": message.recipient_id}
        members = r.display_recipients.get(message.recipient_id, ())
        narrow = content.direct_message_group_narrow_url(r.realm_url, r.user.id, r.user.full_name, members)
        header = "You and {}".format(", ".join(name for uid, name in members if uid != r.user.id))
        header_html = f"<a style='color: #ffffff;' href='{html.escape(narrow)}'>{html.escape(header)}</a>"
    else:
        grouping = {"stream": message.recipient_id, "topic": message.topic.lower()}
        name = message.stream_name or ""
        narrow = content.topic_narrow_url(r.realm_url, message.recipient_type_id, name, message.topic)
        header = f"{name} > {message.topic}"
        stream_link = content.stream_narrow_url(r.realm_url, message.recipient_type_id, name)
        header_html = (
            f"<a href='{html.escape(stream_link)}'>{html.escape(name)}</a> > "
            f"<a href='{html.escape(narrow)}'>{html.escape(message.topic)}</a>"
        )
    return {"grouping": grouping, "plain": header, "html": header_html, "stream_message": message.is_stream_message}


def build_message_list(r: Rendering, messages: Sequence[MissedMessage]) -> list[dict[str, Any]]:
    """Zulip's ``build_message_list``: recipient blocks of sender blocks of messages, in sending order."""

    def sender_string(message: MissedMessage) -> str:
        return message.sender_full_name if message.recipient_type != PERSONAL else ""

    def payload(message: MissedMessage, sender: str | None = None) -> dict[str, str]:
        return content.message_payload(
            message.content, message.rendered_content, r.realm_url, r.user.emojiset, r.static_url, sender
        )

    blocks: list[dict[str, Any]] = []
    for message in sorted(messages, key=lambda m: m.date_sent):
        header = message_header(r, message)
        if blocks and blocks[-1]["header"]["grouping"] == header["grouping"]:
            sender = sender_string(message)
            senders = blocks[-1]["senders"]
            if senders[-1]["sender"] == sender:
                senders[-1]["content"].append(payload(message))
            else:
                senders.append({"sender": sender, "content": [payload(message, sender)]})
        else:
            sender = sender_string(message)
            blocks.append({"header": header, "senders": [{"sender": sender, "content": [payload(message, sender)]}]})
    return blocks


def mentioned_group(missed: Sequence[Missed], groups: Mapping[int, tuple[str, int]]) -> tuple[str, int] | None:
    """Zulip's ``get_mentioned_user_group``: the smallest mentioned group, unless personally mentioned."""
    for m in missed:
        if m.mentioned_user_group_id is None and m.trigger == MENTION:
            return None
    smallest: tuple[str, int] | None = None
    for m in missed:
        found = groups.get(m.mentioned_user_group_id) if m.mentioned_user_group_id is not None else None
        if found is not None and (smallest is None or found[1] < smallest[1]):
            smallest = found
    return smallest


def direct_message_group_display_name(others: Sequence[str]) -> str:
    if len(others) == 2:
        return " and ".join(others)
    if len(others) == 3:
        return f"{others[0]}, {others[1]}, and {others[2]}"
    return "{}, and {} others".format(", ".join(others[:2]), len(others) - 2)


def include_realm_name(user: MissedUser) -> bool:
    """Zulip's ``include_realm_name_in_missedmessage_emails_subject``."""
    if user.realm_name_in_email_notifications_policy == POLICY_AUTOMATIC:
        return user.accounts_with_address > 1
    return user.realm_name_in_email_notifications_policy == POLICY_ALWAYS


@dataclass(frozen=True)
class BuiltEmail:
    event: dict[str, Any]
    sent: SentEmail
    reactivate: bool


class ZulipMissedMessages:
    """Builds a user's missed-message emails from Zulip's database (the scheduler publishes them)."""

    log = Logger()

    def __init__(
        self,
        db: Database,
        settings: ZulipSettings,
        publisher: JsonPublisher,
        *,
        clock: Any,
        make_key: Callable[[], str] = generate_key,
        make_token: Callable[[], str] = lambda: "mm" + secrets.token_hex(16),
    ) -> None:
        self.db = db
        self.settings = settings
        self.publisher = publisher
        self.clock = clock
        self.addresses = FromAddress.from_settings(settings)
        self._make_key = make_key
        self._make_token = make_token

    def build(self, user_id: int, notifications: Sequence[Mapping[str, Any]]) -> Deferred[list[dict[str, Any]]]:
        return Deferred.fromCoroutine(self._build(user_id, notifications))

    async def _build(self, user_id: int, notifications: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
        by_id: dict[int, Notification] = {}
        for n in notifications:
            by_id[int(n["message_id"])] = Notification(n.get("trigger"), n.get("mentioned_user_group_id"))
        groups = [n.mentioned_user_group_id for n in by_id.values() if n.mentioned_user_group_id is not None]
        data: MissedData = await self.db.run("fetch_missed", fetch_missed, user_id, sorted(by_id), groups)
        user = data.user
        if user is None:
            raise PermanentError(f"user {user_id} does not exist")
        if user.is_bot:
            self.log.warn("Send-email event found for bot user {user_id}. Skipping.", user_id=user_id)
            return []
        if not user.enable_offline_email_notifications or not data.messages:
            return []
        buckets: dict[BucketKey, list[MissedMessage]] = {}
        for message in data.messages:
            buckets.setdefault(bucket_key(message), []).append(message)
        counts = {key: len(messages) for key, messages in buckets.items()}
        firsts = [min(ms, key=lambda m: m.date_sent) for ms in buckets.values()]
        wanted = [m for m in firsts if m.is_stream_message and m.has_mentions]
        if wanted:
            extra: dict[int, list[MissedMessage]] = await self.db.run("fetch_context", fetch_context, user, wanted)
            for first in wanted:
                buckets[bucket_key(first)].extend(extra.get(first.id, []))
        ordered = sorted(buckets, key=lambda key: max(m.id for m in buckets[key]))
        url = realm_url(user.realm_string_id, self.settings)
        rendering = Rendering(user, url, static_url(self.settings), data.display_recipients)
        built = []
        for key in ordered:
            unique: dict[int, Missed] = {}
            for m in buckets[key]:
                info = by_id.get(m.id)
                unique[m.id] = Missed(m, info.trigger if info else None, info.mentioned_user_group_id if info else None)
            built.append(self._email(rendering, list(unique.values()), counts[key], data))
        now = float(self.clock.seconds())
        await self.db.run("record_missed_emails", record_missed_emails, user, now, [b.sent for b in built])
        if user.long_term_idle and any(b.reactivate for b in built):
            await self.publisher.publish_json("deferred_work", {"type": "soft_reactivate", "user_profile_id": user.id})
        return [b.event for b in built]

    def _email(self, r: Rendering, missed: list[Missed], message_count: int, data: MissedData) -> BuiltEmail:
        """Zulip's ``do_send_missedmessage_events_reply_in_zulip`` for one bucket."""
        user = r.user
        key = self._make_key()
        context = common_context(r.realm_url, user.realm_name, user.full_name, self.settings)
        context.update(
            name=user.full_name,
            message_count=message_count,
            unsubscribe_link=f"{r.realm_url}/accounts/unsubscribe/missed_messages/{key}",
            include_realm_name_in_missedmessage_emails_subject=include_realm_name(user),
        )
        group = mentioned_group(missed, data.groups)
        triggers = {m.trigger for m in missed}
        mention = any(t in triggers for t in MENTION_TRIGGERS)
        context.update(
            mention=mention,
            personal_mentioned=any(m.trigger == MENTION and m.mentioned_user_group_id is None for m in missed),
            topic_wildcard_mentioned=TOPIC_WILDCARD in triggers,
            stream_wildcard_mentioned=STREAM_WILDCARD in triggers,
            stream_email_notify=STREAM_EMAIL in triggers,
            followed_topic_email_notify=FOLLOWED_TOPIC_EMAIL in triggers,
            topic_wildcard_mentioned_in_followed_topic=TOPIC_WILDCARD_FOLLOWED in triggers,
            stream_wildcard_mentioned_in_followed_topic=STREAM_WILDCARD_FOLLOWED in triggers,
            mentioned_user_group_name=group[0] if group is not None else None,
            reply_to_zulip=bool(self.settings.email_gateway_pattern),
        )
        first = missed[0].message
        token = self._make_token() if self.settings.email_gateway_pattern else None
        reply_to_address = self.settings.email_gateway_pattern % (token,) if token else self.addresses.noreply
        reply_to_name = "" if reply_to_address == self.addresses.noreply else "Zulip"
        senders = list(dict.fromkeys((m.message.sender_id, m.message.sender_full_name) for m in missed))
        if first.recipient_type == DIRECT_MESSAGE_GROUP:
            members = data.display_recipients.get(first.recipient_id, ())
            others = [name for uid, name in members if uid != user.id]
            context.update(
                narrow_url=content.direct_message_group_narrow_url(r.realm_url, user.id, user.full_name, members),
                group_pm=True,
                direct_message_group_display_name=direct_message_group_display_name(others),
            )
        elif first.recipient_type == PERSONAL:
            context.update(
                narrow_url=content.personal_narrow_url(r.realm_url, first.sender_id, first.sender_full_name),
                private_message=True,
            )
        elif mention or context["stream_email_notify"] or context["followed_topic_email_notify"]:
            if mention:
                senders = list(
                    dict.fromkeys(
                        (m.message.sender_id, m.message.sender_full_name)
                        for m in missed
                        if m.trigger in MENTION_TRIGGERS
                    )
                )
            name = first.stream_name or ""
            resolved, topic_name = get_topic_resolution_and_bare_name(first.topic)
            context.update(
                narrow_url=content.topic_narrow_url(r.realm_url, first.recipient_type_id, name, first.topic),
                channel_name=name,
                topic_name=topic_name,
                topic_resolved=resolved,
            )
        else:
            raise PermanentError(f"Invalid messages! (message {first.id} notified by none of Zulip's email triggers)")
        if not (user.realm_message_content_allowed and user.message_content_in_email_notifications):
            context.update(
                reply_to_zulip=False,
                messages=[],
                sender_str="",
                realm_str=user.realm_name,
                direct_message_group_display_name="",
                show_message_content=False,
                message_content_disabled_by_user=not user.message_content_in_email_notifications,
                message_content_disabled_by_realm=not user.realm_message_content_allowed,
            )
        else:
            # Late-2025 templates take one recipient block ({% with recipient_block=messages %}).
            blocks = build_message_list(r, [m.message for m in missed])
            context.update(
                messages=blocks[0] if blocks else [],
                sender_str=", ".join(sender_name for _, sender_name in senders),
                realm_str=user.realm_name,
                show_message_content=True,
            )
        event = {
            "template_prefix": TEMPLATE,
            "to_user_ids": [user.id],
            "from_name": f"{installation_name(self.settings)} notifications",
            "from_address": self.addresses.noreply,
            "reply_to_email": str(Address(display_name=reply_to_name, addr_spec=reply_to_address)),
            "context": context,
        }
        return BuiltEmail(event, SentEmail(key, first.id, token), _reactivates(triggers, group))


def _reactivates(triggers: set[str | None], group: tuple[str, int] | None) -> bool:
    """Zulip's ``soft_reactivate_if_personal_notification`` condition."""
    if DIRECT_MESSAGE in triggers:
        return True
    if MENTION not in triggers:
        return False
    return group is None or group[1] <= MAX_GROUP_SIZE_FOR_MENTION_REACTIVATION
