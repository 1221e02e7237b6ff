"""The dashboard assembled from the service's pieces: metrics, runners, broker, and a thread pool when there is one."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from twisted.internet.interfaces import IReactorThreads
from twisted.internet.task import Clock
from twisted.python.threadpool import ThreadPool
from twisted.trial.unittest import TestCase
from zope.interface import implementer

from zqtwisted.ops.metrics import MetricsObserver
from zqtwisted.ops.web.app import make_dashboard
from zqtwisted.testing import MemoryBroker


class Runner:
    queue = "q"
    in_flight = 1
    held = 2
    attached = True


class InlinePool(ThreadPool):
    """A thread pool (never started) that runs what it is given at once, counting the calls."""

    def __init__(self) -> None:
        super().__init__()
        self.calls = 0

    def callInThreadWithCallback(self, onResult: Any, func: Callable[..., Any], *args: Any, **kw: Any) -> None:
        self.calls += 1
        onResult(True, func(*args, **kw))


@implementer(IReactorThreads)
class ThreadedClock(Clock):
    """A Clock that also says it has a thread pool (which runs everything inline)."""

    def __init__(self) -> None:
        super().__init__()
        self.pool = InlinePool()

    def getThreadPool(self) -> ThreadPool:
        return self.pool

    def callFromThread(self, callable: Callable[..., Any], *args: object, **kwargs: object) -> None:
        callable(*args, **kwargs)

    def callInThread(self, callable: Callable[..., Any], *args: object, **kwargs: object) -> None:
        callable(*args, **kwargs)

    def suggestThreadPoolSize(self, size: int) -> None:
        pass


class AppTests(TestCase):
    def test_reads_the_metrics_and_the_runners(self) -> None:
        """The rows take counters and recent durations from the metrics observer, unacked from the runners."""
        clock = Clock()
        broker = MemoryBroker(clock)
        broker.connect()
        metrics = MetricsObserver(queues=["q"])
        for seconds in (0.001, 0.002, 0.010):
            metrics.consume_started("q", 1)
            metrics.consumed("q", 1, seconds)
        metrics.retried("q", 1.0)
        dashboard = make_dashboard(clock, broker, [Runner()], metrics, "a-long-dashboard-token")
        self.assertEqual(set(dashboard.children), {b"", b"favicon.ico", b"static", b"api"})
        dashboard.sampler.startService()
        self.addCleanup(dashboard.sampler.stopService)
        [row] = dashboard.sampler.board.rows
        self.assertEqual((row.consumed, row.retried, row.unacked, row.in_flight), (3, 1, 2, 1))
        self.assertEqual((row.consume_p50, row.consume_p99), (0.002, 0.010))
        self.assertEqual(dashboard.letters.queues, ["q"])

    def test_bodies_are_masked_in_the_reactors_thread_pool(self) -> None:
        """With a reactor that has threads, a page's bodies are masked in its thread pool."""
        clock = ThreadedClock()
        broker = MemoryBroker(clock)
        broker.connect()
        session = broker.current_session()
        assert session is not None
        session.publish("q.failed", json.dumps({"secret": "x"}).encode())
        dashboard = make_dashboard(clock, broker, [Runner()], MetricsObserver(), None)
        page = self.successResultOf(dashboard.letters.page("q", 0, 20))
        self.assertEqual(json.loads(page.letters[0].body), {"secret": "***"})
        self.assertEqual(clock.pool.calls, 1)
