"""A user's pending notifications -> one email event per conversation (pure).

Zulip's rules (``handle_missedmessage_emails``, ``build_message_list``):

- one notification per message (a message that triggered twice is shown once);
- messages whose content is ``(deleted)`` are left out;
- direct messages are grouped by conversation (1:1 by the other person, group
  DMs by their participants), channel messages by channel and topic,
  case-insensitively;
- inside a conversation, messages are in the order they were sent;
- conversations go out least recently active first (by their newest message id).

The email events use the shipped ``zqtwisted/emails/missed_message`` template's
context (``docs/email.md``).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

DELETED_CONTENT = "(deleted)"

ConversationKey = tuple[str, ...]


@dataclass
class Conversation:
    """One group of messages: one email."""

    key: ConversationKey
    name: str
    url: str | None
    messages: list[Mapping[str, Any]] = field(default_factory=list)

    @property
    def newest_id(self) -> int:
        return max(int(m["id"]) for m in self.messages)

    def context(self) -> dict[str, Any]:
        """The template's ``conversations[]`` entry."""
        return {
            "name": self.name,
            "url": self.url,
            "messages": [
                {
                    "sender": m["sender_full_name"],
                    "content": m["content"],
                    "rendered_content": m.get("rendered_content"),
                    "url": m.get("url"),
                }
                for m in self.messages
            ],
        }


@dataclass(frozen=True)
class EmailOptions:
    """What the email events carry besides the conversations."""

    template_prefix: str = "zqtwisted/emails/missed_message"
    from_name: str = "Zulip notifications"
    from_address: str = "NO_REPLY"


def unique_notifications(events: Iterable[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """One notification per message id (the first one), in the given order."""
    seen: dict[int, Mapping[str, Any]] = {}
    for event in events:
        seen.setdefault(int(event["message_id"]), event)
    return list(seen.values())


def conversation_key(user_email: str, message: Mapping[str, Any]) -> ConversationKey:
    """What groups messages into one email (case-insensitive)."""
    if message["type"] == "stream":
        return ("stream", message["stream_name"].lower(), message["topic"].lower())
    return ("private", *sorted(_other_people(user_email, message)))


def conversation_name(user_email: str, message: Mapping[str, Any]) -> str:
    """The heading of a conversation: ``#channel > topic`` or ``You and Othello, Iago``."""
    if message["type"] == "stream":
        return f"#{message['stream_name']} > {message['topic']}"
    return "You and " + ", ".join(_other_people(user_email, message).values())


def group_conversations(user_email: str, events: Iterable[Mapping[str, Any]]) -> list[Conversation]:
    """The user's notifications as conversations, least recently active first."""
    buckets: dict[ConversationKey, list[Mapping[str, Any]]] = {}
    for event in unique_notifications(events):
        message = event["message"]
        if message["content"] == DELETED_CONTENT:
            continue
        buckets.setdefault(conversation_key(user_email, message), []).append(message)
    conversations = []
    for key, messages in buckets.items():
        messages.sort(key=lambda m: (m["timestamp"], m["id"]))
        first = messages[0]
        url = next((m["conversation_url"] for m in messages if m.get("conversation_url")), None)
        conversations.append(Conversation(key, conversation_name(user_email, first), url, messages))
    conversations.sort(key=lambda c: (c.newest_id, c.key))
    return conversations


def build_email_events(events: Sequence[Mapping[str, Any]], options: EmailOptions) -> list[dict[str, Any]]:
    """One ``email_senders`` event per conversation of one user's notifications.

    The recipient and the realm come from the user's most recent notification.
    """
    if not events:
        return []
    user = events[-1]["user"]
    base_context: dict[str, Any] = {"user_name": user["full_name"], "reply_to_zulip": False, "subject": None}
    for name in ("realm_name", "realm_url", "unsubscribe_link"):
        if user.get(name):
            base_context[name] = user[name]
    return [
        {
            "template_prefix": options.template_prefix,
            "to_emails": [user["email"]],
            "from_name": options.from_name,
            "from_address": options.from_address,
            "context": {**base_context, "conversations": [conversation.context()]},
        }
        for conversation in group_conversations(user["email"], events)
    ]


def _other_people(user_email: str, message: Mapping[str, Any]) -> dict[str, str]:
    """Lower-cased email -> full name of the DM's participants other than the user."""
    me = user_email.lower()
    people = {p["email"].lower(): p["full_name"] for p in message.get("recipients") or []}
    people.setdefault(message["sender_email"].lower(), message["sender_full_name"])
    others = {email: name for email, name in people.items() if email != me}
    # A note to self: the conversation is the user alone.
    return others or {me: people.get(me, message["sender_full_name"])}
