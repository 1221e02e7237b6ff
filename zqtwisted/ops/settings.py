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
    """``[check] limits = { queue = [warning, critical] }``: seconds to clear the backlog."""

    limits: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))

    def validate(self, path: str) -> None:
        for queue, value in self.limits.items():
            if (
                not isinstance(value, (list, tuple))
                or len(value) != 2
                or not all(isinstance(v, (int, float)) and not isinstance(v, bool) and v > 0 for v in value)
            ):
                raise ConfigError(f"{path}.limits.{queue}: expected [warning, critical] in seconds, got {value!r}")
            if value[0] > value[1]:
                raise ConfigError(f"{path}.limits.{queue}: warning {value[0]} is above critical {value[1]}")

    def as_limits(self) -> Mapping[str, tuple[float, float]]:
        return {q: (float(v[0]), float(v[1])) for q, v in self.limits.items()}
