"""The ``[outgoing_webhooks]`` configuration section."""

from __future__ import annotations

import ipaddress
import json
import tomllib
import types
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from zqtwisted.config import ConfigError

MIB = 1024 * 1024
REPLY_SINKS = ("queue", "rest")
DEFAULT_REPLY_QUEUE = "outgoing_webhook_responses"


def _no_keys() -> Mapping[str, str]:
    return types.MappingProxyType({})


@dataclass(frozen=True)
class OutgoingWebhookSettings:
    """How bot webhooks are called and where their replies go.

    ``timeout`` bounds each request as a whole: connecting, sending, and reading
    the body.  ``allow_networks`` lists CIDRs that the SSRF guard lets through
    although they are private, loopback, link-local, multicast or reserved.
    """

    timeout: float = 10.0
    max_response_bytes: int = MIB
    per_host_concurrency: int = 25
    allow_networks: tuple[str, ...] = ()
    follow_redirects: bool = False
    # Idle persistent connections are closed after this many seconds.
    idle_connection_timeout: float = 30.0
    # The version in ``User-Agent: ZulipOutgoingWebhook/{version}``; empty means
    # zqtwisted's own version.  Set it to the Zulip server's version to match it.
    user_agent_version: str = ""
    # "queue": publish reply events to reply_queue; "rest": post through Zulip's API.
    reply_sink: str = "queue"
    reply_queue: str = DEFAULT_REPLY_QUEUE
    # Zulip's base URL for the REST sink, e.g. "https://chat.example.com".
    rest_site: str = ""
    # Bot email -> API key, inline or (preferably) in a TOML/JSON file.
    rest_bot_api_keys: Mapping[str, str] = field(default_factory=_no_keys)
    rest_bot_api_keys_file: str = ""
    rest_timeout: float = 10.0
    # The realm, for message links in bot-owner notices and Slack's team_id /
    # team_domain, when the event does not carry realm_url / realm_id.
    realm_url: str = ""
    realm_id: int = 0

    def validate(self, path: str) -> None:
        for name in ("timeout", "rest_timeout", "idle_connection_timeout"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"{path}.{name}: must be > 0, got {getattr(self, name)}")
        for name in ("max_response_bytes", "per_host_concurrency"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{path}.{name}: must be >= 1, got {getattr(self, name)}")
        for cidr in self.allow_networks:
            try:
                ipaddress.ip_network(cidr, strict=False)
            except ValueError:
                raise ConfigError(f"{path}.allow_networks: not a network: {cidr!r}") from None
        if self.reply_sink not in REPLY_SINKS:
            raise ConfigError(f"{path}.reply_sink: expected one of {', '.join(REPLY_SINKS)}, got {self.reply_sink!r}")
        if not self.reply_queue:
            raise ConfigError(f"{path}.reply_queue: must not be empty")
        for name in ("rest_site", "realm_url"):
            value = getattr(self, name)
            if value and not _is_http_url(value):
                raise ConfigError(f"{path}.{name}: expected an http(s):// URL, got {value!r}")
        if self.reply_sink == "rest" and not self.rest_site:
            raise ConfigError(f'{path}.rest_site: required when reply_sink = "rest"')
        for email, key in self.rest_bot_api_keys.items():
            if not isinstance(key, str) or not key:
                raise ConfigError(f"{path}.rest_bot_api_keys: the key of {email!r} must be a non-empty string")
        if self.rest_bot_api_keys_file:
            self.api_keys(path)

    def api_keys(self, path: str = "outgoing_webhooks") -> Mapping[str, str]:
        """Bot email -> API key: the inline table merged with the keys file."""
        keys = dict(self.rest_bot_api_keys)
        if self.rest_bot_api_keys_file:
            keys.update(read_api_keys_file(self.rest_bot_api_keys_file, f"{path}.rest_bot_api_keys_file"))
        return types.MappingProxyType(keys)

    @property
    def site(self) -> str:
        return self.rest_site.rstrip("/")


def read_api_keys_file(filename: str, path: str) -> dict[str, str]:
    """Read ``"bot@example.com" = "key"`` lines (TOML) or a JSON object of the same."""
    try:
        text = Path(filename).read_text(encoding="utf-8")
    except OSError as e:
        raise ConfigError(f"{path}: cannot read {filename}: {e.strerror}") from None
    try:
        data = json.loads(text) if text.lstrip().startswith("{") else tomllib.loads(text)
    except (ValueError, tomllib.TOMLDecodeError):
        # The error message could quote a key: say only where the problem is.
        raise ConfigError(f"{path}: {filename} is neither TOML nor JSON") from None
    if not isinstance(data, dict) or not all(isinstance(k, str) and isinstance(v, str) and v for k, v in data.items()):
        raise ConfigError(f"{path}: {filename} must map bot emails to non-empty API key strings")
    return data


def _is_http_url(value: str) -> bool:
    parts = urlsplit(value)
    return parts.scheme in ("http", "https") and bool(parts.hostname)
