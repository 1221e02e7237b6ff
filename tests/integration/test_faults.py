"""Fault injection on the real RabbitMQ: every published event is processed or in ``{queue}.failed``.

Worker-process kills (SIGKILL, SIGTERM) are in test_twistd.py.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any, TypedDict

import treq
from twisted.internet import reactor
from twisted.internet.utils import getProcessOutputAndValue
from twisted.web.client import HTTPConnectionPool

from tests.contract import inline
from tests.helpers import free_port
from tests.integration.base import IntegrationCase
from zqtwisted.config import ConsumeLimit, QueueSettings
from zqtwisted.runtime.deadletter import failed_queue

REPO = Path(__file__).resolve().parents[2]


class _Retries(TypedDict):
    retry_base: float
    retry_cap: float


FAST_RETRIES: _Retries = {"retry_base": 0.01, "retry_cap": 0.2}


class FaultTests(IntegrationCase):
    @inline
    async def test_transient_failures_on_30_percent_of_attempts(self) -> None:
        """2,000 events, 30% of attempts failing transiently: all processed, none dead-lettered."""
        config = self.config(zq_itest_flaky=QueueSettings(max_retries=10, **FAST_RETRIES))
        service = await self.start(["zq_itest_flaky"], config)
        await self.publish("zq_itest_flaky", [{"id": i, "fail_rate": 0.3} for i in range(2000)])
        await self.until(lambda: len(set(self.recorded())) == 2000, timeout=120)
        retried = service.runners[0]
        await self.until(lambda: retried.held == 0, timeout=30)
        self.assertEqual(sorted(set(map(int, self.recorded()))), list(range(2000)))
        self.assertEqual(await self.dead_letters("zq_itest_flaky"), [])
        await self.until_counts("zq_itest_flaky", 0)
        self.flushLoggedErrors()

    @inline
    async def test_broker_restart_mid_stream(self) -> None:
        """RabbitMQ stop_app / start_app mid-stream: nothing lost, /ready is 503 meanwhile, consumption resumes."""
        rabbitmqctl = shutil.which("rabbitmqctl")
        if rabbitmqctl is None:
            self.fail("rabbitmqctl is not installed")
        port = free_port()
        config = self.config()
        config = config.replace(workers=type(config.workers)(drain_timeout=10, http=f"tcp:{port}:interface=127.0.0.1"))
        service = await self.start(["zq_itest_record"], config)
        self.assertEqual(await _status(port, "ready"), 200)
        await self.publish("zq_itest_record", [{"id": i, "delay": 0.01} for i in range(400)])
        await self.until(lambda: len(self.recorded()) >= 50)
        try:
            subprocess.run([rabbitmqctl, "-q", "stop_app"], check=True, timeout=120)
            await self.until(lambda: not service.ready, timeout=30)
            self.assertEqual(await _status(port, "ready"), 503)
            self.assertEqual(await _status(port, "health"), 200)
        finally:
            subprocess.run([rabbitmqctl, "-q", "start_app"], check=True, timeout=180)
        await self.until(lambda: set(map(int, self.recorded())) == set(range(400)), timeout=120)
        await self.until(lambda: service.ready, timeout=60)
        self.assertEqual(await _status(port, "ready"), 200)

    @inline
    async def test_permanent_timeout_and_malformed_are_dead_lettered_and_replayed(self) -> None:
        """Permanent errors, timeouts and malformed bodies go to .failed with their reason; replay brings them back."""
        config = self.config(zq_itest_faulty=QueueSettings(max_consume_seconds=ConsumeLimit(0.5)))
        service = await self.start(["zq_itest_faulty"], config)
        events: list[dict[str, Any]] = [
            {"id": 1},
            {"id": 2, "fault": "permanent"},
            {"id": 3, "fault": "hang"},
            {"id": 4},
        ]
        await self.publish("zq_itest_faulty", events)
        session = await self.direct.session(30)
        for raw in (b"{not json", b"[1, 2, 3]"):
            await session.publish("zq_itest_faulty", raw)
        await self.until(lambda: service.runners[0].held == 0 and len(self.recorded()) == 2, timeout=30)
        counts = await self.counts(failed_queue("zq_itest_faulty"))
        self.assertEqual(counts[0], 4)
        errors = (Path(self.tmp) / "zq_itest_faulty.errors").read_text().splitlines()
        self.assertEqual(len(errors), 4)

        listing = await self.zqctl("failed", "zq_itest_faulty")
        reasons = sorted(json.loads(line)["reason"] for line in listing.splitlines() if line.startswith("{"))
        self.assertEqual(reasons, ["malformed", "malformed", "permanent", "timeout"])
        self.assertEqual((await self.counts(failed_queue("zq_itest_faulty")))[0], 4, "listing must not consume")

        await service.stopService()
        self.assertIn("replayed 4 event(s)", await self.zqctl("replay", "zq_itest_faulty"))
        self.assertEqual((await self.counts("zq_itest_faulty"))[0], 4)
        self.assertEqual((await self.counts(failed_queue("zq_itest_faulty")))[0], 0)
        replayed = []
        while (delivery := await session.get("zq_itest_faulty")) is not None:
            replayed.append(delivery.body)
            delivery.ack()
        self.assertIn(b"{not json", replayed)
        self.assertIn({"id": 2, "fault": "permanent"}, [json.loads(b) for b in replayed if b.startswith(b'{"')])
        self.flushLoggedErrors()

    async def zqctl(self, *args: str) -> str:
        """Run the real ``zqctl`` in a child process; its output."""
        config = Path(self.tmp) / "zqctl.toml"
        config.write_text('[workers]\nconsumer_modules = ["tests.integration.workers"]\n')
        env = {**os.environ, "PYTHONPATH": str(REPO), "ZQ_CONFIG": str(config)}
        result: tuple[bytes, bytes, int] = await getProcessOutputAndValue(
            sys.executable, ["-c", "from zqtwisted.cli.zqctl import main; main()", *args], env=env
        )
        out, err, code = result
        self.assertEqual(code, 0, err.decode())
        return out.decode()


async def _status(port: int, path: str) -> int:
    pool = HTTPConnectionPool(reactor, persistent=False)
    response = await treq.get(f"http://127.0.0.1:{port}/{path}", timeout=5, pool=pool)
    await response.content()
    return int(response.code)
