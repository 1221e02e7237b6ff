"""SMTP delivery: one connection, many messages.

:class:`~zqtwisted.mail.esmtp_client.SMTPConnection` is our own ESMTP client
protocol (on Twisted's public ``LineReceiver``, no private Twisted API) that
stays open between messages; every reply has a deadline and cancelling an
operation aborts it.

:class:`SMTPTransport` keeps one connection across messages and batches: it
queues sends, checks a connection with NOOP before reusing it after an idle
spell, retires it after ``max_connection_age`` seconds or
``max_messages_per_connection`` messages, and opens a new one when needed.

Errors: a 4xx reply, a refused or dropped connection, DNS failures and timeouts
are :class:`~zqtwisted.errors.TransientError`; a 5xx reply to MAIL, RCPT or DATA
is a :class:`~zqtwisted.errors.PermanentError` carrying the server's reply.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from twisted.internet import error as inet_error
from twisted.internet.defer import Deferred, DeferredList, TimeoutError, maybeDeferred
from twisted.internet.interfaces import IProtocolFactory, IReactorTime
from twisted.internet.protocol import ClientFactory
from twisted.logger import Logger
from twisted.python.failure import Failure

from zqtwisted.mail.esmtp_client import SMTPConnection
from zqtwisted.mail.render import Envelope
from zqtwisted.mail.smtp_wire import (
    SendResult,
    SMTPConnectionError,
    SMTPPermanentError,
    SMTPTemporaryError,
    SMTPUnavailable,
    reply_error,
    wire_data,
)

__all__ = [
    "Connector",
    "SMTPConnection",
    "SMTPConnectionError",
    "SMTPOptions",
    "SMTPPermanentError",
    "SMTPTemporaryError",
    "SMTPTransport",
    "SMTPUnavailable",
    "SendResult",
    "reply_error",
    "wire_data",
]

Connector = Callable[[IProtocolFactory], "Deferred[Any]"]


class _ConnectionFactory(ClientFactory):
    noisy = False

    def __init__(self, build: Callable[[], SMTPConnection]) -> None:
        self._build = build

    def buildProtocol(self, addr: Any) -> SMTPConnection:
        protocol = self._build()
        protocol.factory = self
        return protocol


@dataclass(frozen=True)
class SMTPOptions:
    host: str
    port: int
    tls: str = "starttls"
    starttls_required: bool = True
    username: str = ""
    password: str = field(default="", repr=False)
    helo_name: str = "localhost"
    connect_timeout: float = 10.0
    command_timeout: float = 30.0
    max_connection_age: float = 300.0
    max_messages_per_connection: int = 1000
    noop_after_idle: float = 1.0


@dataclass(eq=False)
class _Job:
    envelope: Envelope
    data: bytes
    result: Deferred[SendResult] = field(default_factory=Deferred)
    op: Deferred[SendResult] | None = None


class SMTPTransport:
    """Sends messages one after another over one reused SMTP connection."""

    log = Logger()

    def __init__(self, clock: IReactorTime, connect: Connector, options: SMTPOptions, tls_context: Any = None) -> None:
        self._clock = clock
        self._connect = connect
        self.options = options
        self._tls_context = tls_context
        self._queue: deque[_Job] = deque()
        self._current: _Job | None = None
        self._conn: SMTPConnection | None = None
        self._retiring: set[SMTPConnection] = set()
        self._pumping = False
        self._closed = False
        self.connections_opened = 0
        self.messages_sent = 0

    def send(self, envelope: Envelope, data: bytes) -> Deferred[SendResult]:
        """Deliver one message; cancelling the Deferred aborts it (and its connection)."""
        job = _Job(envelope, data)
        job.result = Deferred(lambda d: self._cancel(job))
        if self._closed:
            job.result.errback(SMTPConnectionError("the SMTP transport is closed"))
            return job.result
        self._queue.append(job)
        self._pump()
        return job.result

    def close(self) -> Deferred[None]:
        """Cancel what is queued, QUIT the connection; fires when every connection is closed."""
        self._closed = True
        while self._queue:
            self._queue[0].result.cancel()
        if self._current is not None:
            self._current.result.cancel()
        connections = [c for c in (self._conn, *self._retiring) if c is not None]
        self._conn = None
        return DeferredList([c.quit() for c in connections]).addCallback(lambda _: None)

    # -- the queue -------------------------------------------------------------------

    def _pump(self) -> None:
        if self._pumping:
            return
        self._pumping = True
        try:
            while self._current is None and self._queue:
                job = self._current = self._queue.popleft()
                job.op = Deferred.fromCoroutine(self._deliver(job))
                job.op.addBoth(self._finished, job)
        finally:
            self._pumping = False

    def _finished(self, result: SendResult | Failure, job: _Job) -> None:
        if self._current is job:
            self._current = None
        job.op = None
        if not job.result.called:
            if isinstance(result, Failure):
                job.result.errback(result)
            else:
                self.messages_sent += 1
                job.result.callback(result)
        self._pump()

    def _cancel(self, job: _Job) -> None:
        if job in self._queue:
            self._queue.remove(job)
        elif job.op is not None:
            job.op.cancel()

    async def _deliver(self, job: _Job) -> SendResult:
        conn, reused = await self._connection()
        try:
            return await conn.send(job.envelope, job.data)
        except SMTPConnectionError as e:
            if not reused or e.maybe_delivered or self._closed:
                raise
            self.log.info("Reused SMTP connection failed ({error}); retrying on a new one", error=e)
        conn, _ = await self._connection()
        return await conn.send(job.envelope, job.data)

    async def _connection(self) -> tuple[SMTPConnection, bool]:
        conn = self._conn
        if conn is not None:
            reason = self._retire_reason(conn)
            if reason is not None:
                self._retire(conn, reason)
            elif self._clock.seconds() - conn.last_active >= self.options.noop_after_idle:
                try:
                    await conn.noop()
                except (SMTPConnectionError, SMTPTemporaryError, SMTPPermanentError) as e:
                    self.log.info("SMTP connection failed its NOOP check ({error}); reconnecting", error=e)
                    self._retire(conn, "failed NOOP")
                else:
                    return conn, True
            else:
                return conn, True
        return await self._open(), False

    def _retire_reason(self, conn: SMTPConnection) -> str | None:
        if conn.state != "idle":
            return "closed"
        if self._clock.seconds() - conn.opened_at >= self.options.max_connection_age:
            return "max_connection_age"
        if conn.messages >= self.options.max_messages_per_connection:
            return "max_messages_per_connection"
        return None

    def _retire(self, conn: SMTPConnection, reason: str) -> None:
        if self._conn is conn:
            self._conn = None
        if conn.state == "closed":
            return
        self.log.debug("Closing SMTP connection ({reason})", reason=reason)
        self._retiring.add(conn)
        conn.quit().addBoth(lambda _: self._retiring.discard(conn))

    async def _open(self) -> SMTPConnection:
        o = self.options
        factory = _ConnectionFactory(
            lambda: SMTPConnection(
                self._clock,
                identity=o.helo_name,
                command_timeout=o.command_timeout,
                tls_context=self._tls_context if o.tls == "starttls" else None,
                require_tls=o.tls == "starttls" and o.starttls_required,
                implicit_tls=o.tls == "implicit",
                username=o.username,
                password=o.password,
            )
        )
        d = maybeDeferred(self._connect, factory).addCallback(lambda protocol: protocol.ready)
        d.addTimeout(o.connect_timeout, self._clock)
        where = f"{o.host}:{o.port}"
        try:
            conn: SMTPConnection = await d
        except TimeoutError:
            raise SMTPUnavailable(
                f"timed out connecting to the SMTP server {where} after {o.connect_timeout}s"
            ) from None
        except inet_error.DNSLookupError as e:
            raise SMTPUnavailable(f"DNS lookup of the SMTP server {o.host} failed: {e}") from None
        except (inet_error.ConnectError, OSError) as e:
            raise SMTPUnavailable(f"cannot connect to the SMTP server {where}: {e}") from None
        self.connections_opened += 1
        self.log.info("Opened SMTP connection to {where} (tls: {tls})", where=where, tls=o.tls)
        self._conn = conn
        return conn
