"""Mailers: where rendered messages go.  Chosen by ``[mail] backend``.

Every mailer has ``send(message, envelope_from=None) -> Deferred[None]`` and
``close() -> Deferred[None]``; ``send`` fails with a
:class:`~zqtwisted.errors.TransientError` (try again later) or a
:class:`~zqtwisted.errors.PermanentError` (this message will never go), and
cancelling its Deferred stops the delivery.

- :class:`SMTPMailer`: :class:`~zqtwisted.mail.smtp.SMTPTransport`, one reused connection;
- :class:`FileMailer`: one ``.eml`` file per message (the default, for development);
- :class:`LogMailer`: a log line per message;
- :class:`zqtwisted.mail.testing.FakeMailer`: in memory, for tests.
"""

from __future__ import annotations

import itertools
import os
import re
import time
from email.message import EmailMessage
from pathlib import Path
from typing import Any, Protocol

from twisted.internet import ssl
from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.endpoints import HostnameEndpoint, wrapClientTLS
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from zqtwisted.config import ConfigError
from zqtwisted.errors import TransientError
from zqtwisted.mail.render import Envelope, describe, envelope_of, to_bytes
from zqtwisted.mail.settings import MailSettings
from zqtwisted.mail.smtp import Connector, SendResult, SMTPOptions, SMTPTransport
from zqtwisted.runtime.reactor import IConnectingReactor


class Mailer(Protocol):
    """What the email consumers need of a mail backend."""

    def send(self, message: EmailMessage, envelope_from: str | None = None) -> Deferred[None]: ...

    def close(self) -> Deferred[None]: ...


class SMTPMailer:
    """Delivers through an :class:`SMTPTransport` (one connection, reused)."""

    log = Logger()

    def __init__(self, transport: SMTPTransport) -> None:
        self.transport = transport

    def send(self, message: EmailMessage, envelope_from: str | None = None) -> Deferred[None]:
        envelope = envelope_of(message, envelope_from)
        return self.transport.send(envelope, to_bytes(message)).addCallback(self._sent, envelope)

    def _sent(self, result: SendResult, envelope: Envelope) -> None:
        if result.refused:
            self.log.warn(
                "SMTP server refused {n} of {total} recipients of a message: {refused}",
                n=len(result.refused),
                total=len(envelope.recipients),
                refused="; ".join(f"<{a}>: {c} {r}" for a, c, r in result.refused),
            )

    def close(self) -> Deferred[None]:
        return self.transport.close()


class FileMailer:
    """Writes each message as ``{file_dir}/{time}-{n}-{message-id}.eml`` (atomically)."""

    def __init__(self, directory: str, clock: IReactorTime) -> None:
        self.directory = Path(directory)
        self._clock = clock
        self._counter = itertools.count(1)
        self.written: list[Path] = []

    def send(self, message: EmailMessage, envelope_from: str | None = None) -> Deferred[None]:
        stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime(self._clock.seconds()))
        message_id = re.sub(r"[^A-Za-z0-9.@_-]", "", str(message.get("Message-ID", "")))[:100] or "message"
        path = self.directory / f"{stamp}-{next(self._counter):06d}-{message_id}.eml"
        tmp = path.with_name(f".{path.name}.tmp")
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            tmp.write_bytes(to_bytes(message))
            os.replace(tmp, path)
        except OSError as e:
            return fail(TransientError(f"cannot write {path}: {e.strerror}"))
        self.written.append(path)
        return succeed(None)

    def close(self) -> Deferred[None]:
        return succeed(None)


class LogMailer:
    """Logs each message (summary at info, full text at debug); sends nothing."""

    log = Logger()

    def send(self, message: EmailMessage, envelope_from: str | None = None) -> Deferred[None]:
        envelope = envelope_of(message, envelope_from)
        self.log.info("Email from {sender}: {summary}", sender=envelope.sender or "<>", summary=describe(message))
        self.log.debug("{text}", text=to_bytes(message).decode("ascii", "replace"))
        return succeed(None)

    def close(self) -> Deferred[None]:
        return succeed(None)


# -- building from [mail] ---------------------------------------------------------------


def smtp_options(settings: MailSettings) -> SMTPOptions:
    """The transport options of ``settings`` (reads ``password_file``)."""
    return SMTPOptions(
        host=settings.host,
        port=settings.effective_port,
        tls=settings.tls,
        starttls_required=settings.starttls_required,
        username=settings.username,
        password=settings.secret(),
        helo_name=settings.helo_name or "localhost",
        connect_timeout=settings.connect_timeout,
        command_timeout=settings.command_timeout,
        max_connection_age=settings.max_connection_age,
        max_messages_per_connection=settings.max_messages_per_connection,
        noop_after_idle=settings.noop_after_idle,
    )


def tls_context(settings: MailSettings) -> Any:
    """The client TLS options for ``settings`` (None with ``tls = "none"``)."""
    if settings.tls == "none":
        return None
    if not settings.tls_verify:
        return ssl.CertificateOptions(verify=False)
    if settings.ca_file:
        try:
            trust: Any = ssl.Certificate.loadPEM(Path(settings.ca_file).read_bytes())
        except OSError as e:
            raise ConfigError(f"mail.ca_file: cannot read {settings.ca_file}: {e.strerror}") from None
        except Exception as e:  # noqa: BLE001 - any parse error of the file is a configuration error
            raise ConfigError(f"mail.ca_file: not a PEM certificate: {settings.ca_file}: {e}") from None
    else:
        trust = ssl.platformTrust()
    return ssl.optionsForClientTLS(settings.host, trustRoot=trust)


def endpoint_connector(reactor: Any, options: SMTPOptions, context: Any = None) -> Connector:
    """Connects with a HostnameEndpoint (TLS-wrapped for ``tls = "implicit"``)."""
    endpoint: Any = HostnameEndpoint(reactor, options.host, options.port, timeout=options.connect_timeout)
    if options.tls == "implicit":
        endpoint = wrapClientTLS(context, endpoint)
    connect: Connector = endpoint.connect
    return connect


def build_mailer(reactor: IConnectingReactor, settings: MailSettings) -> Mailer:
    """The mailer ``settings`` asks for (built once, by :meth:`zqtwisted.resources.Resources.mailer`)."""
    if settings.backend == "smtp":
        options = smtp_options(settings)
        context = tls_context(settings)
        transport = SMTPTransport(reactor, endpoint_connector(reactor, options, context), options, context)
        return SMTPMailer(transport)
    if settings.backend == "log":
        return LogMailer()
    return FileMailer(settings.file_dir, reactor)
