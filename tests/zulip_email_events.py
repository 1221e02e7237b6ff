"""Email events built exactly as the Zulip functions that publish them build them.

* :func:`send_email_event`: ``send_email`` (zerver/lib/send_email.py) with
  ``EMAIL_ALWAYS_ENQUEUED``: ``queue_event_on_commit("email_senders", dict(...))``;
* :func:`send_future_email_event`: ``send_future_email`` with no delay, queued on
  ``deferred_email_senders`` (``{**email_fields, "to_user_ids", "to_emails"}``);
* :func:`missedmessage_email_event`: ``maybe_enqueue_notifications``
  (zerver/tornado/event_queue.py): ``build_offline_notification`` plus the trigger
  and the mentioned group, on ``missedmessage_emails``.
"""

from __future__ import annotations

from typing import Any


def send_email_event(
    template_prefix: str,
    to_user_ids: list[int] | None = None,
    to_emails: list[str] | None = None,
    from_name: str | None = None,
    from_address: str | None = None,
    reply_to_email: str | None = None,
    language: str | None = None,
    date: str | None = None,
    context: dict[str, Any] | None = None,
    realm_id: int | None = None,
    remove_suppressed_destination: bool = False,
) -> dict[str, Any]:
    """send_email(...): the dict queued on email_senders (``realm_id`` is ``realm.id if realm else None``)."""
    return dict(
        template_prefix=template_prefix,
        to_user_ids=to_user_ids,
        to_emails=to_emails,
        from_name=from_name,
        from_address=from_address,
        reply_to_email=reply_to_email,
        language=language,
        date=date,
        context=context or {},
        realm_id=realm_id,
        remove_suppressed_destination=remove_suppressed_destination,
    )


def send_future_email_event(
    template_prefix: str,
    to_user_ids: list[int] | None = None,
    to_emails: list[str] | None = None,
    from_name: str | None = None,
    from_address: str | None = None,
    language: str | None = None,
    context: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """send_future_email(..., delay=timedelta(0)): the dict queued on deferred_email_senders."""
    email_fields = {
        "template_prefix": template_prefix,
        "from_name": from_name,
        "from_address": from_address,
        "language": language,
        "context": context or {},
    }
    return {**email_fields, "to_user_ids": to_user_ids, "to_emails": to_emails}


def missedmessage_email_event(
    user_id: int, message_id: int, trigger: str, mentioned_user_group_id: int | None = None
) -> dict[str, Any]:
    """maybe_enqueue_notifications: build_offline_notification, then the trigger and the mentioned group."""
    notice: dict[str, Any] = {"user_profile_id": user_id, "message_id": message_id}
    notice["trigger"] = trigger
    notice["mentioned_user_group_id"] = mentioned_user_group_id
    return notice
