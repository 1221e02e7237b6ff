"""The schema fixture of Zulip's tables (tests/fixtures/zulip_schema/), its loader, and a test database.

:func:`load_schema` creates the fixture's tables in a schema of a PostgreSQL database
(used by the tests and by ``tools/zulip-schema``).  :class:`ZulipTestDatabase` makes a
database of its own on the shared PostgreSQL (``zqtwisted_zulip_test_<pid>_<n>``),
loads the fixture into schema ``zulip`` and inserts rows as Zulip's models would
(every NOT NULL column filled with the model's default), and drops it at the end.
"""

from __future__ import annotations

import itertools
import os
import re
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

SCHEMA_DIR = Path(__file__).resolve().parent / "fixtures" / "zulip_schema"
ADMIN_DSN = os.environ.get("ZQ_TEST_POSTGRES_ADMIN_DSN", "host=127.0.0.1 port=5432 dbname=postgres user=postgres")
_counter = itertools.count(1)


def schema_files() -> list[Path]:
    return sorted(SCHEMA_DIR.glob("*.sql"))


def statements(text: str) -> Iterator[str]:
    """The SQL statements of a fixture file (``;`` at the end of a line ends one; comments dropped)."""
    lines = [line for line in text.splitlines() if not line.strip().startswith("--")]
    for statement in re.split(r";\s*\n", "\n".join(lines) + "\n"):
        if statement.strip():
            yield statement.strip().rstrip(";")


def ordered_statements(files: list[Path] | None = None) -> list[str]:
    """Every file's CREATE TABLE, then every ALTER TABLE, then every CREATE INDEX."""
    phases: dict[int, list[str]] = {0: [], 1: [], 2: []}
    for path in files if files is not None else schema_files():
        for statement in statements(path.read_text(encoding="utf-8")):
            head = statement.split(None, 2)[:2]
            phase = {"TABLE": 0, "ALTER": 1}.get(head[1] if head[0] == "CREATE" else head[0], 2)
            phases[phase].append(statement)
    return phases[0] + phases[1] + phases[2]


def load_schema(cursor: Any, schema: str = "zulip") -> None:
    """Create the fixture's tables in ``schema`` (created if needed) of the cursor's database."""
    from psycopg2 import sql

    cursor.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(schema)))
    cursor.execute(sql.SQL("SET search_path TO {}").format(sql.Identifier(schema)))
    for statement in ordered_statements():
        cursor.execute(statement)


# -- rows, with the models' Python-side defaults -------------------------------------------

REALM_GROUP_SETTINGS = (
    "can_add_custom_emoji_group_id can_create_public_channel_group_id can_create_private_channel_group_id "
    "can_create_web_public_channel_group_id can_delete_any_message_group_id can_delete_own_message_group_id "
    "can_move_messages_between_topics_group_id can_invite_users_group_id can_summarize_topics_group_id "
    "create_multiuse_invite_group_id direct_message_initiator_group_id direct_message_permission_group_id "
    "can_access_all_users_group_id can_create_groups_id can_manage_all_groups_id can_add_subscribers_group_id "
    "can_move_messages_between_channels_group_id can_resolve_topics_group_id can_create_bots_group_id "
    "can_create_write_only_bots_group_id can_manage_billing_group_id can_mention_many_users_group_id "
    "can_set_delete_message_policy_group_id can_set_topics_policy_group_id"
).split()
STREAM_GROUP_SETTINGS = (
    "can_add_subscribers_group_id can_administer_channel_group_id can_create_topic_group_id "
    "can_delete_any_message_group_id can_delete_own_message_group_id can_move_messages_out_of_channel_group_id "
    "can_move_messages_within_channel_group_id can_remove_subscribers_group_id can_send_message_group_id "
    "can_subscribe_group_id can_resolve_topics_group_id"
).split()
GROUP_SETTINGS = (
    "can_add_members_group_id can_join_group_id can_leave_group_id can_manage_group_id "
    "can_mention_group_id can_remove_members_group_id"
).split()

REALM_DEFAULTS: dict[str, Any] = {
    "description": "",
    "uuid_owner_secret": "zuliprealm_secret",
    "push_notifications_enabled": True,
    "deactivated": False,
    "emails_restricted_to_domains": False,
    "invite_required": True,
    "disallow_disposable_email_addresses": True,
    "enable_spectator_access": False,
    "want_advertise_in_communities_directory": False,
    "inline_image_preview": True,
    "inline_url_embed_preview": False,
    "digest_emails_enabled": False,
    "digest_weekday": 1,
    "send_channel_events_messages": False,
    "send_welcome_emails": True,
    "message_content_allowed_in_email_notifications": True,
    "topics_policy": 2,
    "require_unique_names": False,
    "name_changes_disabled": False,
    "email_changes_disabled": False,
    "avatar_changes_disabled": False,
    "welcome_message_custom_text": "",
    "move_messages_within_stream_limit_seconds": 604800,
    "move_messages_between_streams_limit_seconds": 604800,
    "waiting_period_threshold": 0,
    "message_content_delete_limit_seconds": 600,
    "allow_message_editing": True,
    "message_content_edit_limit_seconds": 600,
    "message_edit_history_visibility_policy": 1,
    "default_language": "en",
    "message_retention_days": -1,
    "first_visible_message_id": 0,
    "org_type": 0,
    "plan_type": 1,
    "video_chat_provider": 1,
    "giphy_rating": 1,
    "default_code_block_language": "",
    "enable_read_receipts": False,
    "enable_guest_user_indicator": True,
    "enable_guest_user_dm_warning": True,
    "icon_source": "G",
    "icon_version": 1,
    "logo_source": "D",
    "logo_version": 1,
    "night_logo_source": "D",
    "night_logo_version": 1,
}

_USER_TRUE = (
    "web_escape_navigates_to_home_view display_emoji_reaction_users starred_message_counts web_suggest_update_timezone "
    "web_navigate_to_sent_message wildcard_mentions_notify enable_followed_topic_desktop_notifications "
    "enable_followed_topic_email_notifications enable_followed_topic_push_notifications "
    "enable_followed_topic_audible_notifications enable_followed_topic_wildcard_mentions_notify "
    "enable_desktop_notifications pm_content_in_desktop_notifications enable_sounds enable_offline_email_notifications "
    "message_content_in_email_notifications enable_offline_push_notifications enable_online_push_notifications "
    "enable_digest_emails enable_login_emails enable_marketing_emails presence_enabled "
    "automatically_follow_topics_where_mentioned enable_drafts_synchronization send_stream_typing_notifications "
    "send_private_typing_notifications send_read_receipts receives_typing_notifications is_active"
).split()
_USER_FALSE = (
    "is_superuser enter_sends left_side_userlist fluid_layout_width high_contrast_mode translate_emoticons "
    "twenty_four_hour_time enable_stream_desktop_notifications enable_stream_email_notifications "
    "enable_stream_push_notifications enable_stream_audible_notifications allow_private_data_export hide_ai_features "
    "is_staff is_bot long_term_idle is_mirror_dummy is_imported_stub can_forge_sender can_create_users "
    "can_change_user_emails default_all_public_streams"
).split()
USER_DEFAULTS: dict[str, Any] = {
    **dict.fromkeys(_USER_TRUE, True),
    **dict.fromkeys(_USER_FALSE, False),
    "password": "!",
    "default_language": "en",
    "web_home_view": "inbox",
    "color_scheme": 1,
    "web_font_size_px": 16,
    "web_line_height_percent": 140,
    "web_animate_image_previews": "on_hover",
    "demote_inactive_streams": 1,
    "web_mark_read_on_scroll_policy": 1,
    "emojiset": "google",
    "user_list_style": 3,
    "web_stream_unreads_count_display_policy": 2,
    "email_notifications_batching_period_seconds": 120,
    "notification_sound": "zulip",
    "desktop_icon_count_display": 1,
    "realm_name_in_email_notifications_policy": 1,
    "automatically_follow_topics_policy": 3,
    "automatically_unmute_topics_in_muted_streams_policy": 2,
    "email_address_visibility": 1,
    "role": 400,
    "rate_limits": "",
    "timezone": "",
    "avatar_source": "G",
    "avatar_version": 1,
}


@dataclass
class Realm:
    id: int
    string_id: str
    uuid: str
    everyone_group: int
    members_group: int


class ZulipTestDatabase:
    """A throwaway database with the fixture loaded in schema ``zulip``, and row helpers."""

    def __init__(self, admin_dsn: str = ADMIN_DSN, schema: str = "zulip") -> None:
        import psycopg2

        self.name = f"zqtwisted_zulip_test_{os.getpid()}_{next(_counter)}"
        self.schema = schema
        self.admin_dsn = admin_dsn
        admin = psycopg2.connect(admin_dsn, connect_timeout=5)
        admin.autocommit = True
        with admin.cursor() as cursor:
            cursor.execute(f'DROP DATABASE IF EXISTS "{self.name}"')
            cursor.execute(f'CREATE DATABASE "{self.name}"')
        admin.close()
        self.dsn = re.sub(r"dbname=\S+", f"dbname={self.name}", admin_dsn)
        self.connection = psycopg2.connect(self.dsn, connect_timeout=5)
        with self.connection.cursor() as cursor:
            load_schema(cursor, schema)
        self.connection.commit()
        self.client_id = self.insert("zerver_client", name="website")

    def drop(self) -> None:
        import psycopg2

        self.connection.close()
        admin = psycopg2.connect(self.admin_dsn, connect_timeout=5)
        admin.autocommit = True
        with admin.cursor() as cursor:
            cursor.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()",
                (self.name,),
            )
            cursor.execute(f'DROP DATABASE IF EXISTS "{self.name}"')
        admin.close()

    # -- generic ---------------------------------------------------------------------------

    def execute(self, query: str, params: Any = ()) -> list[tuple[Any, ...]]:
        with self.connection.cursor() as cursor:
            cursor.execute(query, params)
            rows = cursor.fetchall() if cursor.description else []
        self.connection.commit()
        return rows

    def insert(self, table: str, **values: Any) -> int:
        columns = list(values)
        placeholders = ", ".join(["%s"] * len(columns))
        key = "usergroup_ptr_id" if table == "zerver_namedusergroup" else "id"
        rows = self.execute(
            f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({placeholders}) RETURNING {key}",
            [values[c] for c in columns],
        )
        return int(rows[0][0])

    # -- Zulip's objects -------------------------------------------------------------------

    def realm(self, string_id: str = "zulip", name: str = "Zulip Dev") -> Realm:
        """A realm with its system groups (role:everyone, role:members, role:nobody) as do_create_realm makes."""
        realm_uuid = str(uuid.uuid4())
        with self.connection.cursor() as cursor:
            cursor.execute(
                f"INSERT INTO zerver_realm (name, string_id, uuid, date_created, {', '.join(REALM_GROUP_SETTINGS)}, "
                f"{', '.join(REALM_DEFAULTS)}) VALUES (%s, %s, %s, now(), "
                f"{', '.join(['0'] * len(REALM_GROUP_SETTINGS))}, {', '.join(['%s'] * len(REALM_DEFAULTS))}) "
                "RETURNING id",
                [name, string_id, realm_uuid, *REALM_DEFAULTS.values()],
            )
            realm_id = cursor.fetchone()[0]
            groups = {}
            for group_name in ("role:nobody", "role:everyone", "role:members"):
                cursor.execute("INSERT INTO zerver_usergroup (realm_id) VALUES (%s) RETURNING id", (realm_id,))
                groups[group_name] = cursor.fetchone()[0]
            nobody = groups["role:nobody"]
            for group_name, group_id in groups.items():
                cursor.execute(
                    f"INSERT INTO zerver_namedusergroup (usergroup_ptr_id, name, description, date_created, "
                    f"is_system_group, realm_id, deactivated, {', '.join(GROUP_SETTINGS)}) VALUES "
                    f"(%s, %s, '', now(), true, %s, false, {', '.join(['%s'] * len(GROUP_SETTINGS))})",
                    [group_id, group_name, realm_id, *[nobody] * len(GROUP_SETTINGS)],
                )
            cursor.execute(
                f"UPDATE zerver_realm SET {', '.join(f'{c} = %s' for c in REALM_GROUP_SETTINGS)} WHERE id = %s",
                [*[groups["role:everyone"]] * len(REALM_GROUP_SETTINGS), realm_id],
            )
        self.connection.commit()
        return Realm(realm_id, string_id, realm_uuid, groups["role:everyone"], groups["role:members"])

    def user(self, realm: Realm, email: str, full_name: str, **fields: Any) -> int:
        """A user with their personal Recipient (as do_create_user makes them)."""
        values = {**USER_DEFAULTS, **fields}
        values.setdefault("delivery_email", email)
        values.setdefault("email", email)
        values.setdefault("api_key", uuid.uuid4().hex)
        values.setdefault("uuid", str(uuid.uuid4()))
        user_id = self.insert(
            "zerver_userprofile", realm_id=realm.id, full_name=full_name, date_joined="now()", **values
        )
        recipient = self.insert("zerver_recipient", type=1, type_id=user_id)
        self.execute("UPDATE zerver_userprofile SET recipient_id = %s WHERE id = %s", (recipient, user_id))
        group = realm.members_group if values.get("role", 400) <= 400 else realm.everyone_group
        self.insert("zerver_usergroupmembership", user_group_id=group, user_profile_id=user_id)
        return user_id

    def recipient_of_user(self, user_id: int) -> int:
        return int(self.execute("SELECT recipient_id FROM zerver_userprofile WHERE id = %s", (user_id,))[0][0])

    def stream(self, realm: Realm, name: str, subscribers: list[int], **fields: Any) -> tuple[int, int]:
        """A channel with its Recipient and subscriptions: (stream id, recipient id)."""
        values = {
            "deactivated": False,
            "description": "",
            "rendered_description": "",
            "invite_only": False,
            "history_public_to_subscribers": True,
            "is_web_public": False,
            "topics_policy": 1,
            **fields,
        }
        groups = dict.fromkeys(STREAM_GROUP_SETTINGS, realm.everyone_group)
        stream_id = self.insert("zerver_stream", name=name, realm_id=realm.id, date_created="now()", **groups, **values)
        recipient = self.insert("zerver_recipient", type=2, type_id=stream_id)
        self.execute("UPDATE zerver_stream SET recipient_id = %s WHERE id = %s", (recipient, stream_id))
        for user_id in subscribers:
            self.subscribe(user_id, recipient)
        return stream_id, recipient

    def subscribe(self, user_id: int, recipient: int) -> None:
        self.insert(
            "zerver_subscription",
            user_profile_id=user_id,
            recipient_id=recipient,
            active=True,
            is_user_active=True,
            is_muted=False,
            color="#c2c2c2",
            pin_to_top=False,
        )

    def huddle(self, members: list[int]) -> int:
        """A group DM's Recipient, its members subscribed: the recipient id."""
        import hashlib

        key = hashlib.sha1(",".join(str(i) for i in sorted(members)).encode()).hexdigest()
        huddle = self.insert("zerver_huddle", huddle_hash=key, group_size=len(members))
        recipient = self.insert("zerver_recipient", type=3, type_id=huddle)
        self.execute("UPDATE zerver_huddle SET recipient_id = %s WHERE id = %s", (recipient, huddle))
        for user_id in members:
            self.subscribe(user_id, recipient)
        return recipient

    def message(
        self,
        realm: Realm,
        sender: int,
        recipient: int,
        content: str,
        rendered: str,
        topic: str = "\x07",
        receivers: Mapping[int, int] | None = None,
    ) -> int:
        """A message and its UserMessage rows (``receivers``: user id -> flags)."""
        channel = bool(self.execute("SELECT type = 2 FROM zerver_recipient WHERE id = %s", (recipient,))[0][0])
        message_id = self.insert(
            "zerver_message",
            sender_id=sender,
            recipient_id=recipient,
            realm_id=realm.id,
            subject=topic,
            content=content,
            rendered_content=rendered,
            rendered_content_version=1,
            date_sent="2025-11-20T10:00:00+00:00",
            sending_client_id=self.client_id,
            has_attachment=False,
            has_image=False,
            has_link=False,
            is_channel_message=channel,
        )
        for user_id, flags in (receivers or {}).items():
            self.insert("zerver_usermessage", user_profile_id=user_id, message_id=message_id, flags=flags)
        return message_id

    def service(self, bot: int, name: str, base_url: str, token: str, interface: int = 1) -> int:
        return self.insert(
            "zerver_service", name=name, user_profile_id=bot, base_url=base_url, token=token, interface=interface
        )

    def device_token(self, user_id: int, kind: int, token: str, ios_app_id: str | None = None) -> int:
        return self.insert(
            "zerver_pushdevicetoken",
            user_id=user_id,
            kind=kind,
            token=token,
            ios_app_id=ios_app_id,
            last_updated="now()",
        )

    def flags(self, user_id: int, message_id: int) -> int:
        rows = self.execute(
            "SELECT flags FROM zerver_usermessage WHERE user_profile_id = %s AND message_id = %s",
            (user_id, message_id),
        )
        return int(rows[0][0])
