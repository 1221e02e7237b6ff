"""The dashboard's sampler: readings from the broker and the runners every tick, on a Clock."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.python.failure import Failure
from twisted.trial.unittest import TestCase

from zqtwisted.ops.top import QueueCounters
from zqtwisted.ops.web.sampler import CALL_TIMEOUT, DashboardSampler
from zqtwisted.testing import MemoryBroker


@dataclass
class FakeRunner:
    queue: str
    in_flight: int = 0
    held: int = 0
    attached: bool = True


class HangingSession:
    """A session whose queue declares never answer."""

    is_open = True

    def __init__(self) -> None:
        self.calls: list[Deferred[Any]] = []

    def queue_counts(self, queue: str) -> Deferred[tuple[int, int]]:
        d: Deferred[tuple[int, int]] = Deferred()
        self.calls.append(d)
        return d


class HangingBroker:
    def __init__(self) -> None:
        self.session_ = HangingSession()

    def current_session(self) -> HangingSession:
        return self.session_


class SamplerTests(TestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.broker = MemoryBroker(self.clock)
        self.broker.connect()
        self.runner = FakeRunner("q", in_flight=2, held=3)
        self.consumed = 0.0
        self.durations: dict[str, Sequence[float]] = {"q": [0.002, 0.001, 0.003]}
        self.sampler = self.make(self.broker)

    def make(self, broker: Any) -> DashboardSampler:
        sampler = DashboardSampler(
            self.clock,
            broker,
            [self.runner],
            self.counters,
            lambda q: self.durations.get(q, []),
            interval=2.0,
            reactor_lag=lambda: 0.004,
        )
        self.addCleanup(lambda: sampler.running and sampler.stopService())
        return sampler

    def counters(self) -> Mapping[str, QueueCounters]:
        return {"q": QueueCounters(consumed=self.consumed, dead_lettered=1, retried=2)}

    def fill(self, queue: str, n: int) -> None:
        session = self.broker.current_session()
        assert session is not None
        for i in range(n):
            session.publish(queue, b'{"i": %d}' % i)

    def test_before_start_the_board_has_the_local_figures(self) -> None:
        """Before the first tick the rows exist, with what the runners know and nothing from RabbitMQ."""
        [row] = self.sampler.board.rows
        self.assertEqual((row.name, row.unacked, row.in_flight, row.depth), ("q", 3, 2, None))
        self.assertIsNone(self.sampler.board.time)

    def test_tick_reads_the_broker_the_runners_and_the_metrics(self) -> None:
        """A tick reads ready/consumers of the queue and of its dead letters, the runner, the counters."""
        self.fill("q", 10)
        self.fill("q.failed", 4)
        self.sampler.startService()
        board = self.sampler.board
        [row] = board.rows
        self.assertTrue(board.connected)
        self.assertEqual((board.time, board.started, board.reactor_lag), (0.0, 0.0, 0.004))
        self.assertEqual((row.ready, row.unacked, row.depth, row.consumers, row.dead_letters), (10, 3, 13, 0, 4))
        self.assertEqual((row.dead_lettered, row.retried, row.consume_p50, row.consume_p99), (1, 2, 0.002, 0.003))
        self.assertEqual(len(self.sampler.history), 1)

    def test_rates_between_ticks(self) -> None:
        """The second tick has rates: out from the counters, in from the depth change plus out."""
        self.fill("q", 10)
        self.sampler.startService()
        self.consumed = 8.0
        self.fill("q", 2)
        self.clock.advance(2.0)
        [row] = self.sampler.board.rows
        self.assertEqual((row.rate_out, row.rate_in), (4.0, 5.0))
        self.assertEqual(self.sampler.history.since(0.0)["queues"]["q"]["depth"], [15])

    def test_disconnected(self) -> None:
        """Without a broker session the tick keeps the runners' figures and says it is disconnected."""
        self.broker.disconnect()
        self.sampler.startService()
        board = self.sampler.board
        self.assertFalse(board.connected)
        self.assertEqual((board.rows[0].depth, board.rows[0].unacked), (None, 3))

    def test_a_broker_that_does_not_answer(self) -> None:
        """Calls have a deadline; ticks due meanwhile are skipped; the late tick records unknown sizes."""
        broker = HangingBroker()
        sampler = self.make(broker)
        sampler.startService()
        self.assertEqual(len(broker.session_.calls), 2)  # q and q.failed
        self.clock.advance(2.0)  # the next tick is skipped: one reading at a time
        self.assertEqual(len(broker.session_.calls), 2)
        self.assertIsNone(sampler.board.time)
        self.clock.advance(CALL_TIMEOUT)
        self.assertTrue(sampler.board.connected)
        self.assertEqual((sampler.board.rows[0].ready, sampler.board.rows[0].dead_letters), (None, None))
        self.clock.advance(2.0)
        self.assertEqual(len(broker.session_.calls), 4)  # reading again

    def test_stop_cancels_the_reading_and_the_loop(self) -> None:
        """Stopping cancels the calls in flight and leaves no timer behind."""
        broker = HangingBroker()
        sampler = self.make(broker)
        sampler.startService()
        sampler.stopService()
        self.assertTrue(all(d.called for d in broker.session_.calls))
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_a_failing_tick_is_logged_and_sampling_goes_on(self) -> None:
        """An error while recording is logged; the next tick samples again."""
        calls = []

        def failing() -> Mapping[str, QueueCounters]:
            calls.append(1)
            if len(calls) == 1:
                raise RuntimeError("boom")
            return {}

        self.sampler._counters = failing
        self.sampler.startService()
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)
        self.clock.advance(2.0)
        self.assertIsNotNone(self.sampler.board.time)

    def test_loop_failure_is_logged(self) -> None:
        """Should the loop itself fail, the failure is logged (and the dashboard keeps its last board)."""
        self.sampler.startService()
        assert self.sampler._loop is not None
        self.sampler._loop_failed(Failure(ValueError("x")))
        self.assertEqual(len(self.flushLoggedErrors(ValueError)), 1)
