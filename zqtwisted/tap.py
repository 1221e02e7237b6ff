"""The ``zqworkers`` twistd plugin: options, and the one place that builds the service tree.

    twistd -n zqworkers --all                         # foreground, every queue
    twistd zqworkers --queue outgoing_webhooks        # daemon, pidfile twistd.pid
    twistd -n zqworkers --queue a --queue b --worker-num 2

This module is the composition root: it is the only one that reaches for the
global reactor; everything below it takes the reactor it needs.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from twisted.application.service import IService
from twisted.python import usage

from zqtwisted.config import Config, ConfigError, load_config
from zqtwisted.errors import WorkerDeclarationError
from zqtwisted.ops.health import BlockedReactorWatchdog, ReactorLagProbe, ReadinessTracker, make_http_service
from zqtwisted.ops.logs import bridge_stdlib_logging, register_config_secrets
from zqtwisted.ops.metrics import MetricsObserver
from zqtwisted.ops.sentry import SentryObserver, SentrySettings, init_sentry, sentry_enabled
from zqtwisted.ops.stats import StatsObserver
from zqtwisted.runtime.amqp import AMQPBroker
from zqtwisted.runtime.deadletter import DeadLetterer
from zqtwisted.runtime.observer import FanOut, RunnerObserver
from zqtwisted.runtime.publisher import Publisher
from zqtwisted.runtime.reactor import ReactorLike
from zqtwisted.runtime.runner import QueueRunner, RunnerSettings
from zqtwisted.runtime.service import WorkerService
from zqtwisted.runtime.worker import WorkerContext, get_active_worker_queues, get_worker_class, import_consumer_modules


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
            config = load_config(self["config"])
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
        get_worker_class(name)  # raises WorkerDeclarationError naming the known queues
    return list(dict.fromkeys(names))


def queue_for(name: str, worker_num: int | None) -> str:
    """The queue a worker consumes: sharded queues take ``_shard{N}`` under --worker-num."""
    cls = get_worker_class(name)
    if cls.sharded and worker_num is not None:
        return f"{name}_shard{worker_num}"
    return name


def build_service(
    reactor: ReactorLike,
    config: Config,
    queues: Sequence[str],
    worker_num: int | None = None,
    broker: Any = None,
    http_endpoint: str | None = None,
) -> WorkerService:
    """The whole service tree for ``queues``; ``broker`` defaults to a real AMQPBroker.

    ``http_endpoint`` (default ``[workers] http``; "" for none) serves /metrics,
    /health and /ready.
    """
    if broker is None:
        broker = AMQPBroker(reactor, config.broker)
    names = [queue_for(name, worker_num) for name in queues]
    stats = StatsObserver(reactor, config.paths.stats_dir)
    metrics = MetricsObserver(queues=names)
    readiness = ReadinessTracker(names)
    observers: list[RunnerObserver] = [stats, metrics, readiness]
    if sentry_enabled():
        observers.append(SentryObserver(worker_num))
    observer = FanOut(observers)
    publisher = Publisher(broker, timeout=config.broker.publish_timeout)
    deadletters = DeadLetterer(broker, config.paths.error_dir, reactor, config.broker.publish_timeout)
    runners = []
    for name, queue in zip(queues, names, strict=True):
        cls = get_worker_class(name)
        context = WorkerContext(reactor=reactor, config=config, publisher=publisher, queue=queue, worker_num=worker_num)
        settings = RunnerSettings.resolve(cls, config.queue(queue), config.broker.publish_timeout)
        runners.append(QueueRunner(cls(context), settings, broker, deadletters, reactor, observer))
    service = WorkerService(
        broker, broker, runners, publisher, config.workers.drain_timeout, on_fatal=lambda: _stop(reactor)
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


def _stop(reactor: ReactorLike) -> None:
    if reactor.running:
        reactor.stop()


def makeService(options: Options) -> IService:
    from twisted.internet import reactor

    config = options.config
    assert config is not None
    register_config_secrets(config)
    bridge_stdlib_logging()
    init_sentry(config.section("sentry", SentrySettings))
    return build_service(reactor, config, options["queues"], options["worker-num"], http_endpoint=options["http"])
