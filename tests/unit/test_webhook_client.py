"""Tests for zqtwisted.webhooks.client: deadlines, size cap, per-host slots, error mapping, URLs, redirects."""

from __future__ import annotations

import gzip
from typing import Any

from treq.testing import RequestTraversalAgent
from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.error import ConnectionRefusedError
from twisted.internet.task import Clock
from twisted.python.failure import Failure
from twisted.trial.unittest import TestCase
from twisted.web.client import Agent, ResponseNeverReceived
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Request

from tests.resource_fakes import memory_resources
from tests.unit.test_webhook_guard import PUBLIC, FakeResolver
from zqtwisted.errors import PermanentError
from zqtwisted.testing import FailingAgent
from zqtwisted.webhooks.client import (
    HostBusyError,
    HostSlots,
    ResponseTooLarge,
    WebhookClient,
    WebhookConnectionError,
    WebhookError,
    WebhookRequestError,
    WebhookResponse,
    WebhookTimeout,
    build_webhook_client,
    host_key,
    user_agent,
    webhook_pool_options,
)
from zqtwisted.webhooks.guard import DisallowedNetworkError, GuardedEndpointFactory, NetworkGuard
from zqtwisted.webhooks.settings import OutgoingWebhookSettings
from zqtwisted.webhooks.urls import MAX_REDIRECTS, InvalidURL, RedirectRefused, TooManyRedirects

URL = "http://bots.example.com/hook"


class Recorder(Resource):
    """Answers POSTs with a canned response, or holds them (NOT_DONE_YET) when ``hold`` is set."""

    isLeaf = True

    def __init__(self, status: int = 200, body: bytes = b'{"content": "pong"}', hold: bool = False) -> None:
        super().__init__()
        self.status = status
        self.body = body
        self.hold = hold
        self.requests: list[Request] = []
        self.bodies: list[bytes] = []
        self.lost: list[Request] = []
        self.headers: dict[bytes, bytes] = {b"content-type": b"application/json"}

    def render_POST(self, request: Request) -> Any:
        self.requests.append(request)
        self.bodies.append(_body(request))
        request.notifyFinish().addErrback(lambda _: self.lost.append(request))
        if self.hold:
            return NOT_DONE_YET
        request.setResponseCode(self.status)
        for name, value in self.headers.items():
            request.setHeader(name, value)
        return self.body


class ClientTestCase(TestCase):
    def setUp(self) -> None:
        self.clock = Clock()

    def make(self, resource: Resource, **options: Any) -> tuple[WebhookClient, RequestTraversalAgent]:
        agent = RequestTraversalAgent(resource)
        options.setdefault("timeout", 10.0)
        return WebhookClient(self.clock, agent, **options), agent

    def cancel(self, agent: RequestTraversalAgent, *calls: Deferred[WebhookResponse]) -> None:
        """Cancel calls still pending at the end of a test, and check they end cancelled."""
        for d in calls:
            d.cancel()
        agent.flush()
        for d in calls:
            self.failureResultOf(d, CancelledError)

    def post(self, client: WebhookClient, agent: RequestTraversalAgent, url: str = URL) -> Deferred[WebhookResponse]:
        d = client.post(url, b'{"x": 1}', "application/json")
        agent.flush()
        return d


class RequestTests(ClientTestCase):
    def test_posts_the_body_with_zulip_headers(self) -> None:
        """The body is POSTed with Zulip's User-Agent, the content type, and no compression asked for."""
        resource = Recorder()
        client, agent = self.make(resource, user_agent=user_agent("9.4"))
        response = self.successResultOf(self.post(client, agent))
        self.assertEqual(response, WebhookResponse(200, b'{"content": "pong"}', "application/json"))
        request = resource.requests[0]
        self.assertEqual(resource.bodies, [b'{"x": 1}'])
        self.assertEqual(request.getHeader(b"user-agent"), b"ZulipOutgoingWebhook/9.4")
        self.assertEqual(request.getHeader(b"content-type"), b"application/json")
        self.assertEqual(request.getHeader(b"accept-encoding"), b"identity")

    def test_default_user_agent_names_zqtwisted_version(self) -> None:
        """Without a configured version the User-Agent carries zqtwisted's."""
        from zqtwisted import __version__

        self.assertEqual(user_agent(), f"ZulipOutgoingWebhook/{__version__}")

    def test_redirects_are_not_followed(self) -> None:
        """A 302 is returned as it is, not followed."""
        resource = Recorder(status=302, body=b"")
        resource.headers[b"location"] = b"http://169.254.169.254/"
        client, agent = self.make(resource)
        self.assertEqual(self.successResultOf(self.post(client, agent)).status, 302)
        self.assertEqual(len(resource.requests), 1)

    def test_cookies_are_never_sent_back(self) -> None:
        """A cookie set by a bot server is not stored or sent to anyone."""
        resource = Recorder()
        resource.headers[b"set-cookie"] = b"session=abc; Path=/"
        client, agent = self.make(resource)
        self.successResultOf(self.post(client, agent))
        self.successResultOf(self.post(client, agent))
        self.assertIsNone(resource.requests[1].getHeader(b"cookie"))

    def test_compressed_bodies_are_not_inflated(self) -> None:
        """A gzip body sent anyway is handed over compressed (no gzip bomb can expand)."""
        resource = Recorder(body=gzip.compress(b'{"content": "x"}'))
        resource.headers[b"content-encoding"] = b"gzip"
        client, agent = self.make(resource)
        response = self.successResultOf(self.post(client, agent))
        self.assertEqual(response.body, resource.body)


class DeadlineTests(ClientTestCase):
    def test_no_response_in_time_is_a_timeout_that_aborts(self) -> None:
        """At the deadline the request fails with WebhookTimeout and the connection is dropped."""
        resource = Recorder(hold=True)
        client, agent = self.make(resource)
        d = self.post(client, agent)
        self.clock.advance(9.9)
        self.assertNoResult(d)
        self.clock.advance(0.1)
        agent.flush()
        failure = self.failureResultOf(d, WebhookTimeout)
        self.assertIn("within 10s", str(failure.value))
        self.assertEqual(resource.lost, resource.requests)
        self.assertEqual(client.in_flight(URL), 0)

    def test_deadline_covers_reading_the_body(self) -> None:
        """A server that sends headers and part of the body, then stalls, times out too."""
        resource = Recorder(hold=True)
        client, agent = self.make(resource)
        d = self.post(client, agent)
        request = resource.requests[0]
        request.setHeader(b"content-length", b"100")
        request.write(b'{"content": ')
        agent.flush()
        self.clock.advance(10)
        agent.flush()
        self.failureResultOf(d, WebhookTimeout)
        self.assertEqual(resource.lost, [request])

    def test_cancelling_aborts_the_request(self) -> None:
        """Cancelling the call (e.g. a consume timeout) drops the connection and frees the slot."""
        resource = Recorder(hold=True)
        client, agent = self.make(resource)
        d = self.post(client, agent)
        d.cancel()
        agent.flush()
        self.failureResultOf(d, CancelledError)
        self.assertEqual(resource.lost, resource.requests)
        self.assertEqual(client.in_flight(URL), 0)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_timers_are_cleared_after_success(self) -> None:
        """A completed request leaves no timer behind."""
        client, agent = self.make(Recorder())
        self.successResultOf(self.post(client, agent))
        self.assertEqual(self.clock.getDelayedCalls(), [])


class SizeCapTests(ClientTestCase):
    def test_body_at_the_limit_is_read(self) -> None:
        """A body of exactly max_response_bytes is accepted."""
        client, agent = self.make(Recorder(body=b"x" * 64), max_response_bytes=64)
        self.assertEqual(self.successResultOf(self.post(client, agent)).body, b"x" * 64)

    def test_larger_body_is_refused_and_dropped(self) -> None:
        """A body over max_response_bytes fails with ResponseTooLarge."""
        client, agent = self.make(Recorder(body=b"x" * 65), max_response_bytes=64)
        failure = self.failureResultOf(self.post(client, agent), ResponseTooLarge)
        self.assertIn("64 bytes", str(failure.value))
        self.assertEqual(client.in_flight(URL), 0)


class HostSlotTests(ClientTestCase):
    def test_per_host_cap_holds_back_extra_requests(self) -> None:
        """Beyond per_host_concurrency, requests to a host wait for a slot."""
        resource = Recorder(hold=True)
        client, agent = self.make(resource, per_host_concurrency=2)
        calls = [self.post(client, agent) for _ in range(3)]
        self.assertEqual(len(resource.requests), 2)
        self.assertEqual(client.in_flight(URL), 2)
        first = resource.requests[0]
        first.setResponseCode(200)
        first.write(b"{}")
        first.finish()
        agent.flush()
        self.successResultOf(calls[0])
        agent.flush()
        self.assertEqual(len(resource.requests), 3)
        self.cancel(agent, *calls[1:])

    def test_other_hosts_are_not_held_back(self) -> None:
        """A busy host does not delay requests to another host."""
        resource = Recorder(hold=True)
        client, agent = self.make(resource, per_host_concurrency=1)
        busy = self.post(client, agent, "http://slow.example.com/")
        other = self.post(client, agent, "http://fast.example.com/")
        self.assertEqual(len(resource.requests), 2)
        self.cancel(agent, busy, other)

    def test_waiting_too_long_for_a_slot_is_host_busy(self) -> None:
        """A request that cannot get a slot within the timeout fails with HostBusyError."""
        resource = Recorder(hold=True)
        client, agent = self.make(resource, per_host_concurrency=1)
        first, second, third = (self.post(client, agent) for _ in range(3))
        self.clock.advance(10)
        agent.flush()
        self.failureResultOf(first, WebhookTimeout)
        self.failureResultOf(third, HostBusyError)
        self.assertNoResult(second)  # got the slot the first gave up
        self.cancel(agent, second)

    def test_idle_hosts_are_forgotten(self) -> None:
        """HostSlots keeps no semaphore for a host nobody uses."""
        slots = HostSlots(2)
        self.successResultOf(slots.acquire("a:80"))
        self.assertEqual(slots.busy("a:80"), 1)
        slots.release("a:80")
        self.assertEqual(slots._semaphores, {})

    def test_host_key_is_host_and_port(self) -> None:
        """Hosts are compared case-insensitively, with the scheme's default port."""
        self.assertEqual(host_key("http://Bots.Example.com/x"), "bots.example.com:80")
        self.assertEqual(host_key("https://bots.example.com/x"), "bots.example.com:443")
        self.assertEqual(host_key("http://bots.example.com:8080/x"), "bots.example.com:8080")


class ErrorMappingTests(TestCase):
    def post_through(self, error: BaseException) -> Failure:
        client = WebhookClient(Clock(), FailingAgent(error))
        failure: Failure = self.failureResultOf(client.post(URL, b"{}", "application/json"))
        return failure

    def test_connection_errors_become_webhook_connection_errors(self) -> None:
        """Refused connections and lost responses are WebhookConnectionError."""
        for error in (ConnectionRefusedError(), ResponseNeverReceived([Failure(ConnectionRefusedError())])):
            self.assertTrue(self.post_through(error).check(WebhookConnectionError))

    def test_disallowed_network_passes_through(self) -> None:
        """The guard's refusal reaches the caller as it is."""
        self.assertTrue(self.post_through(DisallowedNetworkError("h", ["10.0.0.1"])).check(DisallowedNetworkError))

    def test_other_errors_become_request_errors(self) -> None:
        """Anything else is a WebhookRequestError naming the original error."""
        failure = self.post_through(ValueError("bad"))
        self.assertTrue(failure.check(WebhookRequestError))
        self.assertIn("ValueError: bad", str(failure.value))


class BuildTests(TestCase):
    def test_builds_a_client_over_the_shared_pool(self) -> None:
        """The production client uses settings' timeout and caps; the shared "webhooks" pool keeps a slot's worth."""
        settings = OutgoingWebhookSettings(timeout=3, per_host_concurrency=7, user_agent_version="9.4")
        resources, reactor, _ = memory_resources()
        pool = resources.http_pool("webhooks", webhook_pool_options(settings))
        client = build_webhook_client(reactor, settings, pool)
        self.assertEqual((client.timeout, client._slots.limit, client.user_agent), (3, 7, "ZulipOutgoingWebhook/9.4"))
        self.assertTrue(pool.persistent)
        self.assertEqual(pool.maxPersistentPerHost, 7)
        self.assertFalse(pool.retryAutomatically)
        self.assertIs(resources.http_pool("webhooks"), pool)


class Redirector(Resource):
    """A bot server over several paths: ``routes`` maps a path to (status, Location); others answer 200 JSON."""

    isLeaf = True

    def __init__(self, routes: dict[bytes, tuple[int, bytes | None]], hold: bool = False) -> None:
        super().__init__()
        self.routes = routes
        self.hold = hold
        self.seen: list[tuple[bytes, bytes, bytes, Request]] = []

    def render(self, request: Request) -> Any:
        assert request.method is not None and request.path is not None
        body = request.content.read() if request.content is not None else b""
        host = request.getHeader(b"host") or b""
        self.seen.append((request.method, host + request.path, body, request))
        route = self.routes.get(request.path)
        if route is not None:
            status, location = route
            request.setResponseCode(status)
            if location is not None:
                request.setHeader(b"location", location)
            return b"moved"
        if self.hold:
            return NOT_DONE_YET
        request.setHeader(b"content-type", b"application/json")
        return b'{"content": "' + request.method + b" " + str(len(body)).encode() + b'"}'

    def requests(self) -> list[tuple[bytes, bytes, bytes]]:
        return [(method, target, body) for method, target, body, _ in self.seen]


class UrlTests(ClientTestCase):
    def test_ipv6_literal_urls_are_posted(self) -> None:
        """An IPv6-literal URL is POSTed (no IDNA error), with the bracketed Host header."""
        resource = Recorder()
        client, agent = self.make(resource)
        response = self.successResultOf(self.post(client, agent, "http://[2001:db8::1]:8080/hook"))
        self.assertEqual(response.status, 200)
        self.assertEqual(resource.requests[0].getHeader(b"host"), b"[2001:db8::1]:8080")

    def test_invalid_url_is_permanent_and_sends_nothing(self) -> None:
        """A URL IDNA refuses fails with InvalidURL (a PermanentError, not a WebhookError); nothing is sent."""
        resource = Recorder()
        client, agent = self.make(resource)
        for url in ("http://a..b/hook", "http://[fe80::1%25eth0]/hook"):
            failure = self.failureResultOf(self.post(client, agent, url), InvalidURL)
            self.assertIsInstance(failure.value, PermanentError)
            self.assertNotIsInstance(failure.value, WebhookError)
            self.assertEqual(client.in_flight(url), 0)
        self.assertEqual(resource.requests, [])


class RedirectTests(ClientTestCase):
    def follow(
        self, status: int, location: bytes = b"/final", **options: Any
    ) -> tuple[Redirector, Deferred[WebhookResponse]]:
        resource = Redirector({b"/start": (status, location)})
        client, agent = self.make(resource, follow_redirects=True, **options)
        d = client.post("http://bots.example.com/start", b'{"x": 1}', "application/json", {"Authorization": "Basic k"})
        for _ in range(MAX_REDIRECTS + 2):
            agent.flush()
        return resource, d

    def test_307_and_308_repost_the_body(self) -> None:
        """A 307 or 308 is followed with the same method, body and headers (was: a connection error)."""
        for status in (307, 308):
            resource, d = self.follow(status)
            self.assertEqual(self.successResultOf(d).body, b'{"content": "POST 8"}')
            self.assertEqual(
                resource.requests(),
                [(b"POST", b"bots.example.com/start", b'{"x": 1}'), (b"POST", b"bots.example.com/final", b'{"x": 1}')],
            )
            final = resource.seen[1][3]
            self.assertEqual(final.getHeader(b"content-type"), b"application/json")
            self.assertEqual(final.getHeader(b"authorization"), b"Basic k")  # same origin

    def test_301_and_302_repost_the_body(self) -> None:
        """A 301 or 302 repeats the POST with its body, as documented (was: a connection error)."""
        for status in (301, 302):
            resource, d = self.follow(status)
            self.assertEqual(self.successResultOf(d).status, 200)
            self.assertEqual(resource.requests()[1], (b"POST", b"bots.example.com/final", b'{"x": 1}'))

    def test_303_is_a_get_without_body(self) -> None:
        """A 303 is followed with a GET that has no body and no Content-Type."""
        resource, d = self.follow(303)
        self.assertEqual(self.successResultOf(d).body, b'{"content": "GET 0"}')
        self.assertEqual(resource.requests()[1], (b"GET", b"bots.example.com/final", b""))
        self.assertIsNone(resource.seen[1][3].getHeader(b"content-type"))

    def test_credentials_are_not_sent_to_another_origin(self) -> None:
        """Authorization is dropped when a redirect leads to another host."""
        resource, d = self.follow(307, b"http://elsewhere.example/final")
        self.successResultOf(d)
        self.assertEqual(resource.requests()[1][:2], (b"POST", b"elsewhere.example/final"))
        self.assertIsNone(resource.seen[1][3].getHeader(b"authorization"))

    def test_too_many_redirects(self) -> None:
        """A redirect loop stops after MAX_REDIRECTS hops with TooManyRedirects, a permanent error."""
        resource = Redirector({b"/loop": (307, b"/loop")})
        client, agent = self.make(resource, follow_redirects=True)
        d = client.post("http://bots.example.com/loop", b"{}", "application/json")
        for _ in range(MAX_REDIRECTS + 2):
            agent.flush()
        self.failureResultOf(d, TooManyRedirects)
        self.assertEqual(len(resource.seen), MAX_REDIRECTS + 1)
        self.assertEqual(client.in_flight("http://bots.example.com/loop"), 0)

    def test_bad_redirects_are_refused(self) -> None:
        """A redirect to another scheme, from https to http or to a host IDNA refuses is refused, permanently."""
        for url, location in (
            ("http://bots.example.com/start", b"ftp://bots.example.com/"),
            ("https://bots.example.com/start", b"http://bots.example.com/final"),
            ("http://bots.example.com/start", b"http://a..b/final"),
        ):
            client, agent = self.make(Redirector({b"/start": (302, location)}), follow_redirects=True)
            d = client.post(url, b"{}", "application/json")
            agent.flush()
            self.assertIsInstance(self.failureResultOf(d, RedirectRefused).value, PermanentError)

    def test_redirects_without_location_or_not_followed_are_answers(self) -> None:
        """A 3xx without Location, and 300/304, are returned as the answer."""
        for status, location in ((302, None), (300, b"/final"), (304, b"/final")):
            resource = Redirector({b"/start": (status, location)})
            client, agent = self.make(resource, follow_redirects=True)
            d = client.post("http://bots.example.com/start", b"{}", "application/json")
            agent.flush()
            self.assertEqual(self.successResultOf(d).status, status)
            self.assertEqual(len(resource.seen), 1)

    def test_deadline_covers_every_hop(self) -> None:
        """The timeout bounds the whole chain of requests, not each hop."""
        resource = Redirector({b"/start": (307, b"/final")}, hold=True)
        client, agent = self.make(resource, follow_redirects=True)
        d = client.post("http://bots.example.com/start", b"{}", "application/json")
        agent.flush()
        agent.flush()
        self.assertEqual(len(resource.seen), 2)
        self.clock.advance(10)
        agent.flush()
        self.failureResultOf(d, WebhookTimeout)
        self.assertEqual(self.clock.getDelayedCalls(), [])


class GuardedTraversalAgent(RequestTraversalAgent):
    """treq's in-memory agent, but every connection goes through the SSRF guard (names from a FakeResolver)."""

    def __init__(self, root: Resource, guard: NetworkGuard, answers: dict[str, list[list[str]]]) -> None:
        super().__init__(root)
        self.resolver = FakeResolver(answers)
        reactor = self._memoryReactor
        self._realAgent = Agent.usingEndpointFactory(
            reactor, GuardedEndpointFactory(reactor, guard, resolver=self.resolver)
        )


class GuardedClientTests(TestCase):
    """The client over the guarded endpoint factory: IPv6 literals and every redirect hop are checked."""

    def post(
        self, url: str, routes: dict[bytes, tuple[int, bytes | None]] | None = None, allow: tuple[str, ...] = ()
    ) -> tuple[Redirector, GuardedTraversalAgent, Deferred[WebhookResponse]]:
        literals = ["::1", "::ffff:127.0.0.1", "64:ff9b::7f00:1", "2002:7f00:1::1", "fe80::1", "fd00::1", "127.0.0.1"]
        answers = {host: [[host]] for host in [*literals, "2606:4700:4700::1111"]}
        answers.update({"bots.example.com": [[PUBLIC]], "internal.example.com": [["10.0.0.7"]]})
        resource = Redirector(routes or {})
        agent = GuardedTraversalAgent(resource, NetworkGuard(allow), answers)
        client = WebhookClient(Clock(), agent, follow_redirects=True)
        d = client.post(url, b"{}", "application/json")
        for _ in range(3):
            agent.flush()
        return resource, agent, d

    def test_private_ipv6_literals_are_refused_by_the_guard(self) -> None:
        """[::1], IPv4-mapped, NAT64, 6to4, link-local and ULA literals reach the guard and are refused."""
        for host in ("::1", "::ffff:127.0.0.1", "64:ff9b::7f00:1", "2002:7f00:1::1", "fe80::1", "fd00::1"):
            resource, agent, d = self.post(f"http://[{host}]:8080/hook")
            self.failureResultOf(d, DisallowedNetworkError)
            self.assertEqual(agent.resolver.lookups, [host])
            self.assertEqual(resource.seen, [])

    def test_allowed_ipv6_literals_are_posted(self) -> None:
        """A public IPv6 literal, and an allowlisted [::1], are connected to and POSTed."""
        for url, allow in (("http://[2606:4700:4700::1111]/hook", ()), ("http://[::1]:8080/hook", ("::1/128",))):
            resource, _, d = self.post(url, allow=allow)
            self.assertEqual(self.successResultOf(d).status, 200)
            self.assertEqual(len(resource.seen), 1)

    def test_redirect_to_a_private_address_is_refused(self) -> None:
        """A hop to a private literal or to a name resolving privately is refused by the guard, and says so."""
        for location, host in ((b"http://127.0.0.1/final", "127.0.0.1"), (b"http://internal.example.com/", "10.0.0.7")):
            resource, _, d = self.post("http://bots.example.com/start", {b"/start": (307, location)})
            failure = self.failureResultOf(d, DisallowedNetworkError)
            self.assertIn(host, str(failure.value))
            self.assertIn("redirect 1 (307 from http://bots.example.com:80)", str(failure.value))
            self.assertEqual(len(resource.seen), 1)

    def test_redirect_to_an_allowed_address_is_followed(self) -> None:
        """A hop to a public IPv6 literal passes the guard and is followed."""
        resource, _, d = self.post(
            "http://bots.example.com/start", {b"/start": (308, b"http://[2606:4700:4700::1111]/f")}
        )
        self.assertEqual(self.successResultOf(d).body, b'{"content": "POST 2"}')
        self.assertEqual(len(resource.seen), 2)


def _body(request: Request) -> bytes:
    """The request's body (twisted.web always gives a POST one)."""
    assert request.content is not None
    body: bytes = request.content.read()
    return body
