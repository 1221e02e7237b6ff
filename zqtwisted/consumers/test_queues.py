"""Zulip's test queues: ``test`` (appends events to a file), ``noop``, ``noop_batch``."""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from typing import Any, ClassVar

from zqtwisted.runtime.worker import Event, LoopQueueProcessingWorker, QueueProcessingWorker, assign_queue


@assign_queue("test", is_test_queue=True)
class TestWorker(QueueProcessingWorker):
    """Appends each event as one JSON line to ``ZQ_TEST_QUEUE_FILE`` / ``[paths] test_queue_file``."""

    __test__: ClassVar[bool] = False  # not a test case, whatever its name says

    def consume(self, event: Event) -> None:
        path = self.context.config.paths.test_queue_file
        directory = os.path.dirname(path)
        if directory:
            os.makedirs(directory, exist_ok=True)
        with open(path, "a") as f:
            f.write(json.dumps(event, sort_keys=True) + "\n")


@assign_queue("noop", is_test_queue=True)
class NoopWorker(QueueProcessingWorker):
    """Counts events and does nothing else (used by the benchmarks)."""

    consumed: int = 0

    def consume(self, event: Event) -> None:
        self.consumed += 1


@assign_queue("noop_batch", is_test_queue=True)
class BatchNoopWorker(LoopQueueProcessingWorker):
    """Counts events in batches of 100 (used by the benchmarks)."""

    consumed: int = 0
    batches: int = 0

    def consume_batch(self, events: Sequence[dict[str, Any]]) -> None:
        self.batches += 1
        self.consumed += len(events)
