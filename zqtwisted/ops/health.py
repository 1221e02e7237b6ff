"""The HTTP side of operations: ``/metrics``, ``/health``, ``/ready``, and the reactor lag probe.

- ``/metrics``: Prometheus text from the :class:`zqtwisted.ops.metrics.MetricsObserver` registry;
- ``/health``: 200 while the reactor is responsive, as measured by a
  :class:`ReactorLagProbe` (a ``LoopingCall`` every 0.5 s on the injected clock);
- ``/ready``: 200 when connected to the broker, not blocked by it (a resource alarm) and
  every consumer is attached, else 503 with the reason; it names the broker node connected to.

When the reactor is blocked longer than the threshold, the probe logs a warning with
the stack of the code that blocked it: a watchdog thread samples the reactor thread's
frame (``sys._current_frames()``) while the reactor has not ticked, and the next tick,
back in the reactor thread, logs what it saw.
"""

from __future__ import annotations

import json
import sys
import threading
import time
import traceback
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from types import FrameType
from typing import Any, Protocol

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from twisted.application import strports
from twisted.application.service import IService, MultiService, Service
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from twisted.web import http
from twisted.web.resource import Resource
from twisted.web.server import Request, Site

from zqtwisted.runtime.broker import Broker
from zqtwisted.runtime.observer import NullObserver

PROBE_INTERVAL = 0.5
DEFAULT_HTTP_ENDPOINT = "tcp:9191:interface=127.0.0.1"


class LagSink(Protocol):
    """Where the probe reports (a MetricsObserver)."""

    def reactor_lag(self, seconds: float) -> None: ...

    def reactor_blocked(self, seconds: float) -> None: ...


class BlockedReactorWatchdog:
    """Samples the reactor thread's stack while the reactor has not ticked for ``threshold``.

    :meth:`tick` is called by the reactor thread; :meth:`check` by the watchdog thread
    (or by a test).  Time is ``monotonic`` (real time: the reactor's clock cannot tell
    how long the reactor itself is stuck).
    """

    def __init__(
        self,
        threshold: float,
        reactor_thread_id: int | None = None,
        monotonic: Callable[[], float] = time.monotonic,
        current_frames: Callable[[], dict[int, FrameType]] = sys._current_frames,
    ) -> None:
        self.threshold = threshold
        # Taken in start() (called in the reactor thread) unless given.
        self._given_thread_id = reactor_thread_id
        self.reactor_thread_id = threading.get_ident() if reactor_thread_id is None else reactor_thread_id
        self._monotonic = monotonic
        self._current_frames = current_frames
        self._lock = threading.Lock()
        self._last_tick = monotonic()
        self._stack: str | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def tick(self) -> str | None:
        """The reactor ticked: return the stack sampled during the stall, if any."""
        with self._lock:
            self._last_tick = self._monotonic()
            stack, self._stack = self._stack, None
        return stack

    def check(self) -> bool:
        """Sample the reactor thread's stack if it has been stuck too long (once per stall)."""
        with self._lock:
            if self._stack is not None or self._monotonic() - self._last_tick <= self.threshold:
                return False
        frame = self._current_frames().get(self.reactor_thread_id)
        if frame is None:
            return False
        stack = "".join(traceback.format_stack(frame))
        with self._lock:
            self._stack = stack
        return True

    def start(self) -> None:
        if self._thread is not None:
            return
        self._stop.clear()
        if self._given_thread_id is None:
            self.reactor_thread_id = threading.get_ident()
        with self._lock:
            self._last_tick = self._monotonic()
        self._thread = threading.Thread(target=self._run, name="zqtwisted-reactor-watchdog", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        thread, self._thread = self._thread, None
        if thread is not None:
            thread.join(timeout=5)

    def _run(self) -> None:
        poll = max(0.01, self.threshold / 4)
        while not self._stop.wait(poll):
            self.check()


class ReactorLagProbe(Service):
    """A LoopingCall every ``interval`` s measuring how late the reactor runs it."""

    log = Logger()

    def __init__(
        self,
        clock: IReactorTime,
        threshold: float = 1.0,
        interval: float = PROBE_INTERVAL,
        sink: LagSink | None = None,
        watchdog: BlockedReactorWatchdog | None = None,
    ) -> None:
        self._clock = clock
        self.threshold = threshold
        self.interval = interval
        self._sink = sink
        self.watchdog = watchdog
        self.lag = 0.0
        self.max_lag = 0.0
        self.blocked = 0
        self.last_tick: float | None = None
        self._loop: LoopingCall | None = None

    def startService(self) -> None:
        super().startService()
        self.last_tick = self._clock.seconds()
        self._loop = LoopingCall(self._tick)
        self._loop.clock = self._clock
        self._loop.start(self.interval, now=False)
        if self.watchdog is not None:
            self.watchdog.start()

    def stopService(self) -> Any:
        if self._loop is not None and self._loop.running:
            self._loop.stop()
        self._loop = None
        if self.watchdog is not None:
            self.watchdog.stop()
        return super().stopService()

    def _tick(self) -> None:
        now = self._clock.seconds()
        expected = (self.last_tick if self.last_tick is not None else now) + self.interval
        self.last_tick = now
        self.lag = max(0.0, now - expected)
        self.max_lag = max(self.max_lag, self.lag)
        stack = self.watchdog.tick() if self.watchdog is not None else None
        if self._sink is not None:
            self._sink.reactor_lag(self.lag)
        if self.lag > self.threshold:
            self.blocked += 1
            if self._sink is not None:
                self._sink.reactor_blocked(self.lag)
            self.log.warn(
                "Reactor blocked for {lag:.3f}s (threshold {threshold}s); {where}",
                lag=self.lag,
                threshold=self.threshold,
                where=f"the blocking code was:\n{stack}" if stack else "no stack was sampled",
            )

    def state(self) -> dict[str, Any]:
        """What ``/health`` says: healthy while ticks come on time."""
        now = self._clock.seconds()
        age = None if self.last_tick is None else max(0.0, now - self.last_tick)
        healthy = (
            self.running and age is not None and age <= self.interval + self.threshold and self.lag <= self.threshold
        )
        return {
            "status": "ok" if healthy else "unhealthy",
            "reactor_lag_seconds": round(self.lag, 6),
            "max_reactor_lag_seconds": round(self.max_lag, 6),
            "last_tick_age_seconds": None if age is None else round(age, 6),
            "blocked_count": self.blocked,
            "threshold_seconds": self.threshold,
        }


@dataclass(frozen=True)
class Readiness:
    connected: bool
    consumers: dict[str, bool] = field(default_factory=dict)
    node: str | None = None  # the broker node connected to (host:port)
    # Other dependencies (e.g. "zulip_database") -> whether they answer.
    checks: dict[str, bool] = field(default_factory=dict)
    blocked: str | None = None  # why the broker blocks publishing (a memory or disk alarm)
    problem: str | None = None  # why there is no broker connection (the last failure)

    @property
    def ready(self) -> bool:
        ok = self.connected and bool(self.consumers) and all(self.consumers.values())
        return ok and self.blocked is None and all(self.checks.values())

    @property
    def reason(self) -> str | None:
        """Why it is not ready, in one line (None when ready)."""
        if not self.connected:
            return self.problem or "not connected to RabbitMQ"
        if self.blocked is not None:
            return f"RabbitMQ at {self.node} blocks publishing: {self.blocked} (a memory or disk alarm)"
        detached = sorted(q for q, ok in self.consumers.items() if not ok)
        if detached or not self.consumers:
            return f"consumers not attached: {', '.join(detached)}" if detached else "no consumer"
        unavailable = sorted(n for n, ok in self.checks.items() if not ok)
        return f"unavailable: {', '.join(unavailable)}" if unavailable else None


class ReadinessTracker(NullObserver):
    """Knows whether the broker is connected and which consumers are attached.

    An observer (``attached``) and a broker session listener (``session_started`` /
    ``session_lost``); call it to get a :class:`Readiness`.
    """

    def __init__(self, queues: Iterable[str], broker: Broker | None = None) -> None:
        self.connected = False
        self.node: str | None = None
        self.consumers = {q: False for q in queues}
        self.checks: dict[str, Callable[[], bool]] = {}
        self._broker = broker  # asked why it is not connected
        self._session: Any = None  # asked whether the broker blocks it

    def add_check(self, name: str, check: Callable[[], bool]) -> None:
        """Another dependency ``/ready`` waits for: ``check()`` says whether it answers."""
        self.checks[name] = check

    def attached(self, queue: str, attached: bool) -> None:
        self.consumers[queue] = attached

    def session_started(self, session: Any) -> None:
        self.connected = True
        self.node = getattr(session, "node", None)
        self._session = session

    def session_lost(self, session: Any) -> None:
        self.connected = False
        self.node = None
        self._session = None

    def __call__(self) -> Readiness:
        checks = {name: check() for name, check in self.checks.items()}
        blocked = getattr(self._session, "blocked", None) if self.connected else None
        problem = self._broker.problem if self._broker is not None and not self.connected else None
        return Readiness(self.connected, dict(self.consumers), self.node, checks, blocked, problem)


def _json(request: Request, code: int, body: dict[str, Any]) -> bytes:
    request.setResponseCode(code)
    request.setHeader(b"content-type", b"application/json")
    request.setHeader(b"cache-control", b"no-store")
    return json.dumps(body, sort_keys=True).encode() + b"\n"


class MetricsResource(Resource):
    isLeaf = True

    def __init__(self, registry: CollectorRegistry) -> None:
        super().__init__()
        self._registry = registry

    def render_GET(self, request: Request) -> bytes:
        request.setHeader(b"content-type", CONTENT_TYPE_LATEST.encode())
        return generate_latest(self._registry)


class HealthResource(Resource):
    isLeaf = True

    def __init__(self, probe: ReactorLagProbe) -> None:
        super().__init__()
        self._probe = probe

    def render_GET(self, request: Request) -> bytes:
        state = self._probe.state()
        return _json(request, 200 if state["status"] == "ok" else 503, state)


class ReadyResource(Resource):
    isLeaf = True

    def __init__(self, is_ready: Callable[[], Readiness | bool]) -> None:
        super().__init__()
        self._is_ready = is_ready

    def render_GET(self, request: Request) -> bytes:
        state = self._is_ready()
        if isinstance(state, Readiness):
            body: dict[str, Any] = {
                "ready": state.ready,
                "connected": state.connected,
                "node": state.node,
                "consumers_attached": sum(state.consumers.values()),
                "consumers": len(state.consumers),
                "detached": sorted(q for q, ok in state.consumers.items() if not ok),
                **({"unavailable": sorted(n for n, ok in state.checks.items() if not ok)} if state.checks else {}),
                **({"blocked": state.blocked} if state.blocked is not None else {}),
                **({"reason": state.reason} if not state.ready else {}),
            }
            ready = state.ready
        else:
            ready = bool(state)
            body = {"ready": ready}
        return _json(request, 200 if ready else 503, body)


def make_root(
    registry: CollectorRegistry,
    is_ready: Callable[[], Readiness | bool],
    lag_probe: ReactorLagProbe,
    children: Mapping[bytes, Resource] | None = None,
) -> Resource:
    """/metrics, /health, /ready, and ``children`` (the dashboard's ``/``, ``/static``, ``/api``)."""
    root = Resource()
    for path, child in (children or {}).items():
        root.putChild(path, child)
    root.putChild(b"metrics", MetricsResource(registry))
    root.putChild(b"health", HealthResource(lag_probe))
    root.putChild(b"ready", ReadyResource(is_ready))
    return root


class _QuietSite(Site):
    """No access-log line per request: scrapers poll every few seconds."""

    def log(self, request: http.Request) -> None:
        pass


def make_http_service(
    endpoint_string: str,
    reactor: Any,
    registry: CollectorRegistry,
    is_ready: Callable[[], Readiness | bool],
    lag_probe: ReactorLagProbe,
    children: Mapping[bytes, Resource] | None = None,
) -> MultiService:
    """A service listening on ``endpoint_string`` (``tcp:9191:interface=127.0.0.1``).

    The lag probe runs as a child of the returned service, so it starts and stops
    with the endpoint.  ``children`` are more resources under the root (the dashboard).
    """
    site = _QuietSite(make_root(registry, is_ready, lag_probe, children))
    site.displayTracebacks = False
    site.noisy = False
    http = MultiService()
    http.setName("http")
    endpoint = strports.service(endpoint_string, site, reactor=reactor)
    IService(endpoint).setServiceParent(http)
    if lag_probe.parent is None:
        lag_probe.setServiceParent(http)
    return http
