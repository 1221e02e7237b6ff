"""The worker service's stop: bounded at every step, whatever a worker or the shared resources do."""

from __future__ import annotations

from typing import Any, cast

from twisted.internet.defer import Deferred, succeed
from twisted.logger import ILogObserver, Logger, formatEvent
from twisted.trial import unittest

from tests.helpers import Harness
from zqtwisted.runtime.consumer import QueueProcessingWorker
from zqtwisted.runtime.service import STOP_GRACE, WorkerService


class Stuck(QueueProcessingWorker):
    """A worker whose stop never finishes (a flush waiting on a broker that does not answer)."""

    def consume(self, event: Any) -> None:
        return None

    def stop(self) -> Deferred[None]:
        return Deferred()


class StuckResources:
    def __init__(self) -> None:
        self.closing: Deferred[None] = Deferred()

    def close(self) -> Deferred[None]:
        return self.closing


class StopTests(unittest.TestCase):
    def service(self, clock: bool) -> tuple[Harness[Stuck], WorkerService, list[dict[str, Any]]]:
        h = Harness(Stuck)
        service = WorkerService(
            h.broker,
            [h.runner],
            10.0,
            on_fatal=lambda: None,
            resources=StuckResources(),
            clock=h.clock if clock else None,
        )
        events: list[dict[str, Any]] = []
        service.log = Logger(observer=cast(ILogObserver, events.append))
        service.startService()
        return h, service, events

    def test_a_stuck_worker_stop_is_bounded(self) -> None:
        """Workers and resources that never finish stopping are given STOP_GRACE, then the broker is stopped anyway."""
        h, service, events = self.service(clock=True)
        stopped = service.stopService()
        h.clock.advance(STOP_GRACE - 0.1)
        self.assertNoResult(stopped)
        self.assertTrue(h.broker.running)
        h.clock.advance(0.1)
        self.successResultOf(stopped)
        self.assertFalse(h.broker.running)
        self.assertIn(
            f"The workers did not stop (or the resources close) within {STOP_GRACE:g}s; stopping anyway",
            [formatEvent(e) for e in events],
        )

    def test_without_a_clock_the_stop_waits(self) -> None:
        """Without a clock (tests that drive it by hand), the stop waits for the workers as before."""
        h, service, _ = self.service(clock=False)
        stopped = service.stopService()
        h.clock.advance(3600)
        self.assertNoResult(stopped)

    def test_a_prompt_stop_leaves_no_timer(self) -> None:
        """Workers and resources that stop at once: the stop completes with no warning and no timer left."""
        h, service, events = self.service(clock=True)
        resources = cast(StuckResources, service.resources)
        resources.closing.callback(None)
        h.worker.stop = lambda: succeed(None)  # type: ignore[method-assign]
        self.successResultOf(service.stopService())
        self.assertEqual([e for e in events if "did not stop" in formatEvent(e)], [])
        h.broker.flush()
        self.assertEqual(h.clock.getDelayedCalls(), [])
