"""The zqworkers plugin: options, queue selection, the service tree on the in-memory broker."""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from typing import Any

from twisted.internet.defer import Deferred
from twisted.python import usage
from twisted.trial import unittest

from tests.helpers import environ
from tests.resource_fakes import ConnectingMemoryReactor
from zqtwisted.config import Config, PathSettings, QueueSettings, WorkerSettings
from zqtwisted.resources import Resources
from zqtwisted.runtime.consumer import ConsumerSpec, QueueWorker, WorkerContext
from zqtwisted.runtime.service import WorkerService
from zqtwisted.runtime.worker import QueueProcessingWorker, assign_queue, register_spec, unregister_worker
from zqtwisted.tap import Options, build_service, queue_for, select_queues
from zqtwisted.testing import MemoryBroker


def stop(service: WorkerService, clock: ConnectingMemoryReactor) -> Deferred[None]:
    """Stop the service; the shared resources close one reactor turn later."""
    stopped = service.stopService()
    clock.advance(0)
    return stopped


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
        config = self.parse("--all", "--broker", "amqps://u:p@mq/v").config
        assert config is not None
        self.assertEqual(config.broker.url, "amqps://u:p@mq/v")
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
        clock = ConnectingMemoryReactor()
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
        self.successResultOf(stop(service, clock))
        self.assertFalse(service.running)


@dataclass(frozen=True)
class Knobs:
    size: int = 1


class Built(QueueProcessingWorker):
    """A worker built by a spec, keeping what it was given."""

    def __init__(self, context: WorkerContext, settings: Knobs, resources: Resources) -> None:
        super().__init__(context)
        self.settings = settings
        self.resources = resources

    def consume(self, event: dict[str, Any]) -> None:
        pass


def build_built(context: WorkerContext, settings: Knobs, resources: Any) -> QueueWorker:
    return Built(context, settings, resources)


class CompositionTests(unittest.TestCase):
    def test_specs_are_built_with_context_settings_and_shared_resources(self) -> None:
        """Each worker gets its context (shard queue under --worker-num), its parsed section and the one Resources."""
        register_spec(ConsumerSpec("zq_tap_built", Built, build_built, section="knobs", settings=Knobs, sharded=True))
        self.addCleanup(unregister_worker, "zq_tap_built")
        register_spec(ConsumerSpec("zq_tap_other", Built, build_built, section="knobs", settings=Knobs))
        self.addCleanup(unregister_worker, "zq_tap_other")
        clock = ConnectingMemoryReactor()
        broker = MemoryBroker(clock)
        config = Config(sections={"knobs": Knobs(7)})
        service = build_service(clock, config, ["zq_tap_built", "zq_tap_other"], 3, broker=broker, http_endpoint="")
        first, second = (r.worker for r in service.runners)
        assert isinstance(first, Built) and isinstance(second, Built)
        self.assertEqual((first.queue, first.context.worker_num), ("zq_tap_built_shard3", 3))
        self.assertEqual(second.queue, "zq_tap_other")
        self.assertEqual(first.settings, Knobs(7))
        self.assertIs(first.resources, second.resources)
        self.assertIs(first.context.publisher, first.resources.publisher)
        self.assertIs(first.context.clock, clock)

    def test_stop_closes_the_resources_after_the_workers(self) -> None:
        """stopService stops the workers, then closes the shared resources, then the broker."""
        register_spec(ConsumerSpec("zq_tap_built", Built, build_built, section="knobs", settings=Knobs))
        self.addCleanup(unregister_worker, "zq_tap_built")
        clock = ConnectingMemoryReactor()
        broker = MemoryBroker(clock)
        service = build_service(clock, Config(), ["zq_tap_built"], broker=broker, http_endpoint="")
        worker = service.runners[0].worker
        assert isinstance(worker, Built)
        order: list[str] = []
        closing: Deferred[None] = Deferred()

        def stop() -> None:
            order.append("worker")

        def close() -> Deferred[None]:
            order.append("resources")
            return closing

        worker.stop = stop  # type: ignore[method-assign]
        self.patch(worker.resources, "close", close)
        service.startService()
        broker.flush()
        stopped = service.stopService()
        clock.advance(0)
        self.assertEqual(order, ["worker", "resources"])
        self.assertNoResult(stopped)
        self.assertIsNotNone(broker.current_session())
        clock.advance(0)
        closing.callback(None)
        self.successResultOf(stopped)
        self.assertIsNone(broker.current_session())

    def test_sentry_observer_is_added_when_given(self) -> None:
        """The observer init_sentry returned hears every consume; without one there is none."""
        calls: list[str] = []

        class Recording:
            def __getattr__(self, name: str) -> Any:
                return lambda *args: calls.append(name)

        clock = ConnectingMemoryReactor()
        broker = MemoryBroker(clock)
        tmp = tempfile.mkdtemp()
        config = Config(paths=PathSettings(stats_dir=tmp, error_dir=tmp, test_queue_file=os.path.join(tmp, "t")))
        service = build_service(clock, config, ["noop"], broker=broker, http_endpoint="", sentry=Recording())
        service.startService()
        broker.flush()
        broker.publish("noop", b"{}")
        broker.flush()
        self.assertIn("consumed", calls)
        self.successResultOf(stop(service, clock))


class StartFailureTests(unittest.TestCase):
    def test_worker_start_failure_stops_the_process(self) -> None:
        """A worker whose start() fails is logged and the service asks to stop (no half-running process)."""
        from twisted.internet.defer import fail

        @assign_queue("zq_start_fails")
        class Broken(QueueProcessingWorker):
            def start(self) -> Deferred[None]:
                return fail(RuntimeError("cannot open the store"))

        self.addCleanup(unregister_worker, "zq_start_fails")
        clock = ConnectingMemoryReactor()
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
        self.successResultOf(stop(service, clock))
