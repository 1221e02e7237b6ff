"""Keep secrets out of log lines, error files and metric labels."""

from __future__ import annotations

import re
from typing import Any

SECRET_KEYS = re.compile(r"(pass(word)?|secret|token|api_?key|dsn|authorization|credential|salt)", re.IGNORECASE)
# The scheme is bounded (RFC 3986 schemes are short) so that a long run of letters costs linear time.
URL_PASSWORD = re.compile(
    r"(?P<scheme>[a-z][a-z0-9+.-]{0,30}://)(?P<user>[^:/@\s]*):(?P<password>[^@/\s]+)@", re.IGNORECASE
)
# ``token=...`` and the like in a query string or a form body.
QUERY_SECRET = re.compile(
    r"(?P<key>\b(?:access_?token|token|api_?key|apikey|password|passwd|secret|auth)=)(?P<value>[^&\s\"'<>]+)",
    re.IGNORECASE,
)
# ``"password": "..."`` in JSON (or a Python repr) that is not parsed: a malformed body, a
# message.  The value may be cut off at the end of the text (a body cut to an excerpt).
QUOTED_SECRET = re.compile(
    r"(?P<key>(?P<q>[\"'])[^\"'\s]*?(?:pass(?:word)?|passwd|secret|token|api_?key|dsn|authorization|credential)"
    r"[^\"'\s]*?(?P=q)\s*:\s*)"
    r"(?P<value>\"(?:[^\"\\]|\\.)*(?:\"|\\?$)|'(?:[^'\\]|\\.)*(?:'|\\?$)|-?[0-9][0-9.eE+-]*)",
    re.IGNORECASE,
)
MASK = "***"


def redact_event(value: Any) -> Any:
    """A copy of ``value`` with the values of secret-looking keys masked, and secrets in strings too."""
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
    """``text`` with secrets masked: URL passwords (``amqp://user:pw@host``), ``token=...``-style
    parameters, and the values of secret-looking keys in JSON text (``"api_key": "..."``)."""
    if ":" in text:
        text = URL_PASSWORD.sub(lambda m: f"{m['scheme']}{m['user']}:{MASK}@", text)
        text = QUOTED_SECRET.sub(_mask_quoted, text)
    if "=" in text:
        text = QUERY_SECRET.sub(lambda m: m["key"] + MASK, text)
    return text


def _mask_quoted(match: re.Match[str]) -> str:
    value = match["value"]
    quote = value[0] if value[0] in "\"'" else '"'
    return f"{match['key']}{quote}{MASK}{quote}"
