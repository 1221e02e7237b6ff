"""RabbitMQ through pika's ``TwistedProtocolConnection`` (``runtime/amqp*.py`` are the only modules that know pika).

:class:`AMQPBroker` is a service (Twisted's ``ClientService``) that keeps one
connection up, to one node of the broker (``[broker] urls``: the nodes of a cluster),
failing over to the next node and reconnecting with the retries' jittered exponential
backoff (:mod:`zqtwisted.runtime.failover`; ClientService logs each delay).  On every new
connection it runs each listener's ``session_started`` (which declares queues, sets
QoS and re-attaches consumers) before the connection counts as ready.  Queues are
declared with the arguments of their type (:mod:`zqtwisted.runtime.declarations`).

A broker that refuses the connection itself (credentials, vhost access) is named in one
log line per try, saying what to check (:func:`refusal`); the service keeps trying, with
backoff, and :attr:`AMQPBroker.problem` says why there is no connection.  Stopping never
waits on the broker for long: the closing handshake has a deadline (none at all on a
connection RabbitMQ blocks for a resource alarm, which never answers it), then the
connection is dropped.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Mapping
from typing import Any

import pika
import pika.spec
from pika.adapters.twisted_connection import TwistedProtocolConnection
from twisted.application.internet import ClientService
from twisted.application.service import Service
from twisted.internet.abstract import isIPAddress, isIPv6Address
from twisted.internet.defer import CancelledError, Deferred, fail, gatherResults, maybeDeferred, succeed
from twisted.internet.endpoints import HostnameEndpoint, TCP4ClientEndpoint, TCP6ClientEndpoint, wrapClientTLS
from twisted.internet.error import ConnectionDone
from twisted.internet.interfaces import IDelayedCall, IProtocol, IStreamClientEndpoint
from twisted.internet.protocol import Factory
from twisted.internet.ssl import optionsForClientTLS
from twisted.logger import Logger
from twisted.python.failure import Failure

from zqtwisted.config import BrokerSettings, redact_url
from zqtwisted.runtime.amqp_session import AMQPSession
from zqtwisted.runtime.broker import (
    BrokerRefused,
    BrokerSession,
    BrokerUnavailable,
    PublishDeadline,
    PublishFailed,
    SessionListener,
    SessionWaiters,
)
from zqtwisted.runtime.declarations import QueueDeclarations, QueueMismatch
from zqtwisted.runtime.failover import BrokerNode, FailoverEndpoint, NodeRotation, node_order
from zqtwisted.runtime.reactor import ReactorLike
from zqtwisted.runtime.retry import BackoffPolicy

# How long a stop waits for the broker to answer the closing handshake before dropping the connection,
# then for ClientService to see every connection gone before dropping what is left: 3 s at most in all.
CLOSE_TIMEOUT = 2.0
LAST_CONNECTIONS_TIMEOUT = 1.0
ACCESS_REFUSED, NOT_ALLOWED = 403, 530


def connection_parameters(settings: BrokerSettings, url: str | None = None) -> pika.ConnectionParameters:
    """pika's parameters for ``url`` (default ``settings.url``; host and port are used by the endpoint)."""
    params = pika.URLParameters(settings.connection_url(url))
    params.heartbeat = settings.heartbeat
    params.blocked_connection_timeout = None  # a blocked connection stays up: each publish has its own deadline
    params.ssl_options = None  # Twisted does TLS for amqps://
    return params


def broker_endpoint(
    reactor: ReactorLike, settings: BrokerSettings, node: BrokerNode | None = None
) -> IStreamClientEndpoint:
    """The endpoint of ``node`` (default: ``settings.url``'s): TCP, or TLS for amqps://, within connect_timeout.

    A host name is resolved on each connection (``HostnameEndpoint``); an IP address
    (the default ``127.0.0.1``) needs no resolution, which would take a thread of the
    reactor's pool (and its memory) for the life of the process.
    """
    node = BrokerNode.from_url(settings.url) if node is None else node
    endpoint: IStreamClientEndpoint
    timeout = settings.connect_timeout
    if isIPAddress(node.host):
        endpoint = TCP4ClientEndpoint(reactor, node.host, node.port, timeout=timeout)
    elif isIPv6Address(node.host):
        endpoint = TCP6ClientEndpoint(reactor, node.host, node.port, timeout=timeout)
    else:
        endpoint = HostnameEndpoint(reactor, node.host, node.port, timeout=timeout)
    if node.tls:
        endpoint = wrapClientTLS(optionsForClientTLS(node.host), endpoint)
    return endpoint


def reconnect_backoff(settings: BrokerSettings) -> BackoffPolicy:
    """The reconnect delays: the retries' backoff policy, with equal jitter (half the ceiling at least)."""
    return BackoffPolicy(settings.reconnect_initial_delay, settings.reconnect_max_delay, floor=0.5)


def refusal(node: str, params: pika.ConnectionParameters, code: int, text: str) -> BrokerRefused:
    """The error for a broker that closed the connection while it was being set up (``code``, ``text``: its reason)."""
    user = getattr(params.credentials, "username", "?")
    if code == ACCESS_REFUSED:
        return BrokerRefused(
            f"RabbitMQ at {node} refused the credentials of user {user} (ACCESS_REFUSED): "
            "check [broker] url / password_file"
        )
    if code == NOT_ALLOWED:
        return BrokerRefused(
            f"RabbitMQ at {node} refused user {user} access to vhost {params.virtual_host!r} ({text}): "
            "check the vhost in [broker] url and the user's permissions"
        )
    return BrokerRefused(f"RabbitMQ at {node} closed the connection while setting it up: {code} {text}")


class _Protocol(TwistedProtocolConnection):  # type: ignore[misc]  # pika ships no types: its classes are Any
    """pika's protocol, telling the broker when the connection is gone, and why the broker refused it."""

    on_lost: Callable[[_Protocol], None] | None = None
    node: BrokerNode | None = None
    refused: BrokerRefused | None = None

    def __init__(self, parameters: pika.ConnectionParameters, custom_reactor: object = None) -> None:
        super().__init__(parameters, custom_reactor=custom_reactor)
        # pika's Twisted adapter reports a refused login as "1" (the number of attempts): keep the broker's reason.
        self._impl.callbacks.add(0, pika.spec.Connection.Close, self._closed_by_broker, one_shot=False)

    def _closed_by_broker(self, method_frame: Any) -> None:
        if self.ready is not None:  # still setting up: a refusal
            method = method_frame.method
            label = self.node.label if self.node is not None else "?"
            self.refused = refusal(label, self._impl.params, method.reply_code, str(method.reply_text))

    def _on_connection_failed(self, connection: object, error: Exception | None = None) -> None:
        d: Deferred[Any] | None = getattr(self, "ready", None)
        self.ready = None
        if d is not None:
            reason = error.value if isinstance(error, Failure) else error
            d.errback(self.refused or BrokerUnavailable(f"the AMQP handshake failed: {reason!r}"))

    def connectionLost(self, reason: Failure = ConnectionDone()) -> None:  # type: ignore[assignment] # noqa: B008
        super().connectionLost(reason)
        if self.on_lost is not None:
            self.on_lost(self)


class _ProtocolFactory(Factory):
    def __init__(self, broker: AMQPBroker) -> None:
        self._broker = broker

    def buildProtocol(self, addr: object) -> _Protocol:
        return self._broker._build_protocol()


class AMQPBroker(Service):
    """Keeps a connection to one node of RabbitMQ up, failing over between nodes, and hands sessions to listeners.

    ``endpoint`` (one for every node) or ``endpoint_for`` (one per node) stand in for
    the network in tests.  With ``give_up_when_refused`` (zqctl), a broker that refuses the
    connection fails the callers waiting for a session at once, with its reason.
    """

    log = Logger()

    def __init__(
        self,
        reactor: ReactorLike,
        settings: BrokerSettings,
        rand: Callable[[], float] = random.random,
        endpoint: IStreamClientEndpoint | None = None,
        declarations: QueueDeclarations | None = None,
        endpoint_for: Callable[[BrokerNode], IStreamClientEndpoint] | None = None,
        give_up_when_refused: bool = False,
        close_timeout: float = CLOSE_TIMEOUT,
    ) -> None:
        self.reactor = reactor
        self.settings = settings
        self.declarations = QueueDeclarations.classic() if declarations is None else declarations
        self.nodes = [BrokerNode.from_url(url) for url in settings.node_urls()]
        self._parameters = {node: connection_parameters(settings, node.url) for node in self.nodes}
        order = node_order(len(self.nodes), settings.failover_strategy, rand)
        self.rotation = NodeRotation(self.nodes, order, reconnect_backoff(settings))
        self._listeners: list[SessionListener] = []
        self._session: AMQPSession | None = None
        self._sessions: dict[_Protocol, AMQPSession] = {}
        self._waiting = SessionWaiters(reactor)
        self._rand = rand
        self.reconnects = 0
        self._failures = 0  # failed tries (and a lost connection) since the last ready session
        self._protocols: set[_Protocol] = set()  # every connection not yet lost
        self._give_up_when_refused = give_up_when_refused
        self.close_timeout = close_timeout
        self._problem: str | None = None
        if endpoint is not None:
            endpoint_for = lambda node: endpoint  # noqa: E731 - one fake endpoint for every node
        elif endpoint_for is None:
            endpoint_for = lambda node: broker_endpoint(reactor, settings, node)  # noqa: E731
        self._service = ClientService(
            FailoverEndpoint(self.rotation, endpoint_for, on_failure=self._connect_failed),
            _ProtocolFactory(self),
            retryPolicy=self._retry_delay,
            clock=reactor,
            prepareConnection=self._prepare,
        )

    @property
    def parameters(self) -> pika.ConnectionParameters:
        """pika's parameters for the node connected to next."""
        return self._parameters[self.rotation.current]

    def _build_protocol(self) -> _Protocol:
        protocol = _Protocol(self.parameters, custom_reactor=self.reactor)
        protocol.on_lost = self._connection_lost
        protocol.node = self.rotation.current
        self._protocols.add(protocol)
        return protocol

    @property
    def problem(self) -> str | None:
        """Why there is no connection now (the last failure), or None while connected."""
        return None if self.current_session() is not None else self._problem

    def _describe(self, node: BrokerNode | None) -> str:
        """A node for logs: its URL with the password masked, and its place among several."""
        if node is None:
            node = self.rotation.current
        url = redact_url(node.url)
        if len(self.nodes) == 1:
            return url
        return f"{url} (node {self.nodes.index(node) + 1} of {len(self.nodes)})"

    def _retry_delay(self, attempt: int) -> float:
        """ClientService's retry policy (it logs the delay): on to the next node, after the wait for it.

        Called once per failed try or lost connection.  The failures are counted here, not
        by ClientService (``attempt``): a connection that fails during set-up is handed to
        ClientService as made and then dropped (see :meth:`_prepare_failed`), which resets
        its count.
        """
        self._failures += 1
        return self.rotation.next_delay(self._failures, self._rand)

    def _prepare(self, protocol: IProtocol) -> Deferred[None]:
        """Wait for the AMQP handshake, open the session, run the listeners.

        ``protocol`` is ClientService's proxy; ``ready`` fires with the real one.
        """
        ready: Deferred[Any] | None = getattr(protocol, "ready", None)
        if ready is None:
            return fail(BrokerUnavailable("AMQP handshake failed"))

        def too_slow(result: object, timeout: float) -> None:
            raise BrokerUnavailable(f"AMQP handshake took longer than {timeout:.0f}s")

        ready.addTimeout(self.settings.connect_timeout, self.reactor, onTimeoutCancel=too_slow)

        def handshaken(real: _Protocol) -> Deferred[None]:
            label = real.node.label if real.node is not None else ""
            opened = AMQPSession.open(real, self.reactor, self.declarations, label)
            return opened.addCallback(self._session_opened, real)

        d = ready.addCallback(handshaken)
        d.addErrback(self._prepare_failed, protocol)
        return d

    def _session_opened(self, session: AMQPSession, protocol: _Protocol) -> Deferred[None]:
        self._sessions[protocol] = session
        started = [maybeDeferred(listener.session_started, session) for listener in self._listeners]

        def ready(_: object) -> None:
            self._session = session
            self._problem = None
            self._failures = 0
            self.rotation.connected()
            cluster = session.cluster_name
            self.log.info(
                "Connected to {node}{cluster}",
                node=self._describe(protocol.node),
                cluster=f", cluster {cluster}" if cluster and len(self.nodes) > 1 else "",
            )
            self._waiting.fire(session)

        return gatherResults(started, consumeErrors=True).addCallback(ready)

    def _prepare_failed(self, failure: Failure, protocol: IProtocol) -> Failure | None:
        """Log why the connection could not be set up, and drop it: the retry follows its loss.

        ClientService counts a failed ``prepareConnection`` as a failed attempt but leaves
        the connection open, and has no transition for its loss afterwards (automat's
        NoTransition).  So the connection is aborted and handed over as made: its loss, a
        moment later, schedules the next try (:meth:`_retry_delay` counts it as a failure).
        A stop (CancelledError) stays a failure, as ClientService expects.  A refusal by
        the broker is one error line saying what to check.
        """
        if failure.check(CancelledError):
            return failure
        error = getattr(failure.value, "subFailure", failure)  # gatherResults' FirstError wraps the cause
        value = getattr(error, "value", error)
        if isinstance(value, BrokerRefused):
            self._problem = str(value)
            if not self._give_up_when_refused:  # else the waiters fail with it, once the connection is gone
                self.log.error("{error}", error=self._problem)
        else:
            node = self._describe(getattr(protocol, "node", None))
            self._problem = f"could not set up the connection to {node}: {value}"
            log = self.log.error if isinstance(value, QueueMismatch) else self.log.warn
            log("Could not set up the connection to {node}: {error}", node=node, error=value)
        transport = getattr(protocol, "transport", None)
        if transport is None:
            return failure
        transport.abortConnection()
        return None

    def _connect_failed(self, node: BrokerNode, failure: Failure) -> None:
        """A TCP (or TLS) connection to ``node`` could not be made: the reason, for :attr:`problem`."""
        if not failure.check(CancelledError):
            self._problem = f"cannot connect to RabbitMQ at {node.label}: {failure.getErrorMessage()}"

    def _connection_lost(self, protocol: _Protocol) -> None:
        self._protocols.discard(protocol)
        if protocol.refused is not None and self._give_up_when_refused:
            # Once ClientService has heard of the loss too (a stop before would leave it no transition).
            self.reactor.callLater(0, self._waiting.fail, protocol.refused)
        session = self._sessions.pop(protocol, None)
        if session is None:
            return
        session.lost()
        if session is self._session:
            self._session = None
            self._problem = f"lost the connection to RabbitMQ at {session.node}; reconnecting"
            self.reconnects += 1
            self.rotation.lost()
            if self.running:
                self.log.warn("Lost the connection to {node}", node=self._describe(protocol.node))
        for listener in self._listeners:
            listener.session_lost(session)

    # -- the Broker interface ---------------------------------------------------

    def add_listener(self, listener: SessionListener) -> None:
        self._listeners.append(listener)

    def current_session(self) -> AMQPSession | None:
        session = self._session
        return session if session is not None and session.is_open else None

    def session(self, timeout: float | None = None) -> Deferred[BrokerSession]:
        session = self.current_session()
        if session is not None:
            return succeed(session)
        return self._waiting.wait(timeout)

    def publish(
        self, queue: str, body: bytes, headers: Mapping[str, Any] | None = None, timeout: float | None = None
    ) -> Deferred[None]:
        """Publish, confirmed, within ``timeout``; once more on the next connection if this one dies first.

        The deadline covers the confirm too: a broker that never confirms (a memory or
        disk alarm blocks publishers) makes the publish fail with PublishTimeout.  The
        cancel reaches pika's confirm Deferred, which has no canceller: pika keeps the
        delivery tag and ignores the late confirm, so its channel stays consistent.
        """
        limit = self.settings.publish_timeout if timeout is None else timeout
        deadline = PublishDeadline(limit)
        expires = self.reactor.seconds() + limit

        def attempt(session: BrokerSession, tries: int) -> Deferred[None]:
            deadline.sending = True
            deadline.session = session
            d = session.publish(queue, body, headers)
            if tries == 0:
                d.addErrback(retry_once)
            return d

        def retry_once(failure: Failure) -> Deferred[None]:
            remaining = expires - self.reactor.seconds()
            if failure.check(PublishFailed, CancelledError, QueueMismatch) or remaining <= 0:
                return fail(failure)
            deadline.sending = False
            return self.session(remaining).addCallback(attempt, 1)

        return deadline.apply(self.session(limit).addCallback(attempt, 0), self.reactor)

    # -- service -----------------------------------------------------------------

    def startService(self) -> None:
        super().startService()
        self._service.startService()

    def stopService(self) -> Deferred[None]:
        """Close the connection (bounded: :attr:`close_timeout`, then it is dropped) and stop reconnecting."""
        super().stopService()
        session = self._session
        self._session = None
        self._waiting.fail(BrokerUnavailable("the broker service stopped"))
        closing = self._close(session) if session is not None else succeed(None)
        return closing.addBoth(lambda _: self._stop_connecting()).addBoth(lambda _: None)

    def _close(self, session: AMQPSession) -> Deferred[None]:
        """The closing handshake, within :attr:`close_timeout`; none with a broker blocking the connection."""
        if session.blocked is not None:
            self.log.warn(
                "RabbitMQ at {node} blocks this connection ({reason}): dropping it without the closing handshake; "
                "the broker returns its unacknowledged events to their queues",
                node=session.node,
                reason=session.blocked,
            )
            session.abort()
            return succeed(None)

        def too_slow(result: object, timeout: float) -> None:
            self.log.warn(
                "RabbitMQ at {node} did not close the connection within {timeout:g}s; dropping it",
                node=session.node,
                timeout=timeout,
            )
            session.abort()

        return session.close().addTimeout(self.close_timeout, self.reactor, onTimeoutCancel=too_slow)

    def _stop_connecting(self) -> Deferred[None]:
        """Stop ClientService; a connection it has not closed within :data:`LAST_CONNECTIONS_TIMEOUT` is dropped."""
        stopped: Deferred[None] = self._service.stopService()
        timer: IDelayedCall = self.reactor.callLater(LAST_CONNECTIONS_TIMEOUT, self._abort_all)

        def done(result: object) -> None:
            if timer.active():
                timer.cancel()

        return stopped.addBoth(done)

    def _abort_all(self) -> None:
        for protocol in list(self._protocols):
            transport = getattr(protocol, "transport", None)
            if transport is not None:
                transport.abortConnection()
