"""Prometheus metrics of the runtime, in a registry of their own.

:class:`MetricsObserver` listens to the runtime (a
:class:`zqtwisted.runtime.observer.RunnerObserver`) and to the broker (a
:class:`zqtwisted.runtime.broker.SessionListener`), and is told about reactor lag by
:class:`zqtwisted.ops.health.ReactorLagProbe`.  It never uses prometheus_client's
global registry, so several instances (tests, several services) never clash.

Labels are queue names, outcomes and reasons chosen by the code: never an event
field, a URL or an error message, so no secret can reach a label.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Callable, Iterable, Iterator, Mapping
from itertools import accumulate
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.registry import Collector

from zqtwisted.runtime.observer import NullObserver
from zqtwisted.runtime.redact import redact_text

PREFIX = "zqtwisted"

# Seconds per consume; Zulip's per-event timeout is 30 s, batches can take longer.
DURATION_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)
LABEL_LIMIT = 100
# Consume durations kept per queue for the dashboard's median and p99 (a power of two).
RECENT_CONSUMES = 1024

# queue -> (events in flight, deliveries held unacked), read at scrape time.
RunnerState = Callable[[], Mapping[str, tuple[int, int]]]


def safe_label(value: str) -> str:
    """A label value that cannot carry a credential (and stays short)."""
    return redact_text(str(value))[:LABEL_LIMIT]


class _RunnerStateCollector(Collector):
    def __init__(self, source: RunnerState) -> None:
        self._source = source

    def collect(self) -> Iterator[GaugeMetricFamily]:
        in_flight = GaugeMetricFamily(
            f"{PREFIX}_events_in_flight", "Events being consumed right now.", labels=["queue"]
        )
        held = GaugeMetricFamily(
            f"{PREFIX}_deliveries_held",
            "Deliveries held unacked: waiting, in flight, waiting to retry, being settled.",
            labels=["queue"],
        )
        for queue, (events, deliveries) in sorted(self._source().items()):
            in_flight.add_metric([safe_label(queue)], events)
            held.add_metric([safe_label(queue)], deliveries)
        yield in_flight
        yield held


class _HotFigures:
    """One queue's consume counters and duration histogram, as plain numbers.

    ``recent`` is a ring of the last :data:`RECENT_CONSUMES` durations (exact, for
    quantiles finer than the histogram's buckets).
    """

    __slots__ = ("buckets", "consumed", "count", "in_flight", "label", "recent", "total")

    def __init__(self, label: str) -> None:
        self.label = label
        self.consumed = 0
        self.in_flight = 0
        self.buckets = [0] * (len(DURATION_BUCKETS) + 1)  # the last one is +Inf
        self.count = 0
        self.total = 0.0
        self.recent = [0.0] * RECENT_CONSUMES

    def observe(self, seconds: float) -> None:
        self.buckets[bisect_left(DURATION_BUCKETS, seconds)] += 1
        self.recent[self.count & (RECENT_CONSUMES - 1)] = seconds
        self.count += 1
        self.total += seconds

    def recent_durations(self) -> list[float]:
        """The durations of the last consumes (at most :data:`RECENT_CONSUMES`), in no particular order."""
        return self.recent[: min(self.count, RECENT_CONSUMES)]


class _HotCollector(Collector):
    def __init__(self, figures: Mapping[str, _HotFigures]) -> None:
        self._figures = figures

    def collect(self) -> Iterator[Any]:
        consumed = CounterMetricFamily(f"{PREFIX}_events_consumed", "Events consumed successfully.", labels=["queue"])
        duration = HistogramMetricFamily(
            f"{PREFIX}_consume_duration_seconds", "Duration of one consume (one event, or one batch).", labels=["queue"]
        )
        in_flight = GaugeMetricFamily(
            f"{PREFIX}_consumes_in_flight", "Consumes (events or batches) running now.", labels=["queue"]
        )
        for _, f in sorted(self._figures.items()):
            consumed.add_metric([f.label], f.consumed)
            cumulative = list(accumulate(f.buckets))
            bounds = [*(str(float(b)) for b in DURATION_BUCKETS), "+Inf"]
            duration.add_metric([f.label], list(zip(bounds, cumulative, strict=True)), f.total)
            in_flight.add_metric([f.label], f.in_flight)
        yield consumed
        yield duration
        yield in_flight


class MetricsObserver(NullObserver):
    """Counts what the runtime reports, per queue."""

    def __init__(self, registry: CollectorRegistry | None = None, queues: Iterable[str] = ()) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry
        # The figures moved on every consume are plain numbers exported at scrape
        # time: prometheus_client's children take a lock per update.
        self._hot: dict[str, _HotFigures] = {}
        r.register(_HotCollector(self._hot))
        self.failed_total = Counter(
            f"{PREFIX}_events_failed",
            "Events whose consume failed, by outcome (retry, permanent, timeout, malformed).",
            ["queue", "outcome"],
            registry=r,
        )
        self.retried_total = Counter(
            f"{PREFIX}_events_retried", "Events scheduled for another attempt.", ["queue"], registry=r
        )
        self.dead_lettered_total = Counter(
            f"{PREFIX}_events_dead_lettered", "Events dead-lettered, by reason.", ["queue", "reason"], registry=r
        )
        self.consumer_attached = Gauge(
            f"{PREFIX}_consumer_attached",
            "1 while the queue's consumer is attached.",
            ["queue"],
            registry=r,
        )
        self.broker_connected = Gauge(f"{PREFIX}_broker_connected", "1 while connected to the broker.", registry=r)
        self.broker_blocked = Gauge(
            f"{PREFIX}_broker_blocked",
            "1 while the broker blocks publishing on the connection (a memory or disk alarm).",
            registry=r,
        )
        self._session: Any = None  # read at scrape time: is it blocked?
        self.broker_blocked.set_function(lambda: 0.0 if getattr(self._session, "blocked", None) is None else 1.0)
        self.broker_connections_total = Counter(
            f"{PREFIX}_broker_connections", "Connections made to the broker.", registry=r
        )
        self.broker_reconnects_total = Counter(
            f"{PREFIX}_broker_reconnects", "Connections made to the broker after the first one.", registry=r
        )
        self.reactor_lag_seconds = Gauge(
            f"{PREFIX}_reactor_lag_seconds", "Lag of the reactor's last lag-probe tick.", registry=r
        )
        self.reactor_max_lag_seconds = Gauge(
            f"{PREFIX}_reactor_max_lag_seconds", "Largest reactor lag measured since start.", registry=r
        )
        self.reactor_blocked_total = Counter(
            f"{PREFIX}_reactor_blocked", "Times the reactor was blocked longer than the threshold.", registry=r
        )
        self._connections = 0
        self._max_lag = 0.0
        for queue in queues:
            self.add_queue(queue)

    def add_queue(self, queue: str) -> None:
        """Create the queue's series at zero, so that rates work from the first event."""
        q = safe_label(queue)
        self._figures(queue)
        self.retried_total.labels(q)
        self.consumer_attached.labels(q)

    def add_runner_state(self, source: RunnerState) -> None:
        """Export ``events_in_flight`` / ``deliveries_held`` read from the runners at scrape time."""
        self.registry.register(_RunnerStateCollector(source))

    def exposition(self) -> bytes:
        """The registry in Prometheus text format."""
        return generate_latest(self.registry)

    def recent_durations(self, queue: str) -> list[float]:
        """Seconds per consume of ``queue``'s last consumes (at most :data:`RECENT_CONSUMES`), unordered."""
        figures = self._hot.get(queue)
        return figures.recent_durations() if figures is not None else []

    # -- RunnerObserver ----------------------------------------------------------

    def _figures(self, queue: str) -> _HotFigures:
        figures = self._hot.get(queue)
        if figures is None:
            figures = self._hot[queue] = _HotFigures(safe_label(queue))
        return figures

    def consume_started(self, queue: str, events: int) -> None:
        self._figures(queue).in_flight += 1

    def consumed(self, queue: str, events: int, seconds: float) -> None:
        figures = self._figures(queue)
        figures.in_flight -= 1
        figures.consumed += events
        figures.observe(max(0.0, seconds))

    def failed(self, queue: str, events: int, outcome: str) -> None:
        self.failed_total.labels(safe_label(queue), safe_label(outcome)).inc(events)

    def retried(self, queue: str, delay: float) -> None:
        self.retried_total.labels(safe_label(queue)).inc()

    def dead_lettered(self, queue: str, events: int, reason: str) -> None:
        self.dead_lettered_total.labels(safe_label(queue), safe_label(reason)).inc(events)

    def attached(self, queue: str, attached: bool) -> None:
        self.consumer_attached.labels(safe_label(queue)).set(1 if attached else 0)

    # -- SessionListener (broker.add_listener) ------------------------------------

    def session_started(self, session: Any) -> None:
        self._connections += 1
        self._session = session
        self.broker_connections_total.inc()
        if self._connections > 1:
            self.broker_reconnects_total.inc()
        self.broker_connected.set(1)

    def session_lost(self, session: Any) -> None:
        self._session = None
        self.broker_connected.set(0)

    # -- reactor lag (ReactorLagProbe) --------------------------------------------

    def reactor_lag(self, seconds: float) -> None:
        self.reactor_lag_seconds.set(seconds)
        if seconds > self._max_lag:
            self._max_lag = seconds
            self.reactor_max_lag_seconds.set(seconds)

    def reactor_blocked(self, seconds: float) -> None:
        self.reactor_blocked_total.inc()
