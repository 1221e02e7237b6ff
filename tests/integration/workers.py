"""Workers for integration tests, loaded by ``[workers] consumer_modules`` in twistd children too.

Each appends the ``id`` of every event it finishes to the file named by
``ZQ_ITEST_OUT`` (one line per event), so a test can see what was processed even
across process restarts.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.task import deferLater

from zqtwisted.errors import TransientError
from zqtwisted.worker import Event, LoopQueueProcessingWorker, QueueProcessingWorker, assign_queue


def record(ids: Sequence[Any]) -> None:
    path = os.environ.get("ZQ_ITEST_OUT")
    if path:
        with open(path, "a") as f:
            f.writelines(f"{i}\n" for i in ids)


@assign_queue("zq_itest_record", is_test_queue=True)
class RecordWorker(QueueProcessingWorker):
    """Records each event; an event with ``"delay": s`` takes s seconds (without blocking)."""

    concurrency = 10

    def consume(self, event: Event) -> Deferred[None] | None:
        delay = event.get("delay")
        if delay:
            return deferLater(self.context.reactor, float(delay), record, [event["id"]])
        record([event["id"]])
        return None


@assign_queue("zq_itest_flaky", is_test_queue=True)
class FlakyWorker(QueueProcessingWorker):
    """Fails transiently when ``failed_tries`` is below the event's ``fail_times``."""

    concurrency = 50

    def consume(self, event: Event) -> None:
        if event.get("failed_tries", 0) < event.get("fail_times", 0):
            raise TransientError("flaky")
        record([event["id"]])


@assign_queue("zq_itest_batch", is_test_queue=True)
class BatchWorker(LoopQueueProcessingWorker):
    """Records each batch's events and its size (``batch:N``)."""

    batch_size = 10
    sleep_delay = 0.3

    def consume_batch(self, events: Sequence[Event]) -> None:
        record([*(e["id"] for e in events), f"batch:{len(events)}"])
