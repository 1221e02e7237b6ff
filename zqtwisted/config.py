"""Configuration: one TOML file, parsed once into immutable values.

Every section is a frozen dataclass.  The core sections are declared here; the
table of every section (name -> dataclass) is an argument of :func:`parse_config`,
so that this module knows no feature: :mod:`zqtwisted.sections` holds the shipped
table.  Unknown keys, unknown sections and mistyped values stop start-up with a
:class:`ConfigError` naming the key.
"""

from __future__ import annotations

import dataclasses
import os
import tomllib
import types
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar
from urllib.parse import quote, urlsplit

from zqtwisted.config_values import AMQP_SHORT_MAX, ConfigError, build_dataclass, looks_secret, read_secret, redact_url
from zqtwisted.config_values import at_most as _at_most
from zqtwisted.config_values import positive as _positive
from zqtwisted.runtime.shards import base_queue

T = TypeVar("T")

DEFAULT_BROKER_URL = "amqp://guest:guest@127.0.0.1:5672/%2F"

# The dashboard's token must resist guessing.
MIN_TOKEN_LENGTH = 16

# RabbitMQ closes a channel holding a delivery unacked past consumer_timeout
# (30 minutes by default); retry waits must stay far below it.
RABBITMQ_CONSUMER_TIMEOUT = 1800.0


# RabbitMQ's queue types that zqtwisted declares ([workers] / [queues.NAME] queue_type).
CLASSIC, QUORUM = "classic", "quorum"
QUEUE_TYPES = (CLASSIC, QUORUM)
FAILOVER_STRATEGIES = ("shuffle", "round-robin")


@dataclass(frozen=True)
class BrokerSettings:
    url: str = DEFAULT_BROKER_URL
    # The nodes of a RabbitMQ cluster; when given, it replaces url.
    urls: tuple[str, ...] = ()
    # Order of the nodes tried: "shuffle" (each process its own order, as Kombu's), or "round-robin" (as listed).
    failover_strategy: str = "shuffle"
    heartbeat: int = 30
    connect_timeout: float = 10.0
    reconnect_initial_delay: float = 0.5
    reconnect_max_delay: float = 30.0
    # How long a publish made while disconnected waits for a connection.
    publish_timeout: float = 30.0
    # A file holding the broker password; it replaces the password in the URL.
    password_file: str = ""

    def node_urls(self) -> tuple[str, ...]:
        """The broker's nodes: ``urls``, or the one ``url``."""
        return self.urls or (self.url,)

    def connection_url(self, url: str | None = None) -> str:
        """The URL to connect with (``url``, default ``self.url``), with the password of ``password_file`` if named."""
        url = self.url if url is None else url
        if not self.password_file:
            return url
        password = quote(read_secret("", self.password_file, "broker.password"), safe="")
        parts = urlsplit(url)
        user = parts.username or "guest"
        host = parts.netloc.rsplit("@", 1)[-1]
        return parts._replace(netloc=f"{user}:{password}@{host}").geturl()

    def validate(self, path: str) -> None:
        for key, url in [("url", self.url), *(("urls", u) for u in self.urls)]:
            parts = urlsplit(url)
            if parts.scheme not in ("amqp", "amqps") or not parts.hostname:
                raise ConfigError(f"{path}.{key}: expected amqp://... or amqps://..., got {redact_url(url)!r}")
            port = parts.netloc.rpartition("@")[2].rpartition("]")[2].partition(":")[2]
            if port and not (port.isdigit() and int(port) <= AMQP_SHORT_MAX):
                raise ConfigError(f"{path}.{key}: the port is not a number in {redact_url(url)!r}")
        if len(set(self.urls)) != len(self.urls):
            raise ConfigError(f"{path}.urls: a node is listed twice")
        if self.failover_strategy not in FAILOVER_STRATEGIES:
            raise ConfigError(f"{path}.failover_strategy: expected one of {', '.join(FAILOVER_STRATEGIES)}")
        _at_most(self.heartbeat, AMQP_SHORT_MAX, f"{path}.heartbeat")  # 0: no heartbeats, as Zulip runs them
        for name in ("connect_timeout", "reconnect_initial_delay", "reconnect_max_delay", "publish_timeout"):
            _positive(getattr(self, name), f"{path}.{name}", allow_zero=False)


@dataclass(frozen=True)
class PathSettings:
    stats_dir: str = "var/stats"
    error_dir: str = "var/errors"
    test_queue_file: str = "var/test_queue.jsonl"


@dataclass(frozen=True)
class WorkerSettings:
    # Modules to import at start so that their @assign_queue workers register.
    consumer_modules: tuple[str, ...] = ()
    # Whether --all also runs the test queues (test, noop, noop_batch).
    include_test_queues: bool = True
    # RabbitMQ queue type of every queue without its own ([queues.NAME] queue_type): "classic" or "quorum".
    queue_type: str = CLASSIC
    # Drain timeout on SIGTERM, as supervisor's stopwaitsecs.
    drain_timeout: float = 30.0
    # Warn when the reactor is blocked longer than this.
    blocked_reactor_seconds: float = 1.0
    # Twisted endpoint for the dashboard, /metrics, /health and /ready; "" turns it off.
    http: str = "tcp:9191:interface=127.0.0.1"
    # The token the dashboard's actions (replay, purge) require; none: the dashboard is read-only.
    http_token: str = ""
    http_token_file: str = ""

    def validate(self, path: str) -> None:
        _queue_type(self.queue_type, f"{path}.queue_type")
        _positive(self.drain_timeout, f"{path}.drain_timeout")
        _positive(self.blocked_reactor_seconds, f"{path}.blocked_reactor_seconds", allow_zero=False)
        if self.http_token and len(self.http_token) < MIN_TOKEN_LENGTH:
            raise ConfigError(f"{path}.http_token: too short (at least {MIN_TOKEN_LENGTH} characters)")

    def http_secret(self) -> str | None:
        """The dashboard's token (from ``http_token_file`` when one is named), or None for a read-only dashboard."""
        token = read_secret(self.http_token, self.http_token_file, "workers.http_token")
        if token and len(token) < MIN_TOKEN_LENGTH:
            raise ConfigError(f"workers.http_token: too short (at least {MIN_TOKEN_LENGTH} characters)")
        return token or None


@dataclass(frozen=True)
class ConsumeLimit:
    """``[queues.NAME] max_consume_seconds``: seconds per event, or ``None`` for no limit.

    In the file: a number, or ``"none"``; absent (or ``"default"``) keeps the worker
    class's own limit, which :class:`QueueSettings` spells ``max_consume_seconds = None``.
    """

    seconds: float | None

    config_description = 'a number or "none"'

    @classmethod
    def from_config(cls, value: Any) -> ConsumeLimit | None:
        """Parse a TOML or environment value; ``ValueError`` when it is neither a number nor "none"."""
        if value == "none":
            return cls(None)
        if value == "default":
            return None
        if isinstance(value, bool) or not isinstance(value, (int, float, str)):
            raise ValueError(value)
        return cls(float(value))


@dataclass(frozen=True)
class QueueSettings:
    """Per-queue settings.  ``None`` means "the worker class's own default"."""

    enabled: bool = True
    prefetch: int | None = None
    concurrency: int | None = None
    # Seconds per event (times the batch length for batches); "none" disables the
    # timeout; absent keeps the worker class's own value.
    max_consume_seconds: ConsumeLimit | None = None
    max_retries: int | None = None
    batch_size: int | None = None
    sleep_delay: float | None = None
    retry_base: float = 1.0
    retry_cap: float = 60.0
    # Treat unexpected exceptions as transient (retried) instead of permanent.
    retry_unexpected: bool = False
    max_body_bytes: int = 1024 * 1024
    # "classic" or "quorum"; None: [workers] queue_type.
    queue_type: str | None = None
    # Quorum queues: deliveries of one message before the broker dead-letters it to {queue}.failed.
    delivery_limit: int | None = None

    def validate(self, path: str) -> None:
        if self.queue_type is not None:
            _queue_type(self.queue_type, f"{path}.queue_type")
        if self.delivery_limit is not None:
            _positive(self.delivery_limit, f"{path}.delivery_limit", allow_zero=False)
        for name in ("prefetch", "concurrency", "batch_size", "max_body_bytes"):
            value = getattr(self, name)
            if value is not None:
                _positive(value, f"{path}.{name}", allow_zero=False)
        for name in ("prefetch", "batch_size"):  # AMQP's prefetch count is 16-bit; a batch's prefetch >= its size
            _at_most(getattr(self, name) or 0, AMQP_SHORT_MAX, f"{path}.{name}")
        if self.max_retries is not None:
            _positive(self.max_retries, f"{path}.max_retries")
        if self.sleep_delay is not None:
            _positive(self.sleep_delay, f"{path}.sleep_delay")
        limit = self.max_consume_seconds
        if limit is not None and limit.seconds is not None:
            _positive(limit.seconds, f"{path}.max_consume_seconds", allow_zero=False)
        _positive(self.retry_base, f"{path}.retry_base", allow_zero=False)
        _positive(self.retry_cap, f"{path}.retry_cap", allow_zero=False)
        if self.retry_cap < self.retry_base:
            raise ConfigError(f"{path}.retry_cap: must be >= retry_base ({self.retry_base})")
        if self.retry_cap > RABBITMQ_CONSUMER_TIMEOUT / 4:
            raise ConfigError(
                f"{path}.retry_cap: {self.retry_cap}s comes too near RabbitMQ's consumer_timeout "
                f"({RABBITMQ_CONSUMER_TIMEOUT:.0f}s); keep it at most {RABBITMQ_CONSUMER_TIMEOUT / 4:.0f}s"
            )


@dataclass(frozen=True)
class Config:
    """The whole configuration, immutable."""

    broker: BrokerSettings = field(default_factory=BrokerSettings)
    paths: PathSettings = field(default_factory=PathSettings)
    workers: WorkerSettings = field(default_factory=WorkerSettings)
    queues: Mapping[str, QueueSettings] = field(default_factory=lambda: types.MappingProxyType({}))
    sections: Mapping[str, Any] = field(default_factory=lambda: types.MappingProxyType({}))
    source: str = "<defaults>"

    def queue(self, name: str) -> QueueSettings:
        """The settings of queue ``name`` (a shard ``x_shard2`` falls back to ``x``)."""
        if name in self.queues:
            return self.queues[name]
        return self.queues.get(base_queue(name), _DEFAULT_QUEUE)

    def section(self, name: str, cls: type[T]) -> T:
        """The parsed section ``[name]``, or its defaults when the file has none."""
        value = self.sections.get(name)
        if value is None:
            value = cls()
        if not isinstance(value, cls):
            raise TypeError(f"section [{name}] is a {type(value).__name__}, not {cls.__name__}")
        return value

    def replace(self, **changes: Any) -> Config:
        return dataclasses.replace(self, **changes)

    def with_broker_url(self, url: str) -> Config:
        """This configuration with another broker URL (``--broker``: one node, replacing ``urls``), validated."""
        broker = dataclasses.replace(self.broker, url=url, urls=())
        broker.validate("--broker")
        return dataclasses.replace(self, broker=broker)


_DEFAULT_QUEUE = QueueSettings()

# The sections every configuration has; a table given to parse_config adds the others.
CORE_SECTIONS: Mapping[str, type[Any]] = types.MappingProxyType(
    {"broker": BrokerSettings, "paths": PathSettings, "workers": WorkerSettings}
)

# Environment variables that override a key, for what differs per deployment.
ENV_OVERRIDES: Mapping[str, tuple[str, str]] = {
    "ZQ_BROKER_URL": ("broker", "url"),
    "ZQ_BROKER_URLS": ("broker", "urls"),
    "ZQ_STATS_DIR": ("paths", "stats_dir"),
    "ZQ_ERROR_DIR": ("paths", "error_dir"),
    "ZQ_TEST_QUEUE_FILE": ("paths", "test_queue_file"),
    "ZQ_HTTP": ("workers", "http"),
}


def load_config(
    path: str | None = None,
    environ: Mapping[str, str] | None = None,
    sections: Mapping[str, type[Any]] = CORE_SECTIONS,
) -> Config:
    """Read the TOML file at ``path`` (or ``$ZQ_CONFIG``), apply environment overrides.

    ``sections`` is the table of known sections (:data:`zqtwisted.sections.SECTIONS`).
    """
    env = os.environ if environ is None else environ
    path = path or env.get("ZQ_CONFIG") or None
    raw: dict[str, Any] = {}
    if path is not None:
        try:
            with open(path, "rb") as f:
                raw = tomllib.load(f)
        except FileNotFoundError:
            raise ConfigError(f"config file not found: {path}") from None
        except OSError as e:
            raise ConfigError(f"cannot read the config file {path}: {e.strerror or e}") from None
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
            raise ConfigError(f"{path}: invalid TOML: {e}") from None
    if env.get("ZQ_BROKER_URL") and not env.get("ZQ_BROKER_URLS"):
        broker_raw = raw.get("broker")
        if isinstance(broker_raw, dict):
            broker_raw.pop("urls", None)  # the environment names the one node
    for var, (section, key) in ENV_OVERRIDES.items():
        if env.get(var):
            raw.setdefault(section, {})[key] = env[var]
    return check_secret_files(parse_config(raw, sections, source=path or "<defaults>"))


def check_secret_files(config: Config) -> Config:
    """Every secret ``*_file`` named (``password_file``, ``dsn_file``...) can be read: one line at start if not."""
    for name, section in [("broker", config.broker), ("workers", config.workers), *config.sections.items()]:
        for f in dataclasses.fields(section) if dataclasses.is_dataclass(section) else ():
            value = getattr(section, f.name)
            if f.name.endswith("_file") and looks_secret(f.name) and isinstance(value, str) and value:
                read_secret("", value, f"{name}.{f.name.removesuffix('_file')}")
    return config


def parse_config(
    raw: Mapping[str, Any], sections: Mapping[str, type[Any]] = CORE_SECTIONS, source: str = "<mapping>"
) -> Config:
    """Build a :class:`Config` from a parsed TOML mapping, validating every key.

    ``sections`` maps each known section name to its frozen dataclass; the core
    sections (``broker``, ``paths``, ``workers``) are always known.
    """
    table = {**CORE_SECTIONS, **sections}
    core: dict[str, Any] = {}
    extra: dict[str, Any] = {}
    for name, value in raw.items():
        if name == "queues":
            continue
        if name not in table:
            raise ConfigError(f"unknown section [{name}] (known: {', '.join(sorted([*table, 'queues']))})")
        section = build_dataclass(table[name], value, name)
        if name in CORE_SECTIONS:
            core[name] = section
        else:
            extra[name] = section
    queues_raw = raw.get("queues", {})
    if not isinstance(queues_raw, Mapping):
        raise ConfigError("queues: expected a table of [queues.NAME] tables")
    queues = {qname: build_dataclass(QueueSettings, qvalue, f"queues.{qname}") for qname, qvalue in queues_raw.items()}
    _check_queue_types(core.get("workers", WorkerSettings()), queues)
    return Config(
        **core,
        queues=types.MappingProxyType(queues),
        sections=types.MappingProxyType(extra),
        source=source,
    )


def _queue_type(value: str, path: str) -> None:
    if value not in QUEUE_TYPES:
        raise ConfigError(f"{path}: expected one of {', '.join(QUEUE_TYPES)}, got {value!r}")


def _check_queue_types(workers: WorkerSettings, queues: Mapping[str, QueueSettings]) -> None:
    """A delivery limit needs a quorum queue (classic queues have none)."""
    for name, settings in queues.items():
        queue_type = settings.queue_type or workers.queue_type
        if settings.delivery_limit is not None and queue_type != QUORUM:
            raise ConfigError(
                f'queues.{name}.delivery_limit: only quorum queues have one; set queue_type = "quorum" '
                f"(this queue is {queue_type})"
            )


__all__ = [
    "AMQP_SHORT_MAX",
    "ConfigError",
    "build_dataclass",
    "read_secret",
    "redact_url",
]
