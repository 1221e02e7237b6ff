"""Zulip's ``MessageDict.finalize_payload`` for outgoing webhooks (zerver/lib/message_cache.py), pure.

The event carries the *wide* message dict built by ``do_send_messages``; before it
reaches a bot, Zulip removes the private and internal fields (the sender's real
email address above all), adds ``avatar_url`` and ``content_type``, and for a 1:1
direct message to the bot gives the sender's ``recipient_id``.  The generic
interface calls it with ``apply_markdown=False, client_gravatar=False,
allow_empty_topic_name=True, keep_rendered_content=True``.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

from zqtwisted.zulip.avatar import avatar_url
from zqtwisted.zulip.settings import ZulipSettings
from zqtwisted.zulip.urls import fake_email

INACCESSIBLE_USER_NAME = "Unknown user"
# Removed by finalize_payload: never sent to a bot.
PRIVATE_FIELDS = (
    "sender_realm_id",
    "sender_avatar_source",
    "sender_delivery_email",
    "sender_avatar_version",
    "recipient_type",
    "recipient_type_id",
    "sender_is_mirror_dummy",
    "sender_email_address_visibility",
    "can_access_sender",
)


def finalize_payload(
    wide: Mapping[str, Any],
    *,
    can_access_sender: bool,
    realm_host: str,
    is_incoming_1_to_1: bool,
    settings: ZulipSettings,
    salt: str = "",
) -> dict[str, Any]:
    """The message a bot receives (a copy; ``wide`` is left as it was)."""
    obj = copy.deepcopy(dict(wide))
    if not can_access_sender:
        obj["sender_full_name"] = INACCESSIBLE_USER_NAME
        obj["sender_email"] = fake_email(int(obj["sender_id"]), realm_host, settings)
        obj["avatar_url"] = settings.inaccessible_avatar_url
    else:
        obj["avatar_url"] = avatar_url(
            user_id=int(obj["sender_id"]),
            realm_id=int(obj.get("sender_realm_id", 0)),
            email=str(obj.get("sender_delivery_email", "")),
            avatar_source=str(obj.get("sender_avatar_source", "G")),
            avatar_version=int(obj.get("sender_avatar_version", 1)),
            settings=settings,
            salt=salt,
        )
    obj["content_type"] = "text/x-markdown"
    if is_incoming_1_to_1 and "sender_recipient_id" in obj:
        obj["recipient_id"] = obj["sender_recipient_id"]
    for item in obj.get("edit_history", []) or []:
        if isinstance(item, dict):
            item.pop("prev_rendered_content_version", None)
    obj.pop("sender_recipient_id", None)
    for name in PRIVATE_FIELDS:
        obj.pop(name, None)
    return obj
