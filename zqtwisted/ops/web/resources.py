"""The dashboard's twisted.web resources: the page and its assets, the JSON API, the actions.

    GET  /                                    the page (static HTML, CSS, JS from the package)
    GET  /api/queues[?since=T]                rows of every queue, history newer than T
    GET  /api/failed/{queue}[?offset=&limit=] a page of dead letters
    POST /api/failed/{queue}/replay/{id}      replay one             (token)
    POST /api/failed/{queue}/replay           replay all             (token)
    POST /api/failed/{queue}/purge            delete the dead letters (token)
    POST /api/auth                            check a token: 204, or 401/403

twisted.web, not Klein: the service already serves ``/metrics`` with it, these are a
handful of fixed routes, and it adds no dependency.  Every answer carries a strict
Content-Security-Policy (scripts and styles from this server only, no framing).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from importlib.resources import files
from typing import Any

from twisted.internet.defer import CancelledError, Deferred
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Request

from zqtwisted.ops.web.auth import Refusal, refusal
from zqtwisted.ops.web.deadletters import DeadLetters, LetterNotFound, ReplayIncomplete, UnknownQueue
from zqtwisted.ops.web.letters import page_bounds
from zqtwisted.ops.web.model import board_json
from zqtwisted.ops.web.sampler import DashboardSampler
from zqtwisted.runtime.broker import BrokerUnavailable, PublishFailed

log = Logger()

CSP = (
    b"default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
    b"base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
SECURITY_HEADERS = {
    b"content-security-policy": CSP,
    b"x-content-type-options": b"nosniff",
    b"x-frame-options": b"DENY",
    b"referrer-policy": b"no-referrer",
}
CONTENT_TYPES = {
    ".html": b"text/html; charset=utf-8",
    ".css": b"text/css; charset=utf-8",
    ".js": b"text/javascript; charset=utf-8",
    ".svg": b"image/svg+xml",
}


def _secure(request: Request) -> None:
    for name, value in SECURITY_HEADERS.items():
        request.setHeader(name, value)


def json_body(request: Request, code: int, body: Any) -> bytes:
    """Answer ``body`` as JSON with ``code``; never cached."""
    _secure(request)
    request.setResponseCode(code)
    request.setHeader(b"content-type", b"application/json")
    request.setHeader(b"cache-control", b"no-store")
    return json.dumps(body, separators=(",", ":")).encode() + b"\n"


def _error(request: Request, code: int, message: str, **extra: Any) -> bytes:
    return json_body(request, code, {"error": message, **extra})


def _header(request: Request, name: bytes) -> str | None:
    value = request.getHeader(name)
    return None if value is None else value.decode("latin-1")


def _arg(request: Request, name: bytes) -> str | None:
    values = (request.args or {}).get(name)
    return values[0].decode("utf-8", "replace") if values else None


def _segments(request: Request) -> list[str]:
    """The path below the resource, without a trailing empty segment."""
    parts = [p.decode("utf-8", "replace") for p in request.postpath or []]
    while parts and parts[-1] == "":
        parts.pop()
    return parts


@dataclass(frozen=True)
class Asset:
    name: str
    content_type: bytes
    body: bytes

    @property
    def etag(self) -> bytes:
        return b'"' + hashlib.sha256(self.body).hexdigest()[:16].encode() + b'"'


def load_assets() -> dict[str, Asset]:
    """The page's files, shipped in the package (``zqtwisted/ops/web/static``)."""
    assets = {}
    for entry in files("zqtwisted.ops.web").joinpath("static").iterdir():
        suffix = "." + entry.name.rpartition(".")[2]
        if entry.is_file() and suffix in CONTENT_TYPES:
            assets[entry.name] = Asset(entry.name, CONTENT_TYPES[suffix], entry.read_bytes())
    return assets


class AssetResource(Resource):
    isLeaf = True

    def __init__(self, asset: Asset) -> None:
        super().__init__()
        self.asset = asset

    def render_GET(self, request: Request) -> bytes:
        _secure(request)
        request.setHeader(b"cache-control", b"no-cache")
        request.setHeader(b"etag", self.asset.etag)
        if request.getHeader(b"if-none-match") == self.asset.etag:
            request.setResponseCode(304)
            return b""
        request.setHeader(b"content-type", self.asset.content_type)
        return self.asset.body


class JsonNotFound(Resource):
    isLeaf = True

    def render(self, request: Request) -> bytes:
        return _error(request, 404, "no such resource")


class StaticResource(Resource):
    def __init__(self, assets: Mapping[str, Asset]) -> None:
        super().__init__()
        for name, asset in assets.items():
            self.putChild(name.encode(), AssetResource(asset))

    def getChild(self, path: bytes, request: Request) -> Resource:
        return JsonNotFound()


class QueuesResource(Resource):
    isLeaf = True

    def __init__(self, sampler: DashboardSampler, actions: bool) -> None:
        super().__init__()
        self._sampler = sampler
        self._actions = actions

    def render_GET(self, request: Request) -> bytes:
        since = _arg(request, b"since")
        try:
            after = float(since) if since else None
        except ValueError:
            return _error(request, 400, "since: expected a time in seconds")
        sampler = self._sampler
        body = board_json(sampler.board, sampler.history, sampler.interval, self._actions, after)
        return json_body(request, 200, body)


def _answer(request: Request, d: Deferred[Any], success: Callable[[Any], tuple[int, Any]]) -> int:
    """Finish ``request`` when ``d`` fires (unless the client went away meanwhile)."""
    gone: list[bool] = []
    request.notifyFinish().addBoth(lambda _: gone.append(True))

    def send(result: tuple[int, Any]) -> None:
        if gone:
            return
        request.write(json_body(request, *result))
        request.finish()

    d.addCallback(success)
    d.addErrback(_failure_answer)
    d.addCallback(send)
    d.addErrback(lambda f: log.failure("Dashboard answer failed", f))
    return NOT_DONE_YET


def _failure_answer(failure: Failure) -> tuple[int, Any]:
    if failure.check(UnknownQueue, LetterNotFound):
        return 404, {"error": failure.getErrorMessage()}
    if failure.check(ReplayIncomplete):
        value = failure.value
        return 503, {"error": str(value), "replayed": getattr(value, "replayed", 0)}
    if failure.check(BrokerUnavailable, PublishFailed, CancelledError):
        return 503, {"error": f"RabbitMQ: {failure.getErrorMessage()}"}
    log.failure("Dashboard operation failed", failure)
    return 500, {"error": "internal error (see the service's log)"}


class FailedResource(Resource):
    """``/api/failed/{queue}`` and its actions."""

    isLeaf = True

    def __init__(self, letters: DeadLetters, token: str | None) -> None:
        super().__init__()
        self._letters = letters
        self._token = token

    def _queue(self, request: Request) -> tuple[str | None, list[str]]:
        parts = _segments(request)
        if not parts or parts[0] not in self._letters.queues:
            return None, parts
        return parts[0], parts[1:]

    def render_GET(self, request: Request) -> bytes | int:
        queue, rest = self._queue(request)
        if queue is None:
            return _error(request, 404, "not a queue of this process", queues=self._letters.queues)
        if rest:
            request.setHeader(b"allow", b"POST")
            return _error(request, 405, "actions take POST")
        try:
            offset, limit = page_bounds(_arg(request, b"offset"), _arg(request, b"limit"))
        except ValueError as e:
            return _error(request, 400, str(e))
        return _answer(request, self._letters.page(queue, offset, limit), lambda page: (200, page.as_json()))

    def render_POST(self, request: Request) -> bytes | int:
        queue, rest = self._queue(request)
        action = "/".join(rest[:1])
        if queue is None or not (rest in (["replay"], ["purge"]) or (len(rest) == 2 and rest[0] == "replay")):
            return _error(request, 404, "no such action")
        refused = check(request, self._token)
        if refused is not None:
            return refuse(request, refused, f"{action} on {queue}")
        if rest == ["purge"]:
            return _answer(request, self._letters.purge(queue), lambda n: (200, {"purged": n, "queue": queue}))
        if len(rest) == 2:
            return _answer(request, self._letters.replay(queue, rest[1]), lambda n: (200, {"replayed": n}))
        return _answer(request, self._letters.replay_all(queue), lambda n: (200, {"replayed": n, "queue": queue}))


def check(request: Request, token: str | None) -> Refusal | None:
    """Why this request may not act (see :mod:`.auth`), or None."""
    return refusal(
        token,
        _header(request, b"authorization"),
        origin=_header(request, b"origin"),
        fetch_site=_header(request, b"sec-fetch-site"),
        host=_header(request, b"host"),
    )


def refuse(request: Request, refused: Refusal, action: str) -> bytes:
    log.warn(
        "Dashboard refused {action} from {client}: {reason}",
        action=action,
        client=getattr(request.getClientAddress(), "host", "?"),
        reason=refused.message,
    )
    if refused.challenge:
        request.setHeader(b"www-authenticate", b'Bearer realm="zqtwisted"')
    return _error(request, refused.code, refused.message)


class AuthResource(Resource):
    """``POST /api/auth``: whether the token given is the right one (the page asks before it unlocks)."""

    isLeaf = True

    def __init__(self, token: str | None) -> None:
        super().__init__()
        self._token = token

    def render_POST(self, request: Request) -> bytes:
        refused = check(request, self._token)
        if refused is not None:
            return refuse(request, refused, "sign-in")
        _secure(request)
        request.setResponseCode(204)
        return b""


class ApiResource(Resource):
    def __init__(self, sampler: DashboardSampler, letters: DeadLetters, token: str | None) -> None:
        super().__init__()
        self.putChild(b"queues", QueuesResource(sampler, token is not None))
        self.putChild(b"failed", FailedResource(letters, token))
        self.putChild(b"auth", AuthResource(token))

    def getChild(self, path: bytes, request: Request) -> Resource:
        return JsonNotFound()


def dashboard_children(
    sampler: DashboardSampler, letters: DeadLetters, token: str | None, assets: Mapping[str, Asset] | None = None
) -> dict[bytes, Resource]:
    """The children of the HTTP root: ``/`` (the page), ``/favicon.ico``, ``/static/...`` and ``/api/...``."""
    assets = load_assets() if assets is None else assets
    return {
        b"": AssetResource(assets["index.html"]),
        b"favicon.ico": AssetResource(assets["favicon.svg"]),
        b"static": StaticResource(assets),
        b"api": ApiResource(sampler, letters, token),
    }
