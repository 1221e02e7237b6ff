"""The dashboard's queue figures, as plain values: what a tick read, the rows it makes, their history.

A :class:`Reading` is what the sampler gathered at one instant: per queue, the
messages ready in RabbitMQ, its consumers and dead letters (from a queue declare,
so no management plugin is needed), the deliveries this process holds unacked
(the runners know them: RabbitMQ reports unacked messages only through its
management API), and the cumulative counters and recent consume durations of
:mod:`zqtwisted.ops.metrics`.

:func:`queue_rows` turns two successive readings into rows (depth = ready +
unacked, rates from the counters' change as ``zqctl top`` computes them, median
and p99 of the recent consume durations); :class:`History` keeps the last
minutes of depth and rates for the charts.  Nothing here does I/O.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from zqtwisted.ops.top import QueueCounters, Sample, compute_rows

HISTORY_SECONDS = 900.0


@dataclass(frozen=True)
class QueueReading:
    """One queue at one instant.  ``None``: RabbitMQ did not say (disconnected, or no answer in time)."""

    ready: int | None = None
    consumers: int | None = None
    dead_letters: int | None = None
    unacked: int = 0
    in_flight: int = 0
    attached: bool = False


@dataclass(frozen=True)
class Reading:
    """What one tick gathered about every queue of the process."""

    time: float
    connected: bool
    queues: Mapping[str, QueueReading]
    counters: Mapping[str, QueueCounters] = field(default_factory=dict)
    durations: Mapping[str, Sequence[float]] = field(default_factory=dict)


@dataclass(frozen=True)
class QueueRow:
    """One queue's line on the dashboard."""

    name: str
    ready: int | None
    unacked: int
    depth: int | None
    consumers: int | None
    attached: bool
    in_flight: int
    rate_in: float | None
    rate_out: float | None
    consume_p50: float | None
    consume_p99: float | None
    consume_samples: int
    consumed: int
    failed: int
    retried: int
    dead_lettered: int
    dead_letters: int | None

    def as_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "ready": self.ready,
            "unacked": self.unacked,
            "depth": self.depth,
            "consumers": self.consumers,
            "attached": self.attached,
            "in_flight": self.in_flight,
            "rate_in": _round(self.rate_in, 2),
            "rate_out": _round(self.rate_out, 2),
            "consume_p50_seconds": _round(self.consume_p50, 7),
            "consume_p99_seconds": _round(self.consume_p99, 7),
            "consume_samples": self.consume_samples,
            "consumed_total": self.consumed,
            "failed_total": self.failed,
            "retried_total": self.retried,
            "dead_lettered_total": self.dead_lettered,
            "dead_letters": self.dead_letters,
        }


def _round(value: float | None, digits: int) -> float | None:
    return None if value is None else round(value, digits)


def depth_of(reading: QueueReading) -> int | None:
    """Ready in RabbitMQ plus held unacked here; None when RabbitMQ did not say."""
    return None if reading.ready is None else reading.ready + reading.unacked


def quantile(values: Sequence[float], q: float) -> float | None:
    """The nearest-rank ``q`` quantile (0 < q <= 1) of ``values``; None when empty."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, math.ceil(q * len(ordered)))
    return ordered[min(rank, len(ordered)) - 1]


def _sample(reading: Reading) -> Sample:
    """The reading as ``zqctl top`` sees one: (depth, consumers) per queue and the counters."""
    counts = {}
    for name, q in reading.queues.items():
        depth = depth_of(q)
        if depth is not None:
            counts[name] = (depth, q.consumers if q.consumers is not None else 0)
    return Sample(reading.time, counts, counters=reading.counters)


def queue_rows(previous: Reading | None, current: Reading) -> list[QueueRow]:
    """The rows of ``current``, in the reading's queue order; rates need ``previous``."""
    top_rows = {
        row.queue: row for row in compute_rows(_sample(previous) if previous is not None else None, _sample(current))
    }
    rows = []
    for name, q in current.queues.items():
        top = top_rows.get(name)
        counters = current.counters.get(name, QueueCounters())
        durations = current.durations.get(name, ())
        rows.append(
            QueueRow(
                name=name,
                ready=q.ready,
                unacked=q.unacked,
                depth=depth_of(q),
                consumers=q.consumers,
                attached=q.attached,
                in_flight=q.in_flight,
                rate_in=top.rate_in if top is not None else None,
                rate_out=top.rate_out if top is not None else None,
                consume_p50=quantile(durations, 0.5),
                consume_p99=quantile(durations, 0.99),
                consume_samples=len(durations),
                consumed=int(counters.consumed),
                failed=int(counters.failed),
                retried=int(counters.retried),
                dead_lettered=int(counters.dead_lettered),
                dead_letters=q.dead_letters,
            )
        )
    return rows


@dataclass(frozen=True)
class Point:
    """One queue's charted figures at one tick."""

    depth: int | None
    rate_in: float | None
    rate_out: float | None


class History:
    """The last ``seconds`` of depth and rates per queue, one point per tick."""

    def __init__(self, queues: Sequence[str], seconds: float = HISTORY_SECONDS, interval: float = 2.0) -> None:
        self.queues = list(queues)
        self.seconds = seconds
        self._points: deque[tuple[float, dict[str, Point]]] = deque(maxlen=max(2, int(seconds / interval) + 1))

    def __len__(self) -> int:
        return len(self._points)

    def add(self, time: float, rows: Sequence[QueueRow]) -> None:
        points = {row.name: Point(row.depth, row.rate_in, row.rate_out) for row in rows}
        # Rounded as the API shows it, so that ``since`` (a time the page got) compares exactly.
        time = round(time, 3)
        self._points.append((time, points))
        while self._points and self._points[0][0] < time - self.seconds:
            self._points.popleft()

    def since(self, after: float | None = None) -> dict[str, Any]:
        """The points newer than ``after`` (all of them for None), as columns for the charts."""
        if after is None:
            chosen = list(self._points)
        else:  # the newest points, walking back from the end: a poll asks for one or two
            chosen = []
            for t, p in reversed(self._points):
                if t <= after:
                    break
                chosen.append((t, p))
            chosen.reverse()
        empty = Point(None, None, None)
        series: dict[str, dict[str, list[Any]]] = {}
        for name in self.queues:
            points = [p.get(name, empty) for _, p in chosen]
            series[name] = {
                "depth": [p.depth for p in points],
                "rate_in": [_round(p.rate_in, 2) for p in points],
                "rate_out": [_round(p.rate_out, 2) for p in points],
            }
        return {"time": [t for t, _ in chosen], "queues": series}


@dataclass(frozen=True)
class Board:
    """The latest rows and what the page shows around them."""

    time: float | None
    connected: bool
    rows: Sequence[QueueRow]
    started: float | None = None
    reactor_lag: float | None = None


def board_json(
    board: Board, history: History, interval: float, actions: bool, since: float | None = None
) -> dict[str, Any]:
    """The body of ``GET /api/queues``: the rows, and the history newer than ``since``."""
    return {
        "time": None if board.time is None else round(board.time, 3),
        "started": None if board.started is None else round(board.started, 3),
        "connected": board.connected,
        "reactor_lag_seconds": _round(board.reactor_lag, 6),
        "interval": interval,
        "history_seconds": history.seconds,
        "actions": actions,
        "queues": [row.as_json() for row in board.rows],
        "history": history.since(since),
    }
