"""The "still unread?" check: request, answer parsing, failures, deadline."""

from __future__ import annotations

import json
from typing import Any

from treq.testing import RequestTraversalAgent
from twisted.internet.task import Clock
from twisted.trial import unittest
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Request

from tests.resource_fakes import memory_resources
from zqtwisted.missedmessage.unread import (
    UNREAD_POOL,
    HTTPUnreadChecker,
    UnreadCheckError,
    build_unread_checker,
    parse_answer,
)
from zqtwisted.webhooks.client import WebhookClient, WebhookResponse, WebhookTimeout

URL = "http://zulip.example.com/internal/unread"


class UnreadResource(Resource):
    isLeaf = True

    def __init__(self, status: int = 200, body: Any = None, hold: bool = False) -> None:
        super().__init__()
        self.status = status
        self.body = body
        self.hold = hold
        self.requests: list[tuple[dict[str, Any], Request]] = []

    def render_POST(self, request: Request) -> Any:
        asked = json.loads(_body(request))
        self.requests.append((asked, request))
        if self.hold:
            return NOT_DONE_YET
        request.setResponseCode(self.status)
        request.setHeader(b"content-type", b"application/json")
        body = self.body if self.body is not None else {"unread_message_ids": asked["message_ids"][1:]}
        return body if isinstance(body, bytes) else json.dumps(body).encode()


class CheckerTests(unittest.TestCase):
    def make(self, resource: Resource, token: str = "") -> tuple[HTTPUnreadChecker, RequestTraversalAgent, Clock]:
        clock = Clock()
        agent = RequestTraversalAgent(resource)
        return HTTPUnreadChecker(WebhookClient(clock, agent, timeout=5), URL, token), agent, clock

    def test_asks_with_ids_and_keeps_unread(self) -> None:
        """The check POSTs the user and the sorted ids; only the ids answered as unread remain."""
        resource = UnreadResource()
        checker, agent, _ = self.make(resource, token="s3cret")
        d = checker.unread(10, [503, 501, 502, 501])
        agent.flush()
        self.assertEqual(self.successResultOf(d), {502, 503})
        asked, request = resource.requests[0]
        self.assertEqual(asked, {"user_profile_id": 10, "message_ids": [501, 502, 503]})
        self.assertEqual(request.getHeader(b"authorization"), b"Bearer s3cret")

    def test_error_status_fails(self) -> None:
        """A non-2xx answer fails the check (the batch is retried, not sent on a guess)."""
        checker, agent, _ = self.make(UnreadResource(status=503, body=b"down"))
        d = checker.unread(10, [1])
        agent.flush()
        self.assertIn("503", str(self.failureResultOf(d, UnreadCheckError).value))

    def test_deadline(self) -> None:
        """A check that gets no answer fails at unread_timeout."""
        checker, agent, clock = self.make(UnreadResource(hold=True))
        d = checker.unread(10, [1])
        agent.flush()
        self.assertNoResult(d)
        clock.advance(5)
        agent.flush()
        self.failureResultOf(d, WebhookTimeout)

    def test_parse_answer(self) -> None:
        """Answers without a list of ints fail; ids that were not asked are ignored."""
        ok = WebhookResponse(200, b'{"unread_message_ids": [1, 7]}')
        self.assertEqual(parse_answer(ok, [1, 2]), {1})
        for body in (b"nope", b"[1]", b'{"unread_message_ids": [true]}', b"{}"):
            with self.assertRaises(UnreadCheckError):
                parse_answer(WebhookResponse(200, body), [1])

    def test_build(self) -> None:
        """The production checker is built over the shared "unread" pool, with the deadline it is given."""
        resources, reactor, _ = memory_resources()
        pool = resources.http_pool("unread", UNREAD_POOL)
        checker = build_unread_checker(reactor, pool, URL, timeout=3)
        self.assertEqual(checker.client.timeout, 3)
        self.assertFalse(pool.retryAutomatically)


def _body(request: Request) -> bytes:
    """The request's body (twisted.web always gives a POST one)."""
    assert request.content is not None
    body: bytes = request.content.read()
    return body
