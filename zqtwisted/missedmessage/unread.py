"""The optional "still unread?" check asked before a batch is sent.

``POST [missedmessage] unread_url`` with ``{"user_profile_id": 10, "message_ids":
[501, 502]}``; the answer ``{"unread_message_ids": [502]}`` (status 200) keeps
502 and drops 501 (read meanwhile, or deleted).  Any other answer -- a timeout,
a connection error, a non-2xx status, a body that is not that JSON -- fails the
batch, which is tried again later: nothing is sent on a guess.

The request goes through :class:`zqtwisted.webhooks.client.WebhookClient`, so it
has a deadline (``unread_timeout``) covering the whole exchange and a size cap.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Protocol

from twisted.internet.defer import Deferred
from twisted.web.client import Agent, HTTPConnectionPool

from zqtwisted._version import __version__
from zqtwisted.runtime.reactor import IConnectingReactor
from zqtwisted.webhooks.client import PoolOptions, WebhookClient, WebhookResponse


class UnreadCheckError(Exception):
    """The unread check gave no usable answer."""


class UnreadChecker(Protocol):
    def unread(self, user_profile_id: int, message_ids: Sequence[int]) -> Deferred[set[int]]:
        """Which of ``message_ids`` the user has still not read."""


def parse_answer(response: WebhookResponse, asked: Sequence[int]) -> set[int]:
    """The unread ids in an answer of ``unread_url`` (only ids that were asked)."""
    if not 200 <= response.status < 300:
        raise UnreadCheckError(f"unread_url answered {response.status}")
    try:
        data = json.loads(response.body)
    except (UnicodeDecodeError, ValueError):
        raise UnreadCheckError("unread_url answered invalid JSON") from None
    ids = data.get("unread_message_ids") if isinstance(data, dict) else None
    if not isinstance(ids, list) or not all(isinstance(i, int) and not isinstance(i, bool) for i in ids):
        raise UnreadCheckError('unread_url answered without a list "unread_message_ids"')
    return set(ids) & set(asked)


class HTTPUnreadChecker:
    """Asks ``url`` through a :class:`WebhookClient` (which applies the deadline)."""

    def __init__(self, client: WebhookClient, url: str, token: str = "") -> None:
        self.client = client
        self.url = url
        self._headers = {"Accept": "application/json"}
        if token:
            self._headers["Authorization"] = f"Bearer {token}"

    def unread(self, user_profile_id: int, message_ids: Sequence[int]) -> Deferred[set[int]]:
        asked = sorted(set(message_ids))
        body = json.dumps({"user_profile_id": user_profile_id, "message_ids": asked}).encode()
        d = self.client.post(self.url, body, "application/json", self._headers)
        return d.addCallback(parse_answer, asked)


# Keep-alive of the "unread" pool: one host, no silent retry.
UNREAD_POOL = PoolOptions(max_per_host=2, retry=False)


def build_unread_checker(
    reactor: IConnectingReactor, pool: HTTPConnectionPool, url: str, timeout: float, token: str = ""
) -> HTTPUnreadChecker:
    """The production checker over the shared ``pool`` (its owner closes it); no redirects."""
    client = WebhookClient(
        reactor,
        Agent(reactor, connectTimeout=timeout, pool=pool),
        timeout=timeout,
        max_response_bytes=1024 * 1024,
        user_agent=f"zqtwisted/{__version__} (missedmessage unread check)",
    )
    return HTTPUnreadChecker(client, url, token)
