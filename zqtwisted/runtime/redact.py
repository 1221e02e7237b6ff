"""Keep secrets out of log lines, error files and metric labels."""

from __future__ import annotations

import re
from typing import Any

SECRET_KEYS = re.compile(r"(pass(word)?|secret|token|api_?key|dsn|authorization|credential)", re.IGNORECASE)
URL_PASSWORD = re.compile(r"(?P<scheme>[a-z][a-z0-9+.-]*://)(?P<user>[^:/@\s]*):(?P<password>[^@/\s]+)@", re.IGNORECASE)
MASK = "***"


def redact_event(value: Any) -> Any:
    """A copy of ``value`` with the values of secret-looking keys masked."""
    if isinstance(value, dict):
        return {
            k: (MASK if isinstance(k, str) and SECRET_KEYS.search(k) and v not in (None, "") else redact_event(v))
            for k, v in value.items()
        }
    if isinstance(value, list):
        return [redact_event(v) for v in value]
    if isinstance(value, str):
        return redact_text(value)
    return value


def redact_text(text: str) -> str:
    """``text`` with passwords in URLs (``amqp://user:pw@host``) masked."""
    return URL_PASSWORD.sub(lambda m: f"{m['scheme']}{m['user']}:{MASK}@", text)
