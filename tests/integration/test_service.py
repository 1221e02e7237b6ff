"""The worker service on the real RabbitMQ: consume, ack, batches, several queues, connection loss."""

from __future__ import annotations

import shutil
import subprocess

from tests.contract import inline
from tests.integration.base import IntegrationCase
from zqtwisted.config import QueueSettings


class ServiceTests(IntegrationCase):
    @inline
    async def test_publish_consume_ack(self) -> None:
        """Every published event is consumed once and acked: the queue ends empty."""
        await self.start(["zq_itest_record"])
        await self.publish("zq_itest_record", [{"id": i} for i in range(200)])
        await self.until(lambda: len(self.recorded()) == 200)
        self.assertEqual(sorted(map(int, self.recorded())), list(range(200)))
        await self.until_counts("zq_itest_record", 0)

    @inline
    async def test_batch_flush_by_size_and_by_timer(self) -> None:
        """25 events make batches of 10, 10 and, after sleep_delay, 5."""
        await self.publish("zq_itest_batch", [{"id": i} for i in range(25)])
        await self.start(["zq_itest_batch"])
        await self.until(lambda: sum(1 for r in self.recorded() if r.startswith("batch:")) == 3)
        sizes = [r for r in self.recorded() if r.startswith("batch:")]
        self.assertEqual(sizes, ["batch:10", "batch:10", "batch:5"])

    @inline
    async def test_slow_queue_does_not_delay_another(self) -> None:
        """Several queues in one process: a slow event on one does not hold up the other."""
        config = self.config(zq_itest_record=QueueSettings(concurrency=1))
        await self.start(["zq_itest_record", "zq_itest_batch"], config)
        await self.publish("zq_itest_record", [{"id": "slow", "delay": 5}])
        await self.publish("zq_itest_batch", [{"id": i} for i in range(10)])
        await self.until(lambda: "batch:10" in self.recorded(), timeout=4)
        self.assertNotIn("slow", self.recorded())
        await self.until(lambda: "slow" in self.recorded(), timeout=10)

    @inline
    async def test_connection_cut_mid_stream(self) -> None:
        """Cutting the connection mid-stream loses nothing; consumers resume by themselves."""
        service = await self.start(["zq_itest_record"])
        await self.publish("zq_itest_record", [{"id": i, "delay": 0.02} for i in range(300)])
        await self.until(lambda: len(self.recorded()) >= 50)
        self.proxy.cut()
        await self.until(lambda: set(map(int, self.recorded())) == set(range(300)), timeout=90)
        await self.until(lambda: service.ready)
        self.assertGreaterEqual(service.broker.reconnects, 1)  # type: ignore[attr-defined]

    @inline
    async def test_rabbitmqctl_close_all_connections(self) -> None:
        """``rabbitmqctl close_all_connections`` mid-stream is survived with every event processed."""
        rabbitmqctl = shutil.which("rabbitmqctl")
        if rabbitmqctl is None:
            self.fail("rabbitmqctl is not installed")
        await self.start(["zq_itest_record"])
        await self.publish("zq_itest_record", [{"id": i, "delay": 0.02} for i in range(200)])
        await self.until(lambda: len(self.recorded()) >= 30)
        subprocess.run([rabbitmqctl, "-q", "close_all_connections", "zqtwisted test"], check=True, timeout=60)
        await self.until(lambda: set(map(int, self.recorded())) == set(range(200)), timeout=90)
