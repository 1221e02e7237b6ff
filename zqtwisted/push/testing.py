"""A fake Zulip push bouncer for tests: a twisted.web resource that checks what it gets.

:class:`FakeBouncer` answers ``POST /api/v1/remotes/push/notify`` as Zulip's
``remote_server_notify_push`` does, after checking the HTTP basic auth (against
the server UUIDs and API keys it knows) and the shape of the JSON body.  Tests
script its answers (:meth:`FakeBouncer.answer`, :meth:`FakeBouncer.hold`) and
read what it received (:attr:`FakeBouncer.requests`).

:func:`serve_bouncer` runs one on 127.0.0.1 on a free port; ``stop()`` closes the
port and every connection.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from twisted.internet.interfaces import IListeningPort
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Request, Site

from zqtwisted.push.bouncer import NOTIFY_PATH
from zqtwisted.testing import TrackingFactory

REQUEST_KEYS = frozenset(
    {
        "user_uuid",
        "user_id",
        "realm_uuid",
        "gcm_payload",
        "apns_payload",
        "gcm_options",
        "android_devices",
        "apple_devices",
    }
)
HOLD = "hold"


@dataclass
class ReceivedRequest:
    server_uuid: str
    body: dict[str, Any]
    headers: dict[str, str]
    request: Request = field(repr=False)


def success_body(android: int = 1, apple: int = 1) -> dict[str, Any]:
    return {
        "result": "success",
        "msg": "",
        "total_android_devices": android,
        "total_apple_devices": apple,
        "deleted_devices": {"android_devices": [], "apple_devices": []},
        "realm": None,
    }


def error_body(msg: str, code: str = "BAD_REQUEST") -> dict[str, Any]:
    return {"result": "error", "msg": msg, "code": code}


def request_problems(body: Any) -> list[str]:
    """What is wrong with a notify request body, by the bouncer's rules (empty: nothing)."""
    if not isinstance(body, dict):
        return ["the body is not a JSON object"]
    problems = [f"unknown key {k!r}" for k in sorted(set(body) - REQUEST_KEYS)]
    if "user_id" not in body and "user_uuid" not in body:
        problems.append("neither user_id nor user_uuid")
    if "user_id" in body and (not isinstance(body["user_id"], int) or isinstance(body["user_id"], bool)):
        problems.append("user_id is not an integer")
    for key in ("user_uuid", "realm_uuid"):
        if key in body and not isinstance(body[key], str):
            problems.append(f"{key} is not a string")
    if "realm_uuid" in body and "user_uuid" not in body:
        problems.append("realm_uuid without user_uuid")
    for key in ("gcm_payload", "apns_payload", "gcm_options"):
        if not isinstance(body.get(key), dict):
            problems.append(f"{key} is missing or not an object")
    if problems:
        return problems
    options = body["gcm_options"]
    if set(options) - {"priority"} or options.get("priority") not in ("normal", "high"):
        problems.append(f"invalid gcm_options {options!r}")
    if body["gcm_payload"].get("event") not in ("message", "remove"):
        problems.append("gcm_payload.event is neither message nor remove")
    custom = body["apns_payload"].get("custom")
    if not isinstance(custom, dict) or not isinstance(custom.get("zulip"), dict):
        problems.append("apns_payload.custom.zulip is missing")
    return problems


class FakeBouncer(Resource):
    """Zulip's push bouncer, as far as ``push/notify`` goes."""

    isLeaf = True

    def __init__(self, credentials: Mapping[str, str]) -> None:
        super().__init__()
        self.credentials = dict(credentials)
        self.requests: list[ReceivedRequest] = []
        self.rejected: list[tuple[int, str]] = []
        self.lost: list[Request] = []
        self.held: list[Request] = []
        self._answers: deque[tuple[int, Any] | str] = deque()

    def answer(self, status: int, data: Any = None, times: int = 1) -> None:
        """Answer the next ``times`` valid requests with ``status`` and ``data`` (JSON, or bytes)."""
        for _ in range(times):
            self._answers.append((status, data))

    def hold(self, times: int = 1) -> None:
        """Never answer the next ``times`` valid requests (the client must give up)."""
        for _ in range(times):
            self._answers.append(HOLD)

    def render_POST(self, request: Request) -> Any:
        request.notifyFinish().addErrback(lambda _: self.lost.append(request))
        if request.path != NOTIFY_PATH.encode():
            return self._reply(request, 404, error_body("Not found", "NOT_FOUND"))
        server_uuid = self._authenticate(request)
        if server_uuid is None:
            return self._reply(
                request, 401, error_body("Zulip server auth failure: key does not match role", "INVALID_ZULIP_SERVER")
            )
        content_type = (request.getHeader(b"content-type") or b"").split(b";")[0].strip()
        if content_type != b"application/json":
            return self._reply(request, 400, error_body(f"unexpected content type {content_type!r}"))
        try:
            body = json.loads(request.content.read() if request.content is not None else b"")
        except ValueError:
            return self._reply(request, 400, error_body("Malformed JSON"))
        problems = request_problems(body)
        if problems:
            return self._reply(request, 400, error_body("; ".join(problems)))
        headers = {k.decode().lower(): v[0].decode() for k, v in request.requestHeaders.getAllRawHeaders()}
        self.requests.append(ReceivedRequest(server_uuid, body, headers, request))
        answer = self._answers.popleft() if self._answers else (200, success_body())
        if isinstance(answer, str):
            self.held.append(request)
            return NOT_DONE_YET
        status, data = answer
        return self._reply(request, status, success_body() if data is None and status == 200 else data)

    def _authenticate(self, request: Request) -> str | None:
        value = request.getHeader(b"authorization") or b""
        scheme, _, token = value.partition(b" ")
        if scheme.lower() != b"basic":
            return None
        try:
            user, _, key = base64.b64decode(token, validate=True).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError):
            return None
        return user if self.credentials.get(user) == key else None

    def _reply(self, request: Request, status: int, data: Any) -> bytes:
        if status >= 400 and data is not None and not isinstance(data, bytes):
            self.rejected.append((status, json.dumps(data)))
        request.setResponseCode(status)
        if isinstance(data, bytes):
            return data
        request.setHeader(b"content-type", b"application/json")
        return json.dumps(data if data is not None else {}).encode()


@dataclass
class RunningBouncer:
    bouncer: FakeBouncer
    url: str
    port: IListeningPort
    factory: TrackingFactory

    async def stop(self) -> None:
        """Close the port, then every connection (held requests included)."""
        stopping = self.port.stopListening()
        if stopping is not None:
            await stopping
        await self.factory.close_all()


def serve_bouncer(reactor: Any, credentials: Mapping[str, str]) -> RunningBouncer:
    """A :class:`FakeBouncer` listening on 127.0.0.1 (a free port); ``url`` is its base URL."""
    bouncer = FakeBouncer(credentials)
    factory = TrackingFactory(Site(bouncer))
    port = reactor.listenTCP(0, factory, interface="127.0.0.1")
    return RunningBouncer(bouncer, f"http://127.0.0.1:{port.getHost().port}", port, factory)
