"""The ``[push]`` configuration section.

::

    [push]
    backend = "bouncer"         # "log" (the default without bouncer_url) or "bouncer"
    bouncer_url = "https://push.zulipchat.com"
    server_uuid = "6cde5f7a-1f7e-4978-9716-49f69ebfc9fe"
    api_key_file = "/etc/zqtwisted/push-api-key"
    timeout = 15                # seconds for the whole request (connect, send, response, body)
    shards = 1                  # MOBILE_NOTIFICATIONS_SHARDS, for the publisher helper
    realm_url = "https://chat.example.com"   # defaults for events that carry no realm
    realm_name = "Example"
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import urlsplit

from zqtwisted.config import ConfigError, read_secret

BACKENDS = ("log", "bouncer")


@dataclass(frozen=True)
class PushSettings:
    """How push notifications leave: through Zulip's push bouncer, or into the log.

    ``backend = ""`` means "bouncer" when ``bouncer_url`` is set, else "log".
    """

    backend: str = ""
    # Zulip's PUSH_NOTIFICATION_BOUNCER_URL; the request goes to
    # {bouncer_url}/api/v1/remotes/push/notify (any path of bouncer_url is replaced).
    bouncer_url: str = ""
    # Zulip's ZULIP_ORG_ID and ZULIP_ORG_KEY: HTTP basic auth of this server.
    server_uuid: str = ""
    api_key: str = ""
    api_key_file: str = ""
    # Deadline of one request to the bouncer, all included (Zulip: 15 s).
    timeout: float = 15.0
    # Zulip's MOBILE_NOTIFICATIONS_SHARDS: how many shard queues the publisher
    # spreads events over (1: no sharding, one queue).
    shards: int = 1
    # Connections kept to the bouncer at most (requests beyond wait for one, within
    # their deadline).  Keep it >= the queue's concurrency.
    max_connections: int = 100
    # Idle persistent connections are closed after this many seconds.
    idle_connection_timeout: float = 30.0
    # The version in ``User-Agent: ZulipServer/{version}`` (the bouncer records it);
    # "" = zqtwisted's own version.  Set it to the Zulip server's version.
    user_agent_version: str = ""
    # Defaults for what an event may carry itself (one-realm deployments):
    # the realm's URL, name, id and UUID, and the "server" field of payloads
    # (Zulip's EXTERNAL_HOST; "" = the host of the realm URL).
    realm_url: str = ""
    realm_name: str = ""
    realm_id: int = 0
    realm_uuid: str = ""
    server: str = ""
    # Zulip's PUSH_NOTIFICATION_REDACT_CONTENT: send "New message" instead of the content.
    redact_content: bool = False

    def validate(self, path: str) -> None:
        if self.backend not in ("", *BACKENDS):
            raise ConfigError(f"{path}.backend: expected one of {', '.join(BACKENDS)}, got {self.backend!r}")
        for name in ("timeout", "idle_connection_timeout"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"{path}.{name}: must be > 0, got {getattr(self, name)}")
        for name in ("shards", "max_connections"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{path}.{name}: must be >= 1, got {getattr(self, name)}")
        if self.realm_id < 0:
            raise ConfigError(f"{path}.realm_id: must be >= 0, got {self.realm_id}")
        for name in ("bouncer_url", "realm_url"):
            value = getattr(self, name)
            if value and not _is_http_url(value):
                raise ConfigError(f"{path}.{name}: expected an http(s):// URL, got {value!r}")
        if self.api_key and self.api_key_file:
            raise ConfigError(f"{path}.api_key_file: give api_key or api_key_file, not both")
        if self.effective_backend == "bouncer":
            if not self.bouncer_url:
                raise ConfigError(f'{path}.bouncer_url: required with backend = "bouncer"')
            if not self.server_uuid:
                raise ConfigError(f'{path}.server_uuid: required with backend = "bouncer"')
            if not (self.api_key or self.api_key_file):
                raise ConfigError(f'{path}.api_key: required with backend = "bouncer" (or api_key_file)')
            if not self.secret(f"{path}.api_key"):
                raise ConfigError(f"{path}.api_key_file: the file is empty")

    @property
    def effective_backend(self) -> str:
        if self.backend:
            return self.backend
        return "bouncer" if self.bouncer_url else "log"

    def secret(self, path: str = "push.api_key") -> str:
        """The bouncer API key (read from ``api_key_file`` when given); never log it."""
        return read_secret(self.api_key, self.api_key_file, path)


def _is_http_url(value: str) -> bool:
    parts = urlsplit(value)
    return parts.scheme in ("http", "https") and bool(parts.hostname)
