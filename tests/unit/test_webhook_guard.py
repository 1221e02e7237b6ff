"""Tests for zqtwisted.webhooks.guard: the SSRF guard, checked on the addresses connected to (IPv4 and IPv6)."""

from __future__ import annotations

from collections.abc import Sequence

from twisted.internet.address import IPv4Address, IPv6Address
from twisted.internet.error import DNSLookupError
from twisted.internet.interfaces import IAddress, IHostnameResolver, IHostResolution, IResolutionReceiver
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.testing import MemoryReactorClock
from twisted.trial.unittest import TestCase
from twisted.web.client import URI
from twisted.web.error import SchemeNotSupported
from zope.interface import implementer
from zope.interface.verify import verifyObject

from zqtwisted.errors import PermanentError
from zqtwisted.webhooks.guard import (
    DisallowedNetworkError,
    GuardedEndpointFactory,
    GuardedHostnameEndpoint,
    GuardedResolver,
    NetworkGuard,
)


@implementer(IHostResolution)
class _Resolution:
    def __init__(self, name: str) -> None:
        self.name = name

    def cancel(self) -> None:
        pass


@implementer(IHostnameResolver)
class FakeResolver:
    """Answers each lookup of a name with the next list of addresses (like a rebinding DNS server)."""

    def __init__(self, answers: dict[str, list[list[str]]]) -> None:
        self.answers = answers
        self.lookups: list[str] = []

    def resolveHostName(
        self,
        resolutionReceiver: IResolutionReceiver,
        hostName: str,
        portNumber: int = 0,
        addressTypes: Sequence[type[IAddress]] | None = None,
        transportSemantics: str = "TCP",
    ) -> IHostResolution:
        self.lookups.append(hostName)
        resolution = _Resolution(hostName)
        resolutionReceiver.resolutionBegan(resolution)
        queue = self.answers.get(hostName, [[]])
        for host in queue.pop(0) if len(queue) > 1 else queue[0]:
            address = IPv6Address("TCP", host, portNumber) if ":" in host else IPv4Address("TCP", host, portNumber)
            resolutionReceiver.addressResolved(address)
        resolutionReceiver.resolutionComplete()
        return resolution


PUBLIC = "93.184.216.34"


class NetworkGuardTests(TestCase):
    def test_refuses_non_public_addresses(self) -> None:
        """Loopback, private, link-local, multicast, reserved, unspecified and shared addresses are refused."""
        guard = NetworkGuard()
        for host in (
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "224.0.0.1",
            "240.0.0.1",
            "255.255.255.255",
            "0.0.0.0",
            "100.64.0.1",
            "::1",
            "::",
            "fe80::1%eth0",
            "fc00::1",
            "ff02::1",
            "::ffff:127.0.0.1",
            "::ffff:10.0.0.1",
            "2002:7f00:1::",  # 6to4 of 127.0.0.1
            "64:ff9b::a00:1",  # NAT64 of 10.0.0.1
        ):
            self.assertFalse(guard.is_allowed(host), host)

    def test_refuses_ipv6_forms_of_private_addresses(self) -> None:
        """Private IPv4 addresses inside IPv6 (mapped, NAT64, 6to4, compatible) and non-public IPv6 are refused."""
        guard = NetworkGuard()
        for host in (
            "::1",
            "0:0:0:0:0:0:0:1",
            "::ffff:127.0.0.1",
            "::FFFF:7F00:1",
            "::ffff:169.254.169.254",
            "64:ff9b::127.0.0.1",  # NAT64 (RFC 6052) of loopback
            "64:ff9b::a9fe:a9fe",  # NAT64 of the metadata address
            "64:ff9b::c0a8:101",  # NAT64 of 192.168.1.1
            "64:ff9b::6440:1",  # NAT64 of shared 100.64.0.1
            "64:ff9b:1::a00:1",  # local-use NAT64 prefix (RFC 8215)
            "2002:7f00:1::",  # 6to4 of 127.0.0.1
            "2002:a00:1:1::1",  # 6to4 of 10.0.0.1
            "2002:c0a8:101::1",  # 6to4 of 192.168.1.1
            "2002:a9fe:a9fe::",  # 6to4 of 169.254.169.254
            "::127.0.0.1",  # IPv4-compatible (deprecated)
            "::ffff:0:7f00:1",  # IPv4-translated
            "2001:0:4136:e378:8000:63bf:3fff:fdd2",  # Teredo
            "fe80::1",
            "febf::1",
            "fec0::1",  # site-local (deprecated)
            "fc00::1",
            "fd12:3456:789a::1",
            "ff05::2",
            "100::1",  # discard-only
            "2001:db8::1",  # documentation
            "3fff::1",  # documentation (RFC 9637)
            "::",
        ):
            self.assertFalse(guard.is_allowed(host), host)

    def test_nat64_and_6to4_of_public_addresses_are_allowed(self) -> None:
        """NAT64 and 6to4 addresses are judged by the IPv4 address they carry."""
        guard = NetworkGuard()
        for host in ("64:ff9b::808:808", "64:ff9b::93.184.216.34", "2002:808:808::1"):
            self.assertTrue(guard.is_allowed(host), host)

    def test_allows_public_addresses(self) -> None:
        """Globally routable IPv4 and IPv6 addresses (also IPv4-mapped) are allowed."""
        guard = NetworkGuard()
        for host in (PUBLIC, "8.8.8.8", "2606:4700:4700::1111", "::ffff:8.8.8.8"):
            self.assertTrue(guard.is_allowed(host), host)

    def test_allow_networks_let_private_addresses_through(self) -> None:
        """An allowlisted CIDR is allowed, and only that CIDR."""
        guard = NetworkGuard(["127.0.0.1/32", "10.0.0.0/8"])
        self.assertTrue(guard.is_allowed("127.0.0.1"))
        self.assertTrue(guard.is_allowed("::ffff:127.0.0.1"))
        self.assertTrue(guard.is_allowed("10.200.0.1"))
        self.assertFalse(guard.is_allowed("127.0.0.2"))
        self.assertFalse(guard.is_allowed("192.168.0.1"))

    def test_names_are_never_allowed(self) -> None:
        """Only IP addresses can be checked: a name is refused."""
        self.assertFalse(NetworkGuard().is_allowed("localhost"))

    def test_refusal_is_permanent_and_says_why(self) -> None:
        """A refusal is a PermanentError reported as a private or disallowed network."""
        error = DisallowedNetworkError("bots.internal", ["10.0.0.5"])
        self.assertIsInstance(error, PermanentError)
        self.assertEqual(str(error), "private or disallowed network: bots.internal resolves to 10.0.0.5")


class GuardedResolverTests(TestCase):
    def test_is_a_hostname_resolver(self) -> None:
        """GuardedResolver provides IHostnameResolver."""
        verifyObject(IHostnameResolver, GuardedResolver(FakeResolver({}), NetworkGuard(), []))


class GuardedEndpointTests(TestCase):
    def setUp(self) -> None:
        self.reactor = MemoryReactorClock()

    def connect(self, resolver: FakeResolver, host: str = "bots.example.com", allow: Sequence[str] = ()) -> object:
        endpoint = GuardedHostnameEndpoint(self.reactor, resolver, NetworkGuard(allow), host, 8080, timeout=5)
        return endpoint.connect(Factory.forProtocol(Protocol))

    def connected_hosts(self) -> list[str]:
        return [client[0] for client in self.reactor.tcpClients]

    def test_connects_only_to_allowed_addresses(self) -> None:
        """Of a mixed answer, only the public address is ever connected to."""
        resolver = FakeResolver({"bots.example.com": [["10.0.0.1", PUBLIC, "127.0.0.1"]]})
        self.connect(resolver)
        self.reactor.advance(1)  # let happy eyeballs try every address it was given
        self.assertEqual(self.connected_hosts(), [PUBLIC])

    def test_all_refused_fails_as_disallowed_network(self) -> None:
        """A name resolving only to refused addresses fails with DisallowedNetworkError, without connecting."""
        resolver = FakeResolver({"bots.example.com": [["127.0.0.1", "::1"]]})
        d = self.connect(resolver)
        failure = self.failureResultOf(d, DisallowedNetworkError)
        self.assertIn("127.0.0.1, ::1", str(failure.value))
        self.assertEqual(self.connected_hosts(), [])

    def test_ip_literals_are_checked_too(self) -> None:
        """A URL with a private IP literal is refused like a name."""
        resolver = FakeResolver({"169.254.169.254": [["169.254.169.254"]]})
        self.failureResultOf(self.connect(resolver, host="169.254.169.254"), DisallowedNetworkError)

    def test_allowlisted_address_is_connected(self) -> None:
        """An address in allow_networks is connected to."""
        resolver = FakeResolver({"localhost": [["127.0.0.1"]]})
        self.connect(resolver, host="localhost", allow=["127.0.0.1/32"])
        self.assertEqual(self.connected_hosts(), ["127.0.0.1"])

    def test_unknown_name_is_a_dns_error_not_a_refusal(self) -> None:
        """A name with no addresses at all is a DNS failure, not a disallowed network."""
        self.failureResultOf(self.connect(FakeResolver({})), DNSLookupError)

    def test_dns_rebinding_cannot_bypass_the_check(self) -> None:
        """Each connection uses the addresses checked in its own lookup: a rebound answer is refused."""
        resolver = FakeResolver({"rebind.example.com": [[PUBLIC], ["127.0.0.1"]]})
        self.connect(resolver, host="rebind.example.com")
        self.assertEqual(self.connected_hosts(), [PUBLIC])
        d = self.connect(resolver, host="rebind.example.com")
        self.failureResultOf(d, DisallowedNetworkError)
        self.assertEqual(self.connected_hosts(), [PUBLIC])
        self.assertEqual(resolver.lookups, ["rebind.example.com", "rebind.example.com"])


class EndpointFactoryTests(TestCase):
    def setUp(self) -> None:
        self.reactor = MemoryReactorClock()
        self.resolver = FakeResolver({"::1": [["::1"]], "fd00::1": [["fd00::1"]]})
        self.factory = GuardedEndpointFactory(self.reactor, NetworkGuard(["::1/128"]), resolver=self.resolver)

    def test_http_gets_a_guarded_endpoint(self) -> None:
        """http:// URLs get a guarded endpoint (IPv6 brackets removed)."""
        endpoint = self.factory.endpointForURI(URI.fromBytes(b"http://[::1]:8080/hook"))
        self.assertIsInstance(endpoint, GuardedHostnameEndpoint)
        endpoint.connect(Factory.forProtocol(Protocol))
        self.assertEqual(self.resolver.lookups, ["::1"])
        self.assertEqual(self.reactor.tcpClients[0][:2], ("::1", 8080))

    def test_https_is_guarded_under_tls(self) -> None:
        """https:// URLs are guarded too, with TLS on top."""
        endpoint = self.factory.endpointForURI(URI.fromBytes(b"https://[fd00::1]/hook"))
        self.assertNotIsInstance(endpoint, GuardedHostnameEndpoint)
        self.failureResultOf(endpoint.connect(Factory.forProtocol(Protocol)), DisallowedNetworkError)

    def test_private_ipv6_literal_urls_are_refused(self) -> None:
        """URLs with IPv4-mapped, NAT64 and 6to4 literals of private addresses are refused before connecting."""
        for host in ("::ffff:127.0.0.1", "64:ff9b::a00:1", "2002:a9fe:a9fe::1", "fe80::1", "fd00::1"):
            resolver = FakeResolver({host: [[host]]})
            factory = GuardedEndpointFactory(self.reactor, NetworkGuard(), resolver=resolver)
            endpoint = factory.endpointForURI(URI.fromBytes(f"http://[{host}]:8080/hook".encode()))
            failure = self.failureResultOf(endpoint.connect(Factory.forProtocol(Protocol)), DisallowedNetworkError)
            self.assertIn(host, str(failure.value))
        self.assertEqual(self.reactor.tcpClients, [])

    def test_refusal_after_a_redirect_says_so(self) -> None:
        """A refusal can name the redirect that led to the address."""
        error = DisallowedNetworkError(
            "127.0.0.1", ["127.0.0.1"], via="redirect 1 (307 from http://bots.example.com:80)"
        )
        self.assertEqual(
            str(error),
            "private or disallowed network: 127.0.0.1 resolves to 127.0.0.1, after redirect 1 "
            "(307 from http://bots.example.com:80)",
        )
        self.assertEqual(error.via, "redirect 1 (307 from http://bots.example.com:80)")

    def test_other_schemes_are_refused(self) -> None:
        """Schemes other than http and https are not supported."""
        with self.assertRaises(SchemeNotSupported):
            self.factory.endpointForURI(URI.fromBytes(b"ftp://example.com/"))
