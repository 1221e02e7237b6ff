"""The dashboard's figures: depth, rates, quantiles, rows, history and the /api/queues body."""

from __future__ import annotations

from twisted.trial.unittest import TestCase

from zqtwisted.ops.top import QueueCounters
from zqtwisted.ops.web.model import (
    Board,
    History,
    QueueReading,
    QueueRow,
    Reading,
    board_json,
    depth_of,
    quantile,
    queue_rows,
)


def reading(time: float, ready: int | None, consumed: float, unacked: int = 0, **extra: object) -> Reading:
    return Reading(
        time=time,
        connected=ready is not None,
        queues={"q": QueueReading(ready=ready, consumers=1, dead_letters=2, unacked=unacked, attached=True)},
        counters={"q": QueueCounters(consumed=consumed, **extra)},  # type: ignore[arg-type]
        durations={"q": [0.001 * i for i in range(1, 101)]},
    )


class FigureTests(TestCase):
    def test_depth_is_ready_plus_unacked(self) -> None:
        """Depth adds what this process holds unacked to what RabbitMQ has ready; unknown without RabbitMQ."""
        self.assertEqual(depth_of(QueueReading(ready=10, unacked=3)), 13)
        self.assertIsNone(depth_of(QueueReading(ready=None, unacked=3)))

    def test_quantile_is_nearest_rank(self) -> None:
        """Median and p99 are nearest-rank quantiles of the values; None without values."""
        values = [float(v) for v in range(100, 0, -1)]
        self.assertEqual(quantile(values, 0.5), 50.0)
        self.assertEqual(quantile(values, 0.99), 99.0)
        self.assertEqual(quantile([3.0], 0.99), 3.0)
        self.assertIsNone(quantile([], 0.5))


class RowTests(TestCase):
    def test_rates_come_from_two_readings(self) -> None:
        """Out is the change in consumed + dead-lettered per second; in adds the change in depth."""
        before = reading(10.0, 100, consumed=50, unacked=10)
        after = reading(12.0, 80, consumed=70, unacked=10, dead_lettered=2, retried=3, failed=4)
        [row] = queue_rows(before, after)
        self.assertEqual(row.rate_out, 11.0)  # (20 + 2) / 2 s
        self.assertEqual(row.rate_in, 1.0)  # (90 - 110) / 2 s + 11
        self.assertEqual((row.depth, row.ready, row.unacked), (90, 80, 10))
        self.assertEqual((row.retried, row.failed, row.dead_lettered, row.dead_letters), (3, 4, 2, 2))
        self.assertEqual((row.consume_p50, row.consume_p99, row.consume_samples), (0.05, 0.099, 100))

    def test_first_reading_has_no_rates(self) -> None:
        """Without a previous reading there is no rate; the other figures are there."""
        [row] = queue_rows(None, reading(1.0, 5, consumed=1))
        self.assertEqual((row.rate_in, row.rate_out, row.depth, row.consumed), (None, None, 5, 1))

    def test_disconnected_reading_keeps_the_local_figures(self) -> None:
        """When RabbitMQ did not answer, depth and in are unknown; out still comes from the counters."""
        [row] = queue_rows(reading(1.0, 5, consumed=1), reading(2.0, None, consumed=3, unacked=4))
        self.assertEqual((row.depth, row.ready, row.unacked, row.rate_in, row.rate_out), (None, None, 4, None, 2.0))

    def test_row_as_json(self) -> None:
        """A row's JSON names every figure, rates and times rounded."""
        [row] = queue_rows(reading(1.0, 5, consumed=1), reading(4.0, 5, consumed=2))
        body = row.as_json()
        self.assertEqual(body["rate_out"], 0.33)
        self.assertEqual(body["consume_p50_seconds"], 0.05)
        self.assertEqual(
            set(body),
            {
                "name",
                "ready",
                "unacked",
                "depth",
                "consumers",
                "attached",
                "in_flight",
                "rate_in",
                "rate_out",
                "consume_p50_seconds",
                "consume_p99_seconds",
                "consume_samples",
                "consumed_total",
                "failed_total",
                "retried_total",
                "dead_lettered_total",
                "dead_letters",
            },
        )


def row(name: str, depth: int | None, rate: float | None = None) -> QueueRow:
    return QueueRow(name, depth, 0, depth, 1, True, 0, rate, rate, None, None, 0, 0, 0, 0, 0, 0)


class HistoryTests(TestCase):
    def test_keeps_the_window_and_answers_since(self) -> None:
        """Points older than the window go; ``since`` returns only newer points, as columns per queue."""
        history = History(["a", "b"], seconds=10, interval=2)
        for t in range(0, 20, 2):
            history.add(1000.0 + t + 0.0001, [row("a", t, t / 2)])
        self.assertEqual(len(history), 6)  # 1008 .. 1018
        body = history.since(1014.0)
        self.assertEqual(body["time"], [1016.0, 1018.0])  # rounded to the millisecond
        self.assertEqual(body["queues"]["a"], {"depth": [16, 18], "rate_in": [8.0, 9.0], "rate_out": [8.0, 9.0]})
        self.assertEqual(body["queues"]["b"]["depth"], [None, None])
        self.assertEqual(len(history.since(None)["time"]), 6)

    def test_board_json(self) -> None:
        """The /api/queues body: process facts, the rows and the history newer than ``since``."""
        history = History(["a"], seconds=900, interval=2)
        history.add(10.0, [row("a", 1)])
        history.add(12.0, [row("a", 2)])
        board = Board(12.0, True, [row("a", 2)], started=1.0, reactor_lag=0.0012345678)
        body = board_json(board, history, 2.0, actions=False, since=10.0)
        self.assertEqual(body["history"]["time"], [12.0])
        self.assertEqual(
            {k: body[k] for k in ("time", "started", "connected", "reactor_lag_seconds", "interval", "actions")},
            {
                "time": 12.0,
                "started": 1.0,
                "connected": True,
                "reactor_lag_seconds": 0.001235,
                "interval": 2.0,
                "actions": False,
            },
        )
        self.assertEqual([q["name"] for q in body["queues"]], ["a"])
        self.assertEqual(body["history_seconds"], 900)
        empty = board_json(Board(None, False, []), history, 2.0, actions=True)
        self.assertEqual((empty["time"], empty["started"], empty["reactor_lag_seconds"]), (None, None, None))
