"""Mobile push in Zulip mode: Zulip's ``handle_push_notification``, ``handle_remove_push_notification``
and ``handle_register_push_device_to_bouncer``, over the database and the bouncer.

Better than Zulip on one point: Zulip sets the ``active_mobile_push_notification``
flag before sending, so a retried event finds the flag and sends nothing.  Here the
event carries its progress (:data:`~.push_events.PROGRESS_KEY`): a retry skips only
what was done (the flag it set itself, a request already accepted).
"""

from __future__ import annotations

from collections.abc import MutableMapping
from typing import Any, Protocol

from twisted.internet.defer import Deferred
from twisted.logger import Logger

from zqtwisted.errors import PermanentError
from zqtwisted.push.bouncer import BouncerRefused, BouncerRetryLater
from zqtwisted.runtime.consumer import JsonPublisher
from zqtwisted.zulip import push_payload as payloads
from zqtwisted.zulip.bouncer import ZulipBouncer
from zqtwisted.zulip.push_events import PROGRESS_KEY, AddPush, RegisterPush, RemovePush, ZulipPushEvent
from zqtwisted.zulip.push_queries import (
    Devices,
    PushMessage,
    PushUser,
    claim_push_message,
    clear_active_push_flags,
    delete_device_tokens,
    delete_push_devices,
    fetch_devices,
    fetch_mentioned_group,
    fetch_push_user,
    set_push_device_error,
    set_push_device_registered,
)
from zqtwisted.zulip.settings import ZulipSettings
from zqtwisted.zulip.webhook_queries import can_access_user

MAX_GROUP_SIZE_FOR_MENTION_REACTIVATION = 11
REGISTRATION_ERRORS = frozenset(
    {"INVALID_BOUNCER_PUBLIC_KEY", "INVALID_ENCRYPTED_PUSH_REGISTRATION", "REQUEST_EXPIRED"}
)
ADMIN_ERRORS = frozenset({"MISSING_REMOTE_REALM", "INVALID_ZULIP_SERVER", "PUSH_NOTIFICATIONS_DISALLOWED"})
REFUSALS_TO_LOG = frozenset({"PUSH_NOTIFICATIONS_DISALLOWED", "MISSING_REMOTE_REALM"})


class Database(Protocol):
    def run(self, name: str, query: Any, *args: Any) -> Deferred[Any]: ...


class ZulipPush:
    """Handles the three push events; ``bouncer`` None means push is not configured (Zulip: do nothing)."""

    log = Logger()

    def __init__(
        self,
        db: Database,
        bouncer: ZulipBouncer | None,
        settings: ZulipSettings,
        publisher: JsonPublisher,
        salt: str = "",
    ) -> None:
        self.db = db
        self.bouncer = bouncer
        self.settings = settings
        self.publisher = publisher
        self.salt = salt

    def handle(self, parsed: ZulipPushEvent, event: MutableMapping[str, Any]) -> Deferred[None]:
        """Handle one event; ``event`` (the delivery) records progress for a retry."""
        if isinstance(parsed, AddPush):
            return Deferred.fromCoroutine(self._add(parsed, event))
        if isinstance(parsed, RemovePush):
            return Deferred.fromCoroutine(self._remove(parsed, event))
        return Deferred.fromCoroutine(self._register(parsed))

    # -- add ---------------------------------------------------------------------------

    async def _add(self, push: AddPush, event: MutableMapping[str, Any]) -> None:
        if self.bouncer is None:
            return  # Zulip: push notifications are not configured
        user = await self._user(push.user_id)
        if user.is_bot:
            self.log.warn("Push notification event for bot user {user_id} ignored", user_id=user.id)
            return
        if not user.is_active:
            self.log.info("Skipping push notifications for deactivated user {user_id}", user_id=user.id)
            return
        if not (user.enable_offline_push_notifications or user.enable_online_push_notifications):
            return
        progress = _progress(event)
        claim = await self.db.run(
            "claim_push_message", claim_push_message, user, push.message_id, "claimed" in progress
        )
        if claim.status == "archived":
            return
        if claim.status == "no_access":
            self.log.info(
                "Unexpected message access failure handling push notifications: {user_id} {message_id}",
                user_id=user.id,
                message_id=push.message_id,
            )
            return
        if claim.status == "read":
            self.log.info(
                "Message {message_id} is already read (or notified) for user {user_id}: no push notification",
                message_id=push.message_id,
                user_id=user.id,
            )
            return
        if claim.status == "no_usermessage" and not user.long_term_idle:
            self.log.error(
                "Could not find UserMessage with message_id {message_id} and user_id {user_id}",
                message_id=push.message_id,
                user_id=user.id,
            )
            return
        progress.append("claimed")
        message = claim.message
        assert message is not None
        trigger = payloads.LEGACY_TRIGGERS.get(push.trigger, push.trigger)
        group = await self._group(push, trigger)
        await self._maybe_soft_reactivate(user, trigger, group, progress)
        can_access = True
        if message.is_channel_message:
            can_access = await self.db.run("can_access_user", can_access_user, user.id, message.sender_id)
        self.log.info("Sending push notifications to mobile clients for user {user_id}", user_id=user.id)
        devices: Devices = await self.db.run("fetch_devices", fetch_devices, user.id)
        if "legacy" not in progress:
            await self._send_legacy(
                user, devices, lambda: self._add_legacy(user, message, devices, trigger, group, can_access)
            )
            progress.append("legacy")
        if "e2ee" not in progress:
            await self._send_e2ee(user, devices, lambda: self._add_encrypted(user, message, group, can_access))
            progress.append("e2ee")

    async def _user(self, user_id: int) -> PushUser:
        user: PushUser | None = await self.db.run("fetch_push_user", fetch_push_user, user_id)
        if user is None:
            raise PermanentError(f"user {user_id} does not exist")
        return user

    async def _group(self, push: AddPush, trigger: str) -> payloads.Group | None:
        """Zulip's ``get_mentioned_user_group`` for one event."""
        if push.mentioned_user_group_id is None:
            return None
        found = await self.db.run("fetch_mentioned_group", fetch_mentioned_group, push.mentioned_user_group_id)
        if found is None:
            return None
        name, members = found
        return payloads.Group(push.mentioned_user_group_id, name, members)

    async def _maybe_soft_reactivate(
        self, user: PushUser, trigger: str, group: payloads.Group | None, progress: list[str]
    ) -> None:
        """Zulip's ``soft_reactivate_if_personal_notification``: a deferred_work event."""
        if not user.long_term_idle or "reactivation" in progress:
            return
        personal = trigger == payloads.MENTION and group is None
        small_group = (
            trigger == payloads.MENTION
            and group is not None
            and group.members <= MAX_GROUP_SIZE_FOR_MENTION_REACTIVATION
        )
        if trigger == "direct_message" or personal or small_group:
            await self.publisher.publish_json("deferred_work", {"type": "soft_reactivate", "user_profile_id": user.id})
            progress.append("reactivation")

    def _add_legacy(
        self,
        user: PushUser,
        message: PushMessage,
        devices: Devices,
        trigger: str,
        group: payloads.Group | None,
        can_access: bool,
    ) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
        payload = payloads.message_payload(user, message, group, can_access, self.settings)
        apns = payloads.message_payload_apns(payload, message, trigger, can_access) if devices.apple else {}
        gcm, options = (
            payloads.message_payload_gcm(payload, user, message, can_access, self.settings, self.salt)
            if devices.android
            else ({}, {})
        )
        if user.require_e2ee_push_notifications:
            apns, gcm = payloads.redact(apns, gcm)
        return apns, gcm, options

    def _add_encrypted(
        self, user: PushUser, message: PushMessage, group: payloads.Group | None, can_access: bool
    ) -> dict[str, Any]:
        payload = payloads.message_payload(user, message, group, can_access, self.settings, legacy=False)
        data, _ = payloads.message_payload_gcm(
            payload, user, message, can_access, self.settings, self.salt, legacy=False
        )
        return data

    # -- remove ------------------------------------------------------------------------

    async def _remove(self, push: RemovePush, event: MutableMapping[str, Any]) -> None:
        if self.bouncer is None:
            return
        user = await self._user(push.user_id)
        ids = sorted(push.message_ids)[-payloads.MAX_APNS_MESSAGE_IDS :]
        progress = _progress(event)
        devices: Devices = await self.db.run("fetch_devices", fetch_devices, user.id)

        def legacy() -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
            apns = payloads.remove_payload_apns(user, ids, self.settings) if devices.apple else {}
            gcm, options = payloads.remove_payload_gcm(user, ids, self.settings) if devices.android else ({}, {})
            return apns, gcm, options

        if "legacy" not in progress:
            await self._send_legacy(user, devices, legacy)
            progress.append("legacy")
        if "e2ee" not in progress:
            await self._send_e2ee(
                user, devices, lambda: payloads.remove_payload_gcm(user, ids, self.settings, False)[0]
            )
            progress.append("e2ee")
        await self.db.run("clear_active_push_flags", clear_active_push_flags, user.id, list(push.message_ids))

    # -- sending -----------------------------------------------------------------------

    async def _send_legacy(self, user: PushUser, devices: Devices, build: Any) -> None:
        """Zulip's ``send_notifications_to_bouncer``, and its handling of the answer."""
        if not devices.apple and not devices.android:
            self.log.info(
                "Skipping legacy push notifications for user {user_id} because there are no registered devices",
                user_id=user.id,
            )
            return
        assert self.bouncer is not None
        apns, gcm, options = build()
        body = {
            "user_uuid": user.uuid,
            "user_id": user.id,
            "realm_uuid": user.realm_uuid,
            "apns_payload": apns,
            "gcm_payload": gcm,
            "gcm_options": options,
            "android_devices": list(devices.android),
            "apple_devices": [token for token, _ in devices.apple],
        }
        try:
            answer = await self.bouncer.post_json("push/notify", body)
        except BouncerRefused as e:
            if e.code == "PUSH_NOTIFICATIONS_DISALLOWED":
                self.log.warn("Bouncer refused to send push notification: {reason}", reason=e.msg)
                return
            raise
        deleted = answer.get("deleted_devices")
        if not isinstance(deleted, dict):
            deleted = {}
        android = [t for t in deleted.get("android_devices", []) if isinstance(t, str)]
        apple = [t for t in deleted.get("apple_devices", []) if isinstance(t, str)]
        if android or apple:
            self.log.info(
                "Deleting push tokens based on response from bouncer: Android: {android} tokens, Apple: {apple} tokens",
                android=len(android),
                apple=len(apple),
            )
            await self.db.run("delete_device_tokens", delete_device_tokens, android, apple)
        self.log.info(
            "Sent mobile push notifications for user {user_id} through bouncer: "
            "{android} via FCM devices, {apple} via APNs devices",
            user_id=user.id,
            android=answer.get("total_android_devices", 0),
            apple=answer.get("total_apple_devices", 0),
        )

    async def _send_e2ee(self, user: PushUser, devices: Devices, build: Any) -> None:
        """Zulip's ``send_push_notifications`` to the user's registered E2EE devices."""
        if not devices.e2ee:
            self.log.info(
                "Skipping E2EE push notifications for user {user_id} because there are no registered devices",
                user_id=user.id,
            )
            return
        assert self.bouncer is not None
        requests = payloads.e2ee_push_requests(build(), devices.e2ee)
        try:
            answer = await self.bouncer.post_json(
                "push/e2ee/notify", {"realm_uuid": user.realm_uuid, "push_requests": requests}
            )
        except BouncerRefused as e:
            if e.code in REFUSALS_TO_LOG:
                self.log.warn("Bouncer refused to send E2EE push notification: {reason}", reason=e.msg)
                return
            raise
        gone = [i for i in answer.get("delete_device_ids", []) if isinstance(i, int)]
        if gone:
            self.log.info(
                "Deleting PushDevice rows with the following device IDs based on response from bouncer: {ids}",
                ids=sorted(gone),
            )
            await self.db.run("delete_push_devices", delete_push_devices, user.id, gone)
        self.log.info(
            "Sent E2EE mobile push notifications for user {user_id}: {android} via FCM, {apple} via APNs",
            user_id=user.id,
            android=answer.get("android_successfully_sent_count", 0),
            apple=answer.get("apple_successfully_sent_count", 0),
        )

    # -- register ----------------------------------------------------------------------

    async def _register(self, push: RegisterPush) -> None:
        """Zulip's ``handle_register_push_device_to_bouncer``."""
        user = await self._user(push.user_id)
        if self.bouncer is None:
            self.log.warn(
                "Push device registration for user {user_id} not sent: no push bouncer is configured", user_id=user.id
            )
            return
        fields = {
            "realm_uuid": user.realm_uuid,
            "push_account_id": push.push_account_id,
            "encrypted_push_registration": push.encrypted_push_registration,
            "bouncer_public_key": push.bouncer_public_key,
        }
        failed = (
            f"Push device registration request for user_id={user.id}, push_account_id={push.push_account_id} failed."
        )
        try:
            answer = await self.bouncer.post_form("push/e2ee/register", fields)
        except BouncerRetryLater:
            raise
        except BouncerRefused as e:
            if e.code in ADMIN_ERRORS or e.status in (0, 401, 403) or e.status >= 500 or not 400 <= e.status < 500:
                self.log.error("{message}", message=failed)
                raise BouncerRetryLater(failed) from None
            code = e.code if e.code in REGISTRATION_ERRORS else (e.code or "BAD_REQUEST")
            await self.db.run("set_push_device_error", set_push_device_error, user.id, push.push_account_id, code)
            if code == "REQUEST_EXPIRED":
                self.log.error(
                    "Push device registration request for user_id={user_id}, push_account_id={account} expired.",
                    user_id=user.id,
                    account=push.push_account_id,
                )
            return
        device_id = answer.get("device_id")
        if not isinstance(device_id, int) or isinstance(device_id, bool):
            self.log.error("{message}", message=failed + " (the bouncer sent no device_id)")
            raise BouncerRetryLater(failed)
        await self.db.run(
            "set_push_device_registered", set_push_device_registered, user.id, push.push_account_id, device_id
        )


def _progress(event: MutableMapping[str, Any]) -> list[str]:
    progress = event.get(PROGRESS_KEY)
    if not isinstance(progress, list):
        progress = event[PROGRESS_KEY] = []
    return progress
