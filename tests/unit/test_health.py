"""/metrics, /health, /ready, the reactor lag probe and the blocked-reactor watchdog."""

from __future__ import annotations

import json
import sys
import threading
from types import SimpleNamespace
from typing import Any, cast

from prometheus_client.parser import text_string_to_metric_families
from treq.testing import StubTreq
from twisted.application.service import IServiceCollection
from twisted.internet.task import Clock
from twisted.internet.testing import MemoryReactorClock
from twisted.logger import ILogObserver, LogEvent, Logger, formatEvent
from twisted.trial.unittest import TestCase
from twisted.web.resource import Resource
from twisted.web.test.requesthelper import DummyRequest

from zqtwisted.ops.health import (
    BlockedReactorWatchdog,
    ReactorLagProbe,
    Readiness,
    ReadinessTracker,
    make_http_service,
    make_root,
)
from zqtwisted.ops.metrics import MetricsObserver


def get(resource: Resource, path: bytes) -> tuple[int, dict[str, Any] | bytes, DummyRequest]:
    request = DummyRequest([path])
    child = resource.getChildWithDefault(path, request)
    body = child.render(request)
    assert isinstance(body, bytes)
    code = request.responseCode or 200
    if request.responseHeaders.getRawHeaders(b"content-type") == [b"application/json"]:
        return code, json.loads(body), request
    return code, body, request


class ProbeTests(TestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.metrics = MetricsObserver()
        self.events: list[LogEvent] = []
        self.probe = ReactorLagProbe(self.clock, threshold=1.0, sink=self.metrics)
        self.probe.log = Logger(observer=cast(ILogObserver, self.events.append))
        self.probe.startService()
        self.addCleanup(self.probe.stopService)

    def test_on_time_ticks_have_no_lag(self) -> None:
        """Ticks every 0.5 s on time measure zero lag and stay healthy."""
        for _ in range(4):
            self.clock.advance(0.5)
        self.assertEqual(self.probe.lag, 0.0)
        self.assertEqual(self.probe.state()["status"], "ok")

    def test_block_is_measured_logged_and_counted(self) -> None:
        """A 3 s stall is a 2.5 s lag: warned about, counted in metrics, unhealthy until the next tick."""
        self.clock.advance(0.5)
        self.clock.advance(3.0)
        self.assertAlmostEqual(self.probe.lag, 2.5)
        self.assertEqual(self.probe.blocked, 1)
        self.assertEqual(self.probe.state()["status"], "unhealthy")
        self.assertEqual(self.metrics.registry.get_sample_value("zqtwisted_reactor_blocked_total"), 1)
        self.assertIn("Reactor blocked for 2.500s", formatEvent(self.events[-1]))
        self.clock.advance(0.5)
        self.assertEqual(self.probe.state()["status"], "ok")

    def test_stale_probe_is_unhealthy(self) -> None:
        """When ticks stop coming (probe stopped), /health says unhealthy."""
        self.probe.stopService()
        self.clock.advance(5)
        self.assertEqual(self.probe.state()["status"], "unhealthy")

    def test_stop_leaves_no_timer(self) -> None:
        """stopService cancels the LoopingCall."""
        self.probe.stopService()
        self.assertEqual(self.clock.getDelayedCalls(), [])


class WatchdogTests(TestCase):
    def test_samples_the_blocking_stack_once_per_stall(self) -> None:
        """While the reactor has not ticked for the threshold, the reactor thread's stack is sampled."""
        now = [100.0]
        dog = BlockedReactorWatchdog(1.0, threading.get_ident(), monotonic=lambda: now[0])
        dog.tick()
        now[0] += 0.5
        self.assertFalse(dog.check())
        now[0] += 1.0
        self.assertTrue(dog.check())
        self.assertFalse(dog.check())  # one sample per stall
        stack = dog.tick()
        self.assertIsNotNone(stack)
        self.assertIn("test_samples_the_blocking_stack_once_per_stall", stack or "")
        self.assertIsNone(dog.tick())

    def test_probe_logs_the_stack(self) -> None:
        """The probe's warning carries the stack the watchdog sampled during the stall."""
        clock = Clock()
        now = [0.0]
        frames = {42: sys._getframe()}
        dog = BlockedReactorWatchdog(1.0, 42, monotonic=lambda: now[0], current_frames=lambda: frames)
        dog.start = lambda: None  # type: ignore[method-assign]  # no thread in a unit test
        events: list[LogEvent] = []
        probe = ReactorLagProbe(clock, threshold=1.0, watchdog=dog)
        probe.log = Logger(observer=cast(ILogObserver, events.append))
        probe.startService()
        self.addCleanup(probe.stopService)
        now[0] = 2.0
        dog.check()  # the watchdog thread, while the reactor is stuck
        clock.advance(2.5)
        text = formatEvent(events[-1])
        self.assertIn("the blocking code was", text)
        self.assertIn("test_probe_logs_the_stack", text)

    def test_thread_starts_and_stops(self) -> None:
        """start() runs a daemon thread that stop() joins."""
        dog = BlockedReactorWatchdog(0.04)
        dog.start()
        self.assertTrue(dog._thread is not None and dog._thread.daemon)
        dog.stop()
        self.assertIsNone(dog._thread)


class ResourceTests(TestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.metrics = MetricsObserver(queues=["q"])
        self.probe = ReactorLagProbe(self.clock)
        self.probe.startService()
        self.addCleanup(self.probe.stopService)
        self.ready = ReadinessTracker(["q", "r"])
        self.root = make_root(self.metrics.registry, self.ready, self.probe)

    def test_metrics(self) -> None:
        """/metrics serves the registry in Prometheus text format."""
        self.metrics.consumed("q", 4, 0.1)
        code, body, request = get(self.root, b"metrics")
        self.assertEqual(code, 200)
        assert isinstance(body, bytes)
        self.assertTrue((request.responseHeaders.getRawHeaders(b"content-type") or [b""])[0].startswith(b"text/plain"))
        values = {
            (s.name, s.labels.get("queue")): s.value
            for f in text_string_to_metric_families(body.decode())
            for s in f.samples
        }
        self.assertEqual(values[("zqtwisted_events_consumed_total", "q")], 4)

    def test_health(self) -> None:
        """/health is 200 with a JSON body while ticks come on time, 503 after a stall."""
        self.clock.advance(0.5)
        code, body, _ = get(self.root, b"health")
        self.assertEqual(code, 200)
        assert isinstance(body, dict)
        self.assertEqual(body["status"], "ok")
        self.clock.advance(5)
        code, body, _ = get(self.root, b"health")
        self.assertEqual(code, 503)

    def test_ready(self) -> None:
        """/ready is 503 until connected with every consumer attached, and again when a consumer is lost."""
        code, body, _ = get(self.root, b"ready")
        self.assertEqual(code, 503)
        self.ready.session_started(SimpleNamespace(node="127.0.0.1:5682"))
        self.ready.attached("q", True)
        code, body, _ = get(self.root, b"ready")
        assert isinstance(body, dict)
        self.assertEqual((code, body["detached"]), (503, ["r"]))
        self.ready.attached("r", True)
        code, body, _ = get(self.root, b"ready")
        self.assertEqual(code, 200)
        self.assertEqual(
            body,
            {
                "ready": True,
                "connected": True,
                "node": "127.0.0.1:5682",
                "consumers": 2,
                "consumers_attached": 2,
                "detached": [],
            },
        )
        self.ready.session_lost(object())
        code, body, _ = get(self.root, b"ready")
        assert isinstance(body, dict)
        self.assertEqual((code, body["node"]), (503, None))

    def test_ready_accepts_a_bool(self) -> None:
        """is_ready may return a plain bool."""
        root = make_root(self.metrics.registry, lambda: True, self.probe)
        self.assertEqual(get(root, b"ready")[:2], (200, {"ready": True}))

    def test_ready_waits_for_added_checks(self) -> None:
        """A dependency added with add_check (Zulip's database) must answer too; /ready names it while it does not."""
        answers = {"zulip_database": False}
        self.ready.add_check("zulip_database", lambda: answers["zulip_database"])
        self.ready.session_started(SimpleNamespace(node="n"))
        self.ready.attached("q", True)
        self.ready.attached("r", True)
        code, body, _ = get(self.root, b"ready")
        assert isinstance(body, dict)
        self.assertEqual((code, body["unavailable"]), (503, ["zulip_database"]))
        answers["zulip_database"] = True
        code, body, _ = get(self.root, b"ready")
        assert isinstance(body, dict)
        self.assertEqual((code, body["unavailable"]), (200, []))

    def test_ready_says_why_not(self) -> None:
        """503 says why: the broker's last failure while disconnected, its block (a resource alarm), detached queues."""
        broker = SimpleNamespace(problem="RabbitMQ at mq:5672 refused the credentials of user zulip (ACCESS_REFUSED)")
        ready = ReadinessTracker(["q"], broker)
        root = make_root(self.metrics.registry, ready, self.probe)
        self.assertEqual(get(root, b"ready")[:2][0], 503)
        self.assertEqual(cast(dict[str, Any], get(root, b"ready")[1])["reason"], broker.problem)
        broker.problem = None
        self.assertEqual(cast(dict[str, Any], get(root, b"ready")[1])["reason"], "not connected to RabbitMQ")
        session = SimpleNamespace(node="mq:5672", blocked=None)
        ready.session_started(session)
        self.assertEqual(cast(dict[str, Any], get(root, b"ready")[1])["reason"], "consumers not attached: q")
        ready.attached("q", True)
        session.blocked = "low on memory"
        code, body, _ = get(root, b"ready")
        assert isinstance(body, dict)
        self.assertEqual((code, body["blocked"]), (503, "low on memory"))
        self.assertEqual(
            body["reason"], "RabbitMQ at mq:5672 blocks publishing: low on memory (a memory or disk alarm)"
        )
        session.blocked = None
        code, body, _ = get(root, b"ready")
        assert isinstance(body, dict)
        self.assertEqual(code, 200)
        self.assertNotIn("blocked", body)
        self.assertNotIn("reason", body)

    def test_readiness_without_consumers_is_not_ready(self) -> None:
        """Connected with no consumer at all is not ready."""
        self.assertFalse(Readiness(True, {}).ready)

    def test_through_http(self) -> None:
        """The resources answer real HTTP requests (StubTreq)."""
        self.clock.advance(0.5)
        stub: Any = StubTreq(self.root)
        response = self.successResultOf(stub.get("http://127.0.0.1/health"))
        self.assertEqual(response.code, 200)
        body = self.successResultOf(response.json())
        self.assertEqual(body["status"], "ok")
        self.assertEqual(self.successResultOf(stub.get("http://127.0.0.1/ready")).code, 503)


class ServiceTests(TestCase):
    def test_make_http_service_listens_and_runs_the_probe(self) -> None:
        """The service listens on the endpoint string and starts/stops the lag probe with it."""
        reactor = MemoryReactorClock()
        probe = ReactorLagProbe(reactor)
        service = make_http_service(
            "tcp:0:interface=127.0.0.1", reactor, MetricsObserver().registry, lambda: True, probe
        )
        self.assertIs(probe.parent, service)
        self.assertTrue(IServiceCollection.providedBy(service))
        service.startService()
        self.assertEqual(len(reactor.tcpServers), 1)
        port, _factory, _backlog, interface = reactor.tcpServers[0]
        self.assertEqual((port, interface), (0, "127.0.0.1"))
        self.assertTrue(probe.running)
        self.successResultOf(service.stopService())
        self.assertFalse(probe.running)

    def test_more_children_under_the_root(self) -> None:
        """make_root puts the children it is given (the dashboard) beside /metrics, /health and /ready."""
        page = Resource()
        page.isLeaf = True
        page.render = lambda request: b"page"  # type: ignore[method-assign]
        root = make_root(MetricsObserver().registry, lambda: True, ReactorLagProbe(Clock()), {b"": page})
        self.assertEqual(get(root, b"")[:2], (200, b"page"))
        self.assertEqual(get(root, b"ready")[0], 200)
