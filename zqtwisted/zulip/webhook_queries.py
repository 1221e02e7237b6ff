"""The named queries of outgoing webhooks in Zulip mode: the bot, its services, who it may see.

Each function takes a DB-API cursor and plain values and returns plain values; the
pool (:mod:`.pool`) runs it in a transaction with its deadline.  SQL follows the
ORM queries of Zulip's worker: ``get_user_profile_by_id``, ``get_bot_services``,
``check_user_can_access_all_users`` / ``check_can_access_user``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

ROLE_GUEST = 600  # UserProfile.ROLE_GUEST


@dataclass(frozen=True)
class BotRow:
    """The bot user and its realm, as the worker needs them (the API key is a secret: never log it)."""

    id: int
    email: str
    full_name: str
    api_key: str
    is_active: bool
    bot_type: int | None
    bot_owner_id: int | None
    realm_id: int
    realm_string_id: str
    recipient_id: int | None

    def __repr__(self) -> str:  # keeps the API key out of any accidental log line
        return f"BotRow(id={self.id}, realm_id={self.realm_id})"


@dataclass(frozen=True)
class ServiceRow:
    """One row of ``zerver_service`` (the token is a secret: never log it)."""

    id: int
    name: str
    base_url: str
    token: str
    interface: int

    def __repr__(self) -> str:
        return f"ServiceRow(id={self.id}, name={self.name!r})"


def fetch_bot(cursor: Any, bot_id: int) -> BotRow | None:
    """The bot ``bot_id`` with its realm's subdomain, or None."""
    cursor.execute(
        "SELECT u.id, u.email, u.full_name, u.api_key, u.is_active, u.bot_type, u.bot_owner_id, "
        "u.realm_id, r.string_id, u.recipient_id "
        "FROM zerver_userprofile u JOIN zerver_realm r ON r.id = u.realm_id WHERE u.id = %s",
        (bot_id,),
    )
    row = cursor.fetchone()
    return None if row is None else BotRow(*row)


def fetch_bot_services(cursor: Any, bot_id: int) -> list[ServiceRow]:
    """Zulip's ``get_bot_services``: every service of the bot, oldest first."""
    cursor.execute(
        "SELECT id, name, base_url, token, interface FROM zerver_service WHERE user_profile_id = %s ORDER BY id",
        (bot_id,),
    )
    return [ServiceRow(*row) for row in cursor.fetchall()]


def can_access_user(cursor: Any, acting_user_id: int, target_user_id: int) -> bool:
    """Zulip's ``check_can_access_user``: only guests outside ``can_access_all_users_group`` are limited.

    Such a guest sees themself and the users they share a channel or a group
    direct message with, or have exchanged direct messages with.
    """
    cursor.execute(
        """
        WITH RECURSIVE acting AS (
            SELECT u.id, u.role, u.realm_id, u.recipient_id, r.can_access_all_users_group_id AS all_users_group
            FROM zerver_userprofile u JOIN zerver_realm r ON r.id = u.realm_id WHERE u.id = %(acting)s
        ), groups(id) AS (
            SELECT all_users_group FROM acting
            UNION
            SELECT g.subgroup_id FROM zerver_groupgroupmembership g JOIN groups ON g.supergroup_id = groups.id
        )
        SELECT
            acting.role <> %(guest)s
            OR acting.id = %(target)s
            OR EXISTS (
                SELECT 1 FROM zerver_usergroupmembership m JOIN groups ON m.user_group_id = groups.id
                WHERE m.user_profile_id = acting.id
            )
            OR EXISTS (
                SELECT 1 FROM zerver_subscription a JOIN zerver_subscription b ON a.recipient_id = b.recipient_id
                WHERE a.user_profile_id = acting.id AND b.user_profile_id = %(target)s AND a.active AND b.active
            )
            OR EXISTS (
                SELECT 1 FROM zerver_message m JOIN zerver_userprofile t ON t.id = %(target)s
                WHERE m.realm_id = acting.realm_id AND (
                    (m.sender_id = acting.id AND m.recipient_id = t.recipient_id)
                    OR (m.sender_id = t.id AND m.recipient_id = acting.recipient_id)
                )
            )
        FROM acting
        """,
        {"acting": acting_user_id, "target": target_user_id, "guest": ROLE_GUEST},
    )
    row = cursor.fetchone()
    return bool(row[0]) if row is not None else False
