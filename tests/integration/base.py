"""Base of the integration tests: RabbitMQ (behind a cuttable proxy), a service, a publisher."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable, Sequence
from typing import Any, cast

from twisted.internet import reactor
from twisted.internet.defer import Deferred, ensureDeferred
from twisted.internet.task import deferLater
from twisted.trial import unittest

import tests.integration.workers  # noqa: F401 - registers the zq_itest_* queues
from tests.helpers import require_rabbitmq
from tests.integration.proxy import CuttableProxy
from zqtwisted.config import BrokerSettings, Config, PathSettings, QueueSettings, WorkerSettings
from zqtwisted.runtime.amqp import AMQPBroker
from zqtwisted.runtime.deadletter import describe, failed_queue
from zqtwisted.runtime.reactor import IConnectingReactor
from zqtwisted.runtime.service import WorkerService
from zqtwisted.tap import build_service

ITEST_QUEUES = ("zq_itest_record", "zq_itest_flaky", "zq_itest_batch", "zq_itest_faulty")


class IntegrationCase(unittest.TestCase):
    timeout = 180

    def setUp(self) -> Deferred[None]:  # type: ignore[override]  # trial waits on a Deferred from setUp
        require_rabbitmq(self)
        self.tmp = tempfile.mkdtemp(prefix="zqtest-")
        self.addCleanup(shutil.rmtree, self.tmp, True)
        self.out = os.path.join(self.tmp, "out.txt")
        self._old_out = os.environ.get("ZQ_ITEST_OUT")
        os.environ["ZQ_ITEST_OUT"] = self.out
        self.proxy = CuttableProxy(reactor)
        self.proxy.start()
        self.direct = AMQPBroker(reactor, BrokerSettings(reconnect_initial_delay=0.2, reconnect_max_delay=2))
        self.direct.startService()
        self.services: list[WorkerService] = []
        return ensureDeferred(self._purge())

    async def _purge(self) -> None:
        session = await self.direct.session(30)
        for queue in ITEST_QUEUES:
            for name in (queue, failed_queue(queue)):
                await session.declare_queue(name)
                await session.purge(name)

    def tearDown(self) -> Deferred[None]:  # type: ignore[override]  # trial waits on a Deferred from tearDown
        return ensureDeferred(self._teardown())

    async def _teardown(self) -> None:
        for service in self.services:
            if service.running:
                await service.stopService()
        await self._purge()
        await self.direct.stopService()
        await self.proxy.stop()
        if self._old_out is None:
            os.environ.pop("ZQ_ITEST_OUT", None)
        else:
            os.environ["ZQ_ITEST_OUT"] = self._old_out

    def config(self, **queues: QueueSettings) -> Config:
        return Config(
            broker=BrokerSettings(
                url=f"amqp://guest:guest@127.0.0.1:{self.proxy.listen_port}/%2F",
                reconnect_initial_delay=0.2,
                reconnect_max_delay=2.0,
                publish_timeout=30,
            ),
            paths=PathSettings(stats_dir=self.tmp, error_dir=self.tmp, test_queue_file=os.path.join(self.tmp, "t")),
            workers=WorkerSettings(drain_timeout=10, http="tcp:0:interface=127.0.0.1"),
            queues=queues,
        )

    async def start(self, queues: Sequence[str], config: Config | None = None) -> WorkerService:
        service = build_service(cast(IConnectingReactor, reactor), config or self.config(), queues)
        self.services.append(service)
        service.startService()
        await self.until(lambda: service.ready, timeout=30)
        return service

    async def publish(self, queue: str, events: Sequence[dict[str, Any]]) -> None:
        import json

        session = await self.direct.session(30)
        await session.declare_queue(queue)
        for event in events:
            await self.direct.publish(queue, json.dumps(event).encode(), timeout=30)

    def recorded(self) -> list[str]:
        if not os.path.exists(self.out):
            return []
        with open(self.out) as f:
            return f.read().split()

    async def until(self, predicate: Callable[[], bool], timeout: float = 60.0, step: float = 0.05) -> None:
        """Wait (bounded) for a condition on real events."""
        for _ in range(int(timeout / step)):
            if predicate():
                return
            await deferLater(reactor, step, lambda: None)
        self.fail(f"condition not reached within {timeout}s")

    async def dead_letters(self, queue: str) -> list[tuple[bytes, dict[str, Any]]]:
        """Take every message of ``{queue}.failed`` (acked: the test owns them)."""
        session = await self.direct.session(30)
        taken = []
        while (delivery := await session.get(failed_queue(queue))) is not None:
            taken.append((delivery.body, describe(delivery.headers)))
            delivery.ack()
        return taken

    async def counts(self, queue: str) -> tuple[int, int]:
        session = await self.direct.session(30)
        return await session.queue_counts(queue)

    async def until_counts(self, queue: str, messages: int, timeout: float = 30.0) -> None:
        """Wait (bounded) until ``queue`` holds ``messages`` ready messages."""
        for _ in range(int(timeout / 0.05)):
            if (await self.counts(queue))[0] == messages:
                return
            await deferLater(reactor, 0.05, lambda: None)
        self.fail(f"{queue} did not reach {messages} messages within {timeout}s")
