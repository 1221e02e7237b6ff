"""The SMTP session: a small subclass of twisted.mail's ESMTP client, and its errors.

Twisted's :class:`~twisted.mail.smtp.ESMTPClient` does the handshake (greeting,
EHLO with HELO fallback, STARTTLS, AUTH CRAM-MD5 / LOGIN / PLAIN).  Instead of its
send-then-QUIT cycle, :class:`SMTPConnection` then stays open and idle and carries
one operation at a time on request: a mail transaction (``send``) or a ``NOOP``
check.  Every reply has a deadline on the injected clock; cancelling an
operation aborts the connection.  :mod:`zqtwisted.mail.smtp` builds the reusing
transport on top of it.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.internet.protocol import connectionDone
from twisted.mail._cred import CramMD5ClientAuthenticator, LOGINAuthenticator, PLAINAuthenticator
from twisted.mail.smtp import SUCCESS, ESMTPClient, SMTPClientError
from twisted.python.failure import Failure

from zqtwisted.errors import PermanentError, TransientError
from zqtwisted.mail.render import Envelope


class SMTPConnectionError(TransientError):
    """The connection failed or dropped; ``maybe_delivered`` once the whole message was sent."""

    def __init__(self, message: str, maybe_delivered: bool = False) -> None:
        super().__init__(message)
        self.maybe_delivered = maybe_delivered


class SMTPUnavailable(SMTPConnectionError):
    """No usable session could be opened (connect, DNS, TLS, AUTH): every message fails alike."""


class SMTPTemporaryError(TransientError):
    """A 4xx reply: try again later."""

    def __init__(self, message: str, code: int, reply: str) -> None:
        super().__init__(message)
        self.code, self.reply = code, reply


class SMTPPermanentError(PermanentError):
    """A 5xx reply to this message (sender, recipients or content refused)."""

    def __init__(self, message: str, code: int, reply: str) -> None:
        super().__init__(message)
        self.code, self.reply = code, reply


def reply_error(code: int, reply: bytes | str, stage: str) -> SMTPTemporaryError | SMTPPermanentError:
    """The error for an unexpected ``code`` reply to ``stage``."""
    text = reply.decode("utf-8", "replace") if isinstance(reply, bytes) else reply
    text = " ".join(text.split())
    message = f"{stage}: the SMTP server replied {code} {text}"
    if 500 <= code < 600:
        return SMTPPermanentError(message, code, text)
    return SMTPTemporaryError(message, code, text)


@dataclass(frozen=True)
class SendResult:
    """A delivered message: the final reply and the recipients refused (if only some were)."""

    code: int
    reply: str
    refused: tuple[tuple[str, int, str], ...] = ()


def wire_data(data: bytes) -> bytes:
    """``data`` with CRLF line ends, dot-stuffed, followed by the end-of-data line."""
    data = re.sub(rb"\r?\n", b"\r\n", data)
    if not data.endswith(b"\r\n"):
        data += b"\r\n"
    if data.startswith(b"."):
        data = b"." + data
    return data.replace(b"\r\n.", b"\r\n..") + b".\r\n"


def _path(address: str) -> bytes:
    if not address.isascii() or any(c in address for c in "<>\r\n ") or address.count("@") > 1:
        raise SMTPPermanentError(f"invalid envelope address {address!r}", 553, "invalid address")
    return b"<" + address.encode("ascii") + b">"


class SMTPConnection(ESMTPClient):
    """One SMTP session kept open between messages.  States: connecting, idle, busy, closed."""

    debug = False  # Twisted's line log would keep the AUTH exchange in error messages

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
        super().__init__(password.encode("utf-8") if username else None, tls_context, identity)
        self.requireTransportSecurity = require_tls
        self.requireAuthentication = bool(username)
        if username:
            user = username.encode("utf-8")
            for authenticator in (CramMD5ClientAuthenticator, LOGINAuthenticator, PLAINAuthenticator):
                self.registerAuthenticator(authenticator(user))
        self._clock = clock
        self._command_timeout = command_timeout
        self._implicit_tls = implicit_tls
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

    @property
    def _io(self) -> Any:
        """The transport (TCP or TLS), untyped: Twisted's interfaces lack abortConnection."""
        return self.transport

    # -- life cycle ----------------------------------------------------------------

    def connectionMade(self) -> None:
        super().connectionMade()
        if self._implicit_tls:
            self._tlsMode = True
        self._arm()

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        super().connectionLost(reason)
        self._disarm()
        was = self.state
        self.state = "closed"
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
            self._expected = range(1000)
            self._okresponse = self._failresponse = lambda code, resp: self._io.loseConnection()
            self.sendLine(b"QUIT")
        else:
            self._abort()
        return done

    def _abort(self) -> None:
        """Drop the connection now; an operation in flight fails."""
        self._disarm()
        pending, self._pending = self._pending, None
        if self.state != "closed" and not self._aborted:
            self.state = "closing"
            self._aborted = True
            if self.transport is not None:
                self._io.abortConnection()
        if pending is not None and not pending.called:
            pending.errback(SMTPConnectionError("SMTP connection aborted"))

    def _cancelled(self, d: Deferred[Any]) -> None:
        """Canceller of an operation: abort the connection, let the Deferred fail with CancelledError."""
        if self._pending is d:
            self._pending = None
        self._abort()

    def _fail(self, error: Exception, abort: bool = False) -> None:
        """Fail what waits on the server with ``error``, then close the connection."""
        self._disarm()
        if not self.ready.called:
            self.ready.errback(error)
        elif self._pending is not None:
            d, self._pending = self._pending, None
            d.errback(error)
        if self.state == "closed":
            return
        if abort:
            self._abort()
        else:
            self.state = "closing"
            self._io.write(b"QUIT\r\n")
            self._io.loseConnection()

    # -- deadlines -------------------------------------------------------------------

    def _arm(self) -> None:
        self._disarm()
        self._deadline = self._clock.callLater(self._command_timeout, self._timed_out)

    def _disarm(self) -> None:
        if self._deadline is not None and self._deadline.active():
            self._deadline.cancel()
        self._deadline = None

    def _timed_out(self) -> None:
        self._deadline = None
        self._fail(SMTPConnectionError(f"no reply from the SMTP server within {self._command_timeout}s"), abort=True)

    # -- lines -----------------------------------------------------------------------

    def sendLine(self, line: bytes) -> None:
        super().sendLine(line)
        self._arm()

    def lineReceived(self, line: bytes) -> Any:
        self._disarm()
        if self.state in ("closing", "closed"):
            return None
        if self.state == "idle":
            # Unsolicited, as "421 idle timeout, closing": the session is over.
            self.state = "closing"
            self._io.loseConnection()
            return None
        if line[3:4] == b"-":
            self._arm()
        return super().lineReceived(line)

    # -- handshake (Twisted's) ends here ---------------------------------------------

    def smtpState_from(self, code: int, resp: bytes) -> None:
        """Twisted calls this when the session can start a mail transaction."""
        self._idle()
        if not self.ready.called:
            self.ready.callback(self)

    def smtpState_helo(self, code: int, resp: bytes) -> None:
        super().smtpState_helo(code, resp)
        self._failresponse = self.smtpConnectionFailed

    def sendError(self, exc: Exception) -> None:
        """Twisted reports handshake and protocol errors here."""
        if isinstance(exc, SMTPClientError):
            code, resp = exc.code, exc.resp
            text = resp.decode("utf-8", "replace") if isinstance(resp, bytes) else str(resp)
            detail = f"{code} {' '.join(text.split())}" if code and code > 0 else " ".join(text.split())
        else:
            detail = str(exc)
        if self.ready.called:
            self._fail(SMTPConnectionError(f"SMTP protocol error: {detail}"), abort=True)
        else:
            self._fail(SMTPUnavailable(f"SMTP session could not be opened: {detail}"))

    def _idle(self) -> None:
        self.state = "idle"
        self.last_active = self._clock.seconds()
        self._expected = []

    def _begin(self) -> Deferred[Any]:
        if self.state != "idle":
            raise RuntimeError(f"SMTP connection is {self.state}, not idle")
        self.state = "busy"
        self._data_sent = False
        self._refusal = None
        self._pending = Deferred(self._cancelled)
        return self._pending

    def _complete(self, result: Any) -> None:
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
        self._expected = SUCCESS
        self._okresponse = lambda code, resp: self._fail_and_idle(error)
        self._failresponse = lambda code, resp: self._fail(error)
        self.sendLine(b"RSET")

    def _fail_and_idle(self, error: Exception) -> None:
        self._idle()
        d, self._pending = self._pending, None
        if d is not None:
            d.errback(error)

    # -- operations --------------------------------------------------------------------

    def noop(self) -> Deferred[None]:
        """Check the session: NOOP must be answered 250."""
        d = self._begin()
        self._expected = [250]
        self._okresponse = lambda code, resp: self._complete(None)
        self._failresponse = lambda code, resp: self._fail(reply_error(code, resp, "NOOP"))
        self.sendLine(b"NOOP")
        return d

    def send(self, envelope: Envelope, data: bytes) -> Deferred[SendResult]:
        """One mail transaction: MAIL FROM, RCPT TO each recipient, DATA."""
        sender = _path(envelope.sender) if envelope.sender else b"<>"
        paths = [(r, _path(r)) for r in envelope.recipients]
        d = self._begin()
        accepted: list[str] = []
        refused: list[tuple[str, int, str]] = []
        todo = iter(paths)

        def next_recipient(code: int = 0, resp: bytes = b"") -> None:
            try:
                address, path = next(todo)
            except StopIteration:
                if accepted:
                    self._expected = [354]
                    self._okresponse = send_data
                    self._failresponse = lambda c, r: self._reset_then_fail(reply_error(c, r, "DATA"))
                    self.sendLine(b"DATA")
                else:
                    self._reset_then_fail(_all_refused(refused))
                return
            self._expected = SUCCESS
            self._okresponse = lambda c, r: accept(address)
            self._failresponse = lambda c, r: refuse(address, c, r)
            self.sendLine(b"RCPT TO:" + path)

        def accept(address: str) -> None:
            accepted.append(address)
            next_recipient()

        def refuse(address: str, code: int, resp: bytes) -> None:
            if code == 421:
                self._fail(reply_error(code, resp, f"RCPT TO <{address}>"))
                return
            refused.append((address, code, " ".join(resp.decode("utf-8", "replace").split())))
            next_recipient()

        def send_data(code: int, resp: bytes) -> None:
            self._expected = SUCCESS
            self._okresponse = delivered
            self._failresponse = lambda c, r: self._reset_then_fail(reply_error(c, r, "end of DATA"))
            self._data_sent = True
            self._io.write(wire_data(data))
            self._arm()

        def delivered(code: int, resp: bytes) -> None:
            self.messages += 1
            text = " ".join(resp.decode("utf-8", "replace").split())
            self._complete(SendResult(code, text, tuple(refused)))

        self._expected = SUCCESS
        self._okresponse = next_recipient
        self._failresponse = lambda c, r: self._reset_then_fail(reply_error(c, r, "MAIL FROM"))
        self.sendLine(b"MAIL FROM:" + sender)
        return d


def _all_refused(refused: Sequence[tuple[str, int, str]]) -> SMTPTemporaryError | SMTPPermanentError:
    detail = "; ".join(f"<{a}>: {c} {r}" for a, c, r in refused)
    worst = min((c for _, c, _ in refused), default=550)  # any 4xx makes it worth a retry
    error = reply_error(worst, detail, "RCPT TO (every recipient refused)")
    return error
