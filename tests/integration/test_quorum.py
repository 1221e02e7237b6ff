"""Quorum queues on the real RabbitMQ (one node is enough): declarations, the broker's dead letters, mismatches.

The queue is ``zq_itest_cluster`` on the machine's default node, deleted before and after
each test (the cluster tests use the same name on the cluster's own nodes).
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any, cast

import pika
import pika.exceptions
from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.task import deferLater
from twisted.logger import ILogObserver, LogEvent, Logger, formatEvent

from tests.contract import inline
from tests.integration.base import IntegrationCase
from zqtwisted.blocking import BlockingPublisher
from zqtwisted.config import Config, QueueSettings, WorkerSettings
from zqtwisted.runtime.deadletter import failed_queue
from zqtwisted.runtime.declarations import QueueMismatch
from zqtwisted.runtime.reactor import IConnectingReactor
from zqtwisted.tap import build_service

QUEUE = "zq_itest_cluster"
URL = "amqp://guest:guest@127.0.0.1:5672/%2F"


def delete_queues() -> None:
    connection = pika.BlockingConnection(pika.URLParameters(URL))
    try:
        channel = connection.channel()
        for name in (QUEUE, failed_queue(QUEUE)):
            channel.queue_delete(name)
    finally:
        connection.close()


def queue_type(name: str) -> str:
    """The type RabbitMQ gives an existing queue: a passive declare, then a classic one that fails on quorum."""
    connection = pika.BlockingConnection(pika.URLParameters(URL))
    try:
        connection.channel().queue_declare(name, passive=True)
        try:
            connection.channel().queue_declare(name, durable=True, arguments={"x-queue-type": "quorum"})
        except pika.exceptions.ChannelClosedByBroker:
            return "classic"
        return "quorum"
    finally:
        connection.close()


class QuorumTests(IntegrationCase):
    def setUp(self) -> Deferred[None]:  # type: ignore[override]
        delete_queues()
        self.addCleanup(delete_queues)
        return super().setUp()

    def quorum_config(self, **queue: Any) -> Config:
        config = self.config(**{QUEUE: QueueSettings(queue_type="quorum", **queue)})
        return config.replace(
            workers=WorkerSettings(drain_timeout=1, http="tcp:0:interface=127.0.0.1"),
        )

    def direct_config(self, **queue: Any) -> Config:
        """The quorum configuration on the broker itself, for blocking clients (the proxy needs the reactor)."""
        config = self.quorum_config(**queue)
        return config.replace(broker=dataclasses.replace(config.broker, url=URL))

    def watch(self, broker: Any) -> list[LogEvent]:
        """The events ``broker`` logs from now on."""
        events: list[LogEvent] = []
        broker.log = Logger(observer=cast(ILogObserver, events.append))
        return events

    @inline
    async def test_quorum_queue_and_its_failed_queue(self) -> None:
        """A quorum queue is consumed as a classic one; its .failed queue is declared quorum too."""
        service = await self.start([QUEUE], self.quorum_config())
        self.assertEqual((queue_type(QUEUE), queue_type(failed_queue(QUEUE))), ("quorum", "quorum"))
        publisher = BlockingPublisher.from_config(self.direct_config())  # blocking: not through the in-process proxy
        self.addCleanup(publisher.close)
        for i in range(50):
            publisher.publish_json(QUEUE, {"id": i})
        await self.until(lambda: sorted(map(int, self.recorded())) == list(range(50)), timeout=60)
        self.assertTrue(service.ready)

    @inline
    async def test_delivery_limit_dead_letters_a_poison_message(self) -> None:
        """A message redelivered past delivery_limit (its worker's connection died each time) is dead-lettered."""
        service = await self.start([QUEUE], self.quorum_config(delivery_limit=2))
        publisher = BlockingPublisher.from_config(self.direct_config(delivery_limit=2))
        self.addCleanup(publisher.close)
        publisher.publish_json(QUEUE, {"id": 1, "hang": True})
        publisher.publish_json(QUEUE, {"id": 2})
        for deliveries in (1, 2, 3):
            await self.until(lambda n=deliveries: self.recorded().count("hang-1") == n, timeout=30)  # type: ignore[misc]
            self.proxy.cut()
            await self.until(lambda: service.ready, timeout=30)
        letters: list[tuple[bytes, dict[str, Any]]] = []
        for _ in range(200):
            letters.extend(await self.dead_letters(QUEUE))
            if letters:
                break
            await deferLater(reactor, 0.05, lambda: None)
        self.assertEqual([json.loads(body)["id"] for body, _ in letters], [1])
        self.assertEqual((letters[0][1]["reason"], letters[0][1]["queue"]), ("broker: delivery_limit", QUEUE))
        self.assertIn("2", self.recorded())
        self.assertEqual(self.recorded().count("hang-1"), 3)

    @inline
    async def test_a_classic_queue_met_by_a_quorum_declaration(self) -> None:
        """A queue that Zulip declared classic is refused as quorum: the error says what to do; nothing is consumed."""
        connection = pika.BlockingConnection(pika.URLParameters(URL))
        connection.channel().queue_declare(QUEUE, durable=True)  # as Zulip's queue_json_publish declares it
        connection.close()
        service = build_service(cast(IConnectingReactor, reactor), self.quorum_config(), [QUEUE])
        self.services.append(service)
        events = self.watch(service.broker)
        service.startService()
        await self.until(lambda: any("PRECONDITION_FAILED" in formatEvent(e) for e in events), timeout=30)
        text = next(formatEvent(e) for e in events if "PRECONDITION_FAILED" in formatEvent(e))
        self.assertIn("inequivalent arg 'x-queue-type'", text)
        self.assertIn(f'[queues.{QUEUE}] queue_type = "classic"', text)
        self.assertIn(f"rabbitmqctl delete_queue {QUEUE}", text)
        self.assertFalse(service.ready)
        self.assertEqual(queue_type(QUEUE), "classic")

    def test_blocking_publisher_declares_as_configured(self) -> None:
        """The blocking publisher built from the configuration publishes to a quorum queue; a classic one is refused."""
        quorum = BlockingPublisher.from_config(self.direct_config())
        self.addCleanup(quorum.close)
        quorum.publish_json(QUEUE, {"id": 1})
        self.assertEqual(queue_type(QUEUE), "quorum")
        classic = BlockingPublisher(URL)
        self.addCleanup(classic.close)
        with self.assertRaisesRegex(QueueMismatch, "exists as a quorum queue"):
            classic.publish_json(QUEUE, {"id": 2})

    def test_blocking_publisher_skips_a_dead_node(self) -> None:
        """With a dead node listed first, the blocking publisher publishes through the next one."""
        dead = "amqp://guest:guest@127.0.0.1:1/%2F"
        publisher = BlockingPublisher([dead, URL], connect_timeout=2, failover_strategy="round-robin")
        self.addCleanup(publisher.close)
        publisher.publish_json(QUEUE, {"id": 1})
        self.assertEqual(publisher.urls, [dead, URL])
