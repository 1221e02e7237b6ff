"""The durable store of pending notifications: its interface and an in-memory fake.

A row is one pending notification of one user, with the due time of the user's
batch.  Sending a batch is three steps: ``claim`` the user's due rows under a
fresh token (for ``claim_timeout`` seconds, so that no other worker takes them),
publish the emails, then ``delete`` the rows of that token -- or ``release``
them when sending failed.  A worker that dies between claim and delete leaves
the rows claimed; they become due again when the claim expires (a re-send is
possible, a loss is not).

Implementations: :class:`MemoryStore` here (tests), the SQLite and PostgreSQL
stores in :mod:`zqtwisted.missedmessage.sqlstore`.  The same contract tests run
against all of them.
"""

from __future__ import annotations

import copy
import itertools
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from twisted.internet.defer import Deferred, fail, succeed

from zqtwisted.runtime.shards import shard_of


@dataclass(frozen=True)
class Shard:
    """The users a worker owns: those whose shard (:func:`zqtwisted.runtime.shards.shard_of`) is ``index``."""

    count: int
    index: int

    def owns(self, user_profile_id: int) -> bool:
        return self.count <= 1 or shard_of(user_profile_id, self.count) == self.index


@dataclass(frozen=True)
class PendingRow:
    """One stored notification."""

    row_id: int
    user_profile_id: int
    message_id: int
    due: float
    event: Mapping[str, Any]


class StoreClosed(Exception):
    """The store was used before open() or after close()."""


class PendingStore(Protocol):
    """What the scheduler needs from a store.  Every method returns a Deferred
    that fires once the change is committed."""

    def open(self) -> Deferred[None]:
        """Connect and create the table if needed."""

    def close(self) -> Deferred[None]:
        """Release connections and threads."""

    def add(self, event: Mapping[str, Any], now: float, period: float) -> Deferred[float | None]:
        """Store one notification; fires with when the user's next batch is due (None: nothing is pending).

        The due time is the one of the user's pending (unclaimed) batch, else
        ``now + period`` -- never later than ``now + period`` (a user who
        shortened their batching period).  A second notification of the same
        message for the same user is ignored (redelivery is harmless).
        """

    def due_times(self, shard: Shard | None = None) -> Deferred[dict[int, float]]:
        """user_profile_id -> when their earliest batch is due (a claimed batch: when its claim expires)."""

    def next_due(self, user_profile_id: int) -> Deferred[float | None]:
        """When the user's earliest batch is due (see ``due_times``); None without rows."""

    def claim(self, user_profile_id: int, now: float, until: float, token: str) -> Deferred[list[PendingRow]]:
        """Claim the user's rows due at ``now`` that nobody holds, until ``until``; oldest first."""

    def delete(self, token: str) -> Deferred[int]:
        """Delete the rows claimed with ``token``; fires with how many."""

    def release(self, token: str) -> Deferred[None]:
        """Give up the claim ``token``: its rows are due again at once."""

    def rows(self, user_profile_id: int) -> Deferred[list[PendingRow]]:
        """Every row of the user, oldest first (for tests and tools)."""


@dataclass
class _MemoryRow:
    row_id: int
    user_profile_id: int
    message_id: int
    due: float
    event: dict[str, Any]
    claim_token: str | None = None
    claimed_until: float | None = None

    def available(self, now: float) -> bool:
        return self.claimed_until is None or self.claimed_until <= now

    def ready_at(self) -> float:
        return self.due if self.claimed_until is None else max(self.due, self.claimed_until)

    def public(self) -> PendingRow:
        return PendingRow(self.row_id, self.user_profile_id, self.message_id, self.due, copy.deepcopy(self.event))


class MemoryStore:
    """A :class:`PendingStore` in a dict, answering at once; for tests.

    ``fail_next(error)`` makes the next calls fail (one error per call).
    """

    def __init__(self) -> None:
        self._rows: dict[int, _MemoryRow] = {}
        self._ids = itertools.count(1)
        self._errors: list[BaseException] = []
        self.is_open = False

    def fail_next(self, *errors: BaseException) -> None:
        self._errors.extend(errors)

    def open(self) -> Deferred[None]:
        self.is_open = True
        return succeed(None)

    def close(self) -> Deferred[None]:
        self.is_open = False
        return succeed(None)

    def add(self, event: Mapping[str, Any], now: float, period: float) -> Deferred[float | None]:
        def run() -> float:
            user, message = int(event["user_profile_id"]), int(event["message_id"])
            mine = self._of(user)
            pending = [r.due for r in mine if r.available(now)]
            due = min([*pending, now + period])
            if not any(r.message_id == message for r in mine):
                row_id = next(self._ids)
                self._rows[row_id] = _MemoryRow(row_id, user, message, due, copy.deepcopy(dict(event)))
            return min(r.ready_at() for r in self._of(user))

        return self._call(run)

    def due_times(self, shard: Shard | None = None) -> Deferred[dict[int, float]]:
        def run() -> dict[int, float]:
            times: dict[int, float] = {}
            for row in self._rows.values():
                if shard is None or shard.owns(row.user_profile_id):
                    current = times.get(row.user_profile_id)
                    ready = row.ready_at()
                    times[row.user_profile_id] = ready if current is None else min(current, ready)
            return times

        return self._call(run)

    def next_due(self, user_profile_id: int) -> Deferred[float | None]:
        return self._call(lambda: min((r.ready_at() for r in self._of(user_profile_id)), default=None))

    def claim(self, user_profile_id: int, now: float, until: float, token: str) -> Deferred[list[PendingRow]]:
        def run() -> list[PendingRow]:
            claimed = []
            for row in self._of(user_profile_id):
                if row.due <= now and row.available(now):
                    row.claim_token, row.claimed_until = token, until
                    claimed.append(row.public())
            return claimed

        return self._call(run)

    def delete(self, token: str) -> Deferred[int]:
        def run() -> int:
            doomed = [r.row_id for r in self._rows.values() if r.claim_token == token]
            for row_id in doomed:
                del self._rows[row_id]
            return len(doomed)

        return self._call(run)

    def release(self, token: str) -> Deferred[None]:
        def run() -> None:
            for row in self._rows.values():
                if row.claim_token == token:
                    row.claim_token = row.claimed_until = None

        return self._call(run)

    def rows(self, user_profile_id: int) -> Deferred[list[PendingRow]]:
        return self._call(lambda: [r.public() for r in self._of(user_profile_id)])

    def _of(self, user_profile_id: int) -> list[_MemoryRow]:
        return sorted((r for r in self._rows.values() if r.user_profile_id == user_profile_id), key=lambda r: r.row_id)

    def _call(self, run: Any) -> Deferred[Any]:
        if not self.is_open:
            return fail(StoreClosed("the store is not open"))
        if self._errors:
            return fail(self._errors.pop(0))
        try:
            return succeed(run())
        except Exception as e:  # noqa: BLE001 - reported through the Deferred, as the real stores do
            return fail(e)
