"""zqtwisted.zulip.activity: Zulip's user-activity events checked, batches de-duplicated, intervals decided."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from twisted.trial.unittest import TestCase

from tests.zulip_activity_events import user_activity_event, user_activity_interval_event
from zqtwisted.errors import MalformedEventError
from zqtwisted.zulip.activity import (
    MAX_ID,
    MAX_TIME,
    MIN_INTERVAL_LENGTH,
    ActivityEvent,
    ActivityRow,
    Interval,
    deduplicate,
    next_interval,
    parse_activity_event,
    parse_interval_event,
    timestamp_to_datetime,
)

NOW = datetime(2025, 11, 20, 10, 0, 0, tzinfo=UTC)


def activity(**changes: Any) -> dict[str, Any]:
    event = user_activity_event(10, 3, "/api/v1/messages", NOW)
    assert event is not None
    return {**event, **changes}


class ParseTests(TestCase):
    def test_zulips_event_parses(self) -> None:
        """update_user_activity's event: ids, the query (the path when the view names none) and whole seconds."""
        self.assertEqual(parse_activity_event(activity()), ActivityEvent(10, 3, "/api/v1/messages", 1763632800))
        named = user_activity_event(10, 3, "/json/messages", NOW, query="send_message_backend")
        assert named is not None
        self.assertEqual(parse_activity_event(named).query, "send_message_backend")
        self.assertIsNone(user_activity_event(10, 3, "/json/users/me/presence", NOW))
        self.assertEqual(parse_activity_event(activity(time=1763632800.25, failed_tries=2)).time, 1763632800.25)

    def test_each_bad_field_is_named(self) -> None:
        """Values PostgreSQL would reject are malformed, naming the field (never echoing a large value)."""
        cases: dict[str, list[Any]] = {
            "query": [None, 5, "x" * 51, "a\x00b"],
            "user_profile_id": [None, "10", True, 0, -1, MAX_ID + 1, 1.0],
            "client_id": [None, "3", False, 0, MAX_ID + 1],
            "time": [None, "now", True, -1, MAX_TIME + 1, float("nan"), float("inf"), [1]],
        }
        for name, values in cases.items():
            for value in values:
                with self.assertRaisesRegex(MalformedEventError, f"field '{name}'"):
                    parse_activity_event(activity(**{name: value}))
        with self.assertRaisesRegex(MalformedEventError, "field 'client_id'"):
            parse_activity_event({k: v for k, v in activity().items() if k != "client_id"})
        with self.assertRaises(MalformedEventError) as caught:
            parse_activity_event(activity(query=["secret"] * 1000))
        self.assertNotIn("secret", str(caught.exception))

    def test_limits_are_inclusive(self) -> None:
        """A query of exactly 50 characters, the largest integer id and the last second of 9999 are accepted."""
        event = parse_activity_event(activity(query="q" * 50, user_profile_id=MAX_ID, client_id=MAX_ID, time=MAX_TIME))
        self.assertEqual((len(event.query), event.user_profile_id, event.time), (50, MAX_ID, MAX_TIME))
        self.assertEqual(parse_activity_event(activity(query="")).query, "")

    def test_interval_event(self) -> None:
        """update_user_activity_interval's event parses; its log time is Zulip's timestamp_to_datetime."""
        event = parse_interval_event(user_activity_interval_event(10, NOW))
        self.assertEqual((event.user_profile_id, event.time), (10, 1763632800))
        self.assertEqual(event.log_time, NOW)
        for bad in ({"user_profile_id": 10}, {"user_profile_id": "10", "time": 1}, {"time": 1}):
            with self.assertRaises(MalformedEventError):
                parse_interval_event(bad)

    def test_timestamp_to_datetime_is_utc(self) -> None:
        """Epoch seconds become an aware UTC datetime, fractions kept."""
        self.assertEqual(timestamp_to_datetime(0), datetime(1970, 1, 1, tzinfo=UTC))
        self.assertEqual(timestamp_to_datetime(1.5).microsecond, 500000)


class DeduplicateTests(TestCase):
    def test_counts_summed_latest_time_kept(self) -> None:
        """Zulip's consume_batch: one row per (user, client, query), the count of its events, their latest time."""
        events = [
            ActivityEvent(10, 3, "/a", 100),
            ActivityEvent(10, 3, "/a", 300),
            ActivityEvent(10, 3, "/a", 200),
            ActivityEvent(10, 4, "/a", 50),
            ActivityEvent(9, 3, "/b", 70),
            ActivityEvent(10, 3, "/b", 60),
        ]
        self.assertEqual(
            deduplicate(events),
            [
                ActivityRow(9, 3, "/b", 1, 70),
                ActivityRow(10, 3, "/a", 3, 300),
                ActivityRow(10, 3, "/b", 1, 60),
                ActivityRow(10, 4, "/a", 1, 50),
            ],
        )
        self.assertEqual(deduplicate([]), [])

    def test_rows_are_sorted_by_key(self) -> None:
        """Rows come in key order whatever the events' order (concurrent batches lock rows in one order)."""
        events = [ActivityEvent(u, c, q, 1) for u in (5, 1, 3) for c in (2, 1) for q in ("/z", "/a")]
        keys = [row.key for row in deduplicate(events)]
        self.assertEqual(keys, sorted(keys))
        self.assertEqual(sum(row.count for row in deduplicate(events * 3)), 36)


class IntervalTests(TestCase):
    """Zulip's do_update_user_activity_interval, with the cases of Zulip's test_new_user_input (test_presence.py)."""

    def test_zulips_sequence(self) -> None:
        """t0 starts [t0, t0+15m]; t0+600 s extends it to t0+600 s+15m; t0+6000 s starts a second interval."""
        t0 = NOW
        first = next_interval(None, t0)
        self.assertEqual((first.extend, first.interval), (False, Interval(t0, t0 + MIN_INTERVAL_LENGTH)))
        second_time = t0 + timedelta(seconds=600)
        second = next_interval(first.interval, second_time)
        self.assertEqual((second.extend, second.interval), (True, Interval(t0, second_time + MIN_INTERVAL_LENGTH)))
        third_time = t0 + timedelta(seconds=6000)
        third = next_interval(second.interval, third_time)
        self.assertEqual(
            (third.extend, third.interval), (False, Interval(third_time, third_time + MIN_INTERVAL_LENGTH))
        )

    def test_boundaries_overlap(self) -> None:
        """A time exactly at the interval's end extends it; one second after starts a new one."""
        last = Interval(NOW, NOW + MIN_INTERVAL_LENGTH)
        at_end = next_interval(last, last.end)
        self.assertEqual(at_end.interval, Interval(NOW, last.end + MIN_INTERVAL_LENGTH))
        self.assertFalse(next_interval(last, last.end + timedelta(seconds=1)).extend)

    def test_earlier_time_moves_the_start(self) -> None:
        """A late event up to 15 minutes before the interval starts earlier; one further back is its own interval."""
        last = Interval(NOW, NOW + MIN_INTERVAL_LENGTH)
        early = NOW - timedelta(minutes=10)
        self.assertEqual(next_interval(last, early).interval, Interval(early, last.end))
        exactly = NOW - MIN_INTERVAL_LENGTH
        self.assertEqual(next_interval(last, exactly).interval, Interval(exactly, last.end))
        older = NOW - timedelta(hours=1)
        self.assertEqual(next_interval(last, older), next_interval(None, older))

    def test_time_inside_keeps_the_interval(self) -> None:
        """A time well inside a long interval changes nothing but is still an extension (the same bounds)."""
        last = Interval(NOW, NOW + timedelta(hours=2))
        inside = next_interval(last, NOW + timedelta(minutes=30))
        self.assertEqual((inside.extend, inside.interval), (True, last))
