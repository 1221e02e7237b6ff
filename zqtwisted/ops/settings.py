"""The ``[sentry]`` and ``[check]`` sections: plain values, without sentry-sdk or check logic.

Kept apart from :mod:`zqtwisted.ops.sentry` and :mod:`zqtwisted.ops.check` so that
the table of sections (:mod:`zqtwisted.sections`) imports no more than settings.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any
from urllib.parse import urlsplit

from zqtwisted.config import ConfigError, read_secret

DEFAULT_MAX_EVENT_CONTEXT_BYTES = 16 * 1024


@dataclass(frozen=True)
class SentrySettings:
    dsn: str = ""
    dsn_file: str = ""
    environment: str = "production"
    traces_sample_rate: float = 0.0
    max_event_context_bytes: int = DEFAULT_MAX_EVENT_CONTEXT_BYTES

    def validate(self, path: str) -> None:
        if self.dsn and self.dsn_file:
            raise ConfigError(f"{path}.dsn: give either dsn or dsn_file, not both")
        if self.dsn and not looks_like_dsn(self.dsn):
            raise ConfigError(f"{path}.dsn: expected https://KEY@HOST/PROJECT")
        if not 0.0 <= self.traces_sample_rate <= 1.0:
            raise ConfigError(f"{path}.traces_sample_rate: must be between 0 and 1, got {self.traces_sample_rate}")
        if self.max_event_context_bytes <= 0:
            raise ConfigError(f"{path}.max_event_context_bytes: must be > 0, got {self.max_event_context_bytes}")

    def resolve_dsn(self, path: str = "sentry") -> str:
        dsn = read_secret(self.dsn, self.dsn_file, f"{path}.dsn").strip()
        if dsn and not looks_like_dsn(dsn):
            raise ConfigError(f"{path}.dsn_file: the file does not hold a DSN (https://KEY@HOST/PROJECT)")
        return dsn


def looks_like_dsn(dsn: str) -> bool:
    parts = urlsplit(dsn)
    return parts.scheme in ("http", "https") and bool(parts.hostname) and bool(parts.username)


@dataclass(frozen=True)
class CheckSettings:
    """``[check]``: limits of ``zqctl check``, and where it reads the queues from.

    ``limits = { queue = [warning, critical] }``: seconds to clear the backlog;
    ``stuck_seconds``: age of a stats file that makes a backlogged queue "stuck" (Zulip's 180);
    ``failed_warning`` / ``failed_critical`` / ``failed_limits``: dead letters per ``.failed`` queue
    (``zqctl check --failed``); ``rabbitmqctl``, or ``management_url`` (+ user, password) for
    RabbitMQ's management API; ``timeout`` of one read.
    """

    limits: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))
    stuck_seconds: float = 180.0
    failed_warning: int = 0
    failed_critical: int = 100
    failed_limits: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))
    rabbitmqctl: str = "rabbitmqctl"
    management_url: str = ""
    management_user: str = ""
    management_password: str = ""
    management_password_file: str = ""
    timeout: float = 30.0

    def validate(self, path: str) -> None:
        for queue, value in self.limits.items():
            _pair(value, f"{path}.limits.{queue}", "seconds", float)
        for queue, value in self.failed_limits.items():
            _pair(value, f"{path}.failed_limits.{queue}", "dead letters", int)
        _pair([self.failed_warning, self.failed_critical], f"{path}.failed_warning", "dead letters", int)
        if self.stuck_seconds <= 0:
            raise ConfigError(f"{path}.stuck_seconds: must be > 0, got {self.stuck_seconds}")
        if self.timeout <= 0:
            raise ConfigError(f"{path}.timeout: must be > 0, got {self.timeout}")
        if not self.rabbitmqctl:
            raise ConfigError(f"{path}.rabbitmqctl: must name the rabbitmqctl command")
        if self.management_url:
            parts = urlsplit(self.management_url)
            if parts.scheme not in ("http", "https") or not parts.hostname:
                raise ConfigError(f"{path}.management_url: expected http(s)://HOST:15672, got {self.management_url!r}")
        if self.management_password and self.management_password_file:
            raise ConfigError(f"{path}.management_password_file: give management_password or its file, not both")

    def as_limits(self) -> Mapping[str, tuple[float, float]]:
        return {q: (float(v[0]), float(v[1])) for q, v in self.limits.items()}

    def failed_limits_for(self, queue: str) -> tuple[int, int]:
        """(warning, critical) dead letters of ``queue`` (its ``.failed`` queue): above them, a problem."""
        value = self.failed_limits.get(queue)
        return (int(value[0]), int(value[1])) if value is not None else (self.failed_warning, self.failed_critical)


def _pair(value: Any, path: str, unit: str, kind: type) -> None:
    """``[warning, critical]``: two numbers (``kind``), warning <= critical; seconds must be > 0."""
    numbers = isinstance(value, (list, tuple)) and len(value) == 2
    numbers = numbers and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value)
    if numbers and kind is int:
        numbers = all(isinstance(v, int) and v >= 0 for v in value)
    elif numbers:
        numbers = all(v > 0 for v in value)
    if not numbers:
        raise ConfigError(f"{path}: expected [warning, critical] in {unit}, got {value!r}")
    if value[0] > value[1]:
        raise ConfigError(f"{path}: warning {value[0]} is above critical {value[1]}")
