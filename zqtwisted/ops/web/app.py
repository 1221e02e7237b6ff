"""The dashboard assembled from the service's own pieces, for the composition root.

    dashboard = make_dashboard(reactor, broker, runners, metrics, token)
    make_http_service(..., children=dashboard.children)   # "/", "/static", "/api"
    dashboard.sampler.setServiceParent(http)               # samples while the endpoint serves

It reads what the service already has: the broker session (queue sizes, dead
letters), the runners (deliveries held unacked), the metrics observer (counters and
recent consume durations) and, when given, the reactor-lag probe.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorThreads, IReactorTime
from twisted.internet.threads import deferToThreadPool
from twisted.web.resource import Resource

from zqtwisted.ops.logs import SECRETS
from zqtwisted.ops.metrics import MetricsObserver
from zqtwisted.ops.top import QueueCounters, counters_from_families
from zqtwisted.ops.web.deadletters import DeadLetters
from zqtwisted.ops.web.letters import Masker
from zqtwisted.ops.web.resources import dashboard_children
from zqtwisted.ops.web.sampler import SAMPLE_INTERVAL, DashboardSampler, RunnerState
from zqtwisted.runtime.broker import Broker


@dataclass(frozen=True)
class Dashboard:
    sampler: DashboardSampler
    letters: DeadLetters
    children: dict[bytes, Resource]


def make_dashboard(
    clock: IReactorTime,
    broker: Broker,
    runners: Sequence[RunnerState],
    metrics: MetricsObserver,
    token: str | None,
    timeout: float = 10.0,
    masker: Masker = SECRETS,
    interval: float = SAMPLE_INTERVAL,
    reactor_lag: Callable[[], float | None] = lambda: None,
) -> Dashboard:
    """The sampler, the dead-letter operations and the resources; ``token`` None: read-only."""

    def counters() -> dict[str, QueueCounters]:
        return counters_from_families(metrics.registry.collect())

    sampler = DashboardSampler(
        clock, broker, runners, counters, metrics.recent_durations, interval=interval, reactor_lag=reactor_lag
    )
    threads = IReactorThreads(clock, None)
    offload = None
    if threads is not None:  # a real reactor: mask the bodies of a page in its thread pool

        def offload(f: Callable[[], Any]) -> Deferred[Any]:
            return deferToThreadPool(threads, threads.getThreadPool(), f)

    letters = DeadLetters(broker, clock, sampler.queues, masker, timeout, offload)
    return Dashboard(sampler, letters, dashboard_children(sampler, letters, token))
