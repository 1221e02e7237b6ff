"""The SMTP session: our own ESMTP client protocol on Twisted's public LineReceiver.

:class:`SMTPConnection` opens a session (greeting, EHLO with HELO fallback,
STARTTLS through ``ITLSTransport.startTLS``, AUTH CRAM-MD5 / PLAIN / LOGIN), then
stays open and idle and carries one operation at a time on request: a mail
transaction (``send``) or a ``NOOP`` check.  Every reply has a deadline on the
injected clock; cancelling an operation aborts the connection.

It uses no private name of Twisted (twisted.mail's ``ESMTPClient`` can only be
kept open between messages by driving its private reply state), so it works
with any Twisted that has ``LineReceiver`` and ``ITLSTransport``.  The wire
format and the AUTH exchanges are pure functions in :mod:`zqtwisted.mail.smtp_wire`;
:mod:`zqtwisted.mail.smtp` builds the reusing transport on top of this.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, cast

from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IDelayedCall, IReactorTime, ISSLTransport, ITLSTransport
from twisted.internet.protocol import connectionDone
from twisted.protocols.basic import LineReceiver
from twisted.python.failure import Failure

from zqtwisted.mail.render import Envelope
from zqtwisted.mail.smtp_wire import (
    MailTransaction,
    Reply,
    ReplyReader,
    Responder,
    SendResult,
    SMTPConnectionError,
    SMTPPermanentError,
    SMTPTemporaryError,
    SMTPUnavailable,
    auth_exchange,
    b64,
    capabilities,
    choose_mechanism,
    decode_challenge,
    reply_error,
    wire_data,
)

Handler = Callable[[Reply], None]


class SMTPConnection(LineReceiver):
    """One SMTP session kept open between messages.  States: connecting, idle, busy, quitting, closing, closed."""

    MAX_LENGTH = 16384

    def __init__(
        self,
        clock: IReactorTime,
        *,
        identity: str,
        command_timeout: float,
        tls_context: Any = None,
        require_tls: bool = False,
        implicit_tls: bool = False,
        username: str = "",
        password: str = "",
    ) -> None:
        self._clock = clock
        self._identity = identity.encode("idna") if not identity.isascii() else identity.encode("ascii")
        self._command_timeout = command_timeout
        self._tls_context = tls_context
        self._require_tls = require_tls
        self._secure = implicit_tls
        self._username, self._password = username, password
        self._reader = ReplyReader()
        self._on_reply: Handler | None = None
        self._deadline: IDelayedCall | None = None
        self._pending: Deferred[Any] | None = None
        self._lost_waiters: list[Deferred[None]] = []
        self.ready: Deferred[SMTPConnection] = Deferred(lambda d: self._abort())
        self._refusal: Exception | None = None
        self.state = "connecting"
        self._data_sent = False
        self._aborted = False
        self.opened_at = self.last_active = clock.seconds()
        self.messages = 0

    # -- life cycle ----------------------------------------------------------------

    def connectionMade(self) -> None:
        self._secure = self._secure or ISSLTransport.providedBy(self.transport)
        self._expect(self._greeted)

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self._disarm()
        was = self.state
        self.state = "closed"
        self._on_reply = None
        detail = reason.getErrorMessage() if reason is not None else "connection closed"
        if not self.ready.called:
            self.ready.errback(SMTPUnavailable(f"connection lost during the SMTP handshake: {detail}"))
        elif self._pending is not None:
            d, self._pending = self._pending, None
            sent = self._data_sent and was == "busy"
            # A refusal already received (RSET in flight) says more than the drop.
            d.errback(self._refusal or SMTPConnectionError(f"SMTP connection lost: {detail}", maybe_delivered=sent))
        waiters, self._lost_waiters = self._lost_waiters, []
        for waiter in waiters:
            waiter.callback(None)

    def when_lost(self) -> Deferred[None]:
        """Fires once the connection is closed."""
        if self.state == "closed":
            return succeed(None)
        d: Deferred[None] = Deferred()
        self._lost_waiters.append(d)
        return d

    def quit(self) -> Deferred[None]:
        """Say QUIT (idle) or abort (busy, connecting); fires once the connection is closed."""
        if self.state == "closed":
            return succeed(None)
        done = self.when_lost()
        if self.state == "idle":
            self.state = "quitting"
            self._command(b"QUIT", lambda reply: self._close())
        else:
            self._abort()
        return done

    def _close(self) -> None:
        if self.transport is not None:
            self.transport.loseConnection()

    def _abort(self) -> None:
        """Drop the connection now; an operation in flight fails."""
        self._disarm()
        pending, self._pending = self._pending, None
        if self.state != "closed" and not self._aborted:
            self.state = "closing"
            self._aborted = True
            abort: Callable[[], None] | None = getattr(self.transport, "abortConnection", None)
            if abort is not None:
                abort()
            else:
                self._close()
        if pending is not None and not pending.called:
            pending.errback(SMTPConnectionError("SMTP connection aborted"))

    def _cancelled(self, d: Deferred[Any]) -> None:
        """Canceller of an operation: abort the connection, let the Deferred fail with CancelledError."""
        if self._pending is d:
            self._pending = None
        self._abort()

    def _fail(self, error: Exception, abort: bool = False) -> None:
        """Close the connection (QUIT, or abort), then fail what waits on the server with ``error``."""
        self._disarm()
        self._on_reply = None
        waiting = self._pending if self.ready.called else self.ready
        self._pending = None
        if abort:
            self._abort()
        elif self.state not in ("closing", "closed"):
            if self.state != "quitting":
                self._write(b"QUIT\r\n")
            self.state = "closing"
            self._close()
        if waiting is not None and not waiting.called:
            waiting.errback(error)

    def _broken(self, detail: str) -> None:
        """The server broke the protocol (or a TLS/AUTH step failed locally): abort."""
        if self.ready.called:
            self._fail(SMTPConnectionError(f"SMTP protocol error: {detail}"), abort=True)
        else:
            self._fail(SMTPUnavailable(f"SMTP session could not be opened: {detail}"), abort=True)

    # -- deadlines and lines ---------------------------------------------------------

    def _arm(self) -> None:
        self._disarm()
        self._deadline = self._clock.callLater(self._command_timeout, self._timed_out)

    def _disarm(self) -> None:
        if self._deadline is not None and self._deadline.active():
            self._deadline.cancel()
        self._deadline = None

    def _timed_out(self) -> None:
        self._deadline = None
        message = f"no reply from the SMTP server within {self._command_timeout}s"
        self._fail(SMTPConnectionError(message) if self.ready.called else SMTPUnavailable(message), abort=True)

    def _expect(self, handler: Handler) -> None:
        """Wait (under the deadline) for the next reply and give it to ``handler``."""
        self._on_reply = handler
        self._arm()

    def _write(self, data: bytes) -> None:
        if self.transport is not None:
            self.transport.write(data)

    def _command(self, line: bytes, handler: Handler) -> None:
        self._write(line + b"\r\n")
        self._expect(handler)

    def lineReceived(self, line: bytes) -> None:
        self._disarm()
        if self.state in ("closing", "closed"):
            return
        if self.state == "idle":
            # Unsolicited, as "421 idle timeout, closing": the session is over.
            self.state = "closing"
            self._close()
            return
        try:
            reply = self._reader.feed(line)
        except ValueError as e:
            self._broken(str(e))
            return
        if reply is None:
            self._arm()  # continuation lines keep the deadline running
            return
        handler, self._on_reply = self._on_reply, None
        if handler is None:
            self._broken(f"unexpected reply {reply.code} {reply.text}")
            return
        handler(reply)

    def lineLengthExceeded(self, line: bytes) -> None:
        self._broken(f"reply line longer than {self.MAX_LENGTH} bytes")

    # -- the handshake -----------------------------------------------------------------

    def _refused(self, reply: Reply, stage: str) -> None:
        """The server refused a handshake step: nothing can be sent over this session."""
        self._fail(SMTPUnavailable(f"SMTP session could not be opened: {stage}: {reply.code} {reply.text}"))

    def _greeted(self, reply: Reply) -> None:
        if reply.code != 220:
            self._refused(reply, "greeting")
            return
        self._ehlo()

    def _ehlo(self) -> None:
        self._command(b"EHLO " + self._identity, self._ehlo_replied)

    def _ehlo_replied(self, reply: Reply) -> None:
        if reply.positive:
            self._negotiate(capabilities(reply))
        elif self._username or (self._require_tls and not self._secure):
            self._refused(reply, "EHLO (needed for STARTTLS or AUTH)")
        else:
            self._command(b"HELO " + self._identity, self._helo_replied)

    def _helo_replied(self, reply: Reply) -> None:
        if reply.positive:
            self._opened()
        else:
            self._refused(reply, "HELO")

    def _negotiate(self, extensions: dict[str, str]) -> None:
        """After EHLO: STARTTLS if wanted and offered, else AUTH if configured, else ready."""
        if not self._secure and self._tls_context is not None and "STARTTLS" in extensions:
            self._command(b"STARTTLS", lambda reply: self._starttls_replied(reply, extensions))
        elif not self._secure and self._require_tls:
            self._fail(SMTPUnavailable("the SMTP server does not offer STARTTLS, and TLS is required"))
        else:
            self._authenticate(extensions)

    def _starttls_replied(self, reply: Reply, extensions: dict[str, str]) -> None:
        if reply.code != 220:
            if self._require_tls:
                self._refused(reply, "STARTTLS")
            else:  # opportunistic: go on in clear, with what the server offered in clear
                self._authenticate(extensions)
            return
        if not ITLSTransport.providedBy(self.transport):
            self._broken("the transport cannot start TLS")
            return
        # Anything already buffered came in clear after the 220: a command injection (RFC 3207, section 6).
        if cast(Callable[[], bytes], self.clearLineBuffer)():  # Twisted leaves it unannotated
            self._broken("data received in clear after the STARTTLS reply")
            return
        try:
            ITLSTransport(self.transport).startTLS(self._tls_context)
        except Exception as e:  # noqa: BLE001 - any failure to start TLS ends the session
            self._broken(f"cannot start TLS: {e}")
            return
        self._secure = True
        self._ehlo()  # RFC 3207: forget what was said in clear and ask again

    def _authenticate(self, extensions: dict[str, str]) -> None:
        if not self._username:
            self._opened()
            return
        offered = extensions.get("AUTH", "")
        mechanism = choose_mechanism(offered)
        if mechanism is None:
            why = f"offers AUTH {offered}" if offered else "offers no AUTH"
            self._fail(SMTPUnavailable(f"a username is configured but the SMTP server {why}; none is supported"))
            return
        line, respond = auth_exchange(mechanism, self._username, self._password)
        self._command(line, lambda reply: self._auth_replied(reply, mechanism, respond))

    def _auth_replied(self, reply: Reply, mechanism: str, respond: Responder) -> None:
        if reply.code == 235:
            self._opened()
        elif reply.code == 334:
            try:
                answer = respond(decode_challenge(reply.lines[-1]))
            except ValueError:
                answer = None
            if answer is None:  # RFC 4954: "*" cancels the exchange
                self._command(b"*", lambda r: self._broken(f"AUTH {mechanism}: unexpected challenge"))
            else:
                self._command(b64(answer), lambda r: self._auth_replied(r, mechanism, respond))
        else:
            self._refused(reply, f"AUTH {mechanism}")

    def _opened(self) -> None:
        self._idle()
        if not self.ready.called:
            self.ready.callback(self)

    # -- operations --------------------------------------------------------------------

    def _idle(self) -> None:
        self.state = "idle"
        self.last_active = self._clock.seconds()

    def _begin(self) -> Deferred[Any]:
        if self.state != "idle":
            raise RuntimeError(f"SMTP connection is {self.state}, not idle")
        self.state = "busy"
        self._data_sent = False
        self._refusal = None
        self._pending = Deferred(self._cancelled)
        return self._pending

    def _complete(self, result: object) -> None:
        self._idle()
        d, self._pending = self._pending, None
        if d is not None:
            d.callback(result)

    def _reset_then_fail(self, error: Exception) -> None:
        """After a refused transaction: RSET, then fail the operation and stay usable."""
        if getattr(error, "code", 0) == 421:
            self._fail(error)
            return
        self._refusal = error
        self._command(b"RSET", lambda reply: self._fail_and_idle(error) if reply.positive else self._fail(error))

    def _fail_and_idle(self, error: Exception) -> None:
        self._idle()
        d, self._pending = self._pending, None
        if d is not None:
            d.errback(error)

    def noop(self) -> Deferred[None]:
        """Check the session: NOOP must be answered 250."""
        d = self._begin()
        self._command(b"NOOP", self._noop_replied)
        return d

    def _noop_replied(self, reply: Reply) -> None:
        if reply.code == 250:
            self._complete(None)
        else:
            self._fail(reply_error(reply.code, reply.text, "NOOP"))

    def send(self, envelope: Envelope, data: bytes) -> Deferred[SendResult]:
        """One mail transaction: MAIL FROM, RCPT TO each recipient, DATA."""
        transaction = MailTransaction(envelope)  # checks the addresses before anything is sent
        d = self._begin()
        self._command(transaction.start(), lambda reply: self._transaction_step(transaction, data, reply))
        return d

    def _transaction_step(self, transaction: MailTransaction, data: bytes, reply: Reply) -> None:
        try:
            step = transaction.reply(reply)
        except (SMTPTemporaryError, SMTPPermanentError) as error:
            self._reset_then_fail(error)
            return
        if isinstance(step, SendResult):
            self.messages += 1
            self._complete(step)
            return
        handler: Handler = lambda r: self._transaction_step(transaction, data, r)  # noqa: E731
        if step is None:
            self._data_sent = True
            self._write(wire_data(data))
            self._expect(handler)
        else:
            self._command(step, handler)
