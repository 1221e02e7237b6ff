"""The dashboard's HTTP API against a running service on the real RabbitMQ, as ``curl`` uses it."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

from tests.contract import inline
from tests.helpers import free_port
from tests.integration.dashboard_base import QUEUE, TOKEN, DashboardCase
from zqtwisted.config import Config
from zqtwisted.errors import PermanentError


class DashboardApiTests(DashboardCase):
    def dashboard_config(self, token: str | None = TOKEN) -> Config:
        config = self.config()
        self.port = free_port()
        workers = dataclasses.replace(
            config.workers, http=f"tcp:{self.port}:interface=127.0.0.1", http_token=token or ""
        )
        return dataclasses.replace(config, workers=workers)

    @inline
    async def test_actions_need_the_token_and_work_with_it(self) -> None:
        """curl -X POST on each action: 401/403 without the token and nothing changes; with it each works."""
        await self.start([QUEUE], self.dashboard_config())
        marker = Path(self.tmp) / "failing"
        await self.make_dead_letters(3, marker)
        page = await self.letters()
        self.assertEqual(page["total"], 3)
        self.assertEqual({letter["reason"] for letter in page["letters"]}, {"permanent"})
        first = page["letters"][0]["id"]
        actions = (f"/api/failed/{QUEUE}/replay/{first}", f"/api/failed/{QUEUE}/replay", f"/api/failed/{QUEUE}/purge")
        for path in actions:
            self.assertEqual((await self.call("POST", path))[0], 401, path)
            self.assertEqual((await self.call("POST", path, token="not-the-right-token"))[0], 401, path)
            code, _ = await self.call("POST", path, token=TOKEN, Origin="http://evil.example")
            self.assertEqual(code, 403, path)
        self.assertEqual((await self.counts(f"{QUEUE}.failed"))[0], 3)
        self.assertEqual(self.recorded(), [])

        os.unlink(marker)  # from now on the events succeed
        code, body = await self.call("POST", f"/api/failed/{QUEUE}/replay/{first}", token=TOKEN)
        self.assertEqual((code, body), (200, {"replayed": 1}))
        await self.until(lambda: len(self.recorded()) == 1)
        self.assertEqual((await self.letters())["total"], 2)
        code, body = await self.call("POST", f"/api/failed/{QUEUE}/replay", token=TOKEN)
        self.assertEqual((code, body), (200, {"replayed": 2, "queue": QUEUE}))
        await self.until(lambda: sorted(self.recorded()) == ["0", "1", "2"])
        self.assertEqual((await self.letters())["total"], 0)

        await self.make_dead_letters(2, marker)
        code, body = await self.call("POST", f"/api/failed/{QUEUE}/purge", token=TOKEN)
        self.assertEqual((code, body), (200, {"purged": 2, "queue": QUEUE}))
        self.assertEqual((await self.counts(f"{QUEUE}.failed"))[0], 0)
        self.flushLoggedErrors(PermanentError)

    @inline
    async def test_read_only_without_a_token(self) -> None:
        """Without a configured token the page and its JSON are served, and every action is 403."""
        await self.start([QUEUE], self.dashboard_config(token=None))
        await self.make_dead_letters(1, Path(self.tmp) / "failing")
        code, page = await self.call("GET", "/")
        self.assertEqual(code, 200)
        self.assertIn(b"zqtwisted", page)
        for path in ("/static/dashboard.js", "/static/charts.js", "/static/dashboard.css", "/static/favicon.svg"):
            self.assertEqual((await self.call("GET", path))[0], 200, path)
        code, queues = await self.call("GET", "/api/queues")
        self.assertEqual((code, queues["actions"], [q["name"] for q in queues["queues"]]), (200, False, [QUEUE]))
        for path in (f"/api/failed/{QUEUE}/replay", f"/api/failed/{QUEUE}/purge"):
            self.assertEqual((await self.call("POST", path, token="anything-at-all-0123"))[0], 403)
        self.assertEqual((await self.letters())["total"], 1)
        self.flushLoggedErrors(PermanentError)
