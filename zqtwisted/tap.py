"""The ``zqworkers`` twistd plugin: options, and the one place that builds the service tree.

    twistd -n zqworkers --all                         # foreground, every queue
    twistd zqworkers --queue outgoing_webhooks        # daemon, pidfile twistd.pid
    twistd -n zqworkers --queue a --queue b --worker-num 2

This module is the composition root: it is the only one that reaches for the
global reactor; everything below it takes the reactor it needs.  It parses the
configuration against the table of sections, picks the consumers' declarations
(:mod:`zqtwisted.catalog`), builds the shared resources once (broker, publisher,
:class:`~zqtwisted.resources.Resources`, observers, dead letterer) and each worker
with its spec's ``build``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, cast

from twisted.application.service import IService
from twisted.internet.interfaces import IReactorCore
from twisted.python import usage

from zqtwisted.catalog import get_active_worker_queues, get_spec, import_consumer_modules
from zqtwisted.config import Config, ConfigError, load_config
from zqtwisted.errors import WorkerDeclarationError
from zqtwisted.ops.health import BlockedReactorWatchdog, ReactorLagProbe, ReadinessTracker, make_http_service
from zqtwisted.ops.logs import bridge_stdlib_logging, register_config_secrets
from zqtwisted.ops.metrics import MetricsObserver
from zqtwisted.ops.sentry import init_sentry
from zqtwisted.ops.settings import SentrySettings
from zqtwisted.ops.stats import StatsObserver
from zqtwisted.resources import Resources
from zqtwisted.runtime.amqp import AMQPBroker
from zqtwisted.runtime.consumer import ConsumerSpec, WorkerContext
from zqtwisted.runtime.deadletter import DeadLetterer
from zqtwisted.runtime.observer import FanOut, RunnerObserver
from zqtwisted.runtime.publisher import Publisher
from zqtwisted.runtime.reactor import IConnectingReactor
from zqtwisted.runtime.runner import QueueRunner, RunnerSettings
from zqtwisted.runtime.service import BrokerService, WorkerService
from zqtwisted.runtime.shards import shard_queue_name
from zqtwisted.sections import SECTIONS


class Options(usage.Options):
    synopsis = "[--all | --queue NAME ...] [--worker-num N] [--config PATH] [--broker URL]"
    longdesc = (
        "Run zqtwisted's queue workers: every selected queue is a consumer on one reactor. "
        "Configuration comes from --config or $ZQ_CONFIG (TOML); with none, defaults work "
        "against a RabbitMQ on 127.0.0.1:5672 (guest/guest)."
    )
    optFlags = [["all", "a", "Consume every enabled queue."]]
    optParameters = [
        ["worker-num", "w", None, "Worker number: sharded queues consume NAME_shardN.", int],
        ["config", "c", None, "Path of the TOML configuration file (default: $ZQ_CONFIG)."],
        ["broker", "b", None, "Broker URL (amqp:// or amqps://), overriding the configuration."],
        ["http", None, None, "Endpoint for /metrics, /health, /ready ([workers] http; default tcp:9191)."],
    ]

    def __init__(self) -> None:
        super().__init__()
        self["queues"] = []
        self.config: Config | None = None

    def opt_queue(self, name: str) -> None:
        """A queue to consume (repeatable)."""
        self["queues"].append(name)

    opt_q = opt_queue

    def postOptions(self) -> None:
        if self["all"] and self["queues"]:
            raise usage.UsageError("give --all or --queue, not both")
        try:
            config = load_config(self["config"], sections=SECTIONS)
        except ConfigError as e:
            raise usage.UsageError(f"configuration: {e}") from None
        if self["broker"]:
            try:
                config = config.with_broker_url(self["broker"])
            except ConfigError as e:
                raise usage.UsageError(str(e)) from None
        self.config = config
        try:
            import_consumer_modules(config.workers.consumer_modules)
            self["queues"] = select_queues(config, self["queues"], self["all"])
        except WorkerDeclarationError as e:
            raise usage.UsageError(str(e)) from None
        if not self["queues"]:
            raise usage.UsageError("no queue to consume: give --all or --queue NAME")


def select_queues(config: Config, names: Sequence[str], everything: bool) -> list[str]:
    """The queues to run: the named ones (checked), or every enabled one for --all."""
    if everything:
        names = get_active_worker_queues()
        if config.workers.include_test_queues:
            names = [*names, *get_active_worker_queues(only_test_queues=True)]
        return [n for n in names if config.queue(n).enabled]
    for name in names:
        get_spec(name)  # raises WorkerDeclarationError naming the known queues
    return list(dict.fromkeys(names))


def consumed_queue(spec: ConsumerSpec[Any], worker_num: int | None) -> str:
    """The queue a worker consumes: a sharded spec's takes ``_shard{N}`` under --worker-num."""
    if spec.sharded and worker_num is not None:
        return shard_queue_name(spec.queue, worker_num)
    return spec.queue


def queue_for(name: str, worker_num: int | None) -> str:
    """The queue the worker of ``name`` consumes under ``worker_num``."""
    return consumed_queue(get_spec(name), worker_num)


def spec_settings(config: Config, spec: ConsumerSpec[Any]) -> Any:
    """The parsed section of ``spec`` (its defaults when the file has none), or None without one."""
    if spec.section is None or spec.settings is None:
        return None
    return config.section(spec.section, spec.settings)


def build_service(
    reactor: IConnectingReactor,
    config: Config,
    queues: Sequence[str],
    worker_num: int | None = None,
    broker: BrokerService | None = None,
    http_endpoint: str | None = None,
    sentry: RunnerObserver | None = None,
) -> WorkerService:
    """The whole service tree for ``queues``; ``broker`` defaults to a real AMQPBroker.

    ``reactor`` is the clock of every piece and what the clients connect with
    (time, TCP, name resolution); a running reactor (IReactorCore) is stopped when a
    worker fails to start.
    ``http_endpoint`` (default ``[workers] http``; "" for none) serves /metrics,
    /health and /ready.  ``sentry`` is the observer :func:`init_sentry` returned.
    """
    if broker is None:
        broker = AMQPBroker(reactor, config.broker)
    specs = [get_spec(name) for name in queues]
    names = [consumed_queue(spec, worker_num) for spec in specs]
    stats = StatsObserver(reactor, config.paths.stats_dir)
    metrics = MetricsObserver(queues=names)
    readiness = ReadinessTracker(names)
    observers: list[RunnerObserver] = [stats, metrics, readiness]
    if sentry is not None:
        observers.append(sentry)
    observer = FanOut(observers)
    publisher = Publisher(broker, timeout=config.broker.publish_timeout)
    resources = Resources(reactor, config, publisher)
    deadletters = DeadLetterer(broker, config.paths.error_dir, reactor, config.broker.publish_timeout)
    runners = []
    for spec, queue in zip(specs, names, strict=True):
        context = WorkerContext(queue=queue, clock=reactor, publisher=publisher, worker_num=worker_num)
        worker = spec.build(context, spec_settings(config, spec), resources)
        settings = RunnerSettings.resolve(spec.worker, config.queue(queue), config.broker.publish_timeout)
        runners.append(QueueRunner(worker, settings, broker, deadletters, reactor, observer))
    service = WorkerService(
        broker, runners, config.workers.drain_timeout, on_fatal=lambda: _stop(reactor), resources=resources
    )
    broker.add_listener(metrics)
    broker.add_listener(readiness)
    metrics.add_runner_state(lambda: {r.queue: (r.in_flight, r.held) for r in runners})
    stats.start(names)
    stats.setServiceParent(service)
    threshold = config.workers.blocked_reactor_seconds
    probe = ReactorLagProbe(reactor, threshold=threshold, sink=metrics, watchdog=BlockedReactorWatchdog(threshold))
    probe.setServiceParent(service)  # runs with or without the HTTP endpoint
    endpoint = config.workers.http if http_endpoint is None else http_endpoint
    if endpoint:
        make_http_service(endpoint, reactor, metrics.registry, readiness, probe).setServiceParent(service)
    return service


def _stop(reactor: object) -> None:
    """Stop the reactor, when it is a running one (a test's Clock is not)."""
    core = IReactorCore(reactor, None)
    if core is not None and core.running:
        core.stop()


def makeService(options: Options) -> IService:
    from twisted.internet import reactor as global_reactor

    reactor = cast(IConnectingReactor, global_reactor)
    config = options.config
    assert config is not None
    register_config_secrets(config)
    bridge_stdlib_logging()
    sentry = init_sentry(config.section("sentry", SentrySettings), options["worker-num"])
    return build_service(
        reactor, config, options["queues"], options["worker-num"], http_endpoint=options["http"], sentry=sentry
    )
