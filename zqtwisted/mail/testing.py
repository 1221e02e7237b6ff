"""A fake mailer for tests, with the interface of :class:`zqtwisted.mail.backends.Mailer`."""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from email.message import EmailMessage
from typing import Any

from twisted.cred.checkers import InMemoryUsernamePasswordDatabaseDontUse
from twisted.cred.credentials import CramMD5Credentials
from twisted.cred.portal import IRealm, Portal
from twisted.internet.defer import Deferred, DeferredList, fail, maybeDeferred, succeed
from twisted.internet.protocol import ServerFactory, connectionDone
from twisted.mail.imap4 import LOGINCredentials, PLAINCredentials
from twisted.mail.interfaces import IMessageDelivery
from twisted.mail.interfaces import IMessageSMTP as IMessage
from twisted.mail.smtp import ESMTP, SMTPBadRcpt, SMTPBadSender, SMTPServerError
from twisted.python.failure import Failure
from zope.interface import implementer

from zqtwisted.mail.render import Envelope, envelope_of, to_bytes


@dataclass(frozen=True)
class SentEmail:
    message: EmailMessage
    envelope: Envelope
    data: bytes


class FakeMailer:
    """Records what it is given.  Can fail sends, or hold them until released.

    - ``fail_next(*errors)``: the next sends fail with these errors, in order;
    - ``fail_for[address] = error``: every message to ``address`` fails;
    - ``hold = True``: sends wait in ``held`` until the test fires them; cancelling
      one counts it in ``cancelled``.
    """

    def __init__(self) -> None:
        self.sent: list[SentEmail] = []
        self.fail_for: dict[str, Exception] = {}
        self._next_errors: deque[Exception] = deque()
        self.hold = False
        self.held: list[tuple[SentEmail, Deferred[None]]] = []
        self.cancelled = 0
        self.closed = False

    def fail_next(self, *errors: Exception) -> None:
        self._next_errors.extend(errors)

    def send(self, message: EmailMessage, envelope_from: str | None = None) -> Deferred[None]:
        if self.closed:
            return fail(RuntimeError("FakeMailer is closed"))
        envelope = envelope_of(message, envelope_from)
        email = SentEmail(message, envelope, to_bytes(message))
        if self._next_errors:
            return fail(self._next_errors.popleft())
        for address in envelope.recipients:
            if address in self.fail_for:
                return fail(self.fail_for[address])
        if self.hold:
            d: Deferred[None] = Deferred(lambda _: self._cancelled())
            self.held.append((email, d))
            return d
        self.sent.append(email)
        return succeed(None)

    def release(self) -> None:
        """Deliver every held send."""
        held, self.held = self.held, []
        for email, d in held:
            if not d.called:
                self.sent.append(email)
                d.callback(None)

    def _cancelled(self) -> None:
        self.cancelled += 1

    def close(self) -> Deferred[None]:
        self.closed = True
        return succeed(None)


# -- a real SMTP server for integration tests and benchmarks -----------------------------


@dataclass(frozen=True)
class ReceivedMessage:
    """A message the :class:`LocalSMTPServer` accepted (one per recipient)."""

    sender: str
    recipient: str
    data: bytes
    connection: int
    secure: bool = False  # received over TLS (STARTTLS or implicit)
    authenticated: bool = False


class LocalSMTPServer:
    """Twisted's ESMTP server on 127.0.0.1, recording what it receives.

    It answers ``NOOP``, offers ``STARTTLS`` when given a server TLS context,
    requires ``AUTH`` when given ``users``, and can be told to fail: ``reject``
    maps a recipient to an SMTP reply, ``fail_next(stage, code, text)`` answers
    the next MAIL / RCPT / DATA (end of data) / NOOP with that reply.
    """

    def __init__(
        self,
        reactor: Any,
        *,
        tls_context: Any = None,
        implicit_tls: bool = False,
        users: dict[str, str] | None = None,
    ) -> None:
        self.reactor = reactor
        self.tls_context = tls_context
        self.implicit_tls = implicit_tls
        self.users = users or {}
        self.messages: list[ReceivedMessage] = []
        self.connections = 0
        self.open: list[_ServerProtocol] = []
        self.noops = 0
        self.auth_logins = 0
        self.reject: dict[str, tuple[int, str]] = {}
        self._scripted: dict[str, deque[tuple[int, str]]] = {}
        self._port: Any = None
        self.port_number = 0
        self._factory = _ServerFactory(self)

    def fail_next(self, stage: str, code: int, text: str = "scripted failure") -> None:
        self._scripted.setdefault(stage.upper(), deque()).append((code, text))

    def scripted(self, stage: str) -> tuple[int, str] | None:
        queue = self._scripted.get(stage)
        return queue.popleft() if queue else None

    def start(self, port: int = 0) -> int:
        """Listen on 127.0.0.1 (port 0: any free port); returns the port."""
        if self.implicit_tls:
            self._port = self.reactor.listenSSL(port, self._factory, self.tls_context, interface="127.0.0.1")
        else:
            self._port = self.reactor.listenTCP(port, self._factory, interface="127.0.0.1")
        self.port_number = self._port.getHost().port
        return self.port_number

    def stop_listening(self) -> Deferred[None]:
        """Refuse new connections (open ones go on)."""
        port, self._port = self._port, None
        return maybeDeferred(port.stopListening) if port is not None else succeed(None)

    def drop_connections(self, code: int | None = None) -> Deferred[None]:
        """Close every open connection (with a ``code`` reply first, e.g. 421); fires when closed."""
        waiting = []
        for protocol in list(self.open):
            waiting.append(protocol.lost)
            if code is not None:
                protocol.sendCode(code, b"closing connection")
            protocol.io.loseConnection()
        return DeferredList(waiting).addCallback(lambda _: None)

    def stop(self) -> Deferred[None]:
        """Stop listening and abort every connection; fires when all is closed."""
        waiting = [p.lost for p in self.open]
        for protocol in list(self.open):
            protocol.io.abortConnection()
        return DeferredList([self.stop_listening(), *waiting]).addCallback(lambda _: None)

    def by_connection(self) -> dict[int, int]:
        """Number of messages received per connection number."""
        counts: dict[int, int] = {}
        for message in self.messages:
            counts[message.connection] = counts.get(message.connection, 0) + 1
        return counts


@implementer(IMessage)
class _ReceivedLines:
    def __init__(self, server: LocalSMTPServer, sender: str, recipient: str, protocol: _ServerProtocol) -> None:
        self.server, self.sender, self.recipient = server, sender, recipient
        self.connection = protocol.number
        self.secure = server.implicit_tls or protocol.startedTLS
        self.authenticated = protocol.authenticated
        self.lines: list[bytes] = []
        failure = server.scripted("DATA")
        self.failure = SMTPServerError(failure[0], failure[1]) if failure else None

    def lineReceived(self, line: bytes) -> None:
        if self.failure is not None:
            failure, self.failure = self.failure, None
            raise failure
        self.lines.append(line)

    def eomReceived(self) -> Deferred[None]:
        data = b"\r\n".join(self.lines) + b"\r\n"
        self.server.messages.append(
            ReceivedMessage(self.sender, self.recipient, data, self.connection, self.secure, self.authenticated)
        )
        return succeed(None)

    def connectionLost(self) -> None:
        self.lines = []


class _ServerProtocol(ESMTP):
    noisy = False

    def __init__(self, server: LocalSMTPServer, number: int) -> None:
        challengers = {b"LOGIN": LOGINCredentials, b"PLAIN": PLAINCredentials, b"CRAM-MD5": CramMD5Credentials}
        super().__init__(challengers if server.users else {}, server.tls_context if not server.implicit_tls else None)
        self.server = server
        self.number = number
        self.host = b"localhost"
        self.lost: Deferred[None] = Deferred()
        if server.users:
            checker = InMemoryUsernamePasswordDatabaseDontUse(
                **{user: password.encode() for user, password in server.users.items()}
            )
            self.portal = Portal(_Realm(server), [checker])  # type: ignore[assignment]

    def connectionMade(self) -> None:
        super().connectionMade()
        self.server.open.append(self)

    @property
    def io(self) -> Any:
        return self.transport

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        super().connectionLost(reason)
        if self in self.server.open:
            self.server.open.remove(self)
        self.lost.callback(None)

    def do_NOOP(self, rest: bytes) -> None:
        self.server.noops += 1
        code, text = self.server.scripted("NOOP") or (250, "OK")
        self.sendCode(code, text.encode())

    def receivedHeader(self, helo: Any, origin: Any, recipients: Any) -> None:
        return None

    def validateFrom(self, helo: Any, origin: Any) -> Any:
        if self.server.users and not self.authenticated:
            raise SMTPBadSender(origin, 530, "Authentication required")
        scripted = self.server.scripted("MAIL")
        if scripted is not None:
            raise SMTPBadSender(origin, scripted[0], scripted[1])
        return origin

    def validateTo(self, user: Any) -> Any:
        recipient = str(user.dest)
        scripted = self.server.scripted("RCPT") or self.server.reject.get(recipient)
        if scripted is not None:
            raise SMTPBadRcpt(user, scripted[0], scripted[1])
        sender = str(user.orig) if user.orig is not None else ""
        return lambda: _ReceivedLines(self.server, sender, recipient, self)


class _ServerFactory(ServerFactory):
    noisy = False

    def __init__(self, server: LocalSMTPServer) -> None:
        self.server = server

    def buildProtocol(self, addr: Any) -> _ServerProtocol:
        self.server.connections += 1
        protocol = _ServerProtocol(self.server, self.server.connections)
        protocol.factory = self
        return protocol


@implementer(IRealm)
class _Realm:
    def __init__(self, server: LocalSMTPServer) -> None:
        self.server = server

    def requestAvatar(self, avatar_id: Any, mind: Any, *interfaces: Any) -> Any:
        self.server.auth_logins += 1
        return IMessageDelivery, object(), lambda: None
