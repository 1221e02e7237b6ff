"""``zqctl top``: a live per-queue view, refreshed every second.

Each tick takes a :class:`Sample`: queue depth and consumers from a callable the
CLI provides (the broker's ``queue_counts``, no management plugin needed), the
stats files, and, when the workers' HTTP endpoint answers, their ``/metrics``.
:func:`render` turns two successive samples into the table; it is pure.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import IO, Any

from prometheus_client.metrics_core import Metric
from prometheus_client.parser import text_string_to_metric_families
from twisted.internet.defer import Deferred, FirstError, gatherResults, maybeDeferred, succeed
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from twisted.python.failure import Failure

from zqtwisted.ops.check import read_stats
from zqtwisted.ops.metrics import PREFIX

CLEAR = "\x1b[H\x1b[2J"
HTTP_TIMEOUT = 2.0

Counts = Mapping[str, tuple[int, int]]


@dataclass(frozen=True)
class QueueCounters:
    """Cumulative counters of one queue, from ``/metrics``."""

    consumed: float = 0.0
    failed: float = 0.0
    dead_lettered: float = 0.0
    duration_sum: float = 0.0
    duration_count: float = 0.0
    retried: float = 0.0


@dataclass(frozen=True)
class Sample:
    time: float
    queues: Counts
    stats: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    counters: Mapping[str, QueueCounters] | None = None  # None: /metrics unavailable


@dataclass(frozen=True)
class Row:
    queue: str
    depth: int | None
    consumers: int | None
    rate_in: float | None
    rate_out: float | None
    failures: float | None
    avg_seconds: float | None


def parse_metrics(text: str) -> dict[str, QueueCounters]:
    """Per-queue counters from a Prometheus text exposition of :mod:`zqtwisted.ops.metrics`."""
    return counters_from_families(text_string_to_metric_families(text))


def counters_from_families(families: Iterable[Metric]) -> dict[str, QueueCounters]:
    """Per-queue counters from metric families: parsed from ``/metrics``, or a registry's ``collect()``."""
    wanted = {
        f"{PREFIX}_events_consumed_total": "consumed",
        f"{PREFIX}_events_failed_total": "failed",
        f"{PREFIX}_events_dead_lettered_total": "dead_lettered",
        f"{PREFIX}_events_retried_total": "retried",
        f"{PREFIX}_consume_duration_seconds_sum": "duration_sum",
        f"{PREFIX}_consume_duration_seconds_count": "duration_count",
    }
    values: dict[str, dict[str, float]] = {}
    for family in families:
        for s in family.samples:
            name = wanted.get(s.name)
            queue = s.labels.get("queue")
            if name is None or queue is None:
                continue
            per_queue = values.setdefault(queue, {})
            per_queue[name] = per_queue.get(name, 0.0) + float(s.value)
    return {q: QueueCounters(**v) for q, v in values.items()}


def _counters(sample: Sample | None, queue: str) -> QueueCounters | None:
    """The queue's counters; zeros when /metrics answered without the queue (nothing counted yet)."""
    if sample is None or sample.counters is None:
        return None
    return sample.counters.get(queue, QueueCounters())


def compute_rows(previous: Sample | None, current: Sample) -> list[Row]:
    names = set(current.queues) | set(current.counters or {})
    rows = []
    elapsed = current.time - previous.time if previous is not None else 0.0
    for queue in sorted(names):
        depth, consumers = current.queues.get(queue, (None, None))
        now_c = _counters(current, queue)
        before_c = _counters(previous, queue)
        rate_out = rate_in = avg = None
        if now_c is not None and before_c is not None and elapsed > 0:
            done = (now_c.consumed - before_c.consumed) + (now_c.dead_lettered - before_c.dead_lettered)
            rate_out = max(0.0, done / elapsed)
            before_depth = previous.queues.get(queue, (None, None))[0] if previous is not None else None
            if depth is not None and before_depth is not None:
                rate_in = max(0.0, (depth - before_depth) / elapsed + rate_out)
            consumed = now_c.consumed - before_c.consumed
            if consumed > 0:
                avg = (now_c.duration_sum - before_c.duration_sum) / consumed
        if avg is None:
            recent = current.stats.get(queue, {}).get("recent_average_consume_time")
            avg = float(recent) if isinstance(recent, (int, float)) else None
        failures = now_c.failed if now_c is not None else None
        rows.append(Row(queue, depth, consumers, rate_in, rate_out, failures, avg))
    return rows


def _num(value: float | int | None, fmt: str) -> str:
    return "-" if value is None else format(value, fmt)


HEADER = ("QUEUE", "DEPTH", "CONS", "IN/s", "OUT/s", "FAILED", "AVG ms")


def render(previous: Sample | None, current: Sample, title: str = "zqtwisted top") -> str:
    """The table for ``current``; rates need ``previous`` (``-`` when unknown)."""
    rows = compute_rows(previous, current)
    cells = [HEADER] + [
        (
            r.queue,
            _num(r.depth, "d"),
            _num(r.consumers, "d"),
            _num(r.rate_in, ".1f"),
            _num(r.rate_out, ".1f"),
            _num(r.failures, ".0f"),
            _num(None if r.avg_seconds is None else r.avg_seconds * 1000, ".1f"),
        )
        for r in rows
    ]
    widths = [max(len(row[i]) for row in cells) for i in range(len(HEADER))]
    lines = [title + ("" if current.counters is not None else "  (no /metrics: rates unavailable)")]
    for row in cells:
        lines.append(
            "  ".join(cell.ljust(widths[i]) if i == 0 else cell.rjust(widths[i]) for i, cell in enumerate(row)).rstrip()
        )
    return "\n".join(lines) + "\n"


def metrics_url_for(endpoint: str) -> str | None:
    """The /metrics URL of a ``tcp:`` server endpoint string (None for other kinds)."""
    parts = [p.replace("\\:", ":") for p in re.split(r"(?<!\\):", endpoint)]
    if not parts or parts[0] not in ("tcp", "tcp6") or len(parts) < 2:
        return None
    port = None
    host = "127.0.0.1" if parts[0] == "tcp" else "::1"
    for i, part in enumerate(parts[1:]):
        key, sep, value = part.partition("=")
        if not sep and i == 0:
            port = key
        elif key == "port":
            port = value
        elif key == "interface" and value not in ("", "0.0.0.0", "::"):
            host = value
    if port is None or not port.isdigit():
        return None
    if ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{port}/metrics"


class TopView:
    """Samples every ``interval`` s and redraws; :attr:`done` fires once stopped."""

    log = Logger()

    def __init__(
        self,
        reactor: Any,
        sample: Callable[[], Counts | Deferred[Counts]],
        metrics_url: str | None,
        interval: float = 1.0,
        out: IO[str] = sys.stdout,
        stats_dir: str | None = None,
        http_client: Any = None,
    ) -> None:
        self._reactor = reactor
        self._sample = sample
        self._metrics_url = metrics_url
        self._interval = interval
        self._out = out
        self._stats_dir = stats_dir
        self._http = http_client
        self._previous: Sample | None = None
        self._loop = LoopingCall(self._tick)
        self._loop.clock = reactor
        self._busy = False
        self._trigger: Any = None
        self.done: Deferred[None] = Deferred()

    def start(self) -> Deferred[None]:
        if hasattr(self._reactor, "addSystemEventTrigger"):
            self._trigger = self._reactor.addSystemEventTrigger("before", "shutdown", self.stop)
        self._loop.start(self._interval, now=True).addErrback(self._failed)
        return self.done

    def stop(self) -> None:
        if self._loop.running:
            self._loop.stop()
        if self._trigger is not None:
            try:
                self._reactor.removeSystemEventTrigger(self._trigger)
            except (ValueError, KeyError):
                pass
            self._trigger = None
        if not self.done.called:
            self.done.callback(None)

    def _failed(self, failure: Failure) -> None:
        self.log.failure("zqctl top stopped", failure)
        self.stop()

    def _tick(self) -> Deferred[Any] | None:
        if self._busy:
            return None
        self._busy = True
        counts: Deferred[Any] = maybeDeferred(self._sample)
        counts.addTimeout(max(HTTP_TIMEOUT, 3 * self._interval), self._reactor)
        metrics: Deferred[Any] = self._fetch_metrics()
        d: Deferred[Any] = gatherResults([counts, metrics], consumeErrors=True)
        d.addCallback(lambda results: self._show(results[0], results[1]))
        d.addErrback(self._sample_failed)

        def idle(result: object) -> None:
            self._busy = False

        d.addBoth(idle)
        return d

    def _sample_failed(self, failure: Failure) -> None:
        if isinstance(failure.value, FirstError):
            failure = failure.value.subFailure
        self._out.write(f"{CLEAR}zqtwisted top: cannot sample the queues: {failure.getErrorMessage()}\n")
        self._out.flush()

    def _fetch_metrics(self) -> Deferred[dict[str, QueueCounters] | None]:
        if not self._metrics_url:
            return succeed(None)
        if self._http is None:
            from treq.client import HTTPClient
            from twisted.web.client import Agent

            self._http = HTTPClient(Agent(self._reactor))
        url = self._metrics_url
        d: Deferred[Any] = self._http.get(url)

        def body(response: Any) -> Any:
            if response.code != 200:
                raise ValueError(f"{url} answered {response.code}")
            return response.text("utf-8")

        d.addCallback(body)
        d.addCallback(parse_metrics)
        d.addTimeout(HTTP_TIMEOUT, self._reactor)
        d.addErrback(lambda _: None)
        return d

    def _show(self, counts: Counts, counters: dict[str, QueueCounters] | None) -> None:
        stats = self._read_stats(counts)
        current = Sample(self._reactor.seconds(), dict(counts), stats, counters)
        self._out.write(CLEAR + render(self._previous, current))
        self._out.flush()
        self._previous = current

    def _read_stats(self, queues: Iterable[str]) -> dict[str, Mapping[str, Any]]:
        if not self._stats_dir:
            return {}
        return {q: read_stats(self._stats_dir, q) for q in queues}


def run_top(
    reactor: Any,
    sample: Callable[[], Counts | Deferred[Counts]],
    metrics_url: str | None,
    interval: float = 1.0,
    out: IO[str] = sys.stdout,
    stats_dir: str | None = None,
    http_client: Any = None,
) -> Deferred[None]:
    """Refresh the view every ``interval`` s until Ctrl-C (reactor shutdown); fires then."""
    return TopView(reactor, sample, metrics_url, interval, out, stats_dir, http_client).start()
