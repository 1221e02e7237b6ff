"""The HTTP client of outgoing webhooks: deadlines, size caps, per-host slots.

A :class:`WebhookClient` drives an injected Agent (in production: the
SSRF-guarded endpoint factory over a persistent ``HTTPConnectionPool`` shared
through :class:`zqtwisted.resources.Resources`, which owns and closes it).  It
calls the Agent itself rather than through treq, whose URL preparation fails on
IPv6 literals (:mod:`zqtwisted.webhooks.urls`).  Every POST:

* waits for one of its host's ``per_host_concurrency`` slots (so one slow bot
  server cannot hold every request the process has in flight);
* then has ``timeout`` seconds for everything: connecting, sending, the status
  line *and reading the body*.  At the deadline the request is cancelled, which
  aborts the connection;
* reads at most ``max_response_bytes`` of body, aborting beyond that;
* follows no redirects unless asked to; when asked, follows RFC 9110's rules
  (:func:`zqtwisted.webhooks.urls.follow`) for at most ``max_redirects`` hops,
  each new connection through the same guard, all within the one deadline;
* keeps no cookies and asks for no compression.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Protocol as TypingProtocol
from urllib.parse import urlsplit

from twisted.internet.defer import CancelledError, Deferred, DeferredSemaphore, TimeoutError, succeed
from twisted.internet.error import (
    ConnectError,
    ConnectingCancelledError,
    ConnectionDone,
    ConnectionLost,
    DNSLookupError,
)
from twisted.internet.interfaces import IConsumer, IHostnameResolver, IReactorTime
from twisted.internet.protocol import Protocol, connectionDone
from twisted.python.failure import Failure
from twisted.web.client import (  # type: ignore[attr-defined]  # RequestNotSent: public, not in its __all__
    Agent,
    HTTPConnectionPool,
    RequestNotSent,
    RequestTransmissionFailed,
    ResponseDone,
    ResponseFailed,
    ResponseNeverReceived,
)
from twisted.web.http import PotentialDataLoss
from twisted.web.http_headers import Headers
from twisted.web.iweb import IAgent, IBodyProducer, IResponse
from zope.interface import implementer

from zqtwisted._version import __version__
from zqtwisted.errors import PermanentError
from zqtwisted.runtime.reactor import IConnectingReactor
from zqtwisted.webhooks.guard import DisallowedNetworkError, GuardedEndpointFactory, NetworkGuard
from zqtwisted.webhooks.settings import MIB, OutgoingWebhookSettings
from zqtwisted.webhooks.urls import (
    CREDENTIAL_HEADERS,
    MAX_REDIRECTS,
    REDIRECT_STATUSES,
    InvalidURL,
    RedirectRefused,
    follow,
    request_target,
)

USER_AGENT = "ZulipOutgoingWebhook/{version}"

# Failures of the transport: the request may succeed if tried again later.
CONNECTION_ERRORS: tuple[type[BaseException], ...] = (
    ConnectError,
    DNSLookupError,
    ConnectionLost,
    ConnectionDone,
    ResponseFailed,
    ResponseNeverReceived,
    RequestTransmissionFailed,
    RequestNotSent,
)


@dataclass(frozen=True)
class PoolOptions:
    """How a persistent connection pool keeps its connections (applied when the pool is built)."""

    # Idle connections kept per host (Twisted's maxPersistentPerHost).
    max_per_host: int = 2
    # Idle connections are closed after this many seconds.
    idle_timeout: float = 240.0
    # Whether Twisted silently retries a request whose reused connection was closed
    # (Zulip does no HTTP-level retries).
    retry: bool = False


class WebhookError(Exception):
    """Base of the errors of :meth:`WebhookClient.post`."""


class WebhookTimeout(WebhookError):
    def __init__(self, url: str, timeout: float) -> None:
        self.timeout = timeout
        super().__init__(f"no complete response from {url} within {timeout:g}s")


class WebhookConnectionError(WebhookError):
    """Connecting failed, or the connection broke before the response was complete."""


class HostBusyError(WebhookError):
    """Every slot of the host stayed taken while this request waited for one."""


class ResponseTooLarge(WebhookError):
    def __init__(self, limit: int) -> None:
        self.limit = limit
        super().__init__(f"the response body exceeds {limit} bytes")


class WebhookRequestError(WebhookError):
    """Any other failure of the request (a bad URL or redirect is a WebhookURLError instead)."""


@dataclass(frozen=True)
class WebhookResponse:
    status: int
    body: bytes
    content_type: str | None = None


class Poster(TypingProtocol):
    """What a caller needs of :class:`WebhookClient`: a POST with a deadline (``timeout`` seconds)."""

    timeout: float

    def post(
        self, url: str, body: bytes, content_type: str, headers: Mapping[str, str] | None = None
    ) -> Deferred[WebhookResponse]: ...


def user_agent(version: str = "") -> str:
    return USER_AGENT.format(version=version or __version__)


class WebhookClient:
    """POSTs with a deadline, a size cap and a per-host concurrency cap."""

    def __init__(
        self,
        clock: IReactorTime,
        agent: IAgent,
        *,
        timeout: float = 10.0,
        max_response_bytes: int = MIB,
        per_host_concurrency: int = 25,
        follow_redirects: bool = False,
        max_redirects: int = MAX_REDIRECTS,
        user_agent: str = user_agent(),
    ) -> None:
        self._clock = clock
        self._agent = _IdentityEncodingAgent(agent)
        self.timeout = timeout
        self.max_response_bytes = max_response_bytes
        self.follow_redirects = follow_redirects
        self.max_redirects = max_redirects
        self.user_agent = user_agent
        self._slots = HostSlots(per_host_concurrency)

    def post(
        self, url: str, body: bytes, content_type: str, headers: Mapping[str, str] | None = None
    ) -> Deferred[WebhookResponse]:
        """POST ``body``; fires with the response, or fails with a WebhookError.

        Fails with a PermanentError when no try can ever succeed: DisallowedNetworkError
        when the guard refuses the host (or a redirect's), a WebhookURLError for a URL
        that cannot be requested (InvalidURL) or a redirect that is not followed
        (RedirectRefused, TooManyRedirects).  Fails with CancelledError when cancelled
        (which aborts the connection).
        """
        return Deferred.fromCoroutine(self._post(url, body, content_type, headers or {}))

    def in_flight(self, url: str) -> int:
        """Requests holding a slot of ``url``'s host (for tests and metrics)."""
        return self._slots.busy(host_key(url))

    async def _post(self, url: str, body: bytes, content_type: str, extra: Mapping[str, str]) -> WebhookResponse:
        target = request_target(url)  # InvalidURL before taking a slot: this URL never works
        key = host_key(url)
        waiting = self._slots.acquire(key)
        waiting.addTimeout(self.timeout, self._clock)
        try:
            await waiting
        except TimeoutError:
            self._slots.forget(key)
            raise HostBusyError(f"all {self._slots.limit} slots of {key} stayed busy for {self.timeout:g}s") from None
        except BaseException:
            self._slots.forget(key)
            raise
        try:
            headers = {"User-Agent": self.user_agent, "Content-Type": content_type, **extra}
            d = Deferred.fromCoroutine(self._exchange(url, target, body, headers))
            d.addTimeout(self.timeout, self._clock)
            return await d
        except TimeoutError:
            raise WebhookTimeout(url, self.timeout) from None
        except (CancelledError, WebhookError, PermanentError):  # PermanentError: the guard's, the URL's
            raise
        except CONNECTION_ERRORS as e:
            raise WebhookConnectionError(f"{type(e).__name__}: {_reason(e)}") from e
        except Exception as e:
            raise WebhookRequestError(f"{type(e).__name__}: {e}") from e
        finally:
            self._slots.release(key)

    async def _exchange(self, url: str, target: bytes, body: bytes, headers: Mapping[str, str]) -> WebhookResponse:
        """The request, and the redirects it leads to when they are followed."""
        method, hops, via = "POST", 0, ""
        payload: bytes | None = body
        while True:
            try:
                response = await self._send(method, target, headers, payload)
            except DisallowedNetworkError as e:
                if not via:
                    raise
                raise DisallowedNetworkError(e.host, e.addresses, via=via) from None
            location = response.headers.getRawHeaders(b"location")
            if not (self.follow_redirects and response.code in REDIRECT_STATUSES and location):
                return await self._read(response)
            await read_body(response, self.max_response_bytes)  # drained: the connection can be reused
            hop = follow(url, method, response.code, location[0], hops, self.max_redirects)
            try:
                target = request_target(hop.url)
            except InvalidURL as e:
                raise RedirectRefused(f"{hop.describe()}: {e}") from None
            url, method, hops, via = hop.url, hop.method, hop.number, hop.describe()
            if not hop.keep_body:
                payload = None
                headers = {k: v for k, v in headers.items() if k.lower() != "content-type"}
            if hop.cross_origin:
                headers = {k: v for k, v in headers.items() if k.lower() not in CREDENTIAL_HEADERS}

    def _send(self, method: str, target: bytes, headers: Mapping[str, str], body: bytes | None) -> Deferred[IResponse]:
        d = self._agent.request(
            method.encode("ascii"),
            target,
            Headers({k: [v] for k, v in headers.items()}),
            BytesProducer(body) if body is not None else None,
        )
        return d.addErrback(_as_cancellation)

    async def _read(self, response: IResponse) -> WebhookResponse:
        content_type = (response.headers.getRawHeaders(b"content-type") or [b""])[0].decode("latin-1") or None
        data = await read_body(response, self.max_response_bytes)
        return WebhookResponse(response.code, data, content_type)


def webhook_pool_options(settings: OutgoingWebhookSettings) -> PoolOptions:
    """How the webhooks' shared pool keeps connections: one idle connection per slot, no silent retry."""
    return PoolOptions(
        max_per_host=settings.per_host_concurrency, idle_timeout=settings.idle_connection_timeout, retry=False
    )


def build_webhook_client(
    reactor: IConnectingReactor,
    settings: OutgoingWebhookSettings,
    pool: HTTPConnectionPool,
    *,
    resolver: IHostnameResolver | None = None,
    guarded: bool = True,
) -> WebhookClient:
    """The production client over the shared ``pool``, the SSRF guard on every connection.

    The pool belongs to its owner (:class:`zqtwisted.resources.Resources`), which closes it.
    """
    if guarded:
        factory = GuardedEndpointFactory(
            reactor, NetworkGuard(settings.allow_networks), resolver=resolver, connect_timeout=settings.timeout
        )
        agent: IAgent = Agent.usingEndpointFactory(reactor, factory, pool=pool)
    else:
        agent = Agent(reactor, connectTimeout=settings.timeout, pool=pool)
    return WebhookClient(
        reactor,
        agent,
        timeout=settings.timeout,
        max_response_bytes=settings.max_response_bytes,
        per_host_concurrency=settings.per_host_concurrency,
        follow_redirects=settings.follow_redirects,
        user_agent=user_agent(settings.user_agent_version),
    )


def host_key(url: str) -> str:
    """``host:port`` of ``url``, the unit of the per-host cap."""
    parts = urlsplit(url)
    try:
        port = parts.port
    except ValueError:
        port = None
    if port is None:
        port = 443 if parts.scheme == "https" else 80
    return f"{(parts.hostname or '').lower()}:{port}"


class HostSlots:
    """One DeferredSemaphore per host, dropped when idle."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._semaphores: dict[str, DeferredSemaphore] = {}

    def acquire(self, key: str) -> Deferred[DeferredSemaphore]:
        semaphore = self._semaphores.get(key)
        if semaphore is None:
            semaphore = self._semaphores[key] = DeferredSemaphore(self.limit)
        return semaphore.acquire()

    def release(self, key: str) -> None:
        self._semaphores[key].release()
        self.forget(key)

    def forget(self, key: str) -> None:
        """Drop the semaphore of ``key`` if nobody holds or awaits it."""
        semaphore = self._semaphores.get(key)
        if semaphore is not None and semaphore.tokens == semaphore.limit and not semaphore.waiting:
            del self._semaphores[key]

    def busy(self, key: str) -> int:
        semaphore = self._semaphores.get(key)
        return 0 if semaphore is None else semaphore.limit - semaphore.tokens


# -- the body --------------------------------------------------------------------


class _CappedBody(Protocol):
    """Collects a response body up to ``limit`` bytes; beyond, drops the connection."""

    def __init__(self, limit: int, finished: Deferred[bytes]) -> None:
        self._limit = limit
        self._finished = finished
        self._chunks: list[bytes] = []
        self._size = 0
        self._done = False

    def dataReceived(self, data: bytes) -> None:
        if self._done:
            return
        self._size += len(data)
        if self._size > self._limit:
            self.abort()
            self._finished.errback(Failure(ResponseTooLarge(self._limit)))
            return
        self._chunks.append(data)

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        if self._done:
            return
        self._done = True
        if reason.check(ResponseDone, PotentialDataLoss):
            self._finished.callback(b"".join(self._chunks))
        else:
            self._finished.errback(reason)

    def abort(self) -> None:
        """Stop reading: the connection is closed, never reused."""
        if self._done:
            return
        self._done = True
        self._chunks = []
        stop = getattr(self.transport, "stopProducing", None)
        if stop is not None:
            stop()


def read_body(response: IResponse, limit: int) -> Deferred[bytes]:
    """The body of ``response``; cancelling the Deferred aborts the connection."""
    protocol: _CappedBody | None = None

    def cancel(_: Deferred[bytes]) -> None:
        if protocol is not None:
            protocol.abort()

    finished: Deferred[bytes] = Deferred(cancel)
    protocol = _CappedBody(limit, finished)
    response.deliverBody(protocol)
    return finished


@implementer(IBodyProducer)
class BytesProducer:
    """A request body already in memory, written at once (no cooperator, no global reactor)."""

    def __init__(self, body: bytes) -> None:
        self._body = body
        self.length = len(body)

    def startProducing(self, consumer: IConsumer) -> Deferred[None]:
        consumer.write(self._body)
        return succeed(None)

    def pauseProducing(self) -> None:
        pass

    def resumeProducing(self) -> None:
        pass

    def stopProducing(self) -> None:
        pass


@implementer(IAgent)
class _IdentityEncodingAgent:
    """Asks for uncompressed bodies, and hides the encoding of one sent anyway.

    Nothing here inflates a body (treq's client would decode gzip whatever the
    server was told, so a small gzip bomb would expand in memory before the size
    cap saw it).  A body sent compressed anyway is handed on as it came (and
    fails as invalid JSON); its encoding moves to ``x-original-content-encoding``.
    """

    def __init__(self, agent: IAgent) -> None:
        self._agent = agent

    def request(
        self, method: bytes, uri: bytes, headers: Headers | None = None, bodyProducer: IBodyProducer | None = None
    ) -> Deferred[IResponse]:
        headers = headers.copy() if headers is not None else Headers()
        headers.setRawHeaders(b"accept-encoding", [b"identity"])
        return self._agent.request(method, uri, headers, bodyProducer).addCallback(self._hide_encoding)

    @staticmethod
    def _hide_encoding(response: IResponse) -> IResponse:
        encoding = response.headers.getRawHeaders(b"content-encoding")
        if encoding is not None:
            response.headers.removeHeader(b"content-encoding")
            response.headers.setRawHeaders(b"x-original-content-encoding", encoding)
        return response


def _as_cancellation(failure: Failure) -> Failure:
    """Twisted reports a cancelled request as a connection error that wraps CancelledError.

    Report it as the CancelledError it is, so that ``addTimeout`` and callers see it.
    """
    if failure.check(ConnectingCancelledError):
        return Failure(CancelledError())
    reasons = getattr(failure.value, "reasons", None) or []
    if any(isinstance(r, Failure) and r.check(CancelledError) for r in reasons):
        return Failure(CancelledError())
    return failure


def _reason(error: BaseException) -> str:
    reasons = getattr(error, "reasons", None)
    if reasons:
        return "; ".join(f.getErrorMessage() for f in reasons if isinstance(f, Failure))
    return str(error) or type(error).__name__
