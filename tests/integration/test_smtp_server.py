"""Email delivery against a real SMTP server (Twisted's ESMTP) on 127.0.0.1.

The transport alone, then the whole path: event -> runner -> email worker -> SMTP,
with retries and dead letters on the in-memory broker driven by the real reactor.
"""

from __future__ import annotations

import dataclasses
import datetime
import email
import email.policy
import ipaddress
import json
import os
import shutil
import tempfile
from collections.abc import Callable
from email.message import EmailMessage
from typing import Any, cast

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from twisted.internet import reactor, ssl
from twisted.internet.defer import Deferred
from twisted.internet.task import deferLater
from twisted.trial.unittest import TestCase

from tests.contract import inline
from tests.resource_fakes import reactor_resources
from zqtwisted.config import Config, PathSettings
from zqtwisted.consumers.email_senders import ImmediateEmailSenderWorker
from zqtwisted.mail.backends import Mailer, SMTPMailer, build_mailer
from zqtwisted.mail.render import Renderer
from zqtwisted.mail.settings import MailSettings, shipped_template_dir
from zqtwisted.mail.smtp import SMTPPermanentError, SMTPTemporaryError, SMTPUnavailable
from zqtwisted.mail.testing import LocalSMTPServer
from zqtwisted.runtime.consumer import WorkerContext
from zqtwisted.runtime.deadletter import DeadLetterer
from zqtwisted.runtime.publisher import Publisher
from zqtwisted.runtime.reactor import IConnectingReactor
from zqtwisted.runtime.retry import BackoffPolicy
from zqtwisted.runtime.runner import QueueRunner, RunnerSettings
from zqtwisted.testing import MemoryBroker

TEMPLATES = shipped_template_dir()


def make_certificates(directory: str) -> tuple[Any, str]:
    """A CA and a server certificate for 127.0.0.1 signed by it: (server TLS options, CA file)."""
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "zqtwisted test CA")])
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    ca_file = os.path.join(directory, "ca.pem")
    with open(ca_file, "wb") as f:
        f.write(ca_cert.public_bytes(serialization.Encoding.PEM))
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    server = ssl.PrivateCertificate.loadPEM(key_pem + cert.public_bytes(serialization.Encoding.PEM))
    return server.options(), ca_file


def received(data: bytes) -> EmailMessage:
    message = email.message_from_bytes(data, policy=email.policy.default)
    assert isinstance(message, EmailMessage)
    return message


def text_of(message: EmailMessage, kind: str) -> str:
    part = message.get_body((kind,))
    assert part is not None
    content: str = part.get_content()
    return content.replace("\r\n", "\n")


class SMTPCase(TestCase):
    timeout = 30

    def setUp(self) -> None:
        self.tmp = tempfile.mkdtemp(prefix="zqtest-mail-")
        self.addCleanup(shutil.rmtree, self.tmp, True)
        self.renderer = Renderer(TEMPLATES, from_address="noreply@example.com")
        self.servers: list[LocalSMTPServer] = []
        self.mailers: list[Mailer] = []

        # Cleanups run last-in first-out: mailers and servers go before the directory.
        self.addCleanup(lambda: Deferred.fromCoroutine(self.cleanup()))

    async def cleanup(self) -> None:
        for mailer in self.mailers:
            await mailer.close()
        for server in self.servers:
            await server.stop()

    def server(self, **kwargs: Any) -> LocalSMTPServer:
        server = LocalSMTPServer(reactor, **kwargs)
        server.start()
        self.servers.append(server)
        return server

    def mailer(self, server: LocalSMTPServer, **settings: Any) -> SMTPMailer:
        settings.setdefault("tls", "none")
        mail = MailSettings(backend="smtp", host="127.0.0.1", port=server.port_number, **settings)
        mailer = build_mailer(cast(IConnectingReactor, reactor), mail)
        assert isinstance(mailer, SMTPMailer)
        self.mailers.append(mailer)
        return mailer

    def message(self, to: str = "hamlet@example.com", **fields: Any) -> EmailMessage:
        event = {"subject": "Hello", "body": "Hi", "to_emails": [to], **fields}
        return self.renderer.render(event, reactor.seconds())

    async def until(self, predicate: Callable[[], bool], timeout: float = 10.0) -> None:
        deadline = reactor.seconds() + timeout
        while not predicate():
            if reactor.seconds() > deadline:
                self.fail(f"condition not met within {timeout}s")
            await deferLater(reactor, 0.02)


class DeliveryTests(SMTPCase):
    @inline
    async def test_text_html_non_ascii_intact(self) -> None:
        """A multipart message with non-ASCII names, subject and bodies arrives intact."""
        server = self.server()
        mailer = self.mailer(server)
        event = {
            "template_prefix": "zqtwisted/emails/missed_message",
            "to_emails": ["Hämlet Dänemark <hamlet@example.com>"],
            "from_name": "Zülip",
            "context": {
                "user_name": "Hämlet",
                "conversations": [
                    {
                        "name": "#café > crème brûlée",
                        "messages": [{"sender": "Ōthello", "content": "Ça va? ✓\n.leading dot"}],
                    }
                ],
            },
        }
        await mailer.send(self.renderer.render(event, reactor.seconds()))
        (got,) = server.messages
        self.assertEqual(got.recipient, "hamlet@example.com")
        message = received(got.data)
        self.assertEqual(message["Subject"], "#café > crème brûlée")
        self.assertEqual(message["From"].addresses[0].display_name, "Zülip")
        self.assertEqual(message["To"].addresses[0].display_name, "Hämlet Dänemark")
        self.assertIn("Ōthello:\nÇa va? ✓\n.leading dot\n", text_of(message, "plain"))
        self.assertIn("Ça va? ✓<br>\n.leading dot", text_of(message, "html"))
        self.assertEqual(message["X-Auto-Response-Suppress"], "All")

    @inline
    async def test_many_messages_one_connection(self) -> None:
        """Messages of several batches travel over one connection, checked with NOOP between batches."""
        server = self.server()
        mailer = self.mailer(server, noop_after_idle=0.0)
        for batch in range(3):
            await mailer.send(self.message(f"first{batch}@example.com"))
            for i in range(9):
                await mailer.send(self.message(f"u{batch}-{i}@example.com"))
            await deferLater(reactor, 0.05)
        self.assertEqual(server.by_connection(), {1: 30})
        self.assertEqual(server.connections, 1)
        self.assertGreaterEqual(server.noops, 3)
        self.assertEqual(mailer.transport.connections_opened, 1)

    @inline
    async def test_4xx_then_success(self) -> None:
        """A 4xx is a TransientError; the next attempt on the same connection succeeds."""
        server = self.server()
        mailer = self.mailer(server)
        server.fail_next("RCPT", 451, "4.7.1 greylisted, try later")
        with self.assertRaises(SMTPTemporaryError):
            await mailer.send(self.message())
        await mailer.send(self.message())
        self.assertEqual(len(server.messages), 1)
        self.assertEqual(server.connections, 1)

    @inline
    async def test_5xx_is_permanent(self) -> None:
        """A 5xx for the recipient is a PermanentError carrying the server's reply."""
        server = self.server()
        mailer = self.mailer(server)
        server.reject["nobody@example.com"] = (550, "5.1.1 no such user")
        with self.assertRaises(SMTPPermanentError) as caught:
            await mailer.send(self.message("nobody@example.com"))
        self.assertEqual(caught.exception.code, 550)
        self.assertIn("no such user", caught.exception.reply)

    @inline
    async def test_idle_connection_closed_by_server(self) -> None:
        """The server closing an idle connection (with or without 421): the next message reconnects."""
        server = self.server()
        mailer = self.mailer(server, noop_after_idle=0.0)
        await mailer.send(self.message())
        await server.drop_connections(code=421)
        await mailer.send(self.message())
        await server.drop_connections()
        await mailer.send(self.message())
        self.assertEqual(server.by_connection(), {1: 1, 2: 1, 3: 1})

    @inline
    async def test_failed_noop_reconnects(self) -> None:
        """A connection whose NOOP check fails is replaced and the message delivered."""
        server = self.server()
        mailer = self.mailer(server, noop_after_idle=0.0)
        await mailer.send(self.message())
        server.fail_next("NOOP", 421, "4.4.2 idle timeout")
        await mailer.send(self.message())
        self.assertEqual(server.by_connection(), {1: 1, 2: 1})

    @inline
    async def test_server_down(self) -> None:
        """Nothing listening is SMTPUnavailable (transient)."""
        server = self.server()
        await server.stop_listening()
        mailer = self.mailer(server)
        with self.assertRaises(SMTPUnavailable):
            await mailer.send(self.message())


class SecurityTests(SMTPCase):
    @inline
    async def test_starttls_with_generated_certificate(self) -> None:
        """STARTTLS with a certificate checked against the test's CA; the message travels encrypted."""
        context, ca_file = make_certificates(self.tmp)
        server = self.server(tls_context=context)
        mailer = self.mailer(server, tls="starttls", starttls_required=True, ca_file=ca_file)
        await mailer.send(self.message())
        await mailer.send(self.message())
        self.assertEqual([m.secure for m in server.messages], [True, True])
        self.assertEqual(server.connections, 1)

    @inline
    async def test_starttls_untrusted_certificate(self) -> None:
        """A certificate the client does not trust: SMTPUnavailable, nothing sent."""
        context, _ = make_certificates(self.tmp)
        _, other_ca = make_certificates(tempfile.mkdtemp(dir=self.tmp))
        server = self.server(tls_context=context)
        mailer = self.mailer(server, tls="starttls", ca_file=other_ca)
        with self.assertRaises(SMTPUnavailable):
            await mailer.send(self.message())
        self.assertEqual(server.messages, [])

    @inline
    async def test_starttls_required_but_missing(self) -> None:
        """A server without STARTTLS refuses service when STARTTLS is required."""
        _, ca_file = make_certificates(self.tmp)
        server = self.server()
        mailer = self.mailer(server, tls="starttls", starttls_required=True, ca_file=ca_file)
        with self.assertRaises(SMTPUnavailable):
            await mailer.send(self.message())
        self.assertEqual(server.messages, [])

    @inline
    async def test_implicit_tls(self) -> None:
        """tls = implicit speaks TLS from the first byte (as on port 465)."""
        context, ca_file = make_certificates(self.tmp)
        server = self.server(tls_context=context, implicit_tls=True)
        mailer = self.mailer(server, tls="implicit", ca_file=ca_file)
        await mailer.send(self.message())
        self.assertEqual([m.secure for m in server.messages], [True])

    @inline
    async def test_auth_over_starttls(self) -> None:
        """AUTH after STARTTLS: the server sees an authenticated, encrypted session."""
        context, ca_file = make_certificates(self.tmp)
        server = self.server(tls_context=context, users={"zulip": "s3cret"})
        mailer = self.mailer(server, tls="starttls", ca_file=ca_file, username="zulip", password="s3cret")
        await mailer.send(self.message())
        ((secure, authenticated),) = [(m.secure, m.authenticated) for m in server.messages]
        self.assertTrue(secure and authenticated)
        self.assertEqual(server.auth_logins, 1)

    @inline
    async def test_auth_wrong_password(self) -> None:
        """Rejected credentials: SMTPUnavailable without the password in the error."""
        server = self.server(users={"zulip": "s3cret"})
        mailer = self.mailer(server, username="zulip", password="wrong-pw")
        with self.assertRaises(SMTPUnavailable) as caught:
            await mailer.send(self.message())
        self.assertNotIn("wrong-pw", str(caught.exception))
        self.assertEqual(server.messages, [])


class PipelineTests(SMTPCase):
    """Events through the runner and the email worker to the SMTP server."""

    async def pipeline(self, server: LocalSMTPServer, port: int | None = None) -> Any:
        mail = MailSettings(
            backend="smtp", host="127.0.0.1", port=port or server.port_number, tls="none", connect_timeout=2
        )
        config = Config(
            paths=PathSettings(stats_dir=self.tmp, error_dir=self.tmp, test_queue_file=""),
            sections={"mail": mail},
        )
        self.broker = MemoryBroker(reactor)
        resources = reactor_resources(config, Publisher(self.broker))
        self.mailers.append(resources.mailer())  # closed at cleanup, as the root closes the shared resources
        context = WorkerContext("email_senders", resources.reactor, resources.publisher)
        worker = ImmediateEmailSenderWorker(context, settings=mail, mailer=resources.mailer())
        worker.start()
        settings = dataclasses.replace(
            RunnerSettings.resolve(ImmediateEmailSenderWorker, config.queue("email_senders")),
            sleep_delay=0.05,
            backoff=BackoffPolicy(0.2, 0.5),
        )
        deadletters = DeadLetterer(self.broker, self.tmp, reactor, 5)
        self.runner = QueueRunner(worker, settings, self.broker, deadletters, reactor, rand=lambda: 1.0)
        self.broker.add_listener(self)
        await self.broker.connect()
        return worker

    def session_started(self, session: Any) -> Any:
        return self.runner.attach(session)

    def session_lost(self, session: Any) -> None:
        pass

    async def cleanup(self) -> None:
        runner = getattr(self, "runner", None)
        if runner is not None:
            await runner.stop(5)
        await super().cleanup()
        if getattr(self, "broker", None) is not None:
            await self.broker.stopService()

    async def publish(self, *events: dict[str, Any]) -> None:
        for event in events:
            await self.broker.publish("email_senders", json.dumps(event).encode())

    def dead(self) -> list[tuple[dict[str, Any], dict[str, Any]]]:
        return [(json.loads(b), h) for q, b, h in self.broker.published if q == "email_senders.failed"]

    def retried(self) -> list[dict[str, Any]]:
        events = [json.loads(b) for q, b, _ in self.broker.published if q == "email_senders"]
        return [e for e in events if "failed_tries" in e]

    @inline
    async def test_4xx_retried_then_delivered(self) -> None:
        """A greylisted (4xx) email is retried with backoff and then delivered."""
        server = self.server()
        await self.pipeline(server)
        server.fail_next("RCPT", 451, "4.7.1 greylisted")
        await self.publish({"subject": "s", "body": "b", "to_emails": ["a@example.com"]})
        await self.until(lambda: len(server.messages) == 1)
        self.assertEqual([e["failed_tries"] for e in self.retried()], [1])
        self.assertEqual(self.dead(), [])

    @inline
    async def test_5xx_dead_lettered_others_delivered(self) -> None:
        """A 5xx email goes to email_senders.failed with the reply; the rest of the batch is delivered."""
        server = self.server()
        await self.pipeline(server)
        server.reject["bad@example.com"] = (550, "5.1.1 no such user")
        await self.publish(
            *({"subject": "s", "body": "b", "to_emails": [f"{name}@example.com"]} for name in ("a", "bad", "c"))
        )
        await self.until(lambda: len(self.dead()) == 1 and len(server.messages) == 2)
        ((event, headers),) = self.dead()
        self.assertEqual(event["to_emails"], ["bad@example.com"])
        self.assertEqual((headers["x-zq-reason"], headers["x-zq-exception"]), ("permanent", "SMTPPermanentError"))
        self.assertIn("550 5.1.1 no such user", headers["x-zq-message"])
        self.assertEqual(sorted(m.recipient for m in server.messages), ["a@example.com", "c@example.com"])
        self.flushLoggedErrors(SMTPPermanentError)

    @inline
    async def test_server_down_then_back(self) -> None:
        """With the SMTP server down the email is retried with backoff and delivered once it is back."""
        server = self.server()
        port = server.port_number
        await server.stop_listening()
        await self.pipeline(server, port)
        await self.publish({"subject": "s", "body": "b", "to_emails": ["a@example.com"]})
        await self.until(lambda: len(self.retried()) >= 1)
        server.start(port)
        await self.until(lambda: len(server.messages) == 1)
        self.assertEqual(self.dead(), [])
