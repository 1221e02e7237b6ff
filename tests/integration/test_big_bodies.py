"""Defect 6 of issue 15: huge bodies are refused without being held, dead-lettered as excerpts, memory given back.

A real ``twistd`` child on the default node consumes ``zq_itest_trouble`` (``max_body_bytes``
1 MiB, the default); eight bodies of 20 to 50 MB go through it among normal events.  Its
resident memory (``VmRSS``) is read before and after.  RabbitMQ's own ``max_message_size``
(which refuses such a message at the publisher) is tried on a node of the local test cluster,
whose settings are ours to change.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

from twisted.internet import reactor
from twisted.trial import unittest

from tests.contract import inline
from tests.helpers import free_port, require_rabbitmq, unique_queue
from tests.integration.cluster import ctl, require_cluster
from tests.integration.trouble import DEFAULT_URL, QUEUE, Child, sleep, until
from zqtwisted.config import BrokerSettings
from zqtwisted.runtime.amqp import AMQPBroker
from zqtwisted.runtime.broker import PublishFailed
from zqtwisted.runtime.deadletter import EXCERPT_BYTES, describe, failed_queue

MB = 1024 * 1024
SIZES_MB = (20, 25, 30, 35, 40, 45, 50, 50)
RSS_SLACK_MB = 30


def huge(n: int, megabytes: int) -> bytes:
    """A JSON event of about ``megabytes`` MB (as a careless or hostile publisher would send)."""
    return b'{"id": "huge-%d", "pad": "' % n + b"x" * (megabytes * MB) + b'"}'


class HugeBodyTests(unittest.TestCase):
    timeout = 300

    def setUp(self) -> None:
        require_rabbitmq(self)
        self.tmp = tempfile.mkdtemp(prefix="zqtest-huge-")
        self.addCleanup(shutil.rmtree, self.tmp, True)
        self.direct = AMQPBroker(reactor, BrokerSettings(url=DEFAULT_URL, publish_timeout=60))
        self.direct.startService()
        self.addCleanup(self.direct.stopService)
        self.addCleanup(self._purge)

    @inline
    async def _purge(self) -> None:
        session = await self.direct.session(30)
        for name in (QUEUE, failed_queue(QUEUE)):
            await session.declare_queue(name)
            await session.purge(name)

    async def take_failed(self) -> list[tuple[bytes, dict[str, object]]]:
        session = await self.direct.session(30)
        taken = []
        while (delivery := await session.get(failed_queue(QUEUE))) is not None:
            taken.append((delivery.body, describe(delivery.headers)))
            delivery.ack()
        return taken

    @inline
    async def test_huge_bodies_leave_memory_near_its_base(self) -> None:
        """8 bodies of 20-50 MB: each dead-lettered as a 64 KiB excerpt with its size, the events around them
        processed, and the worker's RSS back within 30 MB of its base (it grew by each body, for good, before)."""
        await self._purge()
        port = free_port()
        config = (
            f'[workers]\nconsumer_modules = ["tests.integration.workers"]\nhttp = "tcp:{port}:interface=127.0.0.1"\n'
        )
        child = Child(self.tmp, config, "--queue", QUEUE, port=port)
        self.addCleanup(child.kill)
        await until(lambda: b"Consuming" in child.log().encode(), 60, "the child consuming")
        # Warm-up: every path once (events, a body just over the limit), so that the base is the steady state.
        await self.direct.publish(QUEUE, huge(0, 2))
        for i in range(200):
            await self.direct.publish(QUEUE, json.dumps({"id": i}).encode())
        await until(lambda: len(child.processed()) == 200, 60, "the warm-up events")
        self.assertEqual(len(await self.take_failed()), 1)
        await sleep(1.0)
        base = child.rss_mb()
        peak = base
        for n, size in enumerate(SIZES_MB, 1):
            await self.direct.publish(QUEUE, huge(n, size))
            await self.direct.publish(QUEUE, json.dumps({"id": 1000 + n}).encode())
        letters: list[tuple[bytes, dict[str, object]]] = []

        async def all_dead_lettered() -> bool:
            nonlocal peak
            peak = max(peak, child.rss_mb())
            letters.extend(await self.take_failed())
            return len(letters) >= len(SIZES_MB)

        await until(all_dead_lettered, 120, "eight dead letters")
        await until(lambda: len(child.processed()) == 200 + len(SIZES_MB), 30, "the events between them")
        await sleep(1.0)
        after = child.rss_mb()
        self.assertLess(after - base, RSS_SLACK_MB, f"RSS {base:.1f} MB -> {after:.1f} MB (peak {peak:.1f} MB)")
        self.assertEqual(len(letters), len(SIZES_MB))
        for (body, info), (n, size) in zip(letters, enumerate(SIZES_MB, 1), strict=True):
            published = huge(n, size)
            original = len(published)
            self.assertEqual(body, published[:EXCERPT_BYTES])
            self.assertEqual((info["reason"], info["original_size"]), ("malformed", original))
            self.assertEqual(info["message"], f"body of {original} bytes exceeds the limit of {MB}")
        lines = (Path(self.tmp) / f"{QUEUE}.errors").read_text().splitlines()
        self.assertEqual(len(lines), 1 + len(SIZES_MB))
        self.assertLess(max(len(line) for line in lines), 2000)
        self.assertEqual(child.process.poll(), None)


class BrokerLimitTests(unittest.TestCase):
    """RabbitMQ's own max_message_size, on a node of the local cluster (the default node's settings are shared)."""

    timeout = 120

    @inline
    async def test_the_brokers_max_message_size_fails_the_publish_at_once(self) -> None:
        """A publish over the node's max_message_size fails at once with the broker's reason; the next one works."""
        node = require_cluster(self)[-1]
        before = (await ctl(node.index, "eval", "application:get_env(rabbit, max_message_size).")).strip()
        await ctl(node.index, "eval", f"application:set_env(rabbit, max_message_size, {MB}).")
        try:
            broker = AMQPBroker(reactor, BrokerSettings(url=node.url, publish_timeout=30))
            broker.startService()
            self.addCleanup(broker.stopService)
            queue = unique_queue()
            session = await broker.session(30)
            await session.declare_queue(queue)
            with self.assertRaises(PublishFailed) as raised:
                await broker.publish(queue, b"x" * (2 * MB), timeout=30)
            self.assertIn(f"message size {2 * MB} is larger than configured max size {MB}", str(raised.exception))
            await broker.publish(queue, b"{}", timeout=30)
            self.assertEqual((await session.queue_counts(queue))[0], 1)
            await session._publish_channel.queue_delete(queue=queue)  # type: ignore[attr-defined]
        finally:
            value = before.removeprefix("{ok,").removesuffix("}") if before.startswith("{ok,") else "134217728"
            await ctl(node.index, "eval", f"application:set_env(rabbit, max_message_size, {value}).")
