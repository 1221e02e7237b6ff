"""Workers of bench/dashboard.py, loaded in its twistd children by ``consumer_modules``.

``bench_dashboard``: ``bench_noop``'s worker (Zulip's noop plus the probe of
bench/bench_workers.py) on a queue of its own, so that this benchmark never shares a
queue with another one.

For the screenshots (``--screenshots``), made-up queues that behave like real ones (names
of their own, so that no test elsewhere on the broker publishes to them):

* ``audit_log``: does nothing (Zulip's noop), at a rate that comes and goes;
* ``search_index``: batches of up to 100 events, 1 ms each;
* ``thumbnails``: 50-120 ms per event (without blocking), 4 at a time: bursts back up;
* ``link_previews``: 100-400 ms per event, 20 at a time; 4 % of attempts fail transiently
  (retried with backoff); events for ``.invalid`` hosts fail for good, those for
  ``flaky.example`` fail transiently every time (until the retries run out), and those for
  ``stuck.example`` never finish (the 5 s time limit ends them): dead letters of each kind.
"""

from __future__ import annotations

import random
from collections.abc import Sequence

from bench_workers import BenchNoopWorker
from twisted.internet.defer import Deferred
from twisted.internet.task import deferLater

from zqtwisted.errors import PermanentError, TransientError
from zqtwisted.runtime.worker import Event, LoopQueueProcessingWorker, QueueProcessingWorker, assign_queue


@assign_queue("bench_dashboard", is_test_queue=True)
class BenchDashboardWorker(BenchNoopWorker):
    """bench_noop's worker, on bench/dashboard.py's own queue."""


@assign_queue("audit_log", is_test_queue=True)
class AuditLogWorker(QueueProcessingWorker):
    def consume(self, event: Event) -> None:
        pass


@assign_queue("search_index", is_test_queue=True)
class SearchIndexWorker(LoopQueueProcessingWorker):
    sleep_delay = 0.5

    def consume_batch(self, events: Sequence[Event]) -> Deferred[None]:
        return deferLater(self.context.clock, 0.001 * len(events), lambda: None)


@assign_queue("thumbnails", is_test_queue=True)
class ThumbnailWorker(QueueProcessingWorker):
    concurrency = 4

    def consume(self, event: Event) -> Deferred[None]:
        return deferLater(self.context.clock, random.uniform(0.05, 0.12), lambda: None)


@assign_queue("link_previews", is_test_queue=True)
class LinkPreviewWorker(QueueProcessingWorker):
    concurrency = 20
    max_consume_seconds = 5

    def consume(self, event: Event) -> Deferred[None]:
        url = str(event.get("url", ""))
        host = url.split("/")[2] if url.count("/") >= 2 else url
        if host.endswith(".invalid"):
            raise PermanentError(f"cannot resolve {host}: no such host")
        if host == "flaky.example" or random.random() < 0.04:
            raise TransientError(f"{host} answered 503 Service Unavailable")
        if host == "stuck.example":
            return Deferred()  # never answers: the time limit ends it
        return deferLater(self.context.clock, random.uniform(0.1, 0.4), lambda: None)
