"""Prometheus metrics: own registry, parseable output that moves with the runtime's reports."""

from __future__ import annotations

from types import SimpleNamespace

from prometheus_client import REGISTRY
from prometheus_client.parser import text_string_to_metric_families
from twisted.trial.unittest import TestCase

from zqtwisted.ops.metrics import RECENT_CONSUMES, MetricsObserver


def samples(observer: MetricsObserver) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = observer.exposition().decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


class MetricsObserverTests(TestCase):
    def test_output_parses_and_moves(self) -> None:
        """Consumes, failures, retries and dead letters show up per queue in parseable text."""
        m = MetricsObserver(queues=["email_senders"])
        before = samples(m)
        self.assertEqual(before[("zqtwisted_events_consumed_total", (("queue", "email_senders"),))], 0)
        m.consume_started("email_senders", 3)
        self.assertEqual(samples(m)[("zqtwisted_consumes_in_flight", (("queue", "email_senders"),))], 1)
        m.consumed("email_senders", 2, 0.2)
        m.failed("email_senders", 1, "retry")
        m.retried("email_senders", 1.5)
        m.dead_lettered("email_senders", 1, "permanent")
        after = samples(m)
        q = (("queue", "email_senders"),)
        self.assertEqual(after[("zqtwisted_events_consumed_total", q)], 2)
        self.assertEqual(after[("zqtwisted_consumes_in_flight", q)], 0)
        self.assertEqual(
            after[("zqtwisted_events_failed_total", (("outcome", "retry"), ("queue", "email_senders")))], 1
        )
        self.assertEqual(after[("zqtwisted_events_retried_total", q)], 1)
        self.assertEqual(
            after[("zqtwisted_events_dead_lettered_total", (("queue", "email_senders"), ("reason", "permanent")))], 1
        )
        self.assertEqual(after[("zqtwisted_consume_duration_seconds_count", q)], 1)
        self.assertAlmostEqual(after[("zqtwisted_consume_duration_seconds_sum", q)], 0.2)
        self.assertEqual(
            after[("zqtwisted_consume_duration_seconds_bucket", (("le", "0.25"), ("queue", "email_senders")))], 1
        )

    def test_own_registry(self) -> None:
        """Two observers never clash, and nothing lands in prometheus_client's global registry."""
        a, b = MetricsObserver(), MetricsObserver()
        a.consumed("q", 1, 0.1)
        self.assertNotIn(("zqtwisted_events_consumed_total", (("queue", "q"),)), samples(b))
        self.assertIsNone(REGISTRY.get_sample_value("zqtwisted_events_consumed_total", {"queue": "q"}))

    def test_attachment_and_reconnects(self) -> None:
        """attached() sets a 0/1 gauge; a second broker session counts as a reconnect."""
        m = MetricsObserver()
        m.attached("q", True)
        m.session_started(object())
        m.session_lost(object())
        m.session_started(object())
        s = samples(m)
        self.assertEqual(s[("zqtwisted_consumer_attached", (("queue", "q"),))], 1)
        self.assertEqual(s[("zqtwisted_broker_connections_total", ())], 2)
        self.assertEqual(s[("zqtwisted_broker_reconnects_total", ())], 1)
        self.assertEqual(s[("zqtwisted_broker_connected", ())], 1)

    def test_broker_blocked_is_read_at_scrape(self) -> None:
        """zqtwisted_broker_blocked is 1 while the session says the broker blocks it (a resource alarm), else 0."""
        m = MetricsObserver()
        self.assertEqual(samples(m)[("zqtwisted_broker_blocked", ())], 0)
        session = SimpleNamespace(blocked="low on memory")
        m.session_started(session)
        self.assertEqual(samples(m)[("zqtwisted_broker_blocked", ())], 1)
        session.blocked = None
        self.assertEqual(samples(m)[("zqtwisted_broker_blocked", ())], 0)
        session.blocked = "low on disk"
        m.session_lost(session)
        self.assertEqual(samples(m)[("zqtwisted_broker_blocked", ())], 0)

    def test_reactor_lag(self) -> None:
        """Lag is a gauge with its maximum; each block is counted."""
        m = MetricsObserver()
        m.reactor_lag(2.5)
        m.reactor_blocked(2.5)
        m.reactor_lag(0.01)
        s = samples(m)
        self.assertEqual(s[("zqtwisted_reactor_lag_seconds", ())], 0.01)
        self.assertEqual(s[("zqtwisted_reactor_max_lag_seconds", ())], 2.5)
        self.assertEqual(s[("zqtwisted_reactor_blocked_total", ())], 1)

    def test_runner_state_read_at_scrape(self) -> None:
        """events_in_flight and deliveries_held come from the runners when scraped."""
        m = MetricsObserver()
        state = {"q": (2, 7)}
        m.add_runner_state(lambda: state)
        self.assertEqual(samples(m)[("zqtwisted_events_in_flight", (("queue", "q"),))], 2)
        state["q"] = (0, 1)
        self.assertEqual(samples(m)[("zqtwisted_deliveries_held", (("queue", "q"),))], 1)

    def test_no_secret_in_labels(self) -> None:
        """A label value carrying a URL password is masked."""
        m = MetricsObserver()
        m.failed("q", 1, "amqp://zulip:hunter2-secret@rabbit/")
        self.assertNotIn(b"hunter2-secret", m.exposition())

    def test_recent_durations_keep_the_last_consumes(self) -> None:
        """The last RECENT_CONSUMES consume durations of a queue are kept for the dashboard's quantiles."""
        m = MetricsObserver(queues=["q"])
        self.assertEqual(m.recent_durations("q"), [])
        self.assertEqual(m.recent_durations("other"), [])
        for i in range(RECENT_CONSUMES + 5):
            m.consume_started("q", 1)
            m.consumed("q", 1, float(i))
        recent = m.recent_durations("q")
        self.assertEqual(len(recent), RECENT_CONSUMES)
        self.assertEqual(sorted(recent), [float(i) for i in range(5, RECENT_CONSUMES + 5)])
