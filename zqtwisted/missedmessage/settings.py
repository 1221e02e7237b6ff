"""The ``[missedmessage]`` configuration section.

::

    [missedmessage]
    store = "sqlite"                      # or "postgres"
    sqlite_path = "var/missedmessage.sqlite3"
    postgres_dsn_file = "/etc/zqtwisted/missedmessage-dsn"
    default_batching_period = 120
    unread_url = "https://chat.example.com/internal/unread"
    shards = 1
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import urlsplit

from zqtwisted.config import ConfigError, read_secret

STORES = ("sqlite", "postgres")
DEFAULT_TEMPLATE_PREFIX = "zqtwisted/emails/missed_message"


@dataclass(frozen=True)
class MissedMessageSettings:
    # Where pending notifications wait for their batch: "sqlite" (one process per
    # file) or "postgres" (several workers, on several machines).
    store: str = "sqlite"
    sqlite_path: str = "var/missedmessage.sqlite3"
    # libpq connection string ("host=... dbname=... user=...") or URL; prefer the file.
    postgres_dsn: str = ""
    postgres_dsn_file: str = ""
    # Deadline of each PostgreSQL statement and of connecting, in seconds.
    postgres_timeout: float = 30.0
    # Seconds from a user's first pending notification to their email, for events
    # without user.batching_period_seconds (Zulip's default: 120).
    default_batching_period: float = 120.0
    # Optional "still unread?" callback, asked before each batch is sent.
    unread_url: str = ""
    unread_timeout: float = 10.0
    # Sent as "Authorization: Bearer <token>" to unread_url; prefer the file.
    unread_token: str = ""
    unread_token_file: str = ""
    # Users are spread over this many workers (--worker-num 1..shards) by
    # user_profile_id % shards + 1; 1 = one worker owns every user.
    shards: int = 1
    # The email events built for email_senders.
    email_queue: str = "email_senders"
    template_prefix: str = DEFAULT_TEMPLATE_PREFIX
    from_name: str = "Zulip notifications"
    # An address, or Zulip's placeholders NO_REPLY / SUPPORT (resolved by [mail]).
    from_address: str = "NO_REPLY"
    # A batch being sent is claimed for this long; if its worker dies, another
    # (or the same one, restarted) takes it over after this many seconds.
    claim_timeout: float = 300.0
    # A failed batch is tried again after retry_base * 2**(n-1) seconds, at most retry_cap.
    retry_base: float = 1.0
    retry_cap: float = 300.0
    # Re-read every pending batch's due time from the store this often (0: only at
    # start-up).  Useful with "postgres" when a peer on another machine may die.
    rescan_interval: float = 0.0
    # On stop, batches being sent get this long to finish before they are cancelled.
    stop_timeout: float = 10.0

    def validate(self, path: str) -> None:
        if self.store not in STORES:
            raise ConfigError(f"{path}.store: expected one of {', '.join(STORES)}, got {self.store!r}")
        if self.store == "sqlite" and not self.sqlite_path:
            raise ConfigError(f'{path}.sqlite_path: required with store = "sqlite"')
        if self.store == "postgres" and not (self.postgres_dsn or self.postgres_dsn_file):
            raise ConfigError(f'{path}.postgres_dsn: required (or postgres_dsn_file) with store = "postgres"')
        if self.postgres_dsn and self.postgres_dsn_file:
            raise ConfigError(f"{path}.postgres_dsn_file: give postgres_dsn or postgres_dsn_file, not both")
        if self.unread_token and self.unread_token_file:
            raise ConfigError(f"{path}.unread_token_file: give unread_token or unread_token_file, not both")
        if self.unread_url:
            parts = urlsplit(self.unread_url)
            if parts.scheme not in ("http", "https") or not parts.hostname:
                raise ConfigError(f"{path}.unread_url: expected an http:// or https:// URL, got {self.unread_url!r}")
        for name in ("postgres_timeout", "unread_timeout", "claim_timeout", "retry_base", "retry_cap"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"{path}.{name}: must be > 0, got {getattr(self, name)}")
        for name in ("default_batching_period", "rescan_interval", "stop_timeout"):
            if getattr(self, name) < 0:
                raise ConfigError(f"{path}.{name}: must be >= 0, got {getattr(self, name)}")
        if self.retry_cap < self.retry_base:
            raise ConfigError(f"{path}.retry_cap: must be >= retry_base ({self.retry_base})")
        if self.shards < 1:
            raise ConfigError(f"{path}.shards: must be >= 1, got {self.shards}")
        if not self.template_prefix.strip():
            raise ConfigError(f"{path}.template_prefix: must not be empty")
        if not self.email_queue:
            raise ConfigError(f"{path}.email_queue: must not be empty")

    def dsn(self, path: str = "missedmessage.postgres_dsn") -> str:
        """The PostgreSQL connection string (read from the file when given); never log it."""
        return read_secret(self.postgres_dsn, self.postgres_dsn_file, path)

    def token(self, path: str = "missedmessage.unread_token") -> str:
        """The bearer token of ``unread_url``; never log it."""
        return read_secret(self.unread_token, self.unread_token_file, path)
