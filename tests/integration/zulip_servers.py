"""Local stand-ins for what a Zulip-mode worker talks to besides Zulip's database.

* :class:`Recorder`: an HTTP endpoint that records each request (path, headers, body)
  and answers with scripted JSON: a bot's outgoing webhook server, or a fake of
  Zulip's REST API (``POST /api/v1/messages``, ``/api/v1/messages/flags``).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from twisted.internet.interfaces import IListeningPort
from twisted.web.resource import Resource
from twisted.web.server import Request, Site


@dataclass
class Recorded:
    path: str
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


class Recorder(Resource):
    isLeaf = True
    port = 0  # set by the test once it serves this resource

    def __init__(self, answer: Callable[[Recorded], Any] = lambda _: {"result": "success", "msg": ""}) -> None:
        super().__init__()
        self.requests: list[Recorded] = []
        self.answer = answer

    def render_POST(self, request: Request) -> bytes:
        assert request.content is not None
        recorded = Recorded(
            path=request.path.decode(),
            headers={k.decode().lower(): v[0].decode() for k, v in request.requestHeaders.getAllRawHeaders()},
            body=request.content.read(),
        )
        self.requests.append(recorded)
        request.setHeader(b"content-type", b"application/json")
        return json.dumps(self.answer(recorded)).encode()


def serve(reactor: Any, resource: Resource) -> tuple[IListeningPort, int]:
    """``resource`` on 127.0.0.1, a free port: (the listening port, its number)."""
    site = Site(resource)
    site.noisy = False
    port: IListeningPort = reactor.listenTCP(0, site, interface="127.0.0.1")
    return port, port.getHost().port  # type: ignore[attr-defined]
