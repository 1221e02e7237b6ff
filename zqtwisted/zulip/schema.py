"""The tables and columns of Zulip's database that zqtwisted reads or writes, checked at start-up.

:data:`REQUIRED` lists, per table, exactly the columns the named queries use.
:func:`check_schema` asks ``information_schema`` (in the configured schema) and
raises :class:`SchemaMismatch` with one line naming whatever is missing: the mark
of a Zulip version zqtwisted does not know, or of a wrong ``[zulip] schema``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

SUPPORTED = "Zulip 11 / main of late 2025"

REQUIRED: dict[str, tuple[str, ...]] = {
    "zerver_realm": (
        "id",
        "string_id",
        "name",
        "uuid",
        "can_access_all_users_group_id",
        "require_e2ee_push_notifications",
    ),
    "zerver_userprofile": (
        "id",
        "realm_id",
        "email",
        "delivery_email",
        "full_name",
        "api_key",
        "uuid",
        "is_active",
        "is_bot",
        "bot_type",
        "bot_owner_id",
        "role",
        "recipient_id",
        "long_term_idle",
        "avatar_source",
        "avatar_version",
        "enable_offline_push_notifications",
        "enable_online_push_notifications",
    ),
    "zerver_service": ("id", "name", "user_profile_id", "base_url", "token", "interface"),
    "zerver_recipient": ("id", "type", "type_id"),
    "zerver_stream": ("id", "name", "realm_id", "recipient_id", "invite_only", "history_public_to_subscribers"),
    "zerver_subscription": ("id", "user_profile_id", "recipient_id", "active"),
    "zerver_huddle": ("id", "recipient_id"),
    "zerver_message": (
        "id",
        "sender_id",
        "recipient_id",
        "realm_id",
        "subject",
        "rendered_content",
        "date_sent",
        "is_channel_message",
    ),
    "zerver_archivedmessage": ("id",),
    "zerver_usermessage": ("id", "user_profile_id", "message_id", "flags"),
    "zerver_usergroup": ("id",),
    "zerver_namedusergroup": ("usergroup_ptr_id", "name", "realm_id"),
    "zerver_usergroupmembership": ("user_group_id", "user_profile_id"),
    "zerver_groupgroupmembership": ("supergroup_id", "subgroup_id"),
    "zerver_pushdevicetoken": ("id", "user_id", "kind", "token", "ios_app_id"),
    "zerver_pushdevice": (
        "id",
        "user_id",
        "token_kind",
        "push_account_id",
        "push_key",
        "bouncer_device_id",
        "error_code",
    ),
    # user_activity, user_activity_interval (zqtwisted.zulip.activity_queries)
    "zerver_useractivity": ("id", "user_profile_id", "client_id", "query", "count", "last_visit"),
    "zerver_useractivityinterval": ("id", "user_profile_id", "start", "end"),
    "zerver_client": ("id",),
    # email_senders, missedmessage_emails (zqtwisted.zulip.email_queries, missed_queries, missedmessage_store)
    "zerver_scheduledmessagenotificationemail": (
        "id",
        "user_profile_id",
        "message_id",
        "trigger",
        "mentioned_user_group_id",
        "scheduled_timestamp",
    ),
    "zerver_missedmessageemailaddress": (
        "id",
        "message_id",
        "user_profile_id",
        "email_token",
        "timestamp",
        "times_used",
    ),
    "confirmation_confirmation": (
        "id",
        "content_type_id",
        "object_id",
        "date_sent",
        "confirmation_key",
        "expiry_date",
        "realm_id",
        "type",
    ),
    "django_content_type": ("id", "app_label", "model"),
}
# The email queues' columns of the tables above.
for _table, _columns in {
    "zerver_userprofile": (
        "default_language",
        "emojiset",
        "email_notifications_batching_period_seconds",
        "enable_offline_email_notifications",
        "message_content_in_email_notifications",
        "realm_name_in_email_notifications_policy",
        "last_reminder",
    ),
    "zerver_realm": ("message_content_allowed_in_email_notifications", "deactivated"),
    "zerver_message": ("content",),
}.items():
    REQUIRED[_table] = tuple(dict.fromkeys((*REQUIRED[_table], *_columns)))


class SchemaMismatch(Exception):
    """Zulip's database lacks tables or columns zqtwisted uses."""


def missing_columns(present: Mapping[str, set[str]], required: Mapping[str, tuple[str, ...]]) -> list[str]:
    """``table`` or ``table.column`` for everything required and not present (pure)."""
    missing: list[str] = []
    for table, columns in required.items():
        if table not in present:
            missing.append(table)
            continue
        missing.extend(f"{table}.{column}" for column in columns if column not in present[table])
    return missing


def check_schema(cursor: Any, schema: str, required: Mapping[str, tuple[str, ...]]) -> None:
    """Raise SchemaMismatch naming what ``schema`` lacks of ``required`` (one information_schema query)."""
    cursor.execute(
        "SELECT table_name, column_name FROM information_schema.columns "
        "WHERE table_schema = %s AND table_name = ANY(%s)",
        (schema, list(required)),
    )
    present: dict[str, set[str]] = {}
    for table, column in cursor.fetchall():
        present.setdefault(table, set()).add(column)
    missing = missing_columns(present, required)
    if missing:
        shown = ", ".join(missing[:12]) + (f" and {len(missing) - 12} more" if len(missing) > 12 else "")
        raise SchemaMismatch(
            f"Zulip's database (schema {schema!r}) lacks {shown}: not a Zulip version zqtwisted knows "
            f"({SUPPORTED}), or the wrong [zulip] schema"
        )
