"""The zqworkers plugin: options, queue selection, the service tree on the in-memory broker."""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from typing import Any

from treq.testing import StubTreq
from twisted.application.service import Service
from twisted.internet.defer import Deferred
from twisted.internet.error import CannotListenError
from twisted.internet.testing import MemoryReactorClock
from twisted.python import usage
from twisted.trial import unittest

from tests.helpers import environ
from tests.resource_fakes import ConnectingMemoryReactor
from zqtwisted.config import Config, PathSettings, QueueSettings, WorkerSettings
from zqtwisted.resources import Resources
from zqtwisted.runtime.consumer import ConsumerSpec, QueueWorker, WorkerContext
from zqtwisted.runtime.service import WorkerService
from zqtwisted.runtime.worker import QueueProcessingWorker, assign_queue, register_spec, unregister_worker
from zqtwisted.tap import (
    ConfigurationExit,
    ExitStatus,
    ListenGuard,
    Options,
    _stop,
    build_service,
    check_http_endpoint,
    fatal,
    queue_for,
    select_queues,
)
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
        with self.assertRaisesRegex(ConfigurationExit, "--broker"):
            self.parse("--all", "--broker", "http://mq")

    def test_bad_config_is_one_line_and_exit_1(self) -> None:
        """A configuration error stops start-up with one line naming the key (no usage text) and status 1."""
        path = os.path.join(tempfile.mkdtemp(), "zq.toml")
        with open(path, "w") as f:
            f.write("[queues.noop]\nconcurrency = -1\n")
        with self.assertRaises(ConfigurationExit) as caught:
            self.parse("--all", "--config", path)
        self.assertEqual(
            str(caught.exception.code), "zqworkers: configuration: queues.noop.concurrency: must be > 0, got -1"
        )
        self.assertTrue(caught.exception.code)

    def test_config_holes_are_one_line_each(self) -> None:
        """Defect 8: missing password_file, prefetch > 65535, [queues.<typo>], a directory, a bad port: one line."""
        root = tempfile.mkdtemp()
        cases = {
            '[mail]\nbackend = "smtp"\nhost = "127.0.0.1"\nusername = "u"\npassword_file = "/nonexistent/pw"\n': (
                "mail.password_file: cannot read /nonexistent/pw: No such file or directory"
            ),
            "[queues.noop]\nprefetch = 70000\n": "queues.noop.prefetch: must be at most 65535, got 70000",
            "[queues.emial_senders]\nconcurrency = 2\n": "[queues.emial_senders]: unknown queue 'emial_senders'",
            '[broker]\nurl = "amqp://guest:guest@127.0.0.1:abc/"\n': "broker.url: the port is not a number",
        }
        for n, (text, expected) in enumerate(cases.items()):
            path = os.path.join(root, f"zq{n}.toml")
            with open(path, "w") as f:
                f.write(text)
            with self.assertRaises(ConfigurationExit) as caught:
                self.parse("--all", "--config", path)
            self.assertIn(expected, str(caught.exception.code))
            self.assertNotIn("\n", str(caught.exception.code))
        with self.assertRaises(ConfigurationExit) as caught:
            self.parse("--all", "--config", root)
        self.assertIn(f"cannot read the config file {root}: Is a directory", str(caught.exception.code))

    def test_shard_sections_are_known_queues(self) -> None:
        """[queues.NAME_shard2] of a known queue is accepted."""
        path = os.path.join(tempfile.mkdtemp(), "zq.toml")
        with open(path, "w") as f:
            f.write("[queues.missedmessage_mobile_notifications_shard2]\nconcurrency = 2\n")
        config = self.parse("--all", "--config", path).config
        assert config is not None
        self.assertEqual(config.queue("missedmessage_mobile_notifications_shard2").concurrency, 2)


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

    def test_zulip_mode_queues_need_the_database(self) -> None:
        """--all runs user_activity only in Zulip mode; --queue user_activity without [zulip] database says why."""
        from zqtwisted.config import ConfigError
        from zqtwisted.zulip.settings import ZulipSettings

        self.assertNotIn("user_activity", select_queues(Config(), [], True))
        self.assertNotIn("user_activity_interval", select_queues(Config(), [], True))
        with self.assertRaisesRegex(ConfigError, r"--queue user_activity: .*set \[zulip\] database"):
            select_queues(Config(), ["user_activity"], False)
        zulip = Config(sections={"zulip": ZulipSettings(database="dbname=zulip", external_host="zulip.example.com")})
        self.assertIn("user_activity", select_queues(zulip, [], True))
        self.assertEqual(select_queues(zulip, ["user_activity_interval"], False), ["user_activity_interval"])

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

    def test_startup_error_is_one_line(self) -> None:
        """A StartupError (e.g. an unknown Zulip schema) is one error line, no traceback; the process stops."""
        from twisted.internet.defer import fail
        from twisted.logger import globalLogPublisher

        from zqtwisted.errors import StartupError

        @assign_queue("zq_startup_error")
        class Mismatch(QueueProcessingWorker):
            def start(self) -> Deferred[None]:
                return fail(StartupError("Zulip's database (schema 'zulip') lacks zerver_service.token"))

        self.addCleanup(unregister_worker, "zq_startup_error")
        from typing import cast

        from twisted.logger import ILogObserver

        seen: list[dict[str, object]] = []
        observer = cast(ILogObserver, seen.append)
        globalLogPublisher.addObserver(observer)
        self.addCleanup(globalLogPublisher.removeObserver, observer)
        clock = ConnectingMemoryReactor()
        broker = MemoryBroker(clock)
        service = build_service(clock, Config(), ["zq_startup_error"], broker=broker, http_endpoint="")
        stopped: list[bool] = []
        service._on_fatal = lambda: stopped.append(True)
        service.startService()
        broker.flush()
        self.assertEqual(stopped, [True])
        lines = [e for e in seen if e.get("log_format", "") == "A worker cannot start: {error}; stopping"]
        self.assertEqual(len(lines), 1)
        self.assertNotIn("log_failure", lines[0])
        self.assertEqual(self.flushLoggedErrors(StartupError), [])
        self.successResultOf(stop(service, clock))


class BrokerTests(unittest.TestCase):
    def test_default_broker_declares_as_configured_on_every_node(self) -> None:
        """Without a broker given, the service's AMQPBroker knows every node and the configured queue types."""
        from zqtwisted.config import BrokerSettings
        from zqtwisted.runtime.amqp import AMQPBroker

        clock = ConnectingMemoryReactor()
        config = Config(
            broker=BrokerSettings(urls=("amqp://u:p@127.0.0.1:5681/%2F", "amqp://u:p@127.0.0.1:5682/%2F")),
            workers=WorkerSettings(queue_type="quorum"),
            queues={"test": QueueSettings(queue_type="classic")},
        )
        service = build_service(clock, config, ["noop"], http_endpoint="")
        broker = service.broker
        assert isinstance(broker, AMQPBroker)
        self.assertEqual([node.port for node in broker.nodes], [5681, 5682])
        self.assertEqual(broker.declarations("noop").queue_type, "quorum")
        self.assertEqual(broker.declarations("test").queue_type, "classic")


class _Unlistenable(Service):
    def privilegedStartService(self) -> None:
        raise CannotListenError("127.0.0.1", 9191, OSError(98, "Address already in use"))


class FatalStartTests(unittest.TestCase):
    def test_fatal_before_the_reactor_runs_stops_it_as_soon_as_it_runs(self) -> None:
        """Defect 3: a worker failing inside startService (before reactor.run) still stops the process, status 1."""
        reactor = MemoryReactorClock()
        registered: list[object] = []
        status = ExitStatus(register=registered.append)
        fatal(reactor, status)
        self.assertEqual(status.code, 1)
        self.assertEqual(len(registered), 1, "the exit hook is registered once")
        self.assertFalse(reactor.hasStopped)
        reactor.run()
        self.assertTrue(reactor.hasStopped)
        fatal(reactor, status)
        self.assertEqual(len(registered), 1)

    def test_stop_ignores_a_plain_clock(self) -> None:
        """A test's Clock is no reactor: nothing to stop."""
        _stop(object())

    def test_listen_failure_is_one_line(self) -> None:
        """Defect 8: a port in use ends start-up with one line naming the endpoint and the key."""
        guard = ListenGuard(_Unlistenable(), "tcp:9191:interface=127.0.0.1")
        with self.assertRaises(SystemExit) as caught:
            guard.privilegedStartService()
        self.assertEqual(
            caught.exception.code,
            "zqworkers: cannot listen on 'tcp:9191:interface=127.0.0.1' ([workers] http or --http): "
            "Address already in use",
        )

    def test_bad_endpoint_string_is_one_line(self) -> None:
        """Defect 8: an endpoint string that does not parse is one line, not a traceback."""
        check_http_endpoint(MemoryReactorClock(), "tcp:0:interface=127.0.0.1")
        check_http_endpoint(MemoryReactorClock(), "")
        with self.assertRaises(SystemExit) as caught:
            check_http_endpoint(MemoryReactorClock(), "tcp:notaport")
        self.assertIn("invalid HTTP endpoint 'tcp:notaport' ([workers] http or --http)", str(caught.exception.code))


class DashboardWiringTests(unittest.TestCase):
    def test_the_http_endpoint_serves_the_dashboard(self) -> None:
        """With an HTTP endpoint the root serves the dashboard at / and its API, sampling while it runs."""
        clock = ConnectingMemoryReactor()
        broker = MemoryBroker(clock)
        tmp = tempfile.mkdtemp()
        config = Config(
            paths=PathSettings(stats_dir=tmp, error_dir=tmp, test_queue_file=os.path.join(tmp, "t")),
            workers=WorkerSettings(http_token="a-long-dashboard-token"),
        )
        service = build_service(clock, config, ["noop"], broker=broker, http_endpoint="tcp:0:interface=127.0.0.1")
        service.startService()
        broker.flush()
        clock.advance(2)
        site: Any = clock.tcpServers[0][1]
        stub: Any = StubTreq(site.resource)
        self.assertEqual(self.successResultOf(stub.get("http://127.0.0.1/")).code, 200)
        body = self.successResultOf(self.successResultOf(stub.get("http://127.0.0.1/api/queues")).json())
        self.assertEqual([q["name"] for q in body["queues"]], ["noop"])
        self.assertTrue(body["connected"] and body["actions"])
        self.assertEqual(self.successResultOf(stub.get("http://127.0.0.1/metrics")).code, 200)
        self.successResultOf(stop(service, clock))
        self.assertEqual([c for c in clock.getDelayedCalls() if c.active()], [])

    def test_an_unreadable_token_file_stops_start_up(self) -> None:
        """[workers] http_token_file that cannot be read ends start-up with one line naming the key."""
        path = os.path.join(tempfile.mkdtemp(), "zq.toml")
        with open(path, "w") as f:
            f.write('[workers]\nhttp_token_file = "/nonexistent/zq-token"\n')
        with self.assertRaises(ConfigurationExit) as caught:
            Options().parseOptions(["--all", "--config", path])
        self.assertIn("workers.http_token_file: cannot read /nonexistent/zq-token", str(caught.exception.code))
