"""Stats files: Zulip's content, atomic writes and cadence, driven by a Clock."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from typing import cast

from twisted.internet.task import Clock
from twisted.logger import ILogObserver, LogEvent, Logger
from twisted.trial.unittest import TestCase

from zqtwisted.ops.stats import BusyTime, QueueStats, StatsObserver, render_stats


def temp_path(case: TestCase) -> str:
    """A fresh path in a temporary directory removed after the test (not under the cwd)."""
    root = tempfile.mkdtemp(prefix="zqtwisted-test-")
    case.addCleanup(shutil.rmtree, root, True)
    return os.path.join(root, "path")


class QueueStatsTests(TestCase):
    def test_average_is_per_event_over_the_last_50_consumes(self) -> None:
        """recent_average_consume_time is total seconds / total events of the last 50 consumes."""
        stats = QueueStats(now=0.0)
        self.assertIsNone(stats.recent_average_consume_time())
        stats.on_consumed(4, 2.0, now=1.0)
        self.assertEqual(stats.recent_average_consume_time(), 0.5)
        for _ in range(50):
            stats.on_consumed(1, 0.1, now=1.0)
        self.assertAlmostEqual(stats.recent_average_consume_time() or 0, 0.1)

    def test_failed_consume_is_not_averaged(self) -> None:
        """A consume with no successful event adds nothing to the average or the backlog count."""
        stats = QueueStats(now=0.0)
        stats.on_consumed(0, 30.0, now=1.0)
        self.assertIsNone(stats.recent_average_consume_time())
        self.assertEqual(stats.consumed_since_last_emptied, 0)

    def test_render_is_two_space_json_with_newline(self) -> None:
        """The file text is JSON with a 2-space indent, Zulip's key order and a trailing newline."""
        text = render_stats(QueueStats(now=12.5).snapshot(now=13.0))
        self.assertEqual(
            text,
            "{\n"
            '  "update_time": 13.0,\n'
            '  "recent_average_consume_time": null,\n'
            '  "queue_last_emptied_timestamp": 12.5,\n'
            '  "consumed_since_last_emptied": 0\n'
            "}\n",
        )


class StatsObserverTests(TestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.clock.advance(1_700_000_000.25)
        self.dir = temp_path(self)
        self.observer = StatsObserver(self.clock, self.dir)

    def read(self, queue: str = "q") -> dict[str, object]:
        with open(os.path.join(self.dir, f"{queue}.stats")) as f:
            result: dict[str, object] = json.load(f)
            return result

    def consume(self, events: int = 1, seconds: float = 0.01) -> None:
        self.observer.consume_started("q", events)
        self.clock.advance(seconds)
        self.observer.consumed("q", events, seconds)

    def test_written_at_start(self) -> None:
        """start() writes each queue's file at once, with no .tmp file left behind."""
        self.observer.start(["q", "other"])
        self.assertEqual(
            self.read(),
            {
                "update_time": 1_700_000_000.25,
                "recent_average_consume_time": None,
                "queue_last_emptied_timestamp": 1_700_000_000.25,
                "consumed_since_last_emptied": 0,
            },
        )
        self.assertEqual(sorted(os.listdir(self.dir)), ["other.stats", "q.stats"])

    def test_written_before_first_consume_after_idle(self) -> None:
        """The first consume after being idle rewrites the file before it runs."""
        self.observer.start(["q"])
        self.clock.advance(100)
        self.observer.consume_started("q", 1)
        self.assertEqual(self.read()["update_time"], 1_700_000_100.25)
        self.clock.advance(5)
        self.observer.consumed("q", 1, 5.0)
        self.clock.advance(5)
        self.observer.consume_started("q", 1)  # not idle: no write
        self.assertEqual(self.read()["update_time"], 1_700_000_100.25)

    def test_written_when_buffer_empties(self) -> None:
        """idle() resets the backlog counters and writes, with the average kept."""
        self.observer.start(["q"])
        for _ in range(3):
            self.consume(seconds=0.5)
        emptied = self.clock.seconds()
        self.observer.idle("q")
        self.clock.advance(1)  # at most one idle/wake-up write per second
        stats = self.read()
        self.assertEqual(stats["consumed_since_last_emptied"], 0)
        self.assertEqual(stats["queue_last_emptied_timestamp"], emptied)
        self.assertLessEqual(float(stats["update_time"]), emptied + 1)  # type: ignore[arg-type]
        self.assertAlmostEqual(float(stats["recent_average_consume_time"]), 0.5)  # type: ignore[arg-type]

    def test_written_every_50_consumes(self) -> None:
        """While busy, the 50th consume since the last counted write writes the file."""
        self.observer.start(["q"])
        self.clock.advance(1)  # the first consume's wake-up write is made at once
        for _ in range(49):
            self.consume(seconds=0.025)
        self.assertEqual(self.read()["consumed_since_last_emptied"], 0)
        self.consume(seconds=0.025)
        self.assertEqual(self.read()["consumed_since_last_emptied"], 50)
        for _ in range(49):
            self.consume(seconds=0.025)
        self.assertEqual(self.read()["consumed_since_last_emptied"], 50)

    def test_50_consume_writes_at_most_once_a_second(self) -> None:
        """A fast queue's 50-consume write waits until a second has passed since the last write."""
        self.observer.start(["q"])
        self.clock.advance(1)  # the first consume's wake-up write is made at once
        for _ in range(120):
            self.consume(seconds=0.001)
        self.assertEqual(self.read()["consumed_since_last_emptied"], 0)
        self.clock.advance(1)
        self.consume(seconds=0.001)
        self.assertEqual(self.read()["consumed_since_last_emptied"], 121)

    def test_written_after_30_seconds(self) -> None:
        """A consume ending 30 s or more after the last write writes the file."""
        self.observer.start(["q"])
        self.consume(seconds=1)
        self.assertEqual(self.read()["consumed_since_last_emptied"], 0)
        self.consume(seconds=30)
        self.assertEqual(self.read()["consumed_since_last_emptied"], 2)
        self.assertEqual(self.read()["recent_average_consume_time"], 15.5)

    def test_no_timer_while_stuck(self) -> None:
        """A consume that never ends leaves the file stale: no timer rewrites it."""
        self.observer.start(["q"])
        self.clock.advance(5)
        self.observer.consume_started("q", 1)
        written = self.read()["update_time"]
        self.clock.advance(600)
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.assertEqual(self.read()["update_time"], written)

    def test_batch_average_is_per_event(self) -> None:
        """A batch of 100 events taking 2 s averages 0.02 s per event."""
        self.observer.start(["q"])
        self.consume(events=100, seconds=2.0)
        self.observer.idle("q")
        self.clock.advance(1)
        self.assertAlmostEqual(float(self.read()["recent_average_consume_time"]), 0.02)  # type: ignore[arg-type]

    def test_idle_and_wake_up_writes_are_spaced(self) -> None:
        """A queue emptying and refilling many times a second writes at most once a second, never late."""
        self.observer.start(["q"])
        writes: list[float] = []
        original = self.observer._write

        def write(queue: str) -> None:
            writes.append(self.clock.seconds())
            original(queue)

        self.observer._write = write  # type: ignore[method-assign]
        for _ in range(100):
            self.consume(seconds=0.001)
            self.observer.idle("q")
            self.clock.advance(0.009)
        self.assertLessEqual(len(writes), 3)
        self.clock.advance(1)
        self.assertEqual(self.read()["consumed_since_last_emptied"], 0)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_stop_writes_a_delayed_write_at_once(self) -> None:
        """Stopping performs a pending delayed write and leaves no timer behind."""
        self.observer.start(["q"])
        self.observer.startService()
        self.consume(seconds=0.1)
        self.observer.idle("q")
        self.assertEqual(len(self.clock.getDelayedCalls()), 1)
        self.observer.stopService()
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.assertEqual(self.read()["update_time"], self.clock.seconds())

    def test_unknown_queue_starts_lazily(self) -> None:
        """A queue reported without start() gets its file on first report."""
        self.observer.attached("lazy", True)
        self.assertEqual(self.read("lazy")["consumed_since_last_emptied"], 0)

    def test_write_error_logged_once_and_survived(self) -> None:
        """An unwritable stats dir is logged once and never raises into the runtime."""
        blocker = temp_path(self)
        with open(blocker, "w") as f:
            f.write("not a directory")
        events: list[LogEvent] = []
        observer = StatsObserver(self.clock, os.path.join(blocker, "stats"))
        observer.log = Logger(observer=cast(ILogObserver, events.append))
        observer.start(["q"])
        observer.consume_started("q", 1)
        observer.idle("q")
        errors = [e for e in events if "Cannot write" in e["log_format"]]
        self.assertEqual(len(errors), 1)


class BusyTimeTests(TestCase):
    def test_overlapping_consumes_count_wall_clock_once(self) -> None:
        """Item 4: five 1-second consumes at once count 1 s in all, so the average is 0.2 s per event."""
        busy = BusyTime()
        for _ in range(5):
            busy.started(10.0)
        counted = [busy.finished(1, 11.0) for _ in range(5)]
        self.assertEqual(sum(counted), 1.0)

    def test_idle_time_and_failures(self) -> None:
        """Time with nothing in flight is not counted; a failed consume passes its time to the next success."""
        busy = BusyTime()
        busy.started(0.0)
        self.assertEqual(busy.finished(1, 1.0), 1.0)
        busy.started(5.0)  # 4 s idle
        busy.started(5.0)
        self.assertEqual(busy.finished(0, 6.0), 0.0)
        self.assertEqual(busy.finished(1, 7.0), 2.0)


class ConcurrentStatsTests(TestCase):
    def test_average_is_time_spent_consuming(self) -> None:
        """With concurrency, recent_average_consume_time is busy time per event, so size * average is the drain time."""
        clock = Clock()
        root = tempfile.mkdtemp()
        self.addCleanup(shutil.rmtree, root, True)
        observer = StatsObserver(clock, root)
        observer.start(["q"])
        for _ in range(10):
            for _ in range(5):
                observer.consume_started("q", 1)
            clock.advance(1.0)
            for _ in range(5):
                observer.consumed("q", 1, 1.0)
        self.assertAlmostEqual(observer.queues["q"].recent_average_consume_time() or 0, 0.2)
