"""The events Zulip publishes on ``missedmessage_mobile_notifications``, checked (pure).

* ``add`` (``maybe_enqueue_notifications``): ``{"type": "add", "user_profile_id",
  "message_id", "trigger", "mentioned_user_group_id"}``; a missing type means add;
* ``remove`` (``do_clear_mobile_push_notifications_for_ids``): ``{"type": "remove",
  "user_profile_id", "message_ids": [...]}``;
* ``register_push_device_to_bouncer`` (``register_push_device``): ``{"type": ...,
  "payload": {"user_profile_id", "bouncer_public_key", "encrypted_push_registration",
  "push_account_id"}}``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from zqtwisted.errors import MalformedEventError

REGISTER = "register_push_device_to_bouncer"
# Progress a retried event carries, so that a retry neither re-checks the flag it set
# nor sends twice what already went out.
PROGRESS_KEY = "zq_push_progress"


@dataclass(frozen=True)
class AddPush:
    user_id: int
    message_id: int
    trigger: str
    mentioned_user_group_id: int | None


@dataclass(frozen=True)
class RemovePush:
    user_id: int
    message_ids: tuple[int, ...]


@dataclass(frozen=True)
class RegisterPush:
    user_id: int
    push_account_id: int
    bouncer_public_key: str
    encrypted_push_registration: str


ZulipPushEvent = AddPush | RemovePush | RegisterPush


def parse_zulip_push_event(event: Mapping[str, Any]) -> ZulipPushEvent:
    """The event as Zulip published it; MalformedEventError names the first bad field."""
    if not isinstance(event, Mapping):
        raise MalformedEventError(f"expected a JSON object, got {type(event).__name__}")
    kind = event.get("type") or "add"
    if kind == "add":
        group = event.get("mentioned_user_group_id")
        if group is not None and not _is_int(group):
            raise MalformedEventError("mentioned_user_group_id: expected an integer or null")
        trigger = event.get("trigger")
        if not isinstance(trigger, str) or not trigger:
            raise MalformedEventError("trigger: expected a non-empty string")
        return AddPush(_int(event, "user_profile_id"), _int(event, "message_id"), trigger, group)
    if kind == "remove":
        ids = event.get("message_ids")
        if ids is None and "message_id" in event:
            ids = [event["message_id"]]  # an event from before an upgrade
        if not isinstance(ids, list) or not ids or not all(_is_int(i) for i in ids):
            raise MalformedEventError("message_ids: expected a non-empty list of message ids")
        return RemovePush(_int(event, "user_profile_id"), tuple(ids))
    if kind == REGISTER:
        payload = event.get("payload")
        if not isinstance(payload, Mapping):
            raise MalformedEventError("payload: expected an object")
        for key in ("bouncer_public_key", "encrypted_push_registration"):
            if not isinstance(payload.get(key), str):
                raise MalformedEventError(f"payload.{key}: expected a string")
        return RegisterPush(
            _int(payload, "user_profile_id", "payload."),
            _int(payload, "push_account_id", "payload."),
            payload["bouncer_public_key"],
            payload["encrypted_push_registration"],
        )
    raise MalformedEventError(f'type: expected "add", "remove" or "{REGISTER}", got {kind!r}')


def user_of(event: Mapping[str, Any]) -> object:
    """The user an event is for (for log lines), whatever its shape."""
    payload = event.get("payload")
    if "user_profile_id" not in event and isinstance(payload, Mapping):
        return payload.get("user_profile_id")
    return event.get("user_profile_id")


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _int(data: Mapping[str, Any], key: str, prefix: str = "") -> int:
    value = data.get(key)
    if not _is_int(value):
        raise MalformedEventError(f"{prefix}{key}: expected an integer, got {value!r}")
    assert isinstance(value, int)
    return value
