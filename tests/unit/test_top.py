"""zqctl top: the table from two samples, and the refresh loop on a fake reactor."""

from __future__ import annotations

import io
import os
import shutil
import tempfile

from treq.testing import StubTreq
from twisted.internet.defer import Deferred, succeed
from twisted.internet.testing import MemoryReactorClock
from twisted.trial.unittest import TestCase

from zqtwisted.ops.health import MetricsResource
from zqtwisted.ops.metrics import MetricsObserver
from zqtwisted.ops.stats import StatsObserver
from zqtwisted.ops.top import (
    CLEAR,
    QueueCounters,
    Sample,
    compute_rows,
    counters_from_families,
    metrics_url_for,
    parse_metrics,
    render,
    run_top,
)


def temp_path(case: TestCase) -> str:
    """A fresh path in a temporary directory removed after the test (not under the cwd)."""
    root = tempfile.mkdtemp(prefix="zqtwisted-test-")
    case.addCleanup(shutil.rmtree, root, True)
    return os.path.join(root, "path")


class RenderTests(TestCase):
    def test_rates_from_two_samples(self) -> None:
        """Out is consumed + dead-lettered per second; in adds the depth change; avg is per event."""
        before = Sample(10.0, {"q": (100, 1)}, counters={"q": QueueCounters(consumed=50, duration_sum=1.0)})
        after = Sample(
            12.0,
            {"q": (90, 1)},
            counters={"q": QueueCounters(consumed=70, failed=3, dead_lettered=2, duration_sum=2.0)},
        )
        [row] = compute_rows(before, after)
        self.assertEqual(row.rate_out, 11.0)  # (20 + 2) / 2 s
        self.assertEqual(row.rate_in, 6.0)  # -10 / 2 s + 11
        self.assertEqual(row.failures, 3)
        self.assertAlmostEqual(row.avg_seconds or 0, 0.05)  # 1.0 s / 20 events
        text = render(before, after)
        self.assertIn("QUEUE", text)
        line = next(x for x in text.splitlines() if x.startswith("q "))
        self.assertEqual(line.split(), ["q", "90", "1", "6.0", "11.0", "3", "50.0"])

    def test_without_metrics_falls_back_to_stats(self) -> None:
        """With no /metrics, rates are '-' and the average comes from the stats file."""
        current = Sample(1.0, {"q": (5, 0)}, stats={"q": {"recent_average_consume_time": 0.25}})
        text = render(None, current)
        self.assertIn("rates unavailable", text)
        line = next(x for x in text.splitlines() if x.startswith("q "))
        self.assertEqual(line.split(), ["q", "5", "0", "-", "-", "-", "250.0"])

    def test_parse_metrics(self) -> None:
        """The counters are read from a real MetricsObserver exposition."""
        m = MetricsObserver()
        m.consumed("q", 3, 0.5)
        m.failed("q", 1, "retry")
        m.failed("q", 2, "timeout")
        m.dead_lettered("q", 1, "timeout")
        counters = parse_metrics(m.exposition().decode())["q"]
        self.assertEqual(
            counters, QueueCounters(consumed=3, failed=3, dead_lettered=1, duration_sum=0.5, duration_count=1)
        )


class MetricsUrlTests(TestCase):
    def test_url_from_endpoint_string(self) -> None:
        """The /metrics URL follows the configured tcp endpoint; other kinds have none."""
        self.assertEqual(metrics_url_for("tcp:9191:interface=127.0.0.1"), "http://127.0.0.1:9191/metrics")
        self.assertEqual(metrics_url_for("tcp:port=9192:interface=0.0.0.0"), "http://127.0.0.1:9192/metrics")
        self.assertEqual(metrics_url_for(r"tcp6:9191:interface=\:\:1"), "http://[::1]:9191/metrics")
        self.assertIsNone(metrics_url_for("unix:/run/zqtwisted/http.sock"))


class RunTopTests(TestCase):
    def test_refreshes_every_second_until_shutdown(self) -> None:
        """Each second the screen is cleared and redrawn from the sample, /metrics and stats files."""
        reactor = MemoryReactorClock()
        metrics = MetricsObserver()
        stats_dir = temp_path(self)
        StatsObserver(reactor, stats_dir).start(["q"])
        depth = {"q": (10, 1)}
        out = io.StringIO()
        done = run_top(
            reactor,
            lambda: dict(depth),
            "http://127.0.0.1:9191/metrics",
            out=out,
            stats_dir=stats_dir,
            http_client=StubTreq(MetricsResource(metrics.registry)),
        )
        self.assertTrue(out.getvalue().startswith(CLEAR))
        metrics.consumed("q", 4, 0.4)
        depth["q"] = (8, 1)
        reactor.advance(1.0)
        screen = out.getvalue().split(CLEAR)[-1]
        line = next(x for x in screen.splitlines() if x.startswith("q "))
        self.assertEqual(line.split(), ["q", "8", "1", "2.0", "4.0", "0", "100.0"])
        self.assertTrue(os.path.exists(os.path.join(stats_dir, "q.stats")))
        # Ctrl-C stops the reactor: the "before shutdown" trigger stops the view.
        [trigger] = [t for t in reactor.triggers["before"]["shutdown"]]
        trigger[0](*trigger[1], **trigger[2])
        self.assertIsNone(self.successResultOf(done))
        self.assertEqual(reactor.getDelayedCalls(), [])

    def test_metrics_unavailable(self) -> None:
        """A failing /metrics leaves the view running with queue counts only."""
        reactor = MemoryReactorClock()

        class Broken:
            def get(self, url: str) -> Deferred[object]:
                d: Deferred[object] = Deferred()
                d.errback(ConnectionRefusedError())
                return d

        out = io.StringIO()
        done = run_top(
            reactor, lambda: succeed({"q": (1, 1)}), "http://127.0.0.1:1/metrics", out=out, http_client=Broken()
        )
        self.assertIn("rates unavailable", out.getvalue())
        reactor.advance(1.0)
        self.assertEqual(out.getvalue().count(CLEAR), 2)
        for trigger in reactor.triggers["before"]["shutdown"]:
            trigger[0](*trigger[1], **trigger[2])
        self.successResultOf(done)

    def test_sample_failure_shown(self) -> None:
        """When the broker cannot be asked, the screen says so and the loop goes on."""
        reactor = MemoryReactorClock()
        out = io.StringIO()

        def sample() -> dict[str, tuple[int, int]]:
            raise ConnectionError("broker down")

        done = run_top(reactor, sample, None, out=out)
        self.assertIn("cannot sample the queues: broker down", out.getvalue())
        reactor.advance(1.0)
        self.assertEqual(out.getvalue().count("broker down"), 2)
        for trigger in reactor.triggers["before"]["shutdown"]:
            trigger[0](*trigger[1], **trigger[2])
        self.successResultOf(done)


class CountersTests(TestCase):
    def test_counters_from_a_registry_match_the_parsed_text(self) -> None:
        """The counters read from a registry's families equal those parsed from /metrics, retries included."""
        m = MetricsObserver(queues=["q"])
        m.consume_started("q", 1)
        m.consumed("q", 2, 0.5)
        m.retried("q", 1.0)
        m.dead_lettered("q", 1, "permanent")
        direct = counters_from_families(m.registry.collect())
        self.assertEqual(direct, parse_metrics(m.exposition().decode()))
        self.assertEqual(direct["q"], QueueCounters(2, 0, 1, 0.5, 1, 1))
