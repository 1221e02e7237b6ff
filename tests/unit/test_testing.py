"""MemoryBroker passes the broker contract that the real AMQP broker passes."""

from __future__ import annotations

from collections.abc import Callable

from twisted.internet.task import Clock
from twisted.trial import unittest

from tests.contract import BrokerContract
from zqtwisted.testing import MemoryBroker


class MemoryBrokerContractTests(BrokerContract, unittest.TestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.memory = MemoryBroker(self.clock)
        self.broker = self.memory
        self.queues: list[str] = []
        self.memory.startService()

    async def drop_connection(self, reconnect: bool = True) -> None:
        self.memory.disconnect()
        self.memory.flush()
        if reconnect:
            await self.reconnect()

    async def reconnect(self) -> None:
        self.memory.connect()
        self.memory.flush()

    async def settle(self, predicate: Callable[[], bool], timeout: float = 10.0) -> None:
        self.memory.flush()
        self.assertTrue(predicate(), "condition not reached")

    async def settle_time(self, seconds: float) -> None:
        self.clock.advance(seconds)
        self.memory.flush()
