"""User activity in Zulip mode, without I/O: Zulip's events checked, batches de-duplicated, intervals decided.

* ``user_activity`` events come from Zulip's ``update_user_activity``
  (zerver/decorator.py): ``{"query", "user_profile_id", "time", "client_id"}``.
  :func:`parse_activity_event` checks each one so that a value PostgreSQL would
  reject (a query over ``varchar(50)``, an id beyond ``integer``, a time out of
  ``timestamp`` range) is dead-lettered on its own instead of failing its batch.
  :func:`deduplicate` is the first half of Zulip's ``UserActivityWorker.consume_batch``:
  one row per ``(user_profile_id, client_id, query)``, counts summed, the latest time
  kept; rows are sorted so that concurrent batches lock rows in the same order.
* ``user_activity_interval`` events come from Zulip's ``update_user_activity_interval``
  (zerver/actions/user_activity.py): ``{"user_profile_id", "time"}``.
  :func:`next_interval` is the decision of Zulip's ``do_update_user_activity_interval``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from zqtwisted.errors import MalformedEventError

# UserActivityInterval.MIN_INTERVAL_LENGTH (zerver/models/user_activity.py).
MIN_INTERVAL_LENGTH = timedelta(minutes=15)
# UserActivity.query is a CharField(max_length=50); ids are PostgreSQL integers.
MAX_QUERY_LENGTH = 50
MAX_ID = 2**31 - 1
# Epoch seconds that PostgreSQL's to_timestamp() and Python's datetime both accept (up to 9999-12-31).
MAX_TIME = 253_402_300_799

Key = tuple[int, int, str]  # (user_profile_id, client_id, query)


@dataclass(frozen=True, slots=True)
class ActivityEvent:
    """One ``user_activity`` event, checked."""

    user_profile_id: int
    client_id: int
    query: str
    time: float

    @property
    def key(self) -> Key:
        return (self.user_profile_id, self.client_id, self.query)


@dataclass(frozen=True, slots=True)
class ActivityRow:
    """One row of a batch's UPSERT: a key, its count in the batch, its latest time (epoch seconds)."""

    user_profile_id: int
    client_id: int
    query: str
    count: int
    last_visit: float

    @property
    def key(self) -> Key:
        return (self.user_profile_id, self.client_id, self.query)


@dataclass(frozen=True, slots=True)
class IntervalEvent:
    """One ``user_activity_interval`` event, checked."""

    user_profile_id: int
    time: float

    @property
    def log_time(self) -> datetime:
        """Zulip's ``timestamp_to_datetime(event["time"])``."""
        return timestamp_to_datetime(self.time)


@dataclass(frozen=True, slots=True)
class Interval:
    """A user's activity interval: [start, end]."""

    start: datetime
    end: datetime


@dataclass(frozen=True, slots=True)
class IntervalChange:
    """What to write: the latest interval extended to ``interval`` (``extend``), or a new one."""

    extend: bool
    interval: Interval


def parse_activity_event(event: Mapping[str, Any]) -> ActivityEvent:
    """The event's fields, checked; :class:`MalformedEventError` names the first bad one."""
    query = event.get("query")
    if not isinstance(query, str):
        raise MalformedEventError(f"field 'query': expected a string, got {_shown(query)}")
    if len(query) > MAX_QUERY_LENGTH:
        raise MalformedEventError(f"field 'query': {len(query)} characters, the column holds {MAX_QUERY_LENGTH}")
    if "\x00" in query:
        raise MalformedEventError("field 'query': contains a NUL character")
    return ActivityEvent(
        user_profile_id=_id(event, "user_profile_id"),
        client_id=_id(event, "client_id"),
        query=query,
        time=_time(event),
    )


def parse_interval_event(event: Mapping[str, Any]) -> IntervalEvent:
    """The event's fields, checked; :class:`MalformedEventError` names the first bad one."""
    return IntervalEvent(user_profile_id=_id(event, "user_profile_id"), time=_time(event))


def deduplicate(events: Sequence[ActivityEvent]) -> list[ActivityRow]:
    """One row per key: how many events had it and the latest of their times; sorted by key."""
    found: dict[Key, tuple[int, float]] = {}
    for event in events:
        key = event.key
        seen = found.get(key)
        found[key] = (1, event.time) if seen is None else (seen[0] + 1, max(seen[1], event.time))
    return [ActivityRow(*key, count, last) for key, (count, last) in sorted(found.items())]


def next_interval(last: Interval | None, log_time: datetime) -> IntervalChange:
    """Zulip's ``do_update_user_activity_interval``, given the user's interval that ends last.

    Two intervals overlap iff each ends after the other begins: then the latest one is
    extended to cover ``[log_time, log_time + MIN_INTERVAL_LENGTH]``; otherwise that
    span becomes a new interval.
    """
    effective_end = log_time + MIN_INTERVAL_LENGTH
    if last is not None and log_time <= last.end and effective_end >= last.start:
        return IntervalChange(True, Interval(min(last.start, log_time), max(last.end, effective_end)))
    return IntervalChange(False, Interval(log_time, effective_end))


def timestamp_to_datetime(timestamp: float) -> datetime:
    """Zulip's ``timestamp_to_datetime``: an aware UTC datetime."""
    return datetime.fromtimestamp(float(timestamp), tz=UTC)


def _id(event: Mapping[str, Any], name: str) -> int:
    value = event.get(name)
    if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= MAX_ID:
        raise MalformedEventError(f"field {name!r}: expected an id (integer 1..{MAX_ID}), got {_shown(value)}")
    return value


def _time(event: Mapping[str, Any]) -> float:
    value = event.get("time")
    if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
        if 0 <= value <= MAX_TIME:
            return value
    raise MalformedEventError(f"field 'time': expected epoch seconds (0..{MAX_TIME}), got {_shown(value)}")


def _shown(value: object) -> str:
    """A bad value for an error message: numbers as themselves, anything else by type (events may be large)."""
    if value is None or isinstance(value, (bool, int, float)):
        return repr(value)[:40]
    return type(value).__name__
