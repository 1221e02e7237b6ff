"""Tests for zqtwisted.webhooks.client: deadlines, size cap, per-host slots, error mapping."""

from __future__ import annotations

import gzip
from typing import Any

from treq.testing import RequestTraversalAgent
from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.error import ConnectionRefusedError
from twisted.internet.task import Clock
from twisted.python.failure import Failure
from twisted.trial.unittest import TestCase
from twisted.web.client import ResponseNeverReceived
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Request

from tests.resource_fakes import memory_resources
from zqtwisted.testing import FailingAgent
from zqtwisted.webhooks.client import (
    HostBusyError,
    HostSlots,
    ResponseTooLarge,
    WebhookClient,
    WebhookConnectionError,
    WebhookRequestError,
    WebhookResponse,
    WebhookTimeout,
    build_webhook_client,
    host_key,
    user_agent,
    webhook_pool_options,
)
from zqtwisted.webhooks.guard import DisallowedNetworkError
from zqtwisted.webhooks.settings import OutgoingWebhookSettings

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


def _body(request: Request) -> bytes:
    """The request's body (twisted.web always gives a POST one)."""
    assert request.content is not None
    body: bytes = request.content.read()
    return body
