"""zqtwisted workers of the benchmarks, loaded in twistd children by ``[workers] consumer_modules``.

* ``bench_noop``: Zulip's ``noop`` worker (does nothing), plus a probe;
* ``bench_noop_batch``: Zulip's ``noop_batch`` (batches of 100), plus a probe;
* ``bench_latency``: records, for every event, ``time.time() - event["sent"]``.

The probe notes the time of the first event and of event number ``$ZQ_BENCH_COUNT``
and then writes ``$ZQ_BENCH_OUT/{queue}.json``: the parent polls for that file.  It
costs two clock reads per run and one integer addition per event.

With ``$ZQ_BENCH_SHARED=1`` (several processes on one queue, bench/processes.py) no
process sees every event: the probe also notes the wall-clock time of each event and
writes its count, first and last times a moment (0.2 s) after the events stop coming;
and with ``$ZQ_BENCH_GO`` naming a file, ``bench_noop`` holds its first event until that
file exists, so that every process starts at once, when the parent says so.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from typing import Any

from benchlib import write_result
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IDelayedCall, IReactorTime

from zqtwisted.runtime.worker import (
    Event,
    LoopQueueProcessingWorker,
    QueueProcessingWorker,
    WorkerContext,
    assign_queue,
)

GO_POLL = 0.005
SHARED_FLUSH = 0.2


class Probe:
    def __init__(self, queue: str, clock: IReactorTime | None = None) -> None:
        self.expected = int(os.environ.get("ZQ_BENCH_COUNT", "0"))
        out = os.environ.get("ZQ_BENCH_OUT", "")
        self.path = os.path.join(out, f"{queue}.json") if out else ""
        self.count = 0
        self.first = 0.0
        self.first_cpu = 0.0
        self.done = False
        self.shared = os.environ.get("ZQ_BENCH_SHARED") == "1" and clock is not None
        self.clock = clock
        self.wall_first = self.wall_last = 0.0
        self._flush: IDelayedCall | None = None

    def seen(self, n: int) -> None:
        if self.count == 0:
            self.first = time.perf_counter()
            self.first_cpu = time.process_time()
            self.wall_first = time.time()
        self.count += n
        if self.shared:
            self.wall_last = time.time()
            if self._flush is None and self.clock is not None:
                self._flush = self.clock.callLater(SHARED_FLUSH, self.write_shared)
            return
        if self.count >= self.expected and self.path and not self.done:
            self.done = True
            seconds = time.perf_counter() - self.first
            write_result(
                self.path, {"count": self.count, "seconds": seconds, "cpu": time.process_time() - self.first_cpu}
            )

    def write_shared(self) -> None:
        """This process's share so far: count, wall-clock times of its first and last event, CPU."""
        self._flush = None
        if self.path:
            result = {"count": self.count, "first": self.wall_first, "last": self.wall_last}
            write_result(self.path, {**result, "cpu": time.process_time() - self.first_cpu})


def go_signal(clock: IReactorTime) -> Deferred[None] | None:
    """A Deferred that fires once the file ``$ZQ_BENCH_GO`` exists (None without one, or when it does)."""
    path = os.environ.get("ZQ_BENCH_GO", "")
    if not path or os.path.exists(path):
        return None
    d: Deferred[None] = Deferred()

    def poll() -> None:
        if os.path.exists(path):
            d.callback(None)
        else:
            clock.callLater(GO_POLL, poll)

    clock.callLater(GO_POLL, poll)
    return d


@assign_queue("bench_noop", is_test_queue=True)
class BenchNoopWorker(QueueProcessingWorker):
    def __init__(self, context: WorkerContext) -> None:
        super().__init__(context)
        self.probe = Probe(self.queue, context.clock)
        self.gate: Deferred[None] | None = None

    def stop(self) -> None:
        self.log.info("{queue}: {n} events consumed", queue=self.queue, n=self.probe.count)

    def consume(self, event: Event) -> Deferred[None] | None:
        if self.probe.count == 0 and self.gate is None:
            self.gate = go_signal(self.context.clock)
            if self.gate is not None:
                return self.gate.addCallback(lambda _: self.probe.seen(1))
        self.probe.seen(1)
        return None


@assign_queue("bench_noop_batch", is_test_queue=True)
class BenchNoopBatchWorker(LoopQueueProcessingWorker):
    def __init__(self, context: WorkerContext) -> None:
        super().__init__(context)
        self.probe = Probe(self.queue)

    def consume_batch(self, events: Sequence[dict[str, Any]]) -> None:
        self.probe.seen(len(events))


@assign_queue("bench_latency", is_test_queue=True)
class BenchLatencyWorker(QueueProcessingWorker):
    def __init__(self, context: WorkerContext) -> None:
        super().__init__(context)
        self.probe = Probe(self.queue)
        self.latencies: list[float] = []

    def consume(self, event: Event) -> None:
        self.latencies.append(time.time() - event["sent"])
        if len(self.latencies) >= self.probe.expected and self.probe.path and not self.probe.done:
            self.probe.done = True
            write_result(self.probe.path, {"count": len(self.latencies), "latencies": self.latencies})
