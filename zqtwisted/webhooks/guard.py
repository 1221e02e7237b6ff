"""SSRF guard: bot URLs may not reach private networks unless allowed.

Zulip sends webhook requests through an egress proxy (Smokescreen) for this.
zqtwisted checks the addresses itself, **on the addresses actually connected
to**: :class:`GuardedEndpointFactory` gives the Agent endpoints whose name
resolution drops every refused address before ``HostnameEndpoint`` connects to
what is left, by IP.  There is no second lookup to rebind, so DNS rebinding
cannot slip a private address in between the check and the connection.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Sequence
from typing import Any

from twisted.internet.address import IPv4Address, IPv6Address
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import HostnameEndpoint, wrapClientTLS
from twisted.internet.error import DNSLookupError
from twisted.internet.interfaces import (
    IAddress,
    IHostnameResolver,
    IHostResolution,
    IProtocol,
    IProtocolFactory,
    IReactorPluggableNameResolver,
    IResolutionReceiver,
    IStreamClientEndpoint,
)
from twisted.python.failure import Failure
from twisted.web.client import URI, BrowserLikePolicyForHTTPS
from twisted.web.error import SchemeNotSupported
from twisted.web.iweb import IAgentEndpointFactory, IPolicyForHTTPS
from zope.interface import implementer

from zqtwisted.errors import PermanentError

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

# IPv6 addresses that carry an IPv4 address, judged by that address (RFC 6052 NAT64, RFC 3056 6to4).
NAT64 = ipaddress.IPv6Network("64:ff9b::/96")
# Other IPv6 destinations must be global unicast (2000::/3), outside these ranges.  Written out
# rather than left to ``ipaddress`` alone, whose idea of "global" changes between Python releases.
GLOBAL_UNICAST = ipaddress.IPv6Network("2000::/3")
NOT_PUBLIC_V6: tuple[ipaddress.IPv6Network, ...] = tuple(
    ipaddress.IPv6Network(cidr)
    for cidr in (
        "2001::/32",  # Teredo: the IPv4 peer it leads to is hidden
        "2001:2::/48",  # benchmarking
        "2001:db8::/32",  # documentation
        "3fff::/20",  # documentation (RFC 9637)
    )
)
DISALLOWED = "private or disallowed network"


class DisallowedNetworkError(PermanentError):
    """The URL's host resolves only to addresses the guard refuses (``via``: the redirect that led there)."""

    def __init__(self, host: str, addresses: Sequence[str], via: str = "") -> None:
        self.host = host
        self.addresses = tuple(addresses)
        self.via = via
        shown = ", ".join(self.addresses) or "nothing"
        after = f", after {via}" if via else ""
        super().__init__(f"{DISALLOWED}: {host} resolves to {shown}{after}")


class NetworkGuard:
    """Decides which IP addresses a webhook may connect to (pure).

    Allowed: addresses in ``allow_networks`` (an IPv4-mapped IPv6 address counts as its
    IPv4 address), and public unicast addresses.  Refused: loopback, private, shared,
    link-local, multicast, reserved, unspecified, documentation; in IPv6 also ULA
    (fc00::/7), site-local, IPv4-compatible, Teredo, the local-use NAT64 prefix, and any
    NAT64 or 6to4 address whose embedded IPv4 address is not public.
    """

    def __init__(self, allow_networks: Iterable[str] = ()) -> None:
        self.allow_networks: tuple[IPNetwork, ...] = tuple(
            ipaddress.ip_network(cidr, strict=False) for cidr in allow_networks
        )

    def is_allowed(self, host: str) -> bool:
        """Whether connecting to the IP address ``host`` is allowed."""
        try:
            address = ipaddress.ip_address(host.split("%", 1)[0])
        except ValueError:
            return False  # not an IP address: never connect to it unchecked
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            address = address.ipv4_mapped
        if any(address in network for network in self.allow_networks):
            return True
        return is_public(address)


def is_public(address: IPAddress) -> bool:
    """Whether ``address`` is a public unicast address (for NAT64 and 6to4: the IPv4 address they carry)."""
    if isinstance(address, ipaddress.IPv6Address):
        if address in NAT64:
            return is_public(ipaddress.IPv4Address(int(address) & 0xFFFFFFFF))
        if address.sixtofour is not None:  # 2002::/16
            return is_public(address.sixtofour)
        if address not in GLOBAL_UNICAST or any(address in network for network in NOT_PUBLIC_V6):
            return False
    return address.is_global and not (
        address.is_multicast
        or address.is_private
        or address.is_loopback
        or address.is_link_local
        or address.is_reserved
        or address.is_unspecified
    )


@implementer(IResolutionReceiver)
class _FilteringReceiver:
    """Passes on the allowed addresses of a resolution, remembers the others."""

    def __init__(self, receiver: IResolutionReceiver, guard: NetworkGuard, refused: list[str]) -> None:
        self._receiver = receiver
        self._guard = guard
        self._refused = refused

    def resolutionBegan(self, resolutionInProgress: IHostResolution) -> None:
        self._receiver.resolutionBegan(resolutionInProgress)

    def addressResolved(self, address: IAddress) -> None:
        host = getattr(address, "host", None)
        if isinstance(address, (IPv4Address, IPv6Address)) and isinstance(host, str) and self._guard.is_allowed(host):
            self._receiver.addressResolved(address)
        else:
            self._refused.append(str(host))

    def resolutionComplete(self) -> None:
        self._receiver.resolutionComplete()


@implementer(IHostnameResolver)
class GuardedResolver:
    """An IHostnameResolver that hides the addresses the guard refuses."""

    def __init__(self, resolver: IHostnameResolver, guard: NetworkGuard, refused: list[str]) -> None:
        self._resolver = resolver
        self._guard = guard
        self.refused = refused

    def resolveHostName(
        self,
        resolutionReceiver: IResolutionReceiver,
        hostName: str,
        portNumber: int = 0,
        addressTypes: Sequence[type[IAddress]] | None = None,
        transportSemantics: str = "TCP",
    ) -> IHostResolution:
        receiver = _FilteringReceiver(resolutionReceiver, self._guard, self.refused)
        return self._resolver.resolveHostName(receiver, hostName, portNumber, addressTypes, transportSemantics)


@implementer(IReactorPluggableNameResolver)
class _ResolverOverride:
    """The reactor as HostnameEndpoint sees it: the real one, with our resolver."""

    def __init__(self, reactor: Any, resolver: IHostnameResolver) -> None:
        self._reactor = reactor
        self.nameResolver = resolver

    def installNameResolver(self, resolver: IHostnameResolver) -> IHostnameResolver:
        raise NotImplementedError("the guarded resolver cannot be replaced")

    def __getattr__(self, name: str) -> Any:
        return getattr(self._reactor, name)


@implementer(IStreamClientEndpoint)
class GuardedHostnameEndpoint:
    """``HostnameEndpoint`` that connects only to addresses the guard allows."""

    def __init__(
        self,
        reactor: Any,
        resolver: IHostnameResolver,
        guard: NetworkGuard,
        host: str,
        port: int,
        timeout: float = 30.0,
    ) -> None:
        self._reactor = reactor
        self._resolver = resolver
        self._guard = guard
        self._host = host
        self._port = port
        self._timeout = timeout

    def connect(self, protocolFactory: IProtocolFactory) -> Deferred[IProtocol]:
        refused: list[str] = []
        reactor = _ResolverOverride(self._reactor, GuardedResolver(self._resolver, self._guard, refused))
        endpoint = HostnameEndpoint(reactor, self._host, self._port, timeout=self._timeout)

        def refusal(failure: Failure) -> Failure:
            if failure.check(DNSLookupError) and refused:
                return Failure(DisallowedNetworkError(self._host, refused))
            return failure

        return endpoint.connect(protocolFactory).addErrback(refusal)


@implementer(IAgentEndpointFactory)
class GuardedEndpointFactory:
    """Endpoints for an Agent that pass every connection through the guard."""

    def __init__(
        self,
        reactor: Any,
        guard: NetworkGuard,
        resolver: IHostnameResolver | None = None,
        connect_timeout: float = 30.0,
        tls_policy: IPolicyForHTTPS | None = None,
    ) -> None:
        self._reactor = reactor
        self._guard = guard
        self._resolver = resolver if resolver is not None else reactor.nameResolver
        self._connect_timeout = connect_timeout
        self._tls_policy = tls_policy if tls_policy is not None else BrowserLikePolicyForHTTPS()

    def endpointForURI(self, uri: URI) -> IStreamClientEndpoint:
        host = uri.host.decode("ascii")
        if host.startswith("[") and host.endswith("]"):
            host = host[1:-1]
        endpoint = GuardedHostnameEndpoint(
            self._reactor, self._resolver, self._guard, host, uri.port, self._connect_timeout
        )
        if uri.scheme == b"http":
            return endpoint
        if uri.scheme == b"https":
            creator = self._tls_policy.creatorForNetloc(uri.host, uri.port)
            return wrapClientTLS(creator, endpoint)
        raise SchemeNotSupported(f"unsupported scheme: {uri.scheme!r}")
