"""A worker on one of Zulip's ``normal_queues`` (``embedded_bots``, one zqtwisted does not ship), for the
tests that compare ``zqctl check`` with Zulip's check: Zulip's check applies its stats rules only to those names.

Loaded by ``[workers] consumer_modules`` in twistd children (and zqctl); never imported by
the test process itself, so the shipped catalog there is unchanged.  Each event takes
``"seconds"`` (default 1) without blocking the reactor.
"""

from __future__ import annotations

from twisted.internet.defer import Deferred
from twisted.internet.task import deferLater

from zqtwisted.runtime.worker import Event, QueueProcessingWorker, assign_queue


@assign_queue("embedded_bots")
class SlowActivityWorker(QueueProcessingWorker):
    """Takes ``seconds`` per event, five at a time."""

    concurrency = 5

    def consume(self, event: Event) -> Deferred[None]:
        return deferLater(self.context.clock, float(event.get("seconds", 1.0)), lambda: None)
