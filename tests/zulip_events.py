"""Events built exactly as the Zulip functions that publish them build them, from a fixture database.

* :func:`wide_message_dict`: ``MessageDict.wide_dict`` (zerver/lib/message_cache.py):
  ``build_message_dict`` + ``bulk_hydrate_sender_info`` + ``bulk_hydrate_recipient_info``;
* :func:`outgoing_webhook_event`: what ``do_send_messages`` (zerver/actions/message_send.py)
  queues on ``outgoing_webhooks`` for each service bot it triggers;
* :func:`push_add_event`: ``maybe_enqueue_notifications`` (zerver/tornado/event_queue.py);
* :func:`push_remove_event`: ``do_clear_mobile_push_notifications_for_ids`` (zerver/actions/message_flags.py);
* :func:`register_push_device_event`: ``register_push_device`` (zerver/views/push_notifications.py).
"""

from __future__ import annotations

from typing import Any

from tests.zulip_db import ZulipTestDatabase

STREAM = 2


def wide_message_dict(db: ZulipTestDatabase, message_id: int) -> dict[str, Any]:
    """MessageDict.wide_dict(message)."""
    ((mid, sender_id, content, type_id, rtype, recipient_id, timestamp, client, subject, realm_id, rendered),) = (
        db.execute(
            "SELECT m.id, m.sender_id, m.content, rc.type_id, rc.type, m.recipient_id, "
            "extract(epoch from m.date_sent)::bigint, c.name, m.subject, s.realm_id, m.rendered_content "
            "FROM zerver_message m JOIN zerver_recipient rc ON rc.id = m.recipient_id "
            "JOIN zerver_client c ON c.id = m.sending_client_id JOIN zerver_userprofile s ON s.id = m.sender_id "
            "WHERE m.id = %s",
            (message_id,),
        )
    )
    obj: dict[str, Any] = {
        "id": mid,
        "sender_id": sender_id,
        "content": content,
        "recipient_type_id": type_id,
        "recipient_type": rtype,
        "recipient_id": recipient_id,
        "timestamp": timestamp,
        "client": client,
        "subject": subject if rtype == STREAM else "",
        "sender_realm_id": realm_id,
        "topic_links": [],
        "rendered_content": rendered,
        "is_me_message": content.startswith("/me "),
        "reactions": [],
        "submessages": [],
    }
    # bulk_hydrate_sender_info
    ((recipient, full_name, email, delivery_email, string_id, source, version, dummy, visibility),) = db.execute(
        "SELECT u.recipient_id, u.full_name, u.email, u.delivery_email, r.string_id, u.avatar_source, "
        "u.avatar_version, u.is_mirror_dummy, u.email_address_visibility "
        "FROM zerver_userprofile u JOIN zerver_realm r ON r.id = u.realm_id WHERE u.id = %s",
        (sender_id,),
    )
    obj.update(
        sender_recipient_id=recipient,
        sender_full_name=full_name,
        sender_email=email,
        sender_delivery_email=delivery_email,
        sender_realm_str=string_id,
        sender_avatar_source=source,
        sender_avatar_version=version,
        sender_is_mirror_dummy=dummy,
        sender_email_address_visibility=visibility,
    )
    # bulk_hydrate_recipient_info
    if rtype == STREAM:
        obj["display_recipient"] = db.execute("SELECT name FROM zerver_stream WHERE id = %s", (type_id,))[0][0]
        obj["type"] = "stream"
        obj["stream_id"] = type_id
        return obj
    if rtype == 1:
        members = db.execute(
            "SELECT email, full_name, id, is_mirror_dummy FROM zerver_userprofile WHERE id = %s", (type_id,)
        )
    else:
        members = db.execute(
            "SELECT u.email, u.full_name, u.id, u.is_mirror_dummy FROM zerver_subscription s "
            "JOIN zerver_userprofile u ON u.id = s.user_profile_id WHERE s.recipient_id = %s ORDER BY u.id",
            (recipient_id,),
        )
    display = [{"email": e, "full_name": n, "id": i, "is_mirror_dummy": d} for e, n, i, d in members]
    if len(display) == 1:
        me = {"email": email, "full_name": full_name, "id": sender_id, "is_mirror_dummy": dummy}
        if me["email"] < display[0]["email"]:
            display = [me, display[0]]
        elif me["email"] > display[0]["email"]:
            display = [display[0], me]
    obj["display_recipient"] = display
    obj["type"] = "private"
    return obj


def outgoing_webhook_event(db: ZulipTestDatabase, message_id: int, bot_id: int, trigger: str) -> dict[str, Any]:
    """do_send_messages: queue_event_on_commit("outgoing_webhooks", {"message", "trigger", "user_profile_id"})."""
    return {"message": wide_message_dict(db, message_id), "trigger": trigger, "user_profile_id": bot_id}


def push_add_event(
    user_id: int, message_id: int, trigger: str, mentioned_user_group_id: int | None = None
) -> dict[str, Any]:
    """maybe_enqueue_notifications: build_offline_notification, then trigger, type and the mentioned group."""
    notice: dict[str, Any] = {"user_profile_id": user_id, "message_id": message_id}
    notice["trigger"] = trigger
    notice["type"] = "add"
    notice["mentioned_user_group_id"] = mentioned_user_group_id
    return notice


def push_remove_event(user_id: int, message_ids: list[int]) -> dict[str, Any]:
    """do_clear_mobile_push_notifications_for_ids: one "remove" notice per user."""
    return {"type": "remove", "user_profile_id": user_id, "message_ids": message_ids}


def register_push_device_event(
    user_id: int, push_account_id: int, bouncer_public_key: str, encrypted_push_registration: str
) -> dict[str, Any]:
    """register_push_device: a RegisterPushDeviceToBouncerQueueItem in a "register_push_device_to_bouncer" event."""
    payload = {
        "user_profile_id": user_id,
        "bouncer_public_key": bouncer_public_key,
        "encrypted_push_registration": encrypted_push_registration,
        "push_account_id": push_account_id,
    }
    return {"type": "register_push_device_to_bouncer", "payload": payload}
