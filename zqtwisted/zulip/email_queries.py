"""The named queries of the email queues in Zulip mode.

``build_email`` (zerver/lib/send_email.py) resolves ``to_user_ids`` with
``get_user_profile_by_id`` (any user, active or not, as Zulip does: deactivated
users get the emails addressed to them) and the worker reads ``realm_id`` with
``Realm.objects.get``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class EmailRealm:
    id: int
    name: str
    string_id: str


@dataclass(frozen=True)
class EmailUser:
    """A recipient: the real address (``delivery_email``) is private, so it is never in a repr."""

    id: int
    full_name: str
    delivery_email: str
    is_active: bool
    default_language: str
    realm: EmailRealm

    def __repr__(self) -> str:
        return f"EmailUser(id={self.id}, realm_id={self.realm.id})"


def fetch_email_users(cursor: Any, user_ids: Sequence[int]) -> dict[int, EmailUser]:
    """The users ``user_ids`` that exist, by id, with their realm."""
    cursor.execute(
        "SELECT u.id, u.full_name, u.delivery_email, u.is_active, u.default_language, r.id, r.name, r.string_id "
        "FROM zerver_userprofile u JOIN zerver_realm r ON r.id = u.realm_id WHERE u.id = ANY(%s)",
        (list(user_ids),),
    )
    users = {}
    for uid, full_name, delivery_email, is_active, language, realm_id, realm_name, string_id in cursor.fetchall():
        realm = EmailRealm(int(realm_id), str(realm_name), str(string_id))
        users[int(uid)] = EmailUser(
            int(uid), str(full_name), str(delivery_email), bool(is_active), str(language), realm
        )
    return users


def fetch_email_realm(cursor: Any, realm_id: int) -> EmailRealm | None:
    cursor.execute("SELECT id, name, string_id FROM zerver_realm WHERE id = %s", (realm_id,))
    row = cursor.fetchone()
    return None if row is None else EmailRealm(int(row[0]), str(row[1]), str(row[2]))
