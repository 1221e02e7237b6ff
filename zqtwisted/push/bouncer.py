"""Delivering notifications: Zulip's push bouncer over HTTP, or the log.

:class:`BouncerBackend` POSTs a notification's JSON to
``{bouncer_url}/api/v1/remotes/push/notify`` with HTTP basic auth (the server's
UUID and API key), as Zulip's ``send_json_to_push_bouncer`` does.  The request
goes through :class:`zqtwisted.webhooks.client.WebhookClient`: the persistent
``"push"`` pool of :class:`zqtwisted.resources.Resources`, a deadline over the
whole request (connect, send, status, body), and cancellation that aborts the connection.

Failures are sorted as Zulip sorts them:

* timeout, TLS or connection error, HTTP >= 500 (and 429): "retry later",
  a :class:`BouncerRetryLater` (a TransientError: the runtime retries with backoff);
* other 4xx: the bouncer refuses the request; :class:`BouncerRefused` (a
  PermanentError: dead-lettered) carries its error ``code`` and ``msg``;
* any other non-200 status: :class:`BouncerRefused` too.

:class:`LogBackend` is used when no bouncer is configured: it logs each
notification it would have sent.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol
from urllib.parse import urljoin

from twisted.internet.defer import Deferred, succeed
from twisted.logger import Logger
from twisted.web.client import Agent, HTTPConnectionPool

from zqtwisted._version import __version__
from zqtwisted.errors import PermanentError, TransientError
from zqtwisted.push.payload import Notification
from zqtwisted.push.settings import PushSettings
from zqtwisted.runtime.reactor import IConnectingReactor
from zqtwisted.webhooks.client import (
    HostBusyError,
    PoolOptions,
    WebhookClient,
    WebhookConnectionError,
    WebhookError,
    WebhookTimeout,
)

NOTIFY_PATH = "/api/v1/remotes/push/notify"
MAX_RESPONSE_BYTES = 1024 * 1024
TOO_MANY_REQUESTS = 429


class BouncerRetryLater(TransientError):
    """Zulip's PushNotificationBouncerRetryLaterError: try again later."""


class BouncerRefused(PermanentError):
    """The bouncer answered with an error that retrying will not fix."""

    def __init__(self, status: int, code: str | None, msg: str) -> None:
        self.status = status
        self.code = code
        self.msg = msg
        super().__init__(f"Push notification bouncer refused the request (HTTP {status}, code {code or '-'}): {msg}")

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.status, self.code, self.msg))


@dataclass(frozen=True)
class BouncerResult:
    """What the bouncer answered to a notify request."""

    total_android_devices: int = 0
    total_apple_devices: int = 0
    deleted_devices: dict[str, Any] = field(default_factory=dict)
    realm: dict[str, Any] | None = None


class PushBackend(Protocol):
    name: str

    def send(self, notification: Notification) -> Deferred[BouncerResult | None]:
        """Deliver ``notification``; fails with BouncerRetryLater or BouncerRefused."""


def notify_url(bouncer_url: str) -> str:
    """Zulip's ``urljoin(PUSH_NOTIFICATION_BOUNCER_URL, "/api/v1/remotes/push/notify")``."""
    return urljoin(bouncer_url, NOTIFY_PATH)


def basic_auth(server_uuid: str, api_key: str) -> str:
    """The ``Authorization`` header value for the server's credentials."""
    token = base64.b64encode(f"{server_uuid}:{api_key}".encode()).decode("ascii")
    return f"Basic {token}"


def server_user_agent(version: str = "") -> str:
    return f"ZulipServer/{version or __version__}"


def classify_response(status: int, body: bytes) -> BouncerResult:
    """The result of a 200, or the error for any other status (Zulip's send_to_push_bouncer)."""
    if status >= 500 or status == TOO_MANY_REQUESTS:
        raise BouncerRetryLater(f"Received {status} from push notification bouncer")
    if status >= 400:
        data = _json_object(body)
        msg = data.get("msg") if data is not None else None
        if not isinstance(msg, str):
            raise BouncerRefused(status, None, "Error received from push notification bouncer")
        code = data.get("code") if data is not None else None
        raise BouncerRefused(status, code if isinstance(code, str) else None, msg)
    if status != 200:
        raise BouncerRefused(status, None, f"Push notification bouncer returned unexpected status code {status}")
    data = _json_object(body) or {}
    deleted = data.get("deleted_devices")
    realm = data.get("realm")
    return BouncerResult(
        total_android_devices=_count(data.get("total_android_devices")),
        total_apple_devices=_count(data.get("total_apple_devices")),
        deleted_devices=deleted if isinstance(deleted, dict) else {},
        realm=realm if isinstance(realm, dict) else None,
    )


def _json_object(body: bytes) -> dict[str, Any] | None:
    try:
        data = json.loads(body)
    except ValueError:
        return None
    return data if isinstance(data, dict) else None


def _count(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


class BouncerBackend:
    """Sends notifications to Zulip's push bouncer."""

    name = "bouncer"

    def __init__(self, client: WebhookClient, bouncer_url: str, server_uuid: str, api_key: str) -> None:
        self.client = client
        self.url = notify_url(bouncer_url)
        self._authorization = basic_auth(server_uuid, api_key)

    @property
    def timeout(self) -> float:
        return self.client.timeout

    def send(self, notification: Notification) -> Deferred[BouncerResult | None]:
        return Deferred.fromCoroutine(self._send(notification))

    async def _send(self, notification: Notification) -> BouncerResult | None:
        body = json.dumps(notification.request_body(), separators=(",", ":")).encode()
        headers = {"Authorization": self._authorization}
        try:
            response = await self.client.post(self.url, body, "application/json", headers)
        except WebhookTimeout:
            raise BouncerRetryLater(
                f"Timeout while trying to connect to push notification bouncer (no response in {self.timeout:g}s)"
            ) from None
        except (WebhookConnectionError, HostBusyError) as e:
            raise BouncerRetryLater(f"ConnectionError while trying to connect to push notification bouncer: {e}") from e
        except WebhookError as e:
            raise BouncerRefused(0, None, f"{type(e).__name__}: {e}") from e
        return classify_response(response.status, response.body)


class LogBackend:
    """No bouncer configured: log what would have been sent."""

    name = "log"
    log = Logger()

    def send(self, notification: Notification) -> Deferred[BouncerResult | None]:
        self.log.info(
            "Push notification ({kind}) for user {user_id} not sent, no bouncer configured: {summary}",
            kind=notification.kind,
            user_id=notification.user_id,
            summary=summary(notification),
            request=notification.request_body(),
        )
        return succeed(None)


def summary(notification: Notification) -> str:
    """One line saying what a notification shows (for logs)."""
    ids = ",".join(str(i) for i in notification.message_ids)
    alert = notification.apns_payload.get("alert")
    if notification.kind == "remove" or not isinstance(alert, dict):
        return f"messages {ids}"
    parts = [alert.get("title") or "", alert.get("subtitle") or "", alert.get("body") or ""]
    return f"message {ids}: " + " | ".join(p for p in parts if p)


def bouncer_pool_options(settings: PushSettings) -> PoolOptions:
    """How the push pool keeps its connections to the bouncer: up to ``max_connections``, no silent retry."""
    return PoolOptions(max_per_host=settings.max_connections, idle_timeout=settings.idle_connection_timeout)


def build_bouncer_client(
    reactor: IConnectingReactor, settings: PushSettings, pool: HTTPConnectionPool
) -> WebhookClient:
    """The bouncer's HTTP client over the shared ``pool`` (its owner closes it)."""
    return WebhookClient(
        reactor,
        Agent(reactor, connectTimeout=settings.timeout, pool=pool),
        timeout=settings.timeout,
        max_response_bytes=MAX_RESPONSE_BYTES,
        per_host_concurrency=settings.max_connections,
        user_agent=server_user_agent(settings.user_agent_version),
    )


def build_backend(settings: PushSettings, client: Callable[[], WebhookClient]) -> PushBackend:
    """The backend ``settings`` asks for; ``client`` is called only for the bouncer one."""
    if settings.effective_backend == "log":
        return LogBackend()
    return BouncerBackend(client(), settings.bouncer_url, settings.server_uuid, settings.secret())
