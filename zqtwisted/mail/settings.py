"""The ``[mail]`` configuration section.

::

    [mail]
    backend = "smtp"            # "file" (default), "smtp" or "log"
    host = "smtp.example.com"
    port = 587                  # 0: 465 for tls = "implicit", 587 for "starttls", 25 for "none"
    tls = "starttls"            # "starttls", "implicit" or "none"
    username = "zulip"
    password_file = "/etc/zqtwisted/smtp-password"
    from_address = "noreply@example.com"
"""

from __future__ import annotations

import importlib.resources
from dataclasses import dataclass

from zqtwisted.config import ConfigError, read_secret

BACKENDS = ("file", "smtp", "log")
TLS_MODES = ("starttls", "implicit", "none")
DEFAULT_PORTS = {"implicit": 465, "starttls": 587, "none": 25}


def shipped_template_dir() -> str:
    """The directory of the templates shipped with zqtwisted."""
    return str(importlib.resources.files("zqtwisted") / "templates")


@dataclass(frozen=True)
class MailSettings:
    backend: str = "file"
    # backend = "file": one .eml file per message in this directory.
    file_dir: str = "var/mail"
    # Jinja2 templates ({template_prefix}.subject.txt, .txt, .html); "" = the shipped ones.
    template_dir: str = ""
    # Zulip's NOREPLY_EMAIL_ADDRESS: the From of events without from_address (or
    # with the NO_REPLY / TOKENIZED_NO_REPLY placeholders), and the envelope sender.
    from_address: str = "noreply@localhost"
    # The From name of events without from_name.
    from_name: str = "Zulip"
    # Zulip's ZULIP_ADMINISTRATOR: the SUPPORT placeholder and {{ support_email }}; "" = from_address.
    support_address: str = ""
    # Domain of generated Message-IDs; "" = the domain of the From address.
    message_id_domain: str = ""

    # backend = "smtp"
    host: str = "localhost"
    port: int = 0
    tls: str = "starttls"
    # With tls = "starttls": refuse to send when the server does not offer STARTTLS.
    starttls_required: bool = True
    # Check the server's certificate (against ca_file, or the system's trust store).
    tls_verify: bool = True
    ca_file: str = ""
    username: str = ""
    password: str = ""
    password_file: str = ""
    # Name given in EHLO; "" = "localhost".
    helo_name: str = ""
    # Deadline for TCP connect + greeting + EHLO + STARTTLS + AUTH.
    connect_timeout: float = 10.0
    # Deadline for each reply of the server.
    command_timeout: float = 30.0
    # A connection older than this, or that carried this many messages, is closed
    # (politely, with QUIT) and a new one opened for the next message.
    max_connection_age: float = 300.0
    max_messages_per_connection: int = 1000
    # A connection left idle this long is checked with NOOP before it is reused.
    noop_after_idle: float = 1.0

    def validate(self, path: str) -> None:
        if self.backend not in BACKENDS:
            raise ConfigError(f"{path}.backend: expected one of {', '.join(BACKENDS)}, got {self.backend!r}")
        if self.tls not in TLS_MODES:
            raise ConfigError(f"{path}.tls: expected one of {', '.join(TLS_MODES)}, got {self.tls!r}")
        if not 0 <= self.port <= 65535:
            raise ConfigError(f"{path}.port: must be between 0 and 65535, got {self.port}")
        for name in ("connect_timeout", "command_timeout", "max_connection_age"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"{path}.{name}: must be > 0, got {getattr(self, name)}")
        if self.noop_after_idle < 0:
            raise ConfigError(f"{path}.noop_after_idle: must be >= 0, got {self.noop_after_idle}")
        if self.max_messages_per_connection < 1:
            raise ConfigError(
                f"{path}.max_messages_per_connection: must be >= 1, got {self.max_messages_per_connection}"
            )
        if self.backend == "smtp" and not self.host:
            raise ConfigError(f'{path}.host: required with backend = "smtp"')
        if self.backend == "file" and not self.file_dir:
            raise ConfigError(f'{path}.file_dir: required with backend = "file"')
        if self.password and self.password_file:
            raise ConfigError(f"{path}.password_file: give password or password_file, not both")
        if (self.password or self.password_file) and not self.username:
            raise ConfigError(f"{path}.username: required when a password is set")
        for name in ("from_address", "support_address"):
            value = getattr(self, name)
            if (value or name == "from_address") and "@" not in value:
                raise ConfigError(f"{path}.{name}: expected an email address, got {value!r}")

    @property
    def effective_port(self) -> int:
        return self.port or DEFAULT_PORTS[self.tls]

    @property
    def effective_template_dir(self) -> str:
        return self.template_dir or shipped_template_dir()

    def secret(self, path: str = "mail.password") -> str:
        """The SMTP password (read from ``password_file`` when given); never log it."""
        return read_secret(self.password, self.password_file, path)
