"""The named queries of user activity in Zulip mode: the batch UPSERT and the interval update.

Each function takes a DB-API cursor and plain values; the pool (:mod:`.pool`) runs it
in one transaction with its deadline, and commits.

* :func:`upsert_user_activity` is the second half of Zulip's
  ``UserActivityWorker.consume_batch`` (zerver/worker/user_activity.py): **one**
  ``INSERT ... ON CONFLICT (user_profile_id, client_id, query) DO UPDATE`` for the
  whole batch, counts added and ``last_visit`` the greatest.  Unlike Zulip's, the
  statement skips the rows whose user or client does not exist (instead of failing the
  whole batch on the foreign key); when its row count says it skipped some, a second
  query names them, so that only their events fail.  The rows come as arrays
  (``unnest``: no SQL text to build per row), in key order, so that concurrent batches
  take their row locks in the same order.
* :func:`update_activity_interval` is Zulip's ``do_update_user_activity_interval``
  (zerver/actions/user_activity.py) over :func:`.activity.next_interval`; the user's
  latest interval is locked (``FOR UPDATE``) so that concurrent events of one user
  cannot both extend it.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from zqtwisted.zulip.activity import ActivityRow, Interval, Key, next_interval

UPSERT = """
INSERT INTO zerver_useractivity (user_profile_id, client_id, query, count, last_visit)
SELECT b.user_profile_id, b.client_id, b.query, b.count, to_timestamp(b.last_visit)
FROM unnest(%s::integer[], %s::integer[], %s::varchar[], %s::integer[], %s::double precision[])
    AS b (user_profile_id, client_id, query, count, last_visit)
WHERE EXISTS (SELECT 1 FROM zerver_userprofile u WHERE u.id = b.user_profile_id)
  AND EXISTS (SELECT 1 FROM zerver_client c WHERE c.id = b.client_id)
ORDER BY b.user_profile_id, b.client_id, b.query
ON CONFLICT (user_profile_id, client_id, query) DO UPDATE SET
    count = zerver_useractivity.count + excluded.count,
    last_visit = greatest(zerver_useractivity.last_visit, excluded.last_visit)
"""

UNKNOWN = """
SELECT b.user_profile_id, b.client_id, b.query
FROM unnest(%s::integer[], %s::integer[], %s::varchar[]) AS b (user_profile_id, client_id, query)
WHERE NOT EXISTS (SELECT 1 FROM zerver_userprofile u WHERE u.id = b.user_profile_id)
   OR NOT EXISTS (SELECT 1 FROM zerver_client c WHERE c.id = b.client_id)
"""

EXTENDED, CREATED, NO_USER = "extended", "created", "no_user"


class UnexpectedSkip(Exception):
    """The UPSERT skipped rows that were not found missing a moment later (a user created meanwhile): retry."""


def upsert_user_activity(cursor: Any, rows: Sequence[ActivityRow]) -> list[Key]:
    """Write a de-duplicated batch in one statement; the keys skipped (unknown user or client).

    The statement's row count says whether any row was skipped; only then (rarely) a
    second query names them.  If it cannot account for every skipped row,
    :class:`UnexpectedSkip` rolls the whole batch back, to be retried.
    """
    if not rows:
        return []
    keys = ([r.user_profile_id for r in rows], [r.client_id for r in rows], [r.query for r in rows])
    cursor.execute(UPSERT, (*keys, [r.count for r in rows], [float(r.last_visit) for r in rows]))
    skipped = len(rows) - cursor.rowcount
    if not skipped:
        return []
    cursor.execute(UNKNOWN, keys)
    missing = [(int(u), int(c), str(q)) for u, c, q in cursor.fetchall()]
    if len(missing) != skipped:
        raise UnexpectedSkip(f"{skipped} rows skipped, {len(missing)} found without their user or client")
    return missing


def update_activity_interval(cursor: Any, user_profile_id: int, log_time: datetime) -> str:
    """Extend the user's latest interval or create one; ``"no_user"`` when the user does not exist."""
    cursor.execute(
        'SELECT id, start, "end" FROM zerver_useractivityinterval WHERE user_profile_id = %s '
        'ORDER BY "end" DESC, id DESC LIMIT 1 FOR UPDATE',
        (user_profile_id,),
    )
    row = cursor.fetchone()
    if row is None:
        # The user row is locked against deletion until the new interval is committed.
        cursor.execute("SELECT 1 FROM zerver_userprofile WHERE id = %s FOR KEY SHARE", (user_profile_id,))
        if cursor.fetchone() is None:
            return NO_USER
    change = next_interval(None if row is None else Interval(row[1], row[2]), log_time)
    if change.extend:
        cursor.execute(
            'UPDATE zerver_useractivityinterval SET start = %s, "end" = %s WHERE id = %s',
            (change.interval.start, change.interval.end, row[0]),
        )
        return EXTENDED
    cursor.execute(
        'INSERT INTO zerver_useractivityinterval (user_profile_id, start, "end") VALUES (%s, %s, %s)',
        (user_profile_id, change.interval.start, change.interval.end),
    )
    return CREATED
