"""Zulip mode's requests to the push bouncer: ``push/notify``, ``push/e2ee/notify``, ``push/e2ee/register``.

Zulip's ``send_to_push_bouncer`` / ``send_json_to_push_bouncer``: HTTP basic auth
as the server (``[push] server_uuid`` and ``api_key``), ``{bouncer}/api/v1/remotes/{endpoint}``.
Failures are sorted as there: timeout, TLS or connection error, HTTP >= 500 (and
429) are :class:`~zqtwisted.push.bouncer.BouncerRetryLater` (retried); 4xx are
:class:`~zqtwisted.push.bouncer.BouncerRefused` carrying the bouncer's ``code``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlencode, urljoin

from twisted.internet.defer import Deferred

from zqtwisted.push.bouncer import TOO_MANY_REQUESTS, BouncerRefused, BouncerRetryLater, basic_auth
from zqtwisted.webhooks.client import HostBusyError, Poster, WebhookConnectionError, WebhookError, WebhookTimeout

JSON = "application/json"
FORM = "application/x-www-form-urlencoded"


def remotes_url(bouncer_url: str, endpoint: str) -> str:
    """Zulip's ``urljoin(ZULIP_SERVICES_URL, "/api/v1/remotes/" + endpoint)``."""
    return urljoin(bouncer_url, "/api/v1/remotes/" + endpoint)


def bouncer_answer(status: int, body: bytes) -> dict[str, Any]:
    """The JSON of a 200, or the error Zulip raises for any other status."""
    if status >= 500 or status == TOO_MANY_REQUESTS:
        raise BouncerRetryLater(f"Received {status} from push notification bouncer")
    data = _json_object(body)
    if status >= 400:
        msg = data.get("msg") if data is not None else None
        code = data.get("code") if data is not None else None
        raise BouncerRefused(
            status,
            code if isinstance(code, str) else None,
            msg if isinstance(msg, str) else "Error received from push notification bouncer",
        )
    if status != 200:
        raise BouncerRefused(status, None, f"Push notification bouncer returned unexpected status code {status}")
    return data or {}


def _json_object(body: bytes) -> dict[str, Any] | None:
    try:
        data = json.loads(body)
    except ValueError:
        return None
    return data if isinstance(data, dict) else None


class ZulipBouncer:
    """POSTs to the bouncer's ``remotes`` endpoints as the server."""

    def __init__(self, client: Poster, bouncer_url: str, server_uuid: str, api_key: str) -> None:
        self.client = client
        self.bouncer_url = bouncer_url
        self._authorization = basic_auth(server_uuid, api_key)

    def post_json(self, endpoint: str, body: Mapping[str, Any]) -> Deferred[dict[str, Any]]:
        """``send_json_to_push_bouncer("POST", endpoint, body)``."""
        data = json.dumps(body, separators=(",", ":")).encode()
        return Deferred.fromCoroutine(self._post(endpoint, data, JSON))

    def post_form(self, endpoint: str, fields: Mapping[str, Any]) -> Deferred[dict[str, Any]]:
        """``send_to_push_bouncer("POST", endpoint, fields)`` (form-encoded)."""
        data = urlencode([(key, str(value)) for key, value in fields.items()]).encode()
        return Deferred.fromCoroutine(self._post(endpoint, data, FORM))

    async def _post(self, endpoint: str, data: bytes, content_type: str) -> dict[str, Any]:
        try:
            response = await self.client.post(
                remotes_url(self.bouncer_url, endpoint), data, content_type, {"Authorization": self._authorization}
            )
        except WebhookTimeout:
            raise BouncerRetryLater(
                f"Timeout while trying to connect to push notification bouncer (no response in "
                f"{self.client.timeout:g}s)"
            ) from None
        except (WebhookConnectionError, HostBusyError) as e:
            raise BouncerRetryLater(f"ConnectionError while trying to connect to push notification bouncer: {e}") from e
        except WebhookError as e:
            raise BouncerRefused(0, None, f"{type(e).__name__}: {e}") from e
        return bouncer_answer(response.status, response.body)
