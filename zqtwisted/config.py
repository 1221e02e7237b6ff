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
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import quote, urlsplit

from zqtwisted.runtime.shards import base_queue

T = TypeVar("T")

DEFAULT_BROKER_URL = "amqp://guest:guest@127.0.0.1:5672/%2F"

# RabbitMQ closes a channel holding a delivery unacked past consumer_timeout
# (30 minutes by default); retry waits must stay far below it.
RABBITMQ_CONSUMER_TIMEOUT = 1800.0


class ConfigError(Exception):
    """The configuration is invalid; the message names the offending key."""


@dataclass(frozen=True)
class BrokerSettings:
    url: str = DEFAULT_BROKER_URL
    heartbeat: int = 30
    connect_timeout: float = 10.0
    reconnect_initial_delay: float = 0.5
    reconnect_max_delay: float = 30.0
    # How long a publish made while disconnected waits for a connection.
    publish_timeout: float = 30.0
    # A file holding the broker password; it replaces the password in the URL.
    password_file: str = ""

    def connection_url(self) -> str:
        """The URL to connect with: the password from ``password_file`` when one is named."""
        if not self.password_file:
            return self.url
        password = quote(read_secret("", self.password_file, "broker.password"), safe="")
        parts = urlsplit(self.url)
        user = parts.username or "guest"
        host = parts.netloc.rsplit("@", 1)[-1]
        return parts._replace(netloc=f"{user}:{password}@{host}").geturl()

    def validate(self, path: str) -> None:
        parts = urlsplit(self.url)
        if parts.scheme not in ("amqp", "amqps") or not parts.hostname:
            raise ConfigError(f"{path}.url: expected amqp://... or amqps://..., got {redact_url(self.url)!r}")
        _positive(self.heartbeat, f"{path}.heartbeat", allow_zero=False)
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
    # Drain timeout on SIGTERM, as supervisor's stopwaitsecs.
    drain_timeout: float = 30.0
    # Warn when the reactor is blocked longer than this.
    blocked_reactor_seconds: float = 1.0
    # Twisted endpoint for /metrics, /health and /ready; "" turns it off.
    http: str = "tcp:9191:interface=127.0.0.1"

    def validate(self, path: str) -> None:
        _positive(self.drain_timeout, f"{path}.drain_timeout")
        _positive(self.blocked_reactor_seconds, f"{path}.blocked_reactor_seconds", allow_zero=False)


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

    def validate(self, path: str) -> None:
        for name in ("prefetch", "concurrency", "batch_size", "max_body_bytes"):
            value = getattr(self, name)
            if value is not None:
                _positive(value, f"{path}.{name}", allow_zero=False)
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
        """This configuration with another broker URL (``--broker``), validated."""
        broker = dataclasses.replace(self.broker, url=url)
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
        except tomllib.TOMLDecodeError as e:
            raise ConfigError(f"{path}: invalid TOML: {e}") from None
    for var, (section, key) in ENV_OVERRIDES.items():
        if env.get(var):
            raw.setdefault(section, {})[key] = env[var]
    return parse_config(raw, sections, source=path or "<defaults>")


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
    return Config(
        **core,
        queues=types.MappingProxyType(queues),
        sections=types.MappingProxyType(extra),
        source=source,
    )


def build_dataclass(cls: type[T], value: Any, path: str) -> T:
    """Build the frozen dataclass ``cls`` from a TOML table, checking names and types."""
    if not isinstance(value, Mapping):
        raise ConfigError(f"{path}: expected a table, got {type(value).__name__}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    kwargs: dict[str, Any] = {}
    for key, item in value.items():
        if key not in fields:
            raise ConfigError(f"unknown key {path}.{key} (known: {', '.join(sorted(fields))})")
        kwargs[key] = _coerce(item, hints[key], f"{path}.{key}")
    try:
        obj = cls(**kwargs)
    except (TypeError, ValueError) as e:
        raise ConfigError(f"{path}: {e}") from None
    validate = getattr(obj, "validate", None)
    if validate is not None:
        validate(path)
    return obj


def _coerce(value: Any, hint: Any, path: str) -> Any:
    """Check ``value`` against the annotation ``hint`` (environment strings are converted).

    A value type (a class with ``from_config``, such as :class:`ConsumeLimit`) parses
    its own values, ``"none"`` included.
    """
    options = typing.get_args(hint) if _is_union(hint) else (hint,)
    value_types = [o for o in options if hasattr(o, "from_config")]
    for option in value_types:
        try:
            return option.from_config(value)
        except (TypeError, ValueError):
            pass
    if value_types:
        options = tuple(value_types)
    elif value == "none" and type(None) in options:
        return None
    for option in options:
        ok, converted = _try_type(value, option)
        if ok:
            return converted
    names = " or ".join(_type_name(o) for o in options)
    shown = "***" if _looks_secret(path) else repr(value)
    raise ConfigError(f"{path}: expected {names}, got {shown}")


def _try_type(value: Any, option: Any) -> tuple[bool, Any]:
    origin = typing.get_origin(option)
    if option is type(None):
        return False, None
    if option is bool:
        if isinstance(value, bool):
            return True, value
        if isinstance(value, str) and value.lower() in ("true", "false", "1", "0", "yes", "no"):
            return True, value.lower() in ("true", "1", "yes")
        return False, None
    if option is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return True, value
        if isinstance(value, str) and value.strip().lstrip("-").isdigit():
            return True, int(value)
        return False, None
    if option is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return True, float(value)
        if isinstance(value, str):
            try:
                return True, float(value)
            except ValueError:
                return False, None
        return False, None
    if option is str:
        return isinstance(value, str), value
    if origin in (tuple, list):
        (item_type, *_rest) = typing.get_args(option) or (Any,)
        if isinstance(value, str):
            value = [v.strip() for v in value.split(",") if v.strip()]
        if not isinstance(value, list):
            return False, None
        items = []
        for item in value:
            ok, converted = _try_type(item, item_type) if item_type is not Any else (True, item)
            if not ok:
                return False, None
            items.append(converted)
        return True, tuple(items)
    if origin in (dict, Mapping) or option in (dict, Mapping):
        return isinstance(value, Mapping), types.MappingProxyType(dict(value)) if isinstance(value, Mapping) else None
    if option is Any:
        return True, value
    return False, None


def _is_union(hint: Any) -> bool:
    return typing.get_origin(hint) in (typing.Union, types.UnionType)


def _type_name(option: Any) -> str:
    if option is type(None):
        return '"none"'
    if hasattr(option, "config_description"):
        return str(option.config_description)
    origin = typing.get_origin(option)
    if origin is not None:
        return f"a list of {_type_name(typing.get_args(option)[0])}" if origin in (tuple, list) else "a table"
    return {bool: "true/false", int: "an integer", float: "a number", str: "a string"}.get(option, str(option))


def _positive(value: float, path: str, allow_zero: bool = True) -> None:
    if value < 0 or (value == 0 and not allow_zero):
        raise ConfigError(f"{path}: must be {'>= 0' if allow_zero else '> 0'}, got {value}")


def _looks_secret(path: str) -> bool:
    return any(word in path for word in ("password", "api_key", "token", "secret", "dsn"))


def redact_url(url: str) -> str:
    """``url`` with any password replaced by ``***``, safe to log."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return parts._replace(netloc=netloc).geturl()


def read_secret(value: str, file_value: str, path: str) -> str:
    """A secret given inline or, preferably, in a file the config names."""
    if file_value:
        try:
            return Path(file_value).read_text().strip()
        except OSError as e:
            raise ConfigError(f"{path}_file: cannot read {file_value}: {e.strerror}") from None
    return value
