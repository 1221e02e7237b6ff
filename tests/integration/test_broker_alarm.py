"""Defect 2 of issue 15, under a real RabbitMQ memory alarm: seen, bounded, stopped in time, nothing lost.

A ``twistd`` child consumes ``zq_itest_trouble`` (tests/integration/workers.py): events that
succeed, fail for good, or fail for now, each after a delay, so that their retries and dead
letters are published while the alarm blocks publishers.  The alarm is raised on a node of
the local test cluster when it runs, else briefly on the default node, and always cleared in
a ``finally`` (:class:`tests.integration.trouble.AlarmNode`).
"""

from __future__ import annotations

import json
import shutil
import signal
import tempfile
from typing import Any

from twisted.internet import reactor
from twisted.internet.defer import ensureDeferred, gatherResults
from twisted.trial import unittest

from tests.contract import inline
from tests.helpers import free_port, require_rabbitmq
from tests.integration.trouble import QUEUE, AlarmNode, Child, sleep, until, zqctl
from zqtwisted.config import BrokerSettings
from zqtwisted.runtime.amqp import AMQPBroker
from zqtwisted.runtime.deadletter import failed_queue

FAULTS = ("permanent", "retry", None)
DRAIN = 3.0
BLOCKED = "blocks publishing on this connection: low on memory"


def events(count: int, delay: float) -> list[dict[str, Any]]:
    """Every third event fails for good, every third fails for now (then for good: retries exhausted)."""
    return [{"id": i, "delay": delay, **({"fault": f} if (f := FAULTS[i % 3]) else {})} for i in range(count)]


class AlarmTests(unittest.TestCase):
    timeout = 180

    def setUp(self) -> Any:
        require_rabbitmq(self)
        self.node = AlarmNode.pick()
        self.tmp = tempfile.mkdtemp(prefix="zqtest-alarm-")
        self.addCleanup(shutil.rmtree, self.tmp, True)
        self.direct = AMQPBroker(reactor, BrokerSettings(url=self.node.url, reconnect_initial_delay=0.2))
        self.direct.startService()
        self.addCleanup(self.direct.stopService)
        self.children: list[Child] = []
        self.addCleanup(self._purge)  # after the children are gone (cleanups run last first)
        self.addCleanup(self._kill_children)
        return self._purge()

    def _kill_children(self) -> None:
        for child in self.children:
            child.kill()

    @inline
    async def _purge(self) -> None:
        session = await self.direct.session(30)
        for name in (QUEUE, failed_queue(QUEUE)):
            await session.declare_queue(name)
            await session.purge(name)

    def spawn(self, drain_timeout: float = 10.0) -> Child:
        config = (
            f'[broker]\nurl = "{self.node.url}"\npublish_timeout = 2\nreconnect_initial_delay = 0.2\n'
            f'[workers]\nconsumer_modules = ["tests.integration.workers"]\ndrain_timeout = {drain_timeout}\n'
            'http = "tcp:{port}:interface=127.0.0.1"\n'
            f"[queues.{QUEUE}]\nretry_base = 0.1\nretry_cap = 0.2\n"
        )
        port = free_port()
        child = Child(self.tmp, config.replace("{port}", str(port)), "--queue", QUEUE, port=port)
        self.children.append(child)
        return child

    async def publish(self, batch: list[dict[str, Any]]) -> None:
        for event in batch:
            await self.direct.publish(QUEUE, json.dumps(event).encode(), timeout=30)

    async def take(self, name: str) -> list[int]:
        """The ids of the events in ``name``, taken (acked): only once no child consumes it."""
        session = await self.direct.session(30)
        ids = []
        while (delivery := await session.get(name)) is not None:
            ids.append(json.loads(delivery.body)["id"])
            delivery.ack()
        return ids

    async def blocked_and_said_so(self, child: Child) -> None:
        """Wait until the child shows the block: /ready 503 with the reason, the gauge at 1, a log line."""
        await until(lambda: BLOCKED in child.log(), 20, "the blocked log line")

        async def ready_says_blocked() -> bool:
            code, body = await child.ready()
            return code == 503 and body.get("blocked") == "low on memory"

        await until(ready_says_blocked, 10, "/ready 503 with the block")
        _, body = await child.ready()
        self.assertEqual(
            body["reason"], f"RabbitMQ at {self.node.label} blocks publishing: low on memory (a memory or disk alarm)"
        )
        self.assertEqual(await child.metric("zqtwisted_broker_blocked"), 1.0)

    @inline
    async def test_an_alarm_is_seen_publishes_fail_at_their_deadline_and_nothing_is_lost(self) -> None:
        """Under an alarm: blocked is logged, /ready 503 says why, the gauge is 1, retries and dead letters fail at
        their deadline (events kept); after it: unblocked is logged, and every event ends where it should."""
        child = self.spawn()
        await until(lambda: self._ready(child), 60, "/ready 200")
        batch = events(30, delay=1.0)
        await self.publish(batch)
        await self.node.raise_alarm()
        try:
            await self.blocked_and_said_so(child)
            missed = "publish not confirmed within 2s: RabbitMQ at"
            await until(
                lambda: f"Could not dead-letter 1 {QUEUE} events (PublishTimeout: {missed}" in child.log(),
                20,
                "a dead letter's deadline",
            )
            await until(lambda: f"for retry: PublishTimeout: {missed}" in child.log(), 20, "a retry's deadline")
        finally:
            await self.node.clear_alarm()
        await until(lambda: "unblocked publishing after" in child.log(), 30, "the unblocked log line")
        await until(lambda: self._ready(child), 30, "/ready 200 again")
        self.assertEqual(await child.metric("zqtwisted_broker_blocked"), 0.0)
        failing = {e["id"] for e in batch if e.get("fault")}
        succeeding = {e["id"] for e in batch} - failing
        dead: list[int] = []

        async def settled() -> bool:
            dead.extend(await self.take(failed_queue(QUEUE)))  # the child never consumes its .failed queue
            return set(dead) >= failing and {int(i) for i in child.processed()} >= succeeding

        await until(settled, 60, "every event processed or dead-lettered")

        async def queue_empty() -> bool:
            return (await (await self.direct.session(30)).queue_counts(QUEUE))[0] == 0

        await until(queue_empty, 30, "an empty queue")
        self.assertEqual(set(dead), failing)  # at least once: an unconfirmed dead letter may land twice
        self.assertEqual(set(child.processed()) & {str(i) for i in failing}, set())
        log = child.log()
        self.assertIn("returning them to the queue", log)
        self.assertNotIn("Unhandled Error", log)

    async def _ready(self, child: Child) -> bool:
        return (await child.ready())[0] == 200

    @inline
    async def test_sigterm_under_an_alarm_ends_within_the_drain_timeout(self) -> None:
        """SIGTERM while the broker blocks the connection: the stop ends within drain_timeout plus a few seconds
        (the connection is dropped, not closed), a clean stop, and every event is still in RabbitMQ or done."""
        child = self.spawn(drain_timeout=DRAIN)
        await until(lambda: self._ready(child), 60, "/ready 200")
        batch = events(30, delay=0.5)
        await self.publish(batch)
        await self.node.raise_alarm()
        try:
            await self.blocked_and_said_so(child)
            status, seconds = await child.stop(timeout=DRAIN + 30)
        finally:
            await self.node.clear_alarm()
        self.assertEqual(status, -signal.SIGTERM, child.log()[-3000:])
        self.assertLess(seconds, DRAIN + 5, child.log()[-3000:])
        self.assertIn("dropping it without the closing handshake", child.log())
        await sleep(1.0)  # the broker has requeued what the dropped connection held
        waiting, dead = await self.take(QUEUE), await self.take(failed_queue(QUEUE))
        processed = {int(i) for i in child.processed()}
        self.assertEqual({e["id"] for e in batch} - set(waiting) - set(dead) - processed, set(), "lost events")

    @inline
    async def test_zqctl_gives_up_under_an_alarm(self) -> None:
        """zqctl publish and replay give up after --timeout with one line saying the broker blocks publishing."""
        session = await self.direct.session(30)
        await self.direct.publish(failed_queue(QUEUE), b'{"id": 1}', {"x-zq-reason": "permanent"}, timeout=30)
        await self.node.raise_alarm()
        try:
            await sleep(0.5)
            publish, replay = await gatherResults(  # at once: the alarm lasts a few seconds only
                [
                    ensureDeferred(zqctl("--broker", self.node.url, "--timeout", "2", "publish", QUEUE, '{"id": 2}')),
                    ensureDeferred(zqctl("--broker", self.node.url, "--timeout", "2", "replay", QUEUE)),
                ]
            )
        finally:
            await self.node.clear_alarm()
        for (code, _, err, seconds), expected in (
            (publish, "zqctl: gave up on event 1: publish not confirmed within 2s: "),
            (replay, "zqctl: gave up replaying: publish not confirmed within 2s: "),
        ):
            self.assertEqual(code, 1, err)
            self.assertLess(seconds, 10)
            self.assertEqual(len(err.splitlines()), 1, err)
            self.assertTrue(err.startswith(expected), err)
            self.assertIn(f"RabbitMQ at {self.node.label} blocks publishing (low on memory)", err)
        await sleep(1.0)
        self.assertEqual((await session.queue_counts(failed_queue(QUEUE)))[0], 1, "the dead letter stays")
