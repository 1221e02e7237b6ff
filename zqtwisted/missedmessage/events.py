"""The ``missedmessage_emails`` event: validation and shard routing (pure).

Zulip's ``{user_profile_id, message_id, trigger, mentioned_user_group_id}``
plus what this service needs because it has no Zulip database: ``user`` (who
gets the email) and ``message`` (what it says).  See ``docs/missedmessage.md``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from zqtwisted.errors import MalformedEventError
from zqtwisted.runtime.shards import queue_for_user as shards_queue_for_user
from zqtwisted.runtime.shards import shard_of

__all__ = ["QUEUE", "queue_for_user", "shard_of", "stored_form", "validate_event"]

QUEUE = "missedmessage_emails"

# Zulip's triggers; others are accepted (newer Zulip versions add some).
TRIGGERS = (
    "direct_message",
    "private_message",
    "mentioned",
    "wildcard_mentioned",
    "topic_wildcard_mentioned",
    "stream_wildcard_mentioned",
    "stream_email_notify",
    "followed_topic_email_notify",
)
MESSAGE_TYPES = ("stream", "private")

# Fields the runtime adds and the store does not keep.
RUNTIME_FIELDS = ("failed_tries",)

_NUMBER = (int, float)

# The store keeps ids in BIGINT columns (Zulip's ids fit: AutoField / BigAutoField).
MAX_ID = 2**63 - 1
# Zulip's user setting is an IntegerField (32-bit).
MAX_BATCHING_PERIOD = 2**31 - 1
# Year 9999: what a date can be rendered for.
MAX_TIMESTAMP = 253402300799


def validate_event(event: Mapping[str, Any]) -> dict[str, Any]:
    """The event, checked; raise MalformedEventError naming what is wrong."""
    user_id = _field(event, "user_profile_id", int, "event")
    message_id = _field(event, "message_id", int, "event")
    trigger = _field(event, "trigger", str, "event")
    if not trigger:
        raise MalformedEventError("field 'trigger' is empty")
    group_id = _field(event, "mentioned_user_group_id", (int, type(None)), "event", required=False)
    for name, value in (
        ("user_profile_id", user_id),
        ("message_id", message_id),
        ("mentioned_user_group_id", group_id),
    ):
        if value is not None and not 1 <= value <= MAX_ID:
            # Out of range it would fail in the store (BIGINT) on every retry: malformed, not transient.
            raise MalformedEventError(f"field '{name}': expected an id in 1..{MAX_ID}, got {str(value)[:40]}")

    user = _field(event, "user", dict, "event")
    email = _field(user, "email", str, "user")
    if "@" not in email or "\n" in email or "\r" in email:
        raise MalformedEventError(f"field 'user.email': not an email address: {email!r}")
    _field(user, "full_name", str, "user")
    period = _field(user, "batching_period_seconds", (*_NUMBER, type(None)), "user", required=False)
    if period is not None and not (math.isfinite(period) and 0 <= period <= MAX_BATCHING_PERIOD):
        raise MalformedEventError(
            f"field 'user.batching_period_seconds': expected 0..{MAX_BATCHING_PERIOD}, got {str(period)[:40]}"
        )
    for name in ("realm_name", "realm_url", "unsubscribe_link"):
        _field(user, name, (str, type(None)), "user", required=False)

    message = _field(event, "message", dict, "event")
    if _field(message, "id", int, "message") != message_id:
        raise MalformedEventError(f"field 'message.id' ({message['id']}) differs from 'message_id' ({message_id})")
    kind = _field(message, "type", str, "message")
    if kind not in MESSAGE_TYPES:
        raise MalformedEventError(f"field 'message.type': expected one of {', '.join(MESSAGE_TYPES)}, got {kind!r}")
    for name in ("sender_full_name", "sender_email", "content"):
        _field(message, name, str, "message")
    timestamp = _field(message, "timestamp", _NUMBER, "message")
    if not (math.isfinite(timestamp) and 0 <= timestamp <= MAX_TIMESTAMP):
        raise MalformedEventError(f"field 'message.timestamp': not a time, got {str(timestamp)[:40]}")
    for name in ("rendered_content", "url", "conversation_url"):
        _field(message, name, (str, type(None)), "message", required=False)
    if kind == "stream":
        if not _field(message, "stream_name", str, "message"):
            raise MalformedEventError("field 'message.stream_name' is empty")
        _field(message, "topic", str, "message")
    else:
        recipients = _field(message, "recipients", (list, type(None)), "message", required=False)
        for person in recipients or []:
            if not (
                isinstance(person, dict)
                and isinstance(person.get("email"), str)
                and isinstance(person.get("full_name"), str)
            ):
                raise MalformedEventError("field 'message.recipients': expected a list of {email, full_name}")
    return dict(event)


def stored_form(event: Mapping[str, Any]) -> dict[str, Any]:
    """The event as the store keeps it (without the runtime's fields)."""
    return {k: v for k, v in event.items() if k not in RUNTIME_FIELDS}


def queue_for_user(user_profile_id: int, shards: int) -> str:
    """The queue to publish a user's notifications to (sharded when shards > 1)."""
    return shards_queue_for_user(QUEUE, user_profile_id, max(shards, 1))


def _field(
    container: Mapping[str, Any],
    name: str,
    types: type | tuple[type, ...],
    where: str,
    required: bool = True,
) -> Any:
    prefix = "" if where == "event" else f"{where}."
    if name not in container:
        if required:
            raise MalformedEventError(f"missing field '{prefix}{name}'")
        return None
    value = container[name]
    allowed = types if isinstance(types, tuple) else (types,)
    if not isinstance(value, allowed) or (isinstance(value, bool) and bool not in allowed):
        expected = " or ".join("null" if t is type(None) else t.__name__ for t in allowed)
        raise MalformedEventError(f"field '{prefix}{name}': expected {expected}, got {type(value).__name__}")
    return value
