"""Zulip's queue stats files: ``{stats_dir}/{queue}.stats``, same keys, same cadence.

Zulip's monitoring (``check-rabbitmq-queue``, and :mod:`zqtwisted.ops.check`) reads
these files, so the format is Zulip's exactly: JSON with a 2-space indent and a
trailing newline, written atomically (``.tmp`` then rename), with the keys
``update_time``, ``recent_average_consume_time``, ``queue_last_emptied_timestamp``
and ``consumed_since_last_emptied``.

The cadence is Zulip's too (``QueueProcessingWorker.do_consume``): a write at
start, before the first consume after the queue went idle, whenever the local
buffer empties, and otherwise every 50 consumes or when 30 s have passed since
the last write -- checked at the end of a consume, never on a timer, so that a
stuck consume leaves the file stale and the check reports the queue as stuck.

:class:`QueueStats` is the pure state of one queue; :class:`StatsObserver`
listens to the runtime (:class:`zqtwisted.runtime.observer.RunnerObserver`) and writes.
"""

from __future__ import annotations

import json
import os
from collections import deque
from collections.abc import Iterable
from typing import Any

from twisted.application.service import Service
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger

from zqtwisted.runtime.observer import NullObserver

# Zulip's QueueProcessingWorker constants.
RECENT_CONSUMES = 50
CONSUME_ITERATIONS_BEFORE_UPDATE_STATS_NUM = 50
MAX_SECONDS_BEFORE_UPDATE_STATS = 30.0
# Not in Zulip: the 50-consume cadence writes at most once a second (a write costs
# ~0.2 ms on ext4: at 20,000 events/s Zulip's cadence alone is 400 writes/s, 8% of a core).
MIN_SECONDS_BETWEEN_UPDATES = 1.0

STATS_SUFFIX = ".stats"


class QueueStats:
    """The statistics of one queue; each ``on_*`` method says whether to write now."""

    def __init__(self, now: float) -> None:
        self.queue_last_emptied_timestamp = now
        self.consumed_since_last_emptied = 0
        self.recent_consume_times: deque[tuple[int, float]] = deque(maxlen=RECENT_CONSUMES)
        self.consume_iteration_counter = 0
        self.idle = True
        self.last_statistics_update_time = 0.0

    def recent_average_consume_time(self) -> float | None:
        """Seconds per event over the last <= 50 consumes, or None before any."""
        total_events = sum(n for n, _ in self.recent_consume_times)
        if total_events == 0:
            return None
        return sum(seconds for _, seconds in self.recent_consume_times) / total_events

    def snapshot(self, now: float) -> dict[str, Any]:
        """The content of the stats file, keys in Zulip's order."""
        return {
            "update_time": now,
            "recent_average_consume_time": self.recent_average_consume_time(),
            "queue_last_emptied_timestamp": self.queue_last_emptied_timestamp,
            "consumed_since_last_emptied": self.consumed_since_last_emptied,
        }

    def written(self, now: float) -> None:
        self.last_statistics_update_time = now

    def on_consume_started(self) -> bool:
        """A consume starts: write if the queue was idle (Zulip's reactivation write)."""
        if self.idle:
            self.idle = False
            return True
        return False

    def on_consumed(self, events: int, seconds: float, now: float) -> bool:
        """A consume ended with ``events`` successes: write every 50 consumes or 30 s."""
        if events > 0:
            self.recent_consume_times.append((events, seconds))
            self.consumed_since_last_emptied += events
        self.consume_iteration_counter += 1
        since = now - self.last_statistics_update_time
        if since >= MAX_SECONDS_BEFORE_UPDATE_STATS or (
            self.consume_iteration_counter >= CONSUME_ITERATIONS_BEFORE_UPDATE_STATS_NUM
            and since >= MIN_SECONDS_BETWEEN_UPDATES
        ):
            self.consume_iteration_counter = 0
            return True
        return False

    def on_idle(self, now: float) -> bool:
        """The local buffer emptied: reset the backlog counters and write."""
        if self.idle:
            return False  # already written when it emptied; nothing was consumed since
        self.queue_last_emptied_timestamp = now
        self.consumed_since_last_emptied = 0
        self.idle = True
        return True


class BusyTime:
    """The time a queue spent consuming, split among the consumes that end.

    With ``concurrency`` above 1, consumes overlap: the latency of each says nothing
    of how fast the queue drains.  Each successful consume gets the busy time since
    the previous one ended (or since the queue started to work, after an idle spell),
    so the sum over consumes is the wall-clock time spent with work in flight, never
    the time spent waiting for a slot or for events.  ``events / sum`` is the drain
    rate, and Zulip's ``size * recent_average_consume_time`` the time to clear a backlog.
    A failed consume (0 events) passes its time on to the next successful one.
    """

    __slots__ = ("in_flight", "mark")

    def __init__(self) -> None:
        self.in_flight = 0
        self.mark = 0.0

    def started(self, now: float) -> None:
        if self.in_flight == 0:
            self.mark = now
        self.in_flight += 1

    def finished(self, events: int, now: float) -> float:
        """The seconds to count for a consume of ``events`` successes that ends ``now``."""
        self.in_flight = max(0, self.in_flight - 1)
        if events <= 0:
            return 0.0
        seconds = max(0.0, now - self.mark)
        self.mark = now
        return seconds


def render_stats(stats: dict[str, Any]) -> str:
    """The file's text: JSON, 2-space indent, trailing newline (orjson's OPT_INDENT_2)."""
    return json.dumps(stats, indent=2) + "\n"


def stats_path(stats_dir: str, queue: str) -> str:
    return os.path.join(stats_dir, queue + STATS_SUFFIX)


def write_stats_file(stats_dir: str, queue: str, text: str) -> None:
    """Write atomically: ``{queue}.stats.tmp`` then rename over ``{queue}.stats``."""
    os.makedirs(stats_dir, exist_ok=True)
    path = stats_path(stats_dir, queue)
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
    os.replace(tmp, path)


class StatsObserver(NullObserver, Service):
    """Writes each queue's stats file as the runtime reports consumes.

    The writes Zulip makes when a queue goes idle and when it wakes up again are
    made at most once per ``min_idle_write_interval`` seconds per queue (a later
    one is delayed, not dropped): a fast consumer can empty its local buffer many
    times a second, and a file write each time would cost more than the events.
    """

    log = Logger()

    def __init__(self, clock: IReactorTime, stats_dir: str, min_idle_write_interval: float = 1.0) -> None:
        self._clock = clock
        self.stats_dir = stats_dir
        self.min_idle_write_interval = min_idle_write_interval
        self.queues: dict[str, QueueStats] = {}
        self._busy: dict[str, BusyTime] = {}
        self._write_failed: set[str] = set()
        self._delayed: dict[str, IDelayedCall] = {}

    def stopService(self) -> None:
        """Write what a delayed write would have written, and cancel its timer."""
        super().stopService()
        for queue in list(self._delayed):
            self._write(queue)

    def start(self, queues: Iterable[str]) -> None:
        """Zulip writes every queue's file when its worker starts; call at service start."""
        for queue in queues:
            self.queues[queue] = QueueStats(self._clock.seconds())
            self._write(queue)

    def _stats(self, queue: str) -> QueueStats:
        stats = self.queues.get(queue)
        if stats is None:
            self.start([queue])
            stats = self.queues[queue]
        return stats

    def consume_started(self, queue: str, events: int) -> None:
        busy = self._busy.get(queue)
        if busy is None:
            busy = self._busy[queue] = BusyTime()
        busy.started(self._clock.seconds())
        if self._stats(queue).on_consume_started():
            self._write_soon(queue)

    def consumed(self, queue: str, events: int, seconds: float) -> None:
        """A consume ended; the time counted is its share of the busy time (:class:`BusyTime`), not ``seconds``."""
        now = self._clock.seconds()
        busy = self._busy.get(queue)
        counted = busy.finished(events, now) if busy is not None else seconds
        if self._stats(queue).on_consumed(events, counted, now):
            self._write(queue)

    def idle(self, queue: str) -> None:
        if self._stats(queue).on_idle(self._clock.seconds()):
            self._write_soon(queue)

    def _write_soon(self, queue: str) -> None:
        """Write now, or once ``min_idle_write_interval`` has passed since the last write."""
        if queue in self._delayed:
            return  # a write is already due; it will carry the newest figures
        due = self.queues[queue].last_statistics_update_time + self.min_idle_write_interval
        now = self._clock.seconds()
        if now >= due:
            self._write(queue)
        else:
            self._delayed[queue] = self._clock.callLater(due - now, self._write, queue)

    def attached(self, queue: str, attached: bool) -> None:
        self._stats(queue)

    def _write(self, queue: str) -> None:
        delayed = self._delayed.pop(queue, None)
        if delayed is not None and delayed.active():
            delayed.cancel()
        stats = self.queues[queue]
        now = self._clock.seconds()
        try:
            write_stats_file(self.stats_dir, queue, render_stats(stats.snapshot(now)))
        except OSError as e:
            # Never let monitoring break consuming; say so once per queue.
            if queue not in self._write_failed:
                self._write_failed.add(queue)
                self.log.error(
                    "Cannot write the stats file of {queue} in {stats_dir}: {error}",
                    queue=queue,
                    stats_dir=self.stats_dir,
                    error=e.strerror or str(e),
                )
            return
        self._write_failed.discard(queue)
        stats.written(now)
