"""Workers for integration tests, loaded by ``[workers] consumer_modules`` in twistd children too.

Each appends the ``id`` of every event it finishes to the file named by
``ZQ_ITEST_OUT`` (one line per event), so a test can see what was processed even
across process restarts.
"""

from __future__ import annotations

import os
import random
from collections.abc import Sequence
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.task import deferLater

from zqtwisted.errors import PermanentError, TransientError
from zqtwisted.runtime.worker import Event, LoopQueueProcessingWorker, QueueProcessingWorker, assign_queue


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
            return deferLater(self.context.clock, float(delay), record, [event["id"]])
        record([event["id"]])
        return None


@assign_queue("zq_itest_flaky", is_test_queue=True)
class FlakyWorker(QueueProcessingWorker):
    """Fails transiently on a fixed share of attempts (``fail_rate``), decided per (id, attempt)."""

    concurrency = 50

    def consume(self, event: Event) -> None:
        attempt = f"{event['id']}-{event.get('failed_tries', 0)}"
        if random.Random(attempt).random() < event.get("fail_rate", 0.0):
            raise TransientError("flaky")
        record([event["id"]])


@assign_queue("zq_itest_faulty", is_test_queue=True)
class FaultyWorker(QueueProcessingWorker):
    """``"fault": "permanent"`` raises PermanentError; ``"fault": "hang"`` never finishes."""

    concurrency = 10

    def consume(self, event: Event) -> Deferred[None] | None:
        fault = event.get("fault")
        if fault == "permanent":
            raise PermanentError(f"event {event['id']} cannot be handled")
        if fault == "hang":
            return Deferred()
        record([event["id"]])
        return None


@assign_queue("zq_itest_batch", is_test_queue=True)
class BatchWorker(LoopQueueProcessingWorker):
    """Records each batch's events and its size (``batch:N``)."""

    batch_size = 10
    sleep_delay = 0.3

    def consume_batch(self, events: Sequence[Event]) -> None:
        record([*(e["id"] for e in events), f"batch:{len(events)}"])


@assign_queue("zq_itest_cluster", is_test_queue=True)
class ClusterWorker(QueueProcessingWorker):
    """Records each event, many in flight (cluster, quorum tests); ``"hang": true`` records ``hang-ID``, never ends."""

    concurrency = 100

    def consume(self, event: Event) -> Deferred[None] | None:
        if event.get("hang"):
            record([f"hang-{event['id']}"])
            return Deferred()
        record([event["id"]])
        return None


@assign_queue("zq_itest_dashboard", is_test_queue=True)
class DashboardWorker(QueueProcessingWorker):
    """For the dashboard's tests: fails for good while the file ``fail_while`` exists; ``delay`` s per event."""

    concurrency = 10

    def consume(self, event: Event) -> Deferred[None] | None:
        marker = event.get("fail_while")
        if marker and os.path.exists(marker):
            raise PermanentError(f"event {event['id']} fails while {marker} exists")
        delay = event.get("delay")
        if delay:
            return deferLater(self.context.clock, float(delay), record, [event["id"]])
        record([event["id"]])
        return None


@assign_queue("zq_itest_trouble", is_test_queue=True)
class TroubleWorker(QueueProcessingWorker):
    """For broker trouble (alarms, huge bodies): after ``delay`` s, ``"fault": "permanent"`` raises PermanentError,
    ``"fault": "retry"`` TransientError; the others are recorded."""

    concurrency = 10

    def consume(self, event: Event) -> Deferred[None] | None:
        delay = event.get("delay")
        if delay:
            return deferLater(self.context.clock, float(delay), self._finish, event)
        self._finish(event)
        return None

    def _finish(self, event: Event) -> None:
        fault = event.get("fault")
        if fault == "permanent":
            raise PermanentError(f"event {event['id']} cannot be handled")
        if fault == "retry":
            raise TransientError(f"event {event['id']} fails for now")
        record([event["id"]])
