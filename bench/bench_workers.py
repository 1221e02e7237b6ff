"""zqtwisted workers of the benchmarks, loaded in twistd children by ``[workers] consumer_modules``.

* ``bench_noop``: Zulip's ``noop`` worker (does nothing), plus a probe;
* ``bench_noop_batch``: Zulip's ``noop_batch`` (batches of 100), plus a probe;
* ``bench_latency``: records, for every event, ``time.time() - event["sent"]``.

The probe notes the time of the first event and of event number ``$ZQ_BENCH_COUNT``
and then writes ``$ZQ_BENCH_OUT/{queue}.json``: the parent polls for that file.  It
costs two clock reads per run and one integer addition per event.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from typing import Any

from benchlib import write_result

from zqtwisted.runtime.worker import (
    Event,
    LoopQueueProcessingWorker,
    QueueProcessingWorker,
    WorkerContext,
    assign_queue,
)


class Probe:
    def __init__(self, queue: str) -> None:
        self.expected = int(os.environ.get("ZQ_BENCH_COUNT", "0"))
        out = os.environ.get("ZQ_BENCH_OUT", "")
        self.path = os.path.join(out, f"{queue}.json") if out else ""
        self.count = 0
        self.first = 0.0
        self.first_cpu = 0.0
        self.done = False

    def seen(self, n: int) -> None:
        if self.count == 0:
            self.first = time.perf_counter()
            self.first_cpu = time.process_time()
        self.count += n
        if self.count >= self.expected and self.path and not self.done:
            self.done = True
            seconds = time.perf_counter() - self.first
            write_result(
                self.path, {"count": self.count, "seconds": seconds, "cpu": time.process_time() - self.first_cpu}
            )


@assign_queue("bench_noop", is_test_queue=True)
class BenchNoopWorker(QueueProcessingWorker):
    def __init__(self, context: WorkerContext) -> None:
        super().__init__(context)
        self.probe = Probe(self.queue)

    def stop(self) -> None:
        self.log.info("{queue}: {n} events consumed", queue=self.queue, n=self.probe.count)

    def consume(self, event: Event) -> None:
        self.probe.seen(1)


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
