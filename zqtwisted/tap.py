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

import atexit
import contextlib
import os
import sys
from collections.abc import Callable, Sequence
from typing import Any, cast

from twisted.application.service import IService, MultiService
from twisted.internet.endpoints import serverFromString
from twisted.internet.error import CannotListenError
from twisted.internet.interfaces import IReactorCore
from twisted.python import usage

from zqtwisted.catalog import get_active_worker_queues, get_spec, import_consumer_modules, known_queues
from zqtwisted.config import Config, ConfigError, load_config
from zqtwisted.errors import WorkerDeclarationError
from zqtwisted.ops.health import BlockedReactorWatchdog, ReactorLagProbe, ReadinessTracker, make_http_service
from zqtwisted.ops.logs import bridge_stdlib_logging, mask_text, register_config_secrets
from zqtwisted.ops.metrics import MetricsObserver
from zqtwisted.ops.sentry import init_sentry
from zqtwisted.ops.settings import SentrySettings
from zqtwisted.ops.stats import StatsObserver
from zqtwisted.ops.web.app import make_dashboard
from zqtwisted.resources import Resources
from zqtwisted.runtime.amqp import AMQPBroker
from zqtwisted.runtime.consumer import ConsumerSpec, WorkerContext
from zqtwisted.runtime.deadletter import DeadLetterer
from zqtwisted.runtime.declarations import QueueDeclarations
from zqtwisted.runtime.observer import FanOut, RunnerObserver
from zqtwisted.runtime.publisher import Publisher
from zqtwisted.runtime.reactor import IConnectingReactor
from zqtwisted.runtime.runner import QueueRunner, RunnerSettings
from zqtwisted.runtime.service import BrokerService, WorkerService
from zqtwisted.runtime.shards import base_queue, shard_queue_name
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
        [
            "http",
            None,
            None,
            "Endpoint of the dashboard, /metrics, /health, /ready "
            "([workers] http; default tcp:9191:interface=127.0.0.1, loopback only).",
        ],
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
            raise ConfigurationExit(str(e)) from None
        if self["broker"]:
            try:
                config = config.with_broker_url(self["broker"])
            except ConfigError as e:
                raise ConfigurationExit(str(e)) from None
        self.config = config
        try:
            config.workers.http_secret()  # an unreadable token file stops start-up here, naming the key
        except ConfigError as e:
            raise ConfigurationExit(str(e)) from None
        try:
            import_consumer_modules(config.workers.consumer_modules)
            check_queue_sections(config)
            self["queues"] = select_queues(config, self["queues"], self["all"])
        except WorkerDeclarationError as e:
            raise usage.UsageError(str(e)) from None
        except ConfigError as e:
            raise ConfigurationExit(str(e)) from None
        if not self["queues"]:
            raise usage.UsageError("no queue to consume: give --all or --queue NAME")


class ConfigurationExit(SystemExit):
    """A configuration error: one line naming the key on stderr, exit status 1.

    Not a ``UsageError``: twistd would print its whole usage text before the one line that matters.
    """

    def __init__(self, message: str) -> None:
        super().__init__(f"zqworkers: configuration: {message}")


def check_queue_sections(config: Config) -> None:
    """Every ``[queues.NAME]`` names a known queue (or a shard of one): a typo is an error, not a no-op."""
    known = set(known_queues())
    for name in config.queues:
        if name not in known and base_queue(name) not in known:
            raise ConfigError(f"[queues.{name}]: unknown queue {name!r} (known queues: {', '.join(sorted(known))})")


def select_queues(config: Config, names: Sequence[str], everything: bool) -> list[str]:
    """The queues to run: the named ones (checked), or every enabled one for --all.

    --all leaves out the queues whose consumer cannot run under ``config`` (those of
    Zulip mode without ``[zulip] database``); naming one is a ConfigError saying why.
    """
    if everything:
        names = get_active_worker_queues()
        if config.workers.include_test_queues:
            names = [*names, *get_active_worker_queues(only_test_queues=True)]
        return [n for n in names if config.queue(n).enabled and get_spec(n).unavailable(config) is None]
    for name in names:
        reason = get_spec(name).unavailable(config)  # an unknown name: WorkerDeclarationError listing the known ones
        if reason is not None:
            raise ConfigError(f"--queue {name}: {reason}")
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
    on_fatal: Callable[[], None] | None = None,
) -> WorkerService:
    """The whole service tree for ``queues``; ``broker`` defaults to a real AMQPBroker.

    ``reactor`` is the clock of every piece and what the clients connect with
    (time, TCP, name resolution); a running reactor (IReactorCore) is stopped when a
    worker fails to start.
    ``http_endpoint`` (default ``[workers] http``; "" for none) serves the dashboard,
    /metrics, /health and /ready.  ``sentry`` is the observer :func:`init_sentry` returned.
    ``on_fatal`` is called when a worker cannot start (default: stop the reactor).
    """
    if on_fatal is None:
        on_fatal = lambda: _stop(reactor)  # noqa: E731
    if broker is None:
        broker = AMQPBroker(reactor, config.broker, declarations=QueueDeclarations.from_config(config))
    specs = [get_spec(name) for name in queues]
    names = [consumed_queue(spec, worker_num) for spec in specs]
    stats = StatsObserver(reactor, config.paths.stats_dir)
    metrics = MetricsObserver(queues=names)
    readiness = ReadinessTracker(names, broker)
    observers: list[RunnerObserver] = [stats, metrics, readiness]
    if sentry is not None:
        observers.append(sentry)
    observer = FanOut(observers)
    publisher = Publisher(broker, timeout=config.broker.publish_timeout)
    resources = Resources(reactor, config, publisher)
    deadletters = DeadLetterer(broker, config.paths.error_dir, reactor, config.broker.publish_timeout, mask=mask_text)
    runners = []
    for spec, queue in zip(specs, names, strict=True):
        context = WorkerContext(queue=queue, clock=reactor, publisher=publisher, worker_num=worker_num)
        worker = spec.build(context, spec_settings(config, spec), resources)
        settings = RunnerSettings.resolve(spec.worker, config.queue(queue), config.broker.publish_timeout)
        runners.append(QueueRunner(worker, settings, broker, deadletters, reactor, observer))
    service = WorkerService(
        broker, runners, config.workers.drain_timeout, on_fatal=on_fatal, resources=resources, clock=reactor
    )
    resources.on_fatal = on_fatal
    if resources.built_zulip_database is not None:
        readiness.add_check("zulip_database", resources.built_zulip_database.is_available)
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
        token = config.workers.http_secret()
        dashboard = make_dashboard(
            reactor, broker, runners, metrics, token, config.broker.publish_timeout, reactor_lag=lambda: probe.lag
        )
        http = make_http_service(endpoint, reactor, metrics.registry, readiness, probe, dashboard.children)
        dashboard.sampler.setServiceParent(http)
        http.setServiceParent(service)
    return service


def _stop(reactor: object) -> None:
    """Stop the reactor (once it runs, if it is not running yet); a test's Clock is no reactor."""
    core = IReactorCore(reactor, None)
    if core is None:
        return
    if core.running:
        core.stop()
    else:
        # A worker that fails at once fails inside startService, before twistd runs the reactor.
        core.callWhenRunning(core.stop)


class ExitStatus:
    """The status the process ends with: twistd itself only knows 0 and a re-raised signal.

    :meth:`fail` records a non-zero status; once twistd has finished (pid file removed,
    logs flushed) an ``atexit`` hook ends the process with it, so that supervisor and
    systemd see a failed start as a failure.
    """

    def __init__(self, register: Callable[[Callable[[], None]], object] = atexit.register) -> None:
        self.code = 0
        self._register = register

    def fail(self, code: int = 1) -> None:
        if not self.code:
            self._register(self._exit)
        self.code = code

    def _exit(self) -> None:  # pragma: no cover - ends the process
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(Exception):
                stream.flush()
        os._exit(self.code)


EXIT_STATUS = ExitStatus()


def fatal(reactor: object, status: ExitStatus = EXIT_STATUS) -> None:
    """A worker could not start: end the process promptly with status 1."""
    status.fail(1)
    _stop(reactor)


class ListenGuard(MultiService):
    """The root service: an HTTP endpoint that cannot listen ends start-up with one line and status 1."""

    def __init__(self, service: IService, endpoint: str) -> None:
        super().__init__()
        self.endpoint = endpoint
        service.setServiceParent(self)

    def privilegedStartService(self) -> None:
        try:
            super().privilegedStartService()
        except CannotListenError as e:
            reason = e.socketError.strerror if isinstance(e.socketError, OSError) else e.socketError
            message = f"zqworkers: cannot listen on {self.endpoint!r} ([workers] http or --http): {reason}"
            raise SystemExit(message) from None


def check_http_endpoint(reactor: object, endpoint: str) -> None:
    """Parse a server endpoint string (nothing listens); SystemExit with one line when it is invalid."""
    if not endpoint:
        return
    try:
        serverFromString(reactor, endpoint)
    except Exception as e:  # noqa: BLE001 - the parsers raise ValueError, KeyError, TypeError, ...
        raise SystemExit(f"zqworkers: invalid HTTP endpoint {endpoint!r} ([workers] http or --http): {e}") from None


def makeService(options: Options) -> IService:
    from twisted.internet import reactor as global_reactor

    reactor = cast(IConnectingReactor, global_reactor)
    config = options.config
    assert config is not None
    register_config_secrets(config)
    bridge_stdlib_logging()
    endpoint = config.workers.http if options["http"] is None else options["http"]
    check_http_endpoint(reactor, endpoint)
    sentry = init_sentry(config.section("sentry", SentrySettings), options["worker-num"])
    service = build_service(
        reactor,
        config,
        options["queues"],
        options["worker-num"],
        http_endpoint=endpoint,
        sentry=sentry,
        on_fatal=lambda: fatal(reactor),
    )
    return ListenGuard(service, endpoint)
