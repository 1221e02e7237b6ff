"""Base of the dashboard's integration tests: a queue of their own (emptied before and after), HTTP calls."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import treq
from twisted.internet import reactor
from twisted.internet.defer import Deferred, ensureDeferred
from twisted.internet.task import deferLater
from twisted.web.client import HTTPConnectionPool

from tests.integration.base import IntegrationCase

TOKEN = "integration-dashboard-token-0123"
# The queue of tests/integration/workers.py's DashboardWorker: used by these tests only.
QUEUE = "zq_itest_dashboard"


class DashboardCase(IntegrationCase):
    port = 0  # where the service under test serves HTTP

    def setUp(self) -> Deferred[None]:  # type: ignore[override]  # trial waits on a Deferred from setUp
        d = super().setUp()
        d.addCallback(lambda _: ensureDeferred(self.empty_own_queue()))
        self.addCleanup(lambda: ensureDeferred(self.empty_own_queue()))
        return d

    async def empty_own_queue(self) -> None:
        session = await self.direct.session(30)
        for name in (QUEUE, f"{QUEUE}.failed"):
            await session.declare_queue(name)
            await session.purge(name)

    async def call(self, method: str, path: str, token: str | None = None, **headers: str) -> tuple[int, Any]:
        """An HTTP request to the service (as curl makes it): status, and the JSON or raw body."""
        pool = HTTPConnectionPool(reactor, persistent=False)
        sent: dict[bytes | str, list[bytes | str]] = {k.replace("_", "-"): [v] for k, v in headers.items()}
        if token is not None:
            sent["Authorization"] = [f"Bearer {token}"]
        response = await treq.request(
            method, f"http://127.0.0.1:{self.port}{path}", headers=sent, timeout=30, pool=pool
        )
        body = await response.content()
        kind = response.headers.getRawHeaders(b"content-type") or [b""]
        return response.code, (await response.json()) if kind[0] == b"application/json" else body

    async def letters(self) -> dict[str, Any]:
        code, body = await self.call("GET", f"/api/failed/{QUEUE}?limit=100")
        self.assertEqual(code, 200)
        assert isinstance(body, dict)
        return body

    async def until_dead(self, count: int, timeout: float = 30) -> None:
        """Wait (bounded) until ``{QUEUE}.failed`` holds ``count`` dead letters."""
        for _ in range(int(timeout / 0.1)):
            if (await self.counts(f"{QUEUE}.failed"))[0] == count:
                return
            await deferLater(reactor, 0.1, lambda: None)
        self.fail(f"{QUEUE}.failed did not reach {count} dead letters within {timeout}s")

    async def make_dead_letters(self, n: int, marker: Path, first: int = 0) -> None:
        """``n`` events of the queue that fail for good (while ``marker`` exists), dead-lettered."""
        marker.write_text("failing")
        await self.publish(QUEUE, [{"id": first + i, "fail_while": str(marker)} for i in range(n)])
        await self.until_dead(n)
