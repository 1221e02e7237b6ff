"""The pending missed-message notifications in Zulip's own table ``zerver_scheduledmessagenotificationemail``.

A :class:`~zqtwisted.missedmessage.store.PendingStore` over Zulip's database, so that
zqtwisted and Zulip's ``MissedMessageWorker`` can hand the queue over to each other
with nothing lost: each writes and reads the same rows.

- ``add`` is Zulip's ``MissedMessageWorker.consume``: the user's batching period is
  ``zerver_userprofile.email_notifications_batching_period_seconds``; the row takes
  the ``scheduled_timestamp`` of the user's first pending row (one not being sent),
  else now + the period.  A notification of a deleted message or group is skipped,
  as Zulip skips the row its foreign keys refuse; one already pending for the same
  message is not stored twice.
- ``claim`` takes the user's due rows ``FOR UPDATE SKIP LOCKED`` (rows Zulip's worker
  is sending are left alone); the claim itself is kept in memory (Zulip's table has
  no claim columns): one zqtwisted worker serves a table, as Zulip runs one worker.
  A crash between sending and ``delete`` leaves the rows, sent again after the
  restart (at least once).
- ``delete`` removes the claimed rows by id once the emails are published.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from twisted.internet.defer import Deferred, succeed

from zqtwisted.errors import MalformedEventError, PermanentError
from zqtwisted.missedmessage.store import PendingRow, Shard

TABLE = "zerver_scheduledmessagenotificationemail"


class Database(Protocol):
    def run(self, name: str, query: Any, *args: Any) -> Deferred[Any]: ...

    def open(self) -> Deferred[None]: ...


MAX_INTEGER_ID = 2**31 - 1  # Zulip's ids here are integer columns


def validate_zulip_event(event: Mapping[str, Any]) -> dict[str, Any]:
    """Zulip's ``MissedMessageEmailEvent.from_dict``: ``user_profile_id``, ``message_id``, ``trigger``,
    optional ``mentioned_user_group_id``; MalformedEventError naming what is wrong."""
    for name, required in (("user_profile_id", True), ("message_id", True), ("mentioned_user_group_id", False)):
        value = event.get(name)
        if value is None and not required:
            continue
        if not isinstance(value, int) or isinstance(value, bool):
            raise MalformedEventError(f"field {name!r}: expected an int, got {type(value).__name__}")
        if not 1 <= value <= MAX_INTEGER_ID:
            raise MalformedEventError(f"field {name!r}: expected an id in 1..{MAX_INTEGER_ID}, got {str(value)[:40]}")
    trigger = event.get("trigger")
    if not isinstance(trigger, str) or not trigger:
        raise MalformedEventError("field 'trigger': expected a non-empty string")
    return dict(event)


@dataclass(frozen=True)
class Added:
    """What ``add_notification`` did: "added", "pending" (already there), "no_message" or "no_group"."""

    status: str
    due: float | None


def add_notification(
    cursor: Any, event: Mapping[str, Any], now: float, busy: list[int], default_period: float
) -> Added | None:
    """Zulip's ``MissedMessageWorker.consume`` in one transaction; None when the user does not exist."""
    user, message = int(event["user_profile_id"]), int(event["message_id"])
    group = event.get("mentioned_user_group_id")
    cursor.execute("SELECT email_notifications_batching_period_seconds FROM zerver_userprofile WHERE id = %s", (user,))
    row = cursor.fetchone()
    if row is None:
        return None
    period = float(row[0]) if row[0] is not None else default_period
    cursor.execute(
        f"SELECT message_id, extract(epoch FROM scheduled_timestamp)::float8 FROM {TABLE} "
        "WHERE user_profile_id = %s AND NOT (id = ANY(%s)) ORDER BY id",
        (user, busy),
    )
    pending = cursor.fetchall()
    if any(int(m) == message for m, _ in pending):
        return Added("pending", _next_due(cursor, user, busy))
    cursor.execute("SELECT EXISTS (SELECT 1 FROM zerver_message WHERE id = %s)", (message,))
    if not cursor.fetchone()[0]:
        return Added("no_message", _next_due(cursor, user, busy))
    if group is not None:
        cursor.execute("SELECT EXISTS (SELECT 1 FROM zerver_namedusergroup WHERE usergroup_ptr_id = %s)", (group,))
        if not cursor.fetchone()[0]:
            return Added("no_group", _next_due(cursor, user, busy))
    due = float(pending[0][1]) if pending else now + period
    cursor.execute(
        f"INSERT INTO {TABLE} (user_profile_id, message_id, trigger, mentioned_user_group_id, scheduled_timestamp) "
        "VALUES (%s, %s, %s, %s, to_timestamp(%s))",
        (user, message, str(event["trigger"]), group, due),
    )
    return Added("added", _next_due(cursor, user, busy))


def _next_due(cursor: Any, user: int, busy: list[int]) -> float | None:
    cursor.execute(
        f"SELECT min(extract(epoch FROM scheduled_timestamp))::float8 FROM {TABLE} "
        "WHERE user_profile_id = %s AND NOT (id = ANY(%s))",
        (user, busy),
    )
    value = cursor.fetchone()[0]
    return None if value is None else float(value)


def pending_due_times(cursor: Any, busy: list[int], shard: Shard | None) -> dict[int, float]:
    where = ""
    params: list[Any] = [busy]
    if shard is not None and shard.count > 1:
        where, params = " AND user_profile_id %% %s = %s", [busy, shard.count, shard.index - 1]
    cursor.execute(
        f"SELECT user_profile_id, min(extract(epoch FROM scheduled_timestamp))::float8 FROM {TABLE} "
        f"WHERE NOT (id = ANY(%s)){where} GROUP BY 1",
        params,
    )
    return {int(user): float(due) for user, due in cursor.fetchall()}


def next_pending_due(cursor: Any, user: int, busy: list[int]) -> float | None:
    return _next_due(cursor, user, busy)


_COLUMNS = "id, user_profile_id, message_id, trigger, mentioned_user_group_id, extract(epoch FROM scheduled_timestamp)"


def claim_due_rows(cursor: Any, user: int, now: float, busy: list[int]) -> list[PendingRow]:
    """The user's due rows nobody holds, oldest first, locked (rows Zulip's worker holds are skipped)."""
    cursor.execute(
        f"SELECT {_COLUMNS}::float8 FROM {TABLE} WHERE user_profile_id = %s "
        "AND scheduled_timestamp <= to_timestamp(%s) AND NOT (id = ANY(%s)) ORDER BY id FOR UPDATE SKIP LOCKED",
        (user, now, busy),
    )
    return [_row(row) for row in cursor.fetchall()]


def user_rows(cursor: Any, user: int) -> list[PendingRow]:
    cursor.execute(f"SELECT {_COLUMNS}::float8 FROM {TABLE} WHERE user_profile_id = %s ORDER BY id", (user,))
    return [_row(row) for row in cursor.fetchall()]


def delete_rows(cursor: Any, ids: list[int]) -> int:
    cursor.execute(f"DELETE FROM {TABLE} WHERE id = ANY(%s)", (ids,))
    return int(cursor.rowcount)


def _row(row: tuple[Any, ...]) -> PendingRow:
    row_id, user, message, trigger, group, due = row
    event = {
        "user_profile_id": int(user),
        "message_id": int(message),
        "trigger": str(trigger),
        "mentioned_user_group_id": None if group is None else int(group),
    }
    return PendingRow(int(row_id), int(user), int(message), float(due), event)


@dataclass
class _Claim:
    user: int
    ids: list[int]
    until: float


class ZulipNotificationStore:
    """A :class:`~zqtwisted.missedmessage.store.PendingStore` over ``zerver_scheduledmessagenotificationemail``."""

    def __init__(self, db: Database, default_period: float = 120.0, clock: Any = None) -> None:
        self.db = db
        self.default_period = default_period
        self._clock = clock
        self._claims: dict[str, _Claim] = {}

    def _now(self) -> float:
        return float(self._clock.seconds()) if self._clock is not None else time.time()

    def _busy(self, user: int | None = None) -> list[int]:
        """Ids of rows being sent (claims not expired)."""
        now = self._now()
        return [
            row_id
            for claim in self._claims.values()
            if claim.until > now and (user is None or claim.user == user)
            for row_id in claim.ids
        ]

    def open(self) -> Deferred[None]:
        return self.db.open()

    def close(self) -> Deferred[None]:
        """Nothing of its own: the database belongs to the shared resources."""
        return succeed(None)

    def add(self, event: Mapping[str, Any], now: float, period: float | None = None) -> Deferred[float | None]:
        """Store one notification (the user's period comes from Zulip's database; ``period`` is not used)."""
        user = int(event["user_profile_id"])
        d = self.db.run("add_notification", add_notification, event, now, self._busy(user), self.default_period)

        def added(result: Added | None) -> float | None:
            if result is None:
                raise PermanentError(f"user {user} does not exist")
            return self._ready(user, result.due)

        return d.addCallback(added)

    def due_times(self, shard: Shard | None = None) -> Deferred[dict[int, float]]:
        def combine(found: dict[int, float]) -> dict[int, float]:
            times, now = dict(found), self._now()
            for claim in self._claims.values():
                if claim.until > now and (shard is None or shard.owns(claim.user)):
                    times[claim.user] = min(times.get(claim.user, claim.until), claim.until)
            return times

        return self.db.run("pending_due_times", pending_due_times, self._busy(), shard).addCallback(combine)

    def next_due(self, user_profile_id: int) -> Deferred[float | None]:
        d = self.db.run("next_pending_due", next_pending_due, user_profile_id, self._busy(user_profile_id))
        return d.addCallback(lambda due: self._ready(user_profile_id, due))

    def _ready(self, user: int, due: float | None) -> float | None:
        now = self._now()
        untils = [c.until for c in self._claims.values() if c.user == user and c.until > now]
        candidates = [t for t in (due, *untils) if t is not None]
        return min(candidates) if candidates else None

    def claim(self, user_profile_id: int, now: float, until: float, token: str) -> Deferred[list[PendingRow]]:
        d = self.db.run("claim_due_rows", claim_due_rows, user_profile_id, now, self._busy(user_profile_id))

        def claimed(rows: list[PendingRow]) -> list[PendingRow]:
            if rows:
                self._claims[token] = _Claim(user_profile_id, [row.row_id for row in rows], until)
            return rows

        return d.addCallback(claimed)

    def delete(self, token: str) -> Deferred[int]:
        claim = self._claims.get(token)
        if claim is None:
            return succeed(0)

        def deleted(count: int) -> int:
            self._claims.pop(token, None)
            return count

        return self.db.run("delete_notification_rows", delete_rows, claim.ids).addCallback(deleted)

    def release(self, token: str) -> Deferred[None]:
        self._claims.pop(token, None)
        return succeed(None)

    def rows(self, user_profile_id: int) -> Deferred[list[PendingRow]]:
        d: Deferred[list[PendingRow]] = self.db.run("user_rows", user_rows, user_profile_id)
        return d
