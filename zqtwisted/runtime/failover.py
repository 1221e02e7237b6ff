"""Several RabbitMQ nodes: which one to connect to next, and how long to wait first.

A deployment that outgrows one machine runs a RabbitMQ cluster; ``[broker] urls`` lists
its nodes.  Each process orders them once (shuffled by default, as Kombu's failover
does, so that processes spread over the nodes; or as listed), connects to the first
that answers, and moves on to the next one whenever an attempt fails or a connection
is lost.  :class:`NodeRotation` is that logic without I/O; :class:`FailoverEndpoint` is
the endpoint the broker's ``ClientService`` connects through.

The waits (:func:`failover_delay`): none while the current round still has a node to
try, so that a dead node costs one connect timeout at most; after a whole round failed,
the reconnect backoff, growing round by round.  After a lost connection the first try
waits the backoff's first delay, as it does with one node.  With one node this is
exactly the backoff of every attempt.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote, urlsplit

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IProtocol, IProtocolFactory, IStreamClientEndpoint
from twisted.python.failure import Failure
from zope.interface import implementer

from zqtwisted.runtime.retry import BackoffPolicy

SHUFFLE, ROUND_ROBIN = "shuffle", "round-robin"


@dataclass(frozen=True)
class BrokerNode:
    """One node of the broker, as configured (``url`` may hold a password: log ``label``)."""

    url: str
    host: str
    port: int
    tls: bool

    @classmethod
    def from_url(cls, url: str) -> BrokerNode:
        parts = urlsplit(url)
        tls = parts.scheme == "amqps"
        host = unquote(parts.hostname or "127.0.0.1")
        return cls(url=url, host=host, port=parts.port or (5671 if tls else 5672), tls=tls)

    @property
    def label(self) -> str:
        """``host:port`` (``[::1]:5672``): names the node in logs and on ``/ready``, no credentials."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"


def node_order(count: int, strategy: str, rand: Callable[[], float]) -> list[int]:
    """The order this process tries the nodes in: shuffled with ``rand`` (Fisher-Yates), or as listed."""
    order = list(range(count))
    if strategy == SHUFFLE:
        for i in range(count - 1, 0, -1):
            j = min(int(rand() * (i + 1)), i)
            order[i], order[j] = order[j], order[i]
    return order


def failover_delay(
    attempt: int, nodes: int, after_loss: bool, backoff: BackoffPolicy, rand: Callable[[], float]
) -> float:
    """The wait before the next try, ``attempt`` being the failures in a row (a lost connection counts as one)."""
    if after_loss:
        if attempt <= 1:
            return backoff.delay(1, rand)
        failures, rounds_before = attempt - 1, 1
    else:
        failures, rounds_before = attempt, 0
    if failures % nodes:
        return 0.0  # this round still has a node to try
    return backoff.delay(rounds_before + failures // nodes, rand)


class NodeRotation:
    """Which node to try next: every failed try and every lost connection moves on to the next one."""

    def __init__(self, nodes: Sequence[BrokerNode], order: Sequence[int], backoff: BackoffPolicy) -> None:
        if not nodes or sorted(order) != list(range(len(nodes))):
            raise ValueError("order must be a permutation of the nodes")
        self.nodes = tuple(nodes)
        self._order = tuple(order)
        self._backoff = backoff
        self._at = 0
        self._after_loss = False

    @property
    def current(self) -> BrokerNode:
        return self.nodes[self._order[self._at]]

    @property
    def number(self) -> int:
        """The current node's place in the configured list, from 1 (for logs)."""
        return self._order[self._at] + 1

    def connected(self) -> None:
        """A connection is up on the current node."""
        self._after_loss = False

    def lost(self) -> None:
        """The connection to the current node was lost after it was up."""
        self._after_loss = True

    def next_delay(self, attempt: int, rand: Callable[[], float]) -> float:
        """Move on to the next node; return the wait before trying it (ClientService's retry policy)."""
        self._at = (self._at + 1) % len(self._order)
        return failover_delay(attempt, len(self.nodes), self._after_loss, self._backoff, rand)


@implementer(IStreamClientEndpoint)
class FailoverEndpoint:
    """Connects to the rotation's current node, through that node's own endpoint.

    ``on_failure`` hears of each attempt that fails (the node, and why), before ClientService does.
    """

    def __init__(
        self,
        rotation: NodeRotation,
        endpoint_for: Callable[[BrokerNode], IStreamClientEndpoint],
        on_failure: Callable[[BrokerNode, Failure], None] | None = None,
    ) -> None:
        self._rotation = rotation
        self._endpoints = {node: endpoint_for(node) for node in rotation.nodes}
        self._on_failure = on_failure

    def connect(self, protocolFactory: IProtocolFactory) -> Deferred[IProtocol]:
        node = self._rotation.current
        endpoint: Any = self._endpoints[node]
        connecting: Deferred[IProtocol] = endpoint.connect(protocolFactory)
        if self._on_failure is not None:
            connecting.addErrback(self._failed, node)
        return connecting

    def _failed(self, failure: Failure, node: BrokerNode) -> Failure:
        assert self._on_failure is not None
        self._on_failure(node, failure)
        return failure

    def __repr__(self) -> str:
        return f"<FailoverEndpoint to {self._rotation.current.label}>"
