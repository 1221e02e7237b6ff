"""Zulip's test queues: ``test`` (appends events to a file), ``noop``, ``noop_batch``."""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from typing import Any, ClassVar

from zqtwisted.resources import Resources
from zqtwisted.runtime.consumer import (
    ConsumerSpec,
    Event,
    LoopQueueProcessingWorker,
    QueueProcessingWorker,
    WorkerContext,
)


class TestWorker(QueueProcessingWorker):
    """Appends each event as one JSON line to ``path`` (``[paths] test_queue_file`` / ``ZQ_TEST_QUEUE_FILE``)."""

    __test__: ClassVar[bool] = False  # not a test case, whatever its name says

    def __init__(self, context: WorkerContext, *, path: str) -> None:
        super().__init__(context)
        self.path = path

    def consume(self, event: Event) -> None:
        directory = os.path.dirname(self.path)
        if directory:
            os.makedirs(directory, exist_ok=True)
        with open(self.path, "a") as f:
            f.write(json.dumps(event, sort_keys=True) + "\n")


class NoopWorker(QueueProcessingWorker):
    """Counts events and does nothing else (used by the benchmarks)."""

    consumed: int = 0

    def consume(self, event: Event) -> None:
        self.consumed += 1


class BatchNoopWorker(LoopQueueProcessingWorker):
    """Counts events in batches of 100 (used by the benchmarks)."""

    consumed: int = 0
    batches: int = 0

    def consume_batch(self, events: Sequence[dict[str, Any]]) -> None:
        self.batches += 1
        self.consumed += len(events)


def _build_test(context: WorkerContext, settings: None, resources: Resources) -> TestWorker:
    return TestWorker(context, path=resources.config.paths.test_queue_file)


def _build_noop(context: WorkerContext, settings: None, resources: Resources) -> NoopWorker:
    return NoopWorker(context)


def _build_noop_batch(context: WorkerContext, settings: None, resources: Resources) -> BatchNoopWorker:
    return BatchNoopWorker(context)


SPECS: tuple[ConsumerSpec[Any], ...] = (
    ConsumerSpec("test", TestWorker, _build_test, is_test_queue=True),
    ConsumerSpec("noop", NoopWorker, _build_noop, is_test_queue=True),
    ConsumerSpec("noop_batch", BatchNoopWorker, _build_noop_batch, is_test_queue=True),
)
