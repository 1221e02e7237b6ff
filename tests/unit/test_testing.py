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

    async def hold_confirms(self) -> None:
        self.memory.block()

    async def release_confirms(self) -> None:
        self.memory.release_confirms()
        self.memory.flush()


class FakeInterfaceTests(unittest.TestCase):
    def test_recording_publisher_matches_publisher(self) -> None:
        """RecordingPublisher.publish_json takes what Publisher.publish_json takes, and records it."""
        import inspect

        from zqtwisted.runtime.publisher import Publisher
        from zqtwisted.testing import RecordingPublisher

        self.assertEqual(
            inspect.signature(RecordingPublisher.publish_json).parameters.keys(),
            inspect.signature(Publisher.publish_json).parameters.keys(),
        )
        publisher = RecordingPublisher(RuntimeError("down"))
        self.failureResultOf(publisher.publish_json("q", {"a": 1}), RuntimeError)
        self.successResultOf(publisher.publish_json("q", {"a": 2}))
        self.assertEqual(publisher.to("q"), [{"a": 2}])

    def test_failing_agent_provides_iagent(self) -> None:
        """FailingAgent is a twisted.web IAgent whose requests fail."""
        from twisted.web.iweb import IAgent
        from zope.interface.verify import verifyObject

        from zqtwisted.testing import FailingAgent

        agent = FailingAgent(ConnectionError("refused"))
        self.assertTrue(verifyObject(IAgent, agent))
        self.failureResultOf(agent.request(b"GET", b"http://127.0.0.1/"), ConnectionError)
