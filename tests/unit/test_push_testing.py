"""Tests for zqtwisted.push.testing: the fake push bouncer checks what it gets, as Zulip's does."""

from __future__ import annotations

import json
from typing import Any, Protocol, cast

import treq
from treq.response import _Response
from treq.testing import StubTreq
from twisted.internet.defer import Deferred
from twisted.trial.unittest import TestCase

from tests.unit.test_push_payload import dm_event
from zqtwisted.push.bouncer import basic_auth
from zqtwisted.push.payload import build_notification, parse_event
from zqtwisted.push.testing import FakeBouncer, request_problems

URL = "http://bouncer.example.com/api/v1/remotes/push/notify"
GOOD_AUTH = basic_auth("uuid-1", "key-1")


def body() -> dict[str, Any]:
    return build_notification(parse_event(dm_event())).request_body()


class _StubHTTP(Protocol):
    """What the tests use of a StubTreq."""

    def post(self, url: str, *, data: bytes, headers: dict[str, str]) -> Deferred[_Response]: ...

    def flush(self) -> None: ...


class FakeBouncerTests(TestCase):
    def setUp(self) -> None:
        self.bouncer = FakeBouncer({"uuid-1": "key-1"})
        # StubTreq sets treq's functions on itself at runtime, out of mypy's sight.
        self.http = cast(_StubHTTP, StubTreq(self.bouncer))

    def post(self, data: Any, auth: str = GOOD_AUTH, url: str = URL, content_type: str = "application/json") -> Any:
        payload = data if isinstance(data, bytes) else json.dumps(data).encode()
        headers = {"Authorization": auth, "Content-Type": content_type} if auth else {"Content-Type": content_type}
        d = self.http.post(url, data=payload, headers=headers)
        self.http.flush()
        response = self.successResultOf(d)
        content = self.successResultOf(treq.content(response))
        try:
            return response.code, json.loads(content)
        except ValueError:
            return response.code, content

    def test_valid_request_is_recorded(self) -> None:
        """A valid request is answered with Zulip's success body and recorded with its server UUID."""
        status, answer = self.post(body())
        self.assertEqual((status, answer["result"], answer["total_android_devices"]), (200, "success", 1))
        (received,) = self.bouncer.requests
        self.assertEqual((received.server_uuid, received.body), ("uuid-1", body()))

    def test_auth_is_checked(self) -> None:
        """A missing or wrong Authorization is a 401 INVALID_ZULIP_SERVER, and not recorded."""
        for auth in ("", basic_auth("uuid-1", "nope"), "Bearer x", "Basic !!!"):
            status, answer = self.post(body(), auth=auth)
            self.assertEqual((status, answer["code"]), (401, "INVALID_ZULIP_SERVER"))
        self.assertEqual(self.bouncer.requests, [])

    def test_shape_is_checked(self) -> None:
        """A body that is not the notify shape is a 400 naming the problem."""
        status, answer = self.post({**body(), "extra": 1})
        self.assertEqual(status, 400)
        self.assertIn("unknown key 'extra'", answer["msg"])
        self.assertEqual(self.post(b"{nope")[0], 400)
        self.assertEqual(self.post(body(), content_type="text/plain")[0], 400)
        self.assertEqual(self.post(body(), url="http://bouncer.example.com/api/v1/remotes/push/other")[0], 404)
        self.assertEqual(len(self.bouncer.rejected), 4)

    def test_scripted_answers(self) -> None:
        """Scripted answers are used in order, then the default success."""
        self.bouncer.answer(503, b"down")
        self.bouncer.answer(400, {"result": "error", "msg": "bad", "code": "BAD_REQUEST"})
        self.assertEqual(self.post(body())[0], 503)
        self.assertEqual(self.post(body()), (400, {"result": "error", "msg": "bad", "code": "BAD_REQUEST"}))
        self.assertEqual(self.post(body())[0], 200)

    def test_hold(self) -> None:
        """A held request gets no answer."""
        self.bouncer.hold()
        d = self.http.post(
            URL,
            data=json.dumps(body()).encode(),
            headers={"Authorization": GOOD_AUTH, "Content-Type": "application/json"},
        )
        self.http.flush()
        self.assertNoResult(d)
        self.assertEqual(len(self.bouncer.held), 1)
        self.bouncer.held[0].finish()
        self.http.flush()
        self.assertEqual(self.successResultOf(d).code, 200)


class RequestProblemsTests(TestCase):
    def test_valid_bodies(self) -> None:
        """Zulip's add and remove bodies have no problem; neither does a legacy user_id-only body."""
        self.assertEqual(request_problems(body()), [])
        legacy = {k: v for k, v in body().items() if k != "user_uuid"}
        self.assertEqual(request_problems(legacy), [])

    def test_problems(self) -> None:
        """Each rule of the bouncer is checked."""
        cases = [
            ([], "not a JSON object"),
            ({**body(), "user_id": "10"}, "user_id is not an integer"),
            ({k: v for k, v in body().items() if k not in ("user_id", "user_uuid")}, "neither user_id nor user_uuid"),
            (
                {**{k: v for k, v in body().items() if k != "user_uuid"}, "realm_uuid": "r"},
                "realm_uuid without user_uuid",
            ),
            ({**body(), "gcm_options": {"priority": "urgent"}}, "invalid gcm_options"),
            ({**body(), "gcm_payload": {"event": "x"}}, "gcm_payload.event"),
            ({**body(), "apns_payload": {}}, "apns_payload.custom.zulip is missing"),
            ({**body(), "apns_payload": None}, "apns_payload is missing"),
        ]
        for data, problem in cases:
            self.assertTrue(any(problem in p for p in request_problems(data)), (data, problem))
