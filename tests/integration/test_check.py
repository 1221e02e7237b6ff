"""``zqctl check`` on real queues: Zulip's thresholds, messages and Nagios exit codes."""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

from twisted.internet.utils import getProcessOutputAndValue

from tests.contract import inline
from tests.integration.base import IntegrationCase
from zqtwisted.config import ConsumeLimit, QueueSettings, WorkerSettings

REPO = Path(__file__).resolve().parents[2]


class CheckTests(IntegrationCase):
    async def zqctl(self, *args: str) -> tuple[int, str]:
        config = Path(self.tmp) / "zqctl.toml"
        config.write_text(
            f'[workers]\nconsumer_modules = ["tests.integration.workers"]\n[paths]\nstats_dir = "{self.tmp}"\n'
        )
        env = {**os.environ, "PYTHONPATH": str(REPO), "ZQ_CONFIG": str(config)}
        out, err, code = await getProcessOutputAndValue(
            sys.executable, ["-c", "from zqtwisted.cli.zqctl import main; main()", *args], env=env
        )
        return code, out.decode() + err.decode()

    @inline
    async def test_check_states_on_real_queues(self) -> None:
        """A consumed queue is OK; a backlog with stale stats is CRITICAL 'stuck'; missing consumers are CRITICAL."""
        config = self.config(zq_itest_faulty=QueueSettings(prefetch=1, max_consume_seconds=ConsumeLimit(None)))
        config = config.replace(workers=WorkerSettings(drain_timeout=0.5, http=""))
        await self.start(["zq_itest_faulty"], config)
        code, out = await self.zqctl("check")
        self.assertEqual(code, 0, out)
        self.assertIn("|0|OK|", out)

        published = time.time()
        await self.publish("zq_itest_faulty", [{"id": "hang", "fault": "hang"}])
        await self.publish("zq_itest_faulty", [{"id": i} for i in range(20)])
        await self.until_counts("zq_itest_faulty", 20)
        stats_path = Path(self.tmp) / "zq_itest_faulty.stats"
        # The worker's last write is the one made as it woke up for the hanging event
        # (possibly delayed by up to a second); after it, nothing rewrites the file.
        await self.until(lambda: json.loads(stats_path.read_text())["update_time"] >= published)
        stats = json.loads(stats_path.read_text())
        stats["update_time"] = time.time() - 200  # no update for 200 s while 20 events wait
        stats_path.write_text(json.dumps(stats, indent=2) + "\n")
        code, out = await self.zqctl("check")
        self.assertEqual(code, 2, out)
        self.assertIn("|2|CRITICAL|", out)
        self.assertIn("zq_itest_faulty", out)
        self.assertIn("queue appears to be stuck", out)

        stats_path.write_text("{not json")
        code, out = await self.zqctl("check")
        self.assertEqual(code, 3, out)

        code, out = await self.zqctl("check", "--consumers")
        self.assertEqual(code, 2, out)
        self.assertIn("queue zq_itest_batch has 0 consumers, needs 1", out)
        self.assertNotIn("queue zq_itest_faulty has 0", out)

    @inline
    async def test_check_unknown_when_broker_unreachable(self) -> None:
        """With RabbitMQ unreachable the check says UNKNOWN and exits 3."""
        config = Path(self.tmp) / "down.toml"
        config.write_text('[broker]\nurl = "amqp://guest:guest@127.0.0.1:1/%2F"\nconnect_timeout = 1\n')
        env = {**os.environ, "PYTHONPATH": str(REPO), "ZQ_CONFIG": str(config)}
        out, _err, code = await getProcessOutputAndValue(
            sys.executable, ["-c", "from zqtwisted.cli.zqctl import main; main()", "check"], env=env
        )
        self.assertEqual(code, 3)
        self.assertIn(b"|3|UNKNOWN|", out)
