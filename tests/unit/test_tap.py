"""The zqworkers plugin: options, queue selection, the service tree on the in-memory broker."""

from __future__ import annotations

import os
import tempfile

from twisted.internet.task import Clock
from twisted.python import usage
from twisted.trial import unittest

from tests.helpers import environ
from zqtwisted.config import Config, PathSettings, QueueSettings, WorkerSettings
from zqtwisted.runtime.worker import QueueProcessingWorker, assign_queue, unregister_worker
from zqtwisted.tap import Options, build_service, queue_for, select_queues
from zqtwisted.testing import MemoryBroker


class OptionsTests(unittest.TestCase):
    def parse(self, *argv: str) -> Options:
        options = Options()
        with environ(ZQ_CONFIG=""):
            options.parseOptions(list(argv))
        return options

    def test_repeatable_queue(self) -> None:
        """--queue may be given several times; duplicates collapse."""
        self.assertEqual(self.parse("--queue", "noop", "-q", "test", "--queue", "noop")["queues"], ["noop", "test"])

    def test_unknown_queue_is_a_usage_error(self) -> None:
        """An unknown queue name is a clear error naming it and the known queues."""
        with self.assertRaisesRegex(usage.UsageError, r"unknown queue 'nope' \(known queues: .*noop"):
            self.parse("--queue", "nope")

    def test_all_and_queue_are_exclusive_and_one_is_needed(self) -> None:
        """--all excludes --queue, and one of them is required."""
        with self.assertRaises(usage.UsageError):
            self.parse("--all", "--queue", "noop")
        with self.assertRaises(usage.UsageError):
            self.parse()

    def test_broker_override_is_validated(self) -> None:
        """--broker replaces the configured URL and must be amqp:// or amqps://."""
        self.assertEqual(self.parse("--all", "--broker", "amqps://u:p@mq/v").config.broker.url, "amqps://u:p@mq/v")
        with self.assertRaisesRegex(usage.UsageError, "--broker"):
            self.parse("--all", "--broker", "http://mq")

    def test_bad_config_is_a_usage_error(self) -> None:
        """A configuration error stops start-up with the key named."""
        path = os.path.join(tempfile.mkdtemp(), "zq.toml")
        with open(path, "w") as f:
            f.write("[queues.noop]\nconcurrency = -1\n")
        with self.assertRaisesRegex(usage.UsageError, r"queues\.noop\.concurrency"):
            self.parse("--all", "--config", path)


class SelectionTests(unittest.TestCase):
    def test_all_includes_enabled_queues_and_test_queues(self) -> None:
        """--all runs every enabled queue, test queues included unless configured out."""
        names = select_queues(Config(), [], True)
        self.assertIn("outgoing_webhooks", names)
        self.assertIn("noop", names)
        config = Config(
            workers=WorkerSettings(include_test_queues=False), queues={"email_senders": QueueSettings(enabled=False)}
        )
        names = select_queues(config, [], True)
        self.assertNotIn("noop", names)
        self.assertNotIn("email_senders", names)

    def test_sharded_queue_name(self) -> None:
        """A sharded worker consumes NAME_shardN under --worker-num N; others ignore it."""

        @assign_queue("zq_sharded_example")
        class Sharded(QueueProcessingWorker):
            sharded = True

        self.addCleanup(unregister_worker, "zq_sharded_example")
        self.assertEqual(queue_for("zq_sharded_example", 2), "zq_sharded_example_shard2")
        self.assertEqual(queue_for("zq_sharded_example", None), "zq_sharded_example")
        self.assertEqual(queue_for("noop", 2), "noop")


class ServiceTreeTests(unittest.TestCase):
    def test_start_consume_stop_on_memory_broker(self) -> None:
        """The service attaches every queue, consumes, writes stats, and drains on stop."""
        clock = Clock()
        broker = MemoryBroker(clock)
        tmp = tempfile.mkdtemp()
        config = Config(paths=PathSettings(stats_dir=tmp, error_dir=tmp, test_queue_file=os.path.join(tmp, "t")))
        service = build_service(clock, config, ["noop", "test"], broker=broker, http_endpoint="")
        service.startService()
        broker.flush()
        self.assertTrue(service.ready)
        broker.publish("test", b'{"x": 1}')
        broker.flush()
        with open(os.path.join(tmp, "t")) as f:
            self.assertEqual(f.read(), '{"x": 1}\n')
        self.assertTrue(os.path.exists(os.path.join(tmp, "noop.stats")))
        self.successResultOf(service.stopService())
        self.assertFalse(service.running)


class StartFailureTests(unittest.TestCase):
    def test_worker_start_failure_stops_the_process(self) -> None:
        """A worker whose start() fails is logged and the service asks to stop (no half-running process)."""
        from twisted.internet.defer import fail

        from zqtwisted.runtime.service import WorkerService

        @assign_queue("zq_start_fails")
        class Broken(QueueProcessingWorker):
            def start(self) -> object:
                return fail(RuntimeError("cannot open the store"))

        self.addCleanup(unregister_worker, "zq_start_fails")
        clock = Clock()
        broker = MemoryBroker(clock)
        service = build_service(clock, Config(), ["zq_start_fails"], broker=broker, http_endpoint="")
        stopped: list[bool] = []
        service._on_fatal = lambda: stopped.append(True)  # the reactor.stop() of the composition root
        self.assertIsInstance(service, WorkerService)
        service.startService()
        broker.flush()
        self.assertEqual(stopped, [True])
        self.assertFalse(service.ready)
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)
        self.successResultOf(service.stopService())
