"""Sentry: scopes, tags, real tracebacks of Failures, events context, timeouts -- no network."""

from __future__ import annotations

import os
import shutil
import tempfile
from typing import Any

import sentry_sdk
from sentry_sdk.envelope import Envelope
from sentry_sdk.transport import Transport
from twisted.internet.defer import Deferred
from twisted.python.failure import Failure
from twisted.trial.unittest import TestCase

from zqtwisted.config import ConfigError, parse_config
from zqtwisted.ops.logs import SECRETS
from zqtwisted.ops.sentry import SentryObserver, SentrySettings, capture_failure, events_context, init_sentry
from zqtwisted.sections import SECTIONS

DSN = "https://publickey@sentry.invalid/42"


def temp_path(case: TestCase) -> str:
    """A fresh path in a temporary directory removed after the test (not under the cwd)."""
    root = tempfile.mkdtemp(prefix="zqtwisted-test-")
    case.addCleanup(shutil.rmtree, root, True)
    return os.path.join(root, "path")


class CapturingTransport(Transport):
    """Keeps what would be sent."""

    def __init__(self) -> None:
        super().__init__()
        self.events: list[dict[str, Any]] = []
        self.transactions: list[dict[str, Any]] = []

    def capture_envelope(self, envelope: Envelope) -> None:
        for item in envelope.items:
            payload = item.payload.json
            if item.type == "event":
                self.events.append(payload)  # type: ignore[arg-type]
            elif item.type == "transaction":
                self.transactions.append(payload)  # type: ignore[arg-type]


def failing_deep_in_a_callback() -> Failure:
    """A Failure as the runtime sees it: from a Deferred chain, cleaned."""

    def send_the_email(_: object) -> None:
        raise ConnectionError("SMTP server said no")

    caught: list[Failure] = []
    d: Deferred[None] = Deferred()
    d.addCallback(send_the_email)
    d.addErrback(caught.append)
    d.callback(None)
    caught[0].cleanFailure()
    return caught[0]


class SentryTests(TestCase):
    def setUp(self) -> None:
        self.transport = CapturingTransport()
        self.addCleanup(self.shutdown)

    def shutdown(self) -> None:
        sentry_sdk.get_client().close()
        sentry_sdk.get_global_scope().set_client(None)
        SECRETS.clear()

    def init(self, **kw: Any) -> None:
        self.assertIsInstance(init_sentry(SentrySettings(dsn=DSN, **kw), transport=self.transport), SentryObserver)

    def test_disabled_without_dsn(self) -> None:
        """No DSN: init returns no observer and capture_failure sends nothing."""
        self.assertIsNone(init_sentry(SentrySettings(), transport=self.transport))
        self.assertIsNone(capture_failure("q", None, [{}], failing_deep_in_a_callback()))

    def test_failure_captured_with_real_traceback_tags_and_context(self) -> None:
        """The Failure's own traceback, tags queue_worker / worker_num and context events = {data, queue_name}."""
        self.init()
        event_id = capture_failure("email_senders", 2, [{"to_emails": ["a@example.com"]}], failing_deep_in_a_callback())
        self.assertIsNotNone(event_id)
        [event] = self.transport.events
        [exception] = event["exception"]["values"]
        self.assertEqual((exception["type"], exception["value"]), ("ConnectionError", "SMTP server said no"))
        functions = [frame["function"] for frame in exception["stacktrace"]["frames"]]
        self.assertEqual(functions[-1], "send_the_email")
        self.assertEqual(event["tags"], {"queue_worker": "email_senders", "worker_num": "2"})
        self.assertEqual(
            event["contexts"]["events"], {"data": [{"to_emails": ["a@example.com"]}], "queue_name": "email_senders"}
        )
        self.assertNotIn("fingerprint", event)

    def test_timeout_fingerprint(self) -> None:
        """Timeouts group per queue: fingerprint ["worker-timeout", queue]."""
        self.init()
        capture_failure("outgoing_webhooks", None, [{}], failing_deep_in_a_callback(), timeout=True)
        [event] = self.transport.events
        self.assertEqual(event["fingerprint"], ["worker-timeout", "outgoing_webhooks"])
        self.assertNotIn("worker_num", event["tags"])

    def test_scope_does_not_leak(self) -> None:
        """Tags of one capture do not stick to the next one."""
        self.init()
        capture_failure("a", 1, [{}], failing_deep_in_a_callback(), timeout=True)
        try:
            raise ValueError("other")
        except ValueError:
            sentry_sdk.capture_exception()
        second = self.transport.events[-1]
        self.assertNotIn("fingerprint", second)
        self.assertNotIn("queue_worker", second.get("tags", {}))

    def test_events_context_is_capped_and_masked(self) -> None:
        """Events beyond max_event_context_bytes are left out; secret fields are masked."""
        context = events_context("q", [{"token": "whtok-1234567"}, {"body": "x" * 500}, {"n": 3}], max_bytes=200)
        self.assertEqual(context["data"], [{"token": "***"}])
        self.assertEqual((context["truncated"], context["event_count"]), (True, 3))
        huge = events_context("q", [{"body": "y" * 5000}], max_bytes=100)
        self.assertIsInstance(huge["data"][0], str)
        self.assertLessEqual(len(huge["data"][0]), 100)

    def test_registered_secrets_never_sent(self) -> None:
        """A registered secret or a URL password in an exception message is masked before sending."""
        self.init()
        SECRETS.register("smtp-pass-998877")
        try:
            raise RuntimeError("login failed with smtp-pass-998877 to amqp://zulip:brokerpw@rabbit/")
        except RuntimeError:
            failure = Failure()
        capture_failure("email_senders", None, [{"password": "smtp-pass-998877"}], failure)
        text = repr(self.transport.events)
        self.assertNotIn("smtp-pass-998877", text)
        self.assertNotIn("brokerpw", text)

    def test_transaction_per_consume(self) -> None:
        """With tracing sampled, each consume is a transaction 'consume {queue}' tagged like the worker."""
        self.init(traces_sample_rate=1.0)
        observer = SentryObserver(worker_num=3)
        observer.consume_started("noop", 1)
        observer.consumed("noop", 1, 0.01)
        sentry_sdk.flush()
        [transaction] = self.transport.transactions
        self.assertEqual(transaction["transaction"], "consume noop")
        self.assertEqual(transaction["tags"]["queue_worker"], "noop")
        self.assertEqual(transaction["tags"]["worker_num"], "3")

    def test_no_transaction_when_tracing_is_off(self) -> None:
        """With a DSN but traces_sample_rate 0, a consume starts no transaction at all."""
        self.init()
        started: list[Any] = []
        self.patch(sentry_sdk, "start_transaction", lambda **kw: started.append(kw))
        observer = SentryObserver()
        observer.consume_started("noop", 1)
        observer.consumed("noop", 1, 0.01)
        self.assertEqual(started, [])

    def test_observer_idle_without_sentry(self) -> None:
        """Without Sentry the observer does nothing."""
        observer = SentryObserver()
        observer.consume_started("noop", 1)
        observer.consumed("noop", 1, 0.01)
        self.assertEqual(self.transport.transactions, [])

    def test_settings(self) -> None:
        """[sentry] parses; a DSN file is read; bad values name the key."""
        path = temp_path(self)
        with open(path, "w") as f:
            f.write(DSN + "\n")
        settings = parse_config({"sentry": {"dsn_file": path, "environment": "staging"}}, SECTIONS).section(
            "sentry", SentrySettings
        )
        self.assertEqual(settings.resolve_dsn(), DSN)
        with self.assertRaises(ConfigError) as e:
            parse_config({"sentry": {"traces_sample_rate": 2}}, SECTIONS)
        self.assertIn("sentry.traces_sample_rate", str(e.exception))
        with self.assertRaises(ConfigError):
            parse_config({"sentry": {"dsn": "not a dsn"}}, SECTIONS)

    def test_observer_carries_the_context_cap(self) -> None:
        """init_sentry's observer caps each captured event's context at max_event_context_bytes."""
        observer = init_sentry(SentrySettings(dsn=DSN, max_event_context_bytes=300), 4, transport=self.transport)
        assert observer is not None
        self.assertEqual((observer.worker_num, observer.max_event_context_bytes), (4, 300))
        observer.gave_up("q", [{"body": "z" * 1000}], failing_deep_in_a_callback(), "failed")
        sentry_sdk.flush()
        [event] = self.transport.events
        self.assertTrue(event["contexts"]["events"]["truncated"])
