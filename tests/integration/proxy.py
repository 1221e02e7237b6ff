"""A TCP proxy in front of RabbitMQ, to cut and refuse connections without touching the broker."""

from __future__ import annotations

from typing import Any, cast

from twisted.internet.address import IPv4Address
from twisted.internet.interfaces import IListeningPort, ITCPTransport
from twisted.protocols import portforward


class _Server(portforward.ProxyServer):
    def connectionMade(self) -> None:
        self.factory.servers.add(self)  # type: ignore[attr-defined]
        super().connectionMade()

    def connectionLost(self, reason: Any = None) -> None:
        self.factory.servers.discard(self)  # type: ignore[attr-defined]
        super().connectionLost(reason)


class CuttableProxy(portforward.ProxyFactory):
    """Forwards 127.0.0.1:<listen_port> to RabbitMQ; ``cut()`` drops every connection."""

    protocol = _Server
    noisy = False

    def __init__(self, reactor: Any, host: str = "127.0.0.1", port: int = 5672) -> None:
        super().__init__(host, port)
        self.reactor = reactor
        self.servers: set[_Server] = set()
        self.listening: IListeningPort | None = None
        self.listen_port = 0

    def start(self) -> int:
        listening: IListeningPort = self.reactor.listenTCP(self.listen_port, self, interface="127.0.0.1")
        self.listening = listening
        address = listening.getHost()
        assert isinstance(address, IPv4Address)
        self.listen_port = address.port
        return self.listen_port

    def cut(self) -> None:
        for server in list(self.servers):
            cast(ITCPTransport, server.transport).abortConnection()
            if server.peer is not None and server.peer.transport is not None:
                cast(ITCPTransport, server.peer.transport).abortConnection()

    async def refuse(self) -> None:
        """Stop listening: new connections are refused until ``start()``."""
        if self.listening is not None:
            stopped = self.listening.stopListening()
            if stopped is not None:
                await stopped
            self.listening = None
        self.cut()

    async def stop(self) -> None:
        await self.refuse()
