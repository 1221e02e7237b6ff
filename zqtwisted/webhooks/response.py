"""What a bot server's answer means, decided as Zulip decides it, without I/O.

A 2xx answer is a reply, no reply, or invalid; anything else is a failure
("Third party responded with {status}").  Zulip's ``process_success_response``
and each interface's ``process_success``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from zqtwisted.webhooks.payload import SLACK

INVALID_JSON = "Invalid JSON in response"
INVALID_FORMAT = "Invalid response format"


@dataclass(frozen=True)
class BotReply:
    """Post ``content`` (and ``widget_content``) where the message came from."""

    content: str
    widget_content: Any = None


@dataclass(frozen=True)
class NoReply:
    """The bot answered and wants nothing posted."""

    why: str


@dataclass(frozen=True)
class InvalidResponse:
    """A 2xx answer that cannot be understood; ``message`` is Zulip's text."""

    message: str
    text: str


@dataclass(frozen=True)
class HttpFailure:
    """A non-2xx answer."""

    status: int
    body: bytes

    @property
    def message(self) -> str:
        return f"Third party responded with {self.status}"


Outcome = BotReply | NoReply | InvalidResponse | HttpFailure


def classify_response(interface: str, status: int, body: bytes, content_type: str | None = None) -> Outcome:
    """What to do with a bot server's response."""
    if not 200 <= status <= 299:
        return HttpFailure(status, body)
    text = decode_text(body, content_type)
    if not text.strip():
        # Zulip itself fails an empty body as invalid JSON; zqtwisted treats it
        # as "no reply", like {"response_not_required": true}.
        return NoReply("empty body")
    try:
        data = json.loads(text)
    except ValueError:
        return InvalidResponse(INVALID_JSON, text)
    if data == "":
        # zulip_botserver before 2021-05 answered json.dumps("") for "no reply".
        return NoReply("empty string")
    if not isinstance(data, dict):
        return InvalidResponse(INVALID_FORMAT, text)
    reply = slack_success(data) if interface == SLACK else generic_success(data)
    if reply is None:
        return NoReply("response_not_required" if data.get("response_not_required") else "no content")
    if not reply.content.strip():
        return NoReply("empty content")
    return reply


def generic_success(data: dict[str, Any]) -> BotReply | None:
    """Zulip's GenericOutgoingWebhookService.process_success."""
    if data.get("response_not_required", False):
        return None
    if "response_string" in data:  # deprecated by Zulip, still honoured
        return BotReply(_as_text(data["response_string"]))
    if "content" in data:
        return BotReply(_as_text(data["content"]), data.get("widget_content"))
    return None


def slack_success(data: dict[str, Any]) -> BotReply | None:
    """Zulip's SlackOutgoingWebhookService.process_success."""
    if "text" in data and data["text"] is not None:
        return BotReply(_as_text(data["text"]))
    return None


def _as_text(value: Any) -> str:
    return "" if value is None else str(value)


def decode_text(body: bytes, content_type: str | None = None) -> str:
    """The body as text: the charset of the Content-Type, else UTF-8, never failing."""
    charset = "utf-8"
    for param in (content_type or "").split(";")[1:]:
        name, _, value = param.strip().partition("=")
        if name.lower() == "charset" and value:
            charset = value.strip('"').strip()
    try:
        return body.decode(charset, errors="replace")
    except LookupError:
        return body.decode("utf-8", errors="replace")
