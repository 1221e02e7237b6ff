"""The SMTP transport, played against a scripted server on StringTransports and a Clock."""

from __future__ import annotations

import base64
from typing import Any

from twisted.internet import error as inet_error
from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.interfaces import ITLSTransport
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure
from twisted.trial.unittest import TestCase
from zope.interface import implementer

from zqtwisted.errors import PermanentError, TransientError
from zqtwisted.mail.render import Envelope
from zqtwisted.mail.smtp import (
    SendResult,
    SMTPConnectionError,
    SMTPOptions,
    SMTPPermanentError,
    SMTPTemporaryError,
    SMTPTransport,
    SMTPUnavailable,
    reply_error,
    wire_data,
)

ENVELOPE = Envelope("noreply@example.com", ("hamlet@example.com",))
DATA = b"Subject: hi\r\n\r\nbody\r\n"


@implementer(ITLSTransport)
class FakeTransport(StringTransport):
    """A StringTransport that can start TLS and reports connectionLost on the next tick."""

    def __init__(self, clock: Clock, protocol: Any) -> None:
        super().__init__()
        self.clock, self.protocol = clock, protocol
        self.tls: Any = None
        self.aborted = False
        self._lost = False

    def startTLS(self, context: Any) -> None:
        self.tls = context

    def loseConnection(self) -> None:
        super().loseConnection()
        self._schedule_lost()

    def abortConnection(self) -> None:
        self.aborted = True
        self._schedule_lost()

    # The rest of ITCPTransport (which ITLSTransport extends); the client never calls these.
    def loseWriteConnection(self) -> None:
        raise NotImplementedError

    def getTcpNoDelay(self) -> bool:
        return False

    def setTcpNoDelay(self, enabled: bool) -> None:
        raise NotImplementedError

    def getTcpKeepAlive(self) -> bool:
        return False

    def setTcpKeepAlive(self, enabled: bool) -> None:
        raise NotImplementedError

    def drop(self) -> None:
        """The peer closed the connection."""
        self._schedule_lost()
        self.clock.advance(0)

    def _schedule_lost(self) -> None:
        if not self._lost:
            self._lost = True
            self.clock.callLater(0, self.protocol.connectionLost, Failure(inet_error.ConnectionDone()))


class Server:
    """The server side of one fake connection."""

    def __init__(self, protocol: Any, transport: FakeTransport) -> None:
        self.protocol, self.transport = protocol, transport

    def take(self) -> bytes:
        data: bytes = self.transport.value()
        self.transport.clear()
        return data

    def lines(self) -> list[bytes]:
        return [line for line in self.take().split(b"\r\n") if line]

    def reply(self, *lines: str) -> None:
        self.protocol.dataReceived(b"".join(line.encode() + b"\r\n" for line in lines))

    def transaction(self, rcpt: tuple[str, ...] = ("250 ok",), final: str = "250 queued as 1") -> bytes:
        """Answer one MAIL / RCPT / DATA exchange; returns the message data as sent."""
        assert self.lines() == [b"MAIL FROM:<noreply@example.com>"]
        self.reply("250 ok")
        for answer in rcpt:
            assert self.lines()[0].startswith(b"RCPT TO:")
            self.reply(answer)
        assert self.lines() == [b"DATA"]
        self.reply("354 go ahead")
        data = self.take()
        self.reply(final)
        return data


class FakeConnector:
    """Stands in for an endpoint: each connect waits until the test accepts or fails it."""

    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self.pending: list[tuple[Any, Deferred[Any]]] = []
        self.cancelled = 0
        self.calls = 0

    def __call__(self, factory: Any) -> Deferred[Any]:
        self.calls += 1
        d: Deferred[Any] = Deferred(lambda _: self._cancel())
        self.pending.append((factory, d))
        return d

    def _cancel(self) -> None:
        self.cancelled += 1

    def accept(self) -> Server:
        factory, d = self.pending.pop(0)
        protocol = factory.buildProtocol(None)
        transport = FakeTransport(self.clock, protocol)
        protocol.makeConnection(transport)
        d.callback(protocol)
        return Server(protocol, transport)

    def ready(self, *extensions: str) -> Server:
        """Accept, greet, answer EHLO: the connection is ready for a message."""
        server = self.accept()
        server.reply("220 mail.example.com ESMTP")
        assert server.lines() == [b"EHLO localhost"]
        ehlo = ["250-mail.example.com", *[f"250-{e}" for e in extensions]]
        ehlo[-1] = "250 " + ehlo[-1][4:]
        server.reply(*ehlo)
        return server

    def fail(self, exc: Exception) -> None:
        _, d = self.pending.pop(0)
        d.errback(exc)


class TransportTestCase(TestCase):
    def make(self, **options: Any) -> tuple[SMTPTransport, FakeConnector, Clock]:
        clock = Clock()
        clock.advance(1000)
        connector = FakeConnector(clock)
        opts = SMTPOptions(host="mail.example.com", port=587, tls="none", **options)
        return SMTPTransport(clock, connector, opts), connector, clock

    def first_message(self, **options: Any) -> tuple[SMTPTransport, FakeConnector, Clock, Server]:
        """A transport that delivered one message; its connection is idle."""
        transport, connector, clock = self.make(**options)
        d = transport.send(ENVELOPE, DATA)
        server = connector.ready()
        server.transaction()
        self.successResultOf(d)
        return transport, connector, clock, server


class SendTests(TransportTestCase):
    def test_one_message(self) -> None:
        """A message goes through EHLO, MAIL FROM, RCPT TO, DATA and is dot-stuffed."""
        transport, connector, _ = self.make()
        d = transport.send(ENVELOPE, b"Subject: x\r\n\r\n.leading dot\r\n")
        server = connector.ready()
        data = server.transaction()
        self.assertEqual(data, b"Subject: x\r\n\r\n..leading dot\r\n.\r\n")
        result = self.successResultOf(d)
        self.assertEqual(result, SendResult(250, "queued as 1"))
        self.assertEqual(transport.messages_sent, 1)

    def test_messages_share_one_connection(self) -> None:
        """Messages sent back to back (queued) go over one connection, in order, without NOOP."""
        transport, connector, _ = self.make()
        ds = [transport.send(Envelope("noreply@example.com", (f"u{i}@example.com",)), DATA) for i in range(3)]
        server = connector.ready()
        for i in range(3):
            assert server.lines() == [b"MAIL FROM:<noreply@example.com>"]
            server.reply("250 ok")
            self.assertEqual(server.lines(), [f"RCPT TO:<u{i}@example.com>".encode()])
            server.reply("250 ok")
            server.lines()
            server.reply("354 go")
            server.take()
            server.reply("250 ok")
        for d in ds:
            self.successResultOf(d)
        self.assertEqual(connector.calls, 1)

    def test_reuse_after_idle_checks_noop(self) -> None:
        """A connection idle longer than noop_after_idle is checked with NOOP before reuse."""
        transport, connector, clock = self.make(noop_after_idle=1.0)
        d = transport.send(ENVELOPE, DATA)
        server = connector.ready()
        server.transaction()
        self.successResultOf(d)
        clock.advance(5)
        d = transport.send(ENVELOPE, DATA)
        self.assertEqual(server.lines(), [b"NOOP"])
        server.reply("250 2.0.0 OK")
        server.transaction()
        self.successResultOf(d)
        self.assertEqual(connector.calls, 1)

    def test_reuse_soon_skips_noop(self) -> None:
        """A connection used less than noop_after_idle ago is reused without NOOP."""
        transport, connector, clock = self.make(noop_after_idle=1.0)
        d = transport.send(ENVELOPE, DATA)
        server = connector.ready()
        server.transaction()
        self.successResultOf(d)
        clock.advance(0.5)
        d = transport.send(ENVELOPE, DATA)
        server.transaction()
        self.successResultOf(d)

    def test_failed_noop_reconnects(self) -> None:
        """A NOOP answered with anything but 250 closes the connection and opens a new one."""
        transport, connector, clock, server1 = self.first_message(noop_after_idle=0.0)
        d = transport.send(ENVELOPE, DATA)
        self.assertEqual(server1.lines(), [b"NOOP"])
        server1.reply("421 4.4.2 idle too long")
        self.assertTrue(server1.transport.disconnecting)
        clock.advance(0)
        connector.ready().transaction()
        self.successResultOf(d)
        self.assertEqual(connector.calls, 2)

    def test_noop_timeout_reconnects(self) -> None:
        """A NOOP left unanswered past command_timeout aborts the connection and opens a new one."""
        transport, connector, clock, server1 = self.first_message(noop_after_idle=0.0, command_timeout=5.0)
        d = transport.send(ENVELOPE, DATA)
        self.assertEqual(server1.lines(), [b"NOOP"])
        clock.advance(5)
        self.assertTrue(server1.transport.aborted)
        connector.ready().transaction()
        self.successResultOf(d)

    def test_idle_connection_closed_by_server(self) -> None:
        """When the server closes an idle connection, the next message opens a new one."""
        transport, connector, _clock = self.make(noop_after_idle=0.0)
        d = transport.send(ENVELOPE, DATA)
        server1 = connector.ready()
        server1.transaction()
        self.successResultOf(d)
        server1.transport.drop()
        d = transport.send(ENVELOPE, DATA)
        self.assertEqual(server1.lines(), [])
        connector.ready().transaction()
        self.successResultOf(d)
        self.assertEqual(connector.calls, 2)

    def test_unsolicited_421_while_idle(self) -> None:
        """A 421 sent by the server on an idle connection ends it; the next message reconnects."""
        transport, connector, clock = self.make()
        d = transport.send(ENVELOPE, DATA)
        server1 = connector.ready()
        server1.transaction()
        self.successResultOf(d)
        server1.reply("421 4.4.2 timeout")
        self.assertTrue(server1.transport.disconnecting)
        clock.advance(0)
        d = transport.send(ENVELOPE, DATA)
        connector.ready().transaction()
        self.successResultOf(d)

    def test_max_messages_per_connection(self) -> None:
        """After max_messages_per_connection messages the connection is QUIT and a new one opened."""
        transport, connector, _clock = self.make(max_messages_per_connection=2)
        server1: Server | None = None
        for _ in range(2):
            d = transport.send(ENVELOPE, DATA)
            if server1 is None:
                server1 = connector.ready()
            server1.transaction()
            self.successResultOf(d)
        d = transport.send(ENVELOPE, DATA)
        assert server1 is not None
        self.assertEqual(server1.lines(), [b"QUIT"])
        connector.ready().transaction()
        self.successResultOf(d)
        self.assertEqual(connector.calls, 2)

    def test_max_connection_age(self) -> None:
        """A connection older than max_connection_age is retired before the next message."""
        transport, connector, clock = self.make(max_connection_age=60.0, noop_after_idle=1000)
        d = transport.send(ENVELOPE, DATA)
        server1 = connector.ready()
        server1.transaction()
        self.successResultOf(d)
        clock.advance(61)
        d = transport.send(ENVELOPE, DATA)
        self.assertEqual(server1.lines(), [b"QUIT"])
        server1.reply("221 bye")
        connector.ready().transaction()
        self.successResultOf(d)
        clock.advance(0)
        self.assertTrue(server1.transport.disconnecting)


class ErrorTests(TransportTestCase):
    def test_4xx_recipient_is_transient_and_connection_kept(self) -> None:
        """A 4xx to RCPT fails the message with a TransientError, RSETs, and keeps the connection."""
        transport, connector, _clock = self.make()
        d = transport.send(ENVELOPE, DATA)
        server = connector.ready()
        server.lines()
        server.reply("250 ok")
        server.lines()
        server.reply("451 4.3.0 try again later")
        self.assertEqual(server.lines(), [b"RSET"])
        server.reply("250 flushed")
        error = self.failureResultOf(d, SMTPTemporaryError).value
        self.assertIsInstance(error, TransientError)
        self.assertEqual(error.code, 451)
        d = transport.send(ENVELOPE, DATA)
        server.transaction()
        self.successResultOf(d)
        self.assertEqual(connector.calls, 1)

    def test_5xx_recipient_is_permanent_with_reply(self) -> None:
        """A 5xx to RCPT fails the message with a PermanentError carrying the server's reply."""
        transport, connector, _clock = self.make()
        d = transport.send(ENVELOPE, DATA)
        server = connector.ready()
        server.lines()
        server.reply("250 ok")
        server.lines()
        server.reply("550 5.1.1 <hamlet@example.com>: user unknown")
        server.lines()
        server.reply("250 ok")
        error = self.failureResultOf(d, SMTPPermanentError).value
        self.assertIsInstance(error, PermanentError)
        self.assertEqual(error.code, 550)
        self.assertIn("user unknown", error.reply)
        self.assertIn("user unknown", str(error))

    def test_some_recipients_refused_is_success(self) -> None:
        """When only some recipients are refused the message is sent and the refusals reported."""
        transport, connector, _clock = self.make()
        d = transport.send(Envelope("noreply@example.com", ("a@example.com", "b@example.com")), DATA)
        server = connector.ready()
        server.transaction(rcpt=("550 no such user", "250 ok"))
        result = self.successResultOf(d)
        self.assertEqual(result.refused, (("a@example.com", 550, "no such user"),))

    def test_mixed_refusals_are_transient(self) -> None:
        """When every recipient is refused and one refusal is 4xx, the error is transient."""
        transport, connector, _clock = self.make()
        d = transport.send(Envelope("noreply@example.com", ("a@example.com", "b@example.com")), DATA)
        server = connector.ready()
        server.lines()
        server.reply("250 ok")
        server.lines()
        server.reply("550 no")
        server.lines()
        server.reply("452 mailbox full")
        self.assertEqual(server.lines(), [b"RSET"])
        server.reply("250 ok")
        self.failureResultOf(d, SMTPTemporaryError)

    def test_5xx_mail_from_and_4xx_end_of_data(self) -> None:
        """A 5xx to MAIL FROM is permanent; a 4xx after the data is transient."""
        transport, connector, _clock = self.make()
        d = transport.send(ENVELOPE, DATA)
        server = connector.ready()
        server.lines()
        server.reply("553 sender rejected")
        server.lines()
        server.reply("250 ok")
        self.failureResultOf(d, SMTPPermanentError)
        d = transport.send(ENVELOPE, DATA)
        server.transaction(final="452 4.3.1 insufficient storage")
        self.assertEqual(server.lines(), [b"RSET"])
        server.reply("250 ok")
        self.failureResultOf(d, SMTPTemporaryError)

    def test_refusal_kept_when_connection_drops_during_rset(self) -> None:
        """A 5xx refusal stays permanent even if the connection drops before RSET is answered."""
        transport, connector, _clock = self.make()
        d = transport.send(ENVELOPE, DATA)
        server = connector.ready()
        server.lines()
        server.reply("250 ok")
        server.lines()
        server.reply("550 5.1.1 unknown")
        self.assertEqual(server.lines(), [b"RSET"])
        server.transport.drop()
        self.assertEqual(self.failureResultOf(d, SMTPPermanentError).value.code, 550)

    def test_421_closes_connection(self) -> None:
        """A 421 reply fails the message as transient and closes the connection."""
        transport, connector, _clock = self.make()
        d = transport.send(ENVELOPE, DATA)
        server = connector.ready()
        server.lines()
        server.reply("421 4.3.2 shutting down")
        self.failureResultOf(d, SMTPTemporaryError)
        self.assertTrue(server.transport.disconnecting)

    def test_command_deadline(self) -> None:
        """A reply not received within command_timeout aborts the connection: TransientError."""
        transport, connector, clock = self.make(command_timeout=10.0)
        d = transport.send(ENVELOPE, DATA)
        server = connector.ready()
        server.lines()
        clock.advance(9.9)
        self.assertNoResult(d)
        clock.advance(0.2)
        error = self.failureResultOf(d, SMTPConnectionError).value
        self.assertIsInstance(error, TransientError)
        self.assertFalse(error.maybe_delivered)
        self.assertTrue(server.transport.aborted)
        clock.advance(0)
        self.assertEqual(clock.getDelayedCalls(), [])

    def test_multiline_reply_keeps_deadline_running(self) -> None:
        """Continuation lines re-arm the deadline; the final line of a reply settles it."""
        transport, connector, clock = self.make(command_timeout=10.0)
        d = transport.send(ENVELOPE, DATA)
        server = connector.accept()
        server.reply("220 hi")
        server.lines()
        server.reply("250-mail.example.com")
        clock.advance(9)
        server.reply("250 SIZE 1000")
        self.assertEqual(server.lines(), [b"MAIL FROM:<noreply@example.com>"])
        self.assertNoResult(d)

    def test_malformed_reply_aborts(self) -> None:
        """A reply line that is not SMTP aborts the connection: SMTPConnectionError, not a refusal."""
        transport, connector, _clock = self.make()
        d = transport.send(ENVELOPE, DATA)
        server = connector.ready()
        server.lines()
        server.reply("hello there")
        self.assertIn("protocol error", str(self.failureResultOf(d, SMTPConnectionError).value))
        self.assertTrue(server.transport.aborted)

    def test_handshake_reply_deadline(self) -> None:
        """A handshake reply missing past command_timeout (within connect_timeout) is SMTPUnavailable."""
        transport, connector, clock = self.make(connect_timeout=30.0, command_timeout=5.0)
        d = transport.send(ENVELOPE, DATA)
        server = connector.accept()
        server.reply("220 hi")
        clock.advance(5)
        self.assertIn("no reply", str(self.failureResultOf(d, SMTPUnavailable).value))
        self.assertTrue(server.transport.aborted)

    def test_connect_timeout(self) -> None:
        """A connection not ready within connect_timeout fails with SMTPUnavailable (transient)."""
        transport, connector, clock = self.make(connect_timeout=10.0)
        d = transport.send(ENVELOPE, DATA)
        clock.advance(10)
        error = self.failureResultOf(d, SMTPUnavailable).value
        self.assertIsInstance(error, TransientError)
        self.assertIn("timed out connecting", str(error))
        self.assertEqual(connector.cancelled, 1)

    def test_greeting_timeout(self) -> None:
        """A server that accepts but never greets is aborted at the connect deadline."""
        transport, connector, clock = self.make(connect_timeout=5.0, command_timeout=30.0)
        d = transport.send(ENVELOPE, DATA)
        server = connector.accept()
        clock.advance(5)
        self.failureResultOf(d, SMTPUnavailable)
        self.assertTrue(server.transport.aborted)
        clock.advance(0)
        self.assertEqual(clock.getDelayedCalls(), [])

    def test_refused_and_dns_errors(self) -> None:
        """Connection refused and DNS failures are SMTPUnavailable (transient)."""
        transport, connector, _clock = self.make()
        d = transport.send(ENVELOPE, DATA)
        connector.fail(inet_error.ConnectionRefusedError())
        self.assertIn("cannot connect", str(self.failureResultOf(d, SMTPUnavailable).value))
        d = transport.send(ENVELOPE, DATA)
        connector.fail(inet_error.DNSLookupError("mail.example.com"))
        self.assertIn("DNS lookup", str(self.failureResultOf(d, SMTPUnavailable).value))

    def test_greeting_refused(self) -> None:
        """A 554 greeting is SMTPUnavailable with the server's text."""
        transport, connector, _clock = self.make()
        d = transport.send(ENVELOPE, DATA)
        server = connector.accept()
        server.reply("554 no service")
        self.assertIn("554 no service", str(self.failureResultOf(d, SMTPUnavailable).value))

    def test_dropped_before_data_on_fresh_connection(self) -> None:
        """A fresh connection dropped mid-transaction fails the message as transient."""
        transport, connector, _clock = self.make()
        d = transport.send(ENVELOPE, DATA)
        server = connector.ready()
        server.transport.drop()
        error = self.failureResultOf(d, SMTPConnectionError).value
        self.assertFalse(error.maybe_delivered)

    def test_dropped_after_data(self) -> None:
        """A drop after the whole message was sent is transient, marked maybe_delivered, not retried."""
        transport, connector, _clock = self.make()
        d = transport.send(ENVELOPE, DATA)
        server = connector.ready()
        server.lines()
        server.reply("250 ok")
        server.lines()
        server.reply("250 ok")
        server.lines()
        server.reply("354 go")
        server.transport.drop()
        self.assertTrue(self.failureResultOf(d, SMTPConnectionError).value.maybe_delivered)
        self.assertEqual(connector.calls, 1)

    def test_reused_connection_dropped_is_retried_once(self) -> None:
        """A reused connection that drops before the data is retried at once on a new connection."""
        transport, connector, _clock, server1 = self.first_message(noop_after_idle=100)
        d = transport.send(ENVELOPE, DATA)
        server1.lines()
        server1.transport.drop()
        connector.ready().transaction()
        self.successResultOf(d)
        self.assertEqual(connector.calls, 2)

    def test_invalid_envelope_address(self) -> None:
        """An envelope address that cannot be sent is a PermanentError, the connection stays usable."""
        transport, _connector, _clock, server = self.first_message()
        d = transport.send(Envelope("noreply@example.com", ("bad address>@x",)), DATA)
        self.failureResultOf(d, SMTPPermanentError)
        d = transport.send(ENVELOPE, DATA)
        server.transaction()
        self.successResultOf(d)


class CancelTests(TransportTestCase):
    def test_cancel_in_flight_aborts_connection(self) -> None:
        """Cancelling the send in flight aborts its connection; the next message reconnects."""
        transport, connector, clock = self.make()
        d = transport.send(ENVELOPE, DATA)
        server = connector.ready()
        d.cancel()
        self.failureResultOf(d, CancelledError)
        self.assertTrue(server.transport.aborted)
        clock.advance(0)
        d = transport.send(ENVELOPE, DATA)
        connector.ready().transaction()
        self.successResultOf(d)

    def test_cancel_while_connecting(self) -> None:
        """Cancelling during connect cancels the connection attempt."""
        transport, connector, clock = self.make()
        d = transport.send(ENVELOPE, DATA)
        d.cancel()
        self.failureResultOf(d, CancelledError)
        self.assertEqual(connector.cancelled, 1)
        self.assertEqual(clock.getDelayedCalls(), [])

    def test_cancel_queued(self) -> None:
        """Cancelling a queued send removes it; it is never sent."""
        transport, connector, _clock = self.make()
        first = transport.send(ENVELOPE, DATA)
        second = transport.send(Envelope("noreply@example.com", ("other@example.com",)), DATA)
        second.cancel()
        self.failureResultOf(second, CancelledError)
        server = connector.ready()
        server.transaction()
        self.successResultOf(first)
        self.assertEqual(server.lines(), [])

    def test_close_quits_and_waits(self) -> None:
        """close() sends QUIT on the idle connection and fires once it is closed."""
        transport, _connector, clock, server = self.first_message()
        closed = transport.close()
        self.assertEqual(server.lines(), [b"QUIT"])
        self.assertNoResult(closed)
        server.reply("221 bye")
        clock.advance(0)
        self.successResultOf(closed)
        self.failureResultOf(transport.send(ENVELOPE, DATA), SMTPConnectionError)

    def test_close_quit_deadline(self) -> None:
        """close() aborts a connection whose server does not answer QUIT in time."""
        transport, _connector, clock, server = self.first_message(command_timeout=3.0)
        closed = transport.close()
        clock.advance(3)
        self.assertTrue(server.transport.aborted)
        clock.advance(0)
        self.successResultOf(closed)

    def test_close_cancels_pending(self) -> None:
        """close() cancels queued and in-flight sends."""
        transport, connector, clock = self.make()
        first = transport.send(ENVELOPE, DATA)
        second = transport.send(ENVELOPE, DATA)
        server = connector.ready()
        closed = transport.close()
        self.failureResultOf(first, CancelledError)
        self.failureResultOf(second, CancelledError)
        clock.advance(0)
        self.successResultOf(closed)
        self.assertTrue(server.transport.aborted)


class HandshakeTests(TransportTestCase):
    def test_starttls(self) -> None:
        """With tls = starttls the client upgrades the connection and says EHLO again."""
        context = object()
        clock = Clock()
        connector = FakeConnector(clock)
        options = SMTPOptions(host="mail.example.com", port=587, tls="starttls")
        transport = SMTPTransport(clock, connector, options, tls_context=context)
        d = transport.send(ENVELOPE, DATA)
        server = connector.accept()
        server.reply("220 hi")
        server.lines()
        server.reply("250-mail.example.com", "250 STARTTLS")
        self.assertEqual(server.lines(), [b"STARTTLS"])
        server.reply("220 go ahead")
        self.assertIs(server.transport.tls, context)
        self.assertEqual(server.lines(), [b"EHLO localhost"])
        server.reply("250 mail.example.com")
        server.transaction()
        self.successResultOf(d)

    def test_starttls_plaintext_injection(self) -> None:
        """Lines sent in clear after the STARTTLS reply (an injection) end the session before TLS starts."""
        clock = Clock()
        connector = FakeConnector(clock)
        options = SMTPOptions(host="mail.example.com", port=587, tls="starttls")
        transport = SMTPTransport(clock, connector, options, tls_context=object())
        d = transport.send(ENVELOPE, DATA)
        server = connector.ready("STARTTLS")
        server.lines()
        server.reply("220 go ahead", "250 injected")
        self.assertIn("in clear", str(self.failureResultOf(d, SMTPUnavailable).value))
        self.assertIsNone(server.transport.tls)
        self.assertTrue(server.transport.aborted)

    def test_starttls_required_but_not_offered(self) -> None:
        """Required STARTTLS that the server does not offer: SMTPUnavailable, nothing sent."""
        clock = Clock()
        connector = FakeConnector(clock)
        options = SMTPOptions(host="mail.example.com", port=587, tls="starttls", starttls_required=True)
        transport = SMTPTransport(clock, connector, options, tls_context=object())
        d = transport.send(ENVELOPE, DATA)
        server = connector.accept()
        server.reply("220 hi")
        server.lines()
        server.reply("250 mail.example.com")
        self.assertIn("TLS", str(self.failureResultOf(d, SMTPUnavailable).value))
        self.assertNotIn(b"MAIL FROM", server.take())

    def test_starttls_refused(self) -> None:
        """A refused STARTTLS fails the session when TLS is required, and is skipped when opportunistic."""
        for required in (True, False):
            clock = Clock()
            connector = FakeConnector(clock)
            options = SMTPOptions(host="mail.example.com", port=587, tls="starttls", starttls_required=required)
            transport = SMTPTransport(clock, connector, options, tls_context=object())
            d = transport.send(ENVELOPE, DATA)
            server = connector.ready("STARTTLS")
            self.assertEqual(server.lines(), [b"STARTTLS"])
            server.reply("454 4.7.0 TLS not available")
            if required:
                self.assertIn("454", str(self.failureResultOf(d, SMTPUnavailable).value))
                self.assertIsNone(server.transport.tls)
            else:
                server.transaction()
                self.successResultOf(d)

    def test_opportunistic_starttls(self) -> None:
        """With starttls_required = false a server without STARTTLS gets the message in clear."""
        clock = Clock()
        connector = FakeConnector(clock)
        options = SMTPOptions(host="mail.example.com", port=587, tls="starttls", starttls_required=False)
        transport = SMTPTransport(clock, connector, options, tls_context=object())
        d = transport.send(ENVELOPE, DATA)
        connector.ready().transaction()
        self.successResultOf(d)

    def test_implicit_tls_skips_starttls(self) -> None:
        """With tls = implicit the connection is already secure: no STARTTLS even if offered."""
        clock = Clock()
        connector = FakeConnector(clock)
        options = SMTPOptions(host="mail.example.com", port=465, tls="implicit")
        transport = SMTPTransport(clock, connector, options, tls_context=object())
        d = transport.send(ENVELOPE, DATA)
        connector.ready("STARTTLS").transaction()
        self.successResultOf(d)

    def test_auth_plain(self) -> None:
        """With a username the client authenticates (AUTH PLAIN) before the first message."""
        transport, connector, _clock = self.make(username="zulip", password="s3cret")
        d = transport.send(ENVELOPE, DATA)
        server = connector.accept()
        server.reply("220 hi")
        server.lines()
        server.reply("250-mail.example.com", "250 AUTH PLAIN")
        (line,) = server.lines()
        self.assertEqual(line, b"AUTH PLAIN " + base64.b64encode(b"\0zulip\0s3cret"))
        server.reply("235 ok")
        server.transaction()
        self.successResultOf(d)

    def test_auth_declined(self) -> None:
        """Rejected credentials fail with SMTPUnavailable; the password is not in the message."""
        transport, connector, _clock = self.make(username="zulip", password="s3cret")
        d = transport.send(ENVELOPE, DATA)
        server = connector.accept()
        server.reply("220 hi")
        server.lines()
        server.reply("250-mail.example.com", "250 AUTH PLAIN")
        server.lines()
        server.reply("535 5.7.8 bad credentials")
        self.assertEqual(server.lines(), [b"QUIT"])
        self.assertTrue(server.transport.disconnecting)
        error = self.failureResultOf(d, SMTPUnavailable).value
        self.assertIn("535", str(error))
        self.assertNotIn("s3cret", str(error))
        self.assertNotIn(base64.b64encode(b"\0zulip\0s3cret").decode(), str(error))

    def test_auth_login(self) -> None:
        """A server offering only AUTH LOGIN gets the user name, then the password, each in base64."""
        transport, connector, _clock = self.make(username="zulip", password="s3cret")
        d = transport.send(ENVELOPE, DATA)
        server = connector.ready("AUTH LOGIN")
        self.assertEqual(server.lines(), [b"AUTH LOGIN"])
        server.reply("334 VXNlcm5hbWU6")
        self.assertEqual(server.lines(), [base64.b64encode(b"zulip")])
        server.reply("334 UGFzc3dvcmQ6")
        self.assertEqual(server.lines(), [base64.b64encode(b"s3cret")])
        server.reply("235 2.7.0 ok")
        server.transaction()
        self.successResultOf(d)

    def test_auth_cram_md5_preferred(self) -> None:
        """CRAM-MD5 is chosen when offered; the password itself never goes over the wire."""
        transport, connector, _clock = self.make(username="tim", password="tanstaaftanstaaf")
        d = transport.send(ENVELOPE, DATA)
        server = connector.ready("AUTH PLAIN LOGIN CRAM-MD5")
        self.assertEqual(server.lines(), [b"AUTH CRAM-MD5"])
        server.reply("334 " + base64.b64encode(b"<1896.697170952@postoffice.reston.mci.net>").decode())
        (line,) = server.lines()
        self.assertEqual(base64.b64decode(line), b"tim b913a602c7eda7a495b4e6e7334d3890")
        server.reply("235 ok")
        server.transaction()
        self.successResultOf(d)

    def test_auth_malformed_challenge(self) -> None:
        """A challenge that is not base64 is cancelled with "*" and the session fails: SMTPUnavailable."""
        transport, connector, _clock = self.make(username="zulip", password="s3cret")
        d = transport.send(ENVELOPE, DATA)
        server = connector.ready("AUTH LOGIN")
        server.lines()
        server.reply("334 ???")
        self.assertEqual(server.lines(), [b"*"])
        server.reply("501 cancelled")
        self.assertIn("AUTH LOGIN", str(self.failureResultOf(d, SMTPUnavailable).value))
        self.assertTrue(server.transport.aborted)

    def test_auth_required_but_not_offered(self) -> None:
        """A username with a server that offers no AUTH: SMTPUnavailable."""
        transport, connector, _clock = self.make(username="zulip", password="s3cret")
        d = transport.send(ENVELOPE, DATA)
        connector.ready()
        self.failureResultOf(d, SMTPUnavailable)

    def test_helo_fallback(self) -> None:
        """A server that refuses EHLO gets HELO (no TLS or AUTH required)."""
        transport, connector, _clock = self.make()
        d = transport.send(ENVELOPE, DATA)
        server = connector.accept()
        server.reply("220 hi")
        server.lines()
        server.reply("502 command not implemented")
        self.assertEqual(server.lines(), [b"HELO localhost"])
        server.reply("250 hello")
        server.transaction()
        self.successResultOf(d)


class HelperTests(TestCase):
    def test_wire_data(self) -> None:
        """Data gets CRLF line ends, dot-stuffing, and the end-of-data line."""
        self.assertEqual(wire_data(b".a\nb\r\n.c"), b"..a\r\nb\r\n..c\r\n.\r\n")
        self.assertEqual(wire_data(b"x\r\n"), b"x\r\n.\r\n")

    def test_reply_error(self) -> None:
        """4xx replies are transient, 5xx permanent; the reply text is kept."""
        self.assertIsInstance(reply_error(450, b"busy", "RCPT"), TransientError)
        error = reply_error(554, b"5.7.1 spam\nmore", "DATA")
        self.assertIsInstance(error, PermanentError)
        self.assertEqual(error.reply, "5.7.1 spam more")
