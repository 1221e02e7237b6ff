"""Mail backends, the [mail] settings, and the FakeMailer against the same contract."""

from __future__ import annotations

import os
import shutil
import tempfile
from email.message import EmailMessage
from typing import Any, cast

from twisted.internet import ssl
from twisted.internet.defer import Deferred, succeed
from twisted.internet.task import Clock
from twisted.logger import ILogObserver, Logger
from twisted.trial.unittest import TestCase

from tests.resource_fakes import ConnectingMemoryReactor
from zqtwisted.config import ConfigError, parse_config
from zqtwisted.errors import TransientError
from zqtwisted.mail.backends import (
    FileMailer,
    LogMailer,
    Mailer,
    SMTPMailer,
    build_mailer,
    smtp_options,
    tls_context,
)
from zqtwisted.mail.render import Envelope, Renderer, to_bytes
from zqtwisted.mail.settings import MailSettings, shipped_template_dir
from zqtwisted.mail.smtp import SendResult
from zqtwisted.mail.testing import FakeMailer
from zqtwisted.sections import SECTIONS


def message(to: str = "hamlet@example.com") -> EmailMessage:
    renderer = Renderer(shipped_template_dir(), from_address="noreply@example.com")
    return renderer.render({"subject": "Grüße", "body": "Hällo", "to_emails": [to]}, 1_700_000_000)


class StubTransport:
    """Stands in for SMTPTransport: records envelopes, answers with ``result``."""

    def __init__(self, result: SendResult) -> None:
        self.result = result
        self.sent: list[tuple[Envelope, bytes]] = []
        self.closed = False

    def send(self, envelope: Envelope, data: bytes) -> Deferred[SendResult]:
        self.sent.append((envelope, data))
        return succeed(self.result)

    def close(self) -> Deferred[None]:
        self.closed = True
        return succeed(None)


class ContractTests(TestCase):
    """Every mailer, the fake included, honours the Mailer interface."""

    def mailers(self) -> list[Mailer]:
        directory = tempfile.mkdtemp()
        self.addCleanup(shutil.rmtree, directory)
        stub: Any = StubTransport(SendResult(250, "ok"))
        return [FakeMailer(), FileMailer(directory, Clock()), LogMailer(), SMTPMailer(stub)]

    def test_send_and_close(self) -> None:
        """send() fires with None for a valid message, close() fires."""
        for mailer in self.mailers():
            self.assertIsNone(self.successResultOf(mailer.send(message(), "bounce@example.com")), mailer)
            self.assertIsNone(self.successResultOf(mailer.close()), mailer)


class FileMailerTests(TestCase):
    def setUp(self) -> None:
        self.directory = tempfile.mkdtemp()
        self.addCleanup(shutil.rmtree, self.directory)

    def test_writes_eml(self) -> None:
        """Each message becomes one .eml file with the wire bytes, no temporary file left."""
        clock = Clock()
        clock.advance(1_700_000_000)
        mailer = FileMailer(os.path.join(self.directory, "mail"), clock)
        msg = message()
        self.successResultOf(mailer.send(msg))
        self.successResultOf(mailer.send(message("other@example.com")))
        names = sorted(os.listdir(os.path.join(self.directory, "mail")))
        self.assertEqual(len(names), 2)
        self.assertTrue(all(n.startswith("20231114-221320-") and n.endswith(".eml") for n in names))
        with open(mailer.written[0], "rb") as f:
            self.assertEqual(f.read(), to_bytes(msg))

    def test_unwritable_is_transient(self) -> None:
        """A directory that cannot be written is a TransientError."""
        blocker = os.path.join(self.directory, "file")
        with open(blocker, "w") as f:
            f.write("x")
        mailer = FileMailer(os.path.join(blocker, "sub"), Clock())
        self.failureResultOf(mailer.send(message()), TransientError)


class LogAndSMTPMailerTests(TestCase):
    def test_log_mailer(self) -> None:
        """The log backend logs the subject and recipients."""
        events: list[dict[str, Any]] = []
        mailer = LogMailer()
        mailer.log = Logger(observer=cast(ILogObserver, events.append))
        self.successResultOf(mailer.send(message()))
        self.assertIn("hamlet@example.com", events[0]["summary"])
        self.assertIn("Grüße", events[0]["summary"])

    def test_smtp_mailer_envelope(self) -> None:
        """The SMTP mailer derives the envelope and sends the wire bytes."""
        stub = StubTransport(SendResult(250, "ok"))
        mailer = SMTPMailer(stub)  # type: ignore[arg-type]
        msg = message()
        self.successResultOf(mailer.send(msg, "bounces@example.com"))
        ((envelope, data),) = stub.sent
        self.assertEqual(envelope, Envelope("bounces@example.com", ("hamlet@example.com",)))
        self.assertEqual(data, to_bytes(msg))
        self.successResultOf(mailer.close())
        self.assertTrue(stub.closed)

    def test_partial_refusal_logged(self) -> None:
        """Recipients refused while others accepted are logged as a warning; the send succeeds."""
        events: list[dict[str, Any]] = []
        stub = StubTransport(SendResult(250, "ok", (("x@example.com", 550, "unknown"),)))
        mailer = SMTPMailer(stub)  # type: ignore[arg-type]
        mailer.log = Logger(observer=cast(ILogObserver, events.append))
        self.successResultOf(mailer.send(message()))
        self.assertIn("x@example.com", events[0]["refused"])


class SettingsTests(TestCase):
    def test_defaults(self) -> None:
        """Without [mail] the file backend is used; ports follow the TLS mode."""
        settings = MailSettings()
        self.assertEqual((settings.backend, settings.file_dir), ("file", "var/mail"))
        self.assertEqual(MailSettings(tls="implicit").effective_port, 465)
        self.assertEqual(MailSettings(tls="starttls").effective_port, 587)
        self.assertEqual(MailSettings(tls="none").effective_port, 25)
        self.assertEqual(MailSettings(port=2525).effective_port, 2525)
        self.assertTrue(os.path.isdir(settings.effective_template_dir))

    def test_invalid_values_name_the_key(self) -> None:
        """Invalid [mail] values stop start-up with the key's name."""
        for raw, key in [
            ({"backend": "sendmail"}, "mail.backend"),
            ({"tls": "ssl"}, "mail.tls"),
            ({"port": 70000}, "mail.port"),
            ({"command_timeout": 0}, "mail.command_timeout"),
            ({"password": "x"}, "mail.username"),
            ({"password": "x", "password_file": "/f", "username": "u"}, "mail.password_file"),
            ({"from_address": "nobody"}, "mail.from_address"),
            ({"max_messages_per_connection": 0}, "mail.max_messages_per_connection"),
        ]:
            with self.assertRaisesRegex(ConfigError, key, msg=str(raw)):
                parse_config({"mail": raw}, SECTIONS)

    def test_password_file(self) -> None:
        """The SMTP password can come from password_file; it is not in the options' repr."""
        directory = tempfile.mkdtemp()
        self.addCleanup(shutil.rmtree, directory)
        path = os.path.join(directory, "pw")
        with open(path, "w") as f:
            f.write("s3cret\n")
        settings = MailSettings(backend="smtp", username="zulip", password_file=path)
        options = smtp_options(settings)
        self.assertEqual(options.password, "s3cret")
        self.assertNotIn("s3cret", repr(options))


class BuildTests(TestCase):
    def test_backends(self) -> None:
        """build_mailer returns the backend [mail] names."""
        reactor = ConnectingMemoryReactor()
        self.assertIsInstance(build_mailer(reactor, MailSettings(backend="log")), LogMailer)
        self.assertIsInstance(build_mailer(reactor, MailSettings(backend="file")), FileMailer)
        mailer = build_mailer(reactor, MailSettings(backend="smtp", host="127.0.0.1", tls="none"))
        assert isinstance(mailer, SMTPMailer)
        self.assertEqual((mailer.transport.options.host, mailer.transport.options.port), ("127.0.0.1", 25))

    def test_tls_contexts(self) -> None:
        """tls = none has no context; tls_verify = false skips verification; a bad ca_file is a ConfigError."""
        self.assertIsNone(tls_context(MailSettings(tls="none")))
        self.assertIsInstance(tls_context(MailSettings(tls_verify=False)), ssl.CertificateOptions)
        self.assertIsNotNone(tls_context(MailSettings(host="smtp.example.com")))
        with self.assertRaisesRegex(ConfigError, "mail.ca_file"):
            tls_context(MailSettings(ca_file="/nonexistent/ca.pem"))
