"""The real AMQP broker (pika on RabbitMQ) passes the broker contract."""

from __future__ import annotations

import re
import shutil
import subprocess
from collections.abc import Callable

from twisted.internet import reactor
from twisted.internet.defer import Deferred, ensureDeferred
from twisted.internet.task import deferLater
from twisted.trial import unittest

from tests.contract import BrokerContract
from tests.helpers import missing_requirement, require_rabbitmq
from tests.integration.proxy import CuttableProxy
from zqtwisted.config import BrokerSettings
from zqtwisted.runtime.amqp import AMQPBroker


class AMQPBrokerContractTests(BrokerContract, unittest.TestCase):
    timeout = 60

    _watermark: tuple[str, ...] = ()

    def setUp(self) -> None:
        require_rabbitmq(self)
        if self._testMethodName == "test_unconfirmed_publish_fails_at_its_deadline" and not shutil.which("rabbitmqctl"):
            missing_requirement(self, "rabbitmqctl is needed to raise a memory alarm")
        self.proxy = CuttableProxy(reactor)
        port = self.proxy.start()
        settings = BrokerSettings(
            url=f"amqp://guest:guest@127.0.0.1:{port}/%2F", reconnect_initial_delay=0.1, reconnect_max_delay=0.5
        )
        self.amqp = AMQPBroker(reactor, settings)
        self.broker = self.amqp
        self.queues: list[str] = []
        self.amqp.startService()

    async def _cleanup(self) -> None:
        session = await self.amqp.session(10)
        for queue in self.queues:
            await session._publish_channel.queue_delete(queue=queue)  # type: ignore[attr-defined]
        await self.amqp.stopService()
        await self.proxy.stop()

    def tearDown(self) -> Deferred[None]:  # type: ignore[override]  # trial waits on a Deferred from tearDown
        return ensureDeferred(self._cleanup())

    async def drop_connection(self, reconnect: bool = True) -> None:
        if reconnect:
            self.proxy.cut()
        else:
            await self.proxy.refuse()
        await self.settle(lambda: self.amqp.current_session() is None)

    async def reconnect(self) -> None:
        self.proxy.start()
        await self.amqp.session(10)

    async def settle(self, predicate: Callable[[], bool], timeout: float = 10.0) -> None:
        for _ in range(int(timeout / 0.02)):
            await deferLater(reactor, 0.02, lambda: None)
            if predicate():
                return
        self.fail(f"condition not reached within {timeout}s")

    async def settle_time(self, seconds: float) -> None:
        await deferLater(reactor, seconds, lambda: None)

    async def hold_confirms(self) -> None:
        """A memory alarm: RabbitMQ blocks publishers (the broker is shared: keep it short, restore it)."""
        self._watermark = current_watermark()
        rabbitmqctl("set_vm_memory_high_watermark", "0")
        await self.settle_time(0.5)

    async def release_confirms(self) -> None:
        restore_watermark(self._watermark)
        await self.settle_time(0.5)


def rabbitmqctl(*args: str) -> str:
    result = subprocess.run(["rabbitmqctl", *args], capture_output=True, text=True, timeout=30, check=True)
    return result.stdout.strip()


def current_watermark() -> tuple[str, ...]:
    """The memory high watermark, as arguments that set it back: ("0.4",) or ("absolute", "1073741824")."""
    value = rabbitmqctl("eval", "vm_memory_monitor:get_vm_memory_high_watermark().").splitlines()[-1]
    absolute = re.fullmatch(r"\{absolute,\s*(\d+)\}", value)
    if absolute:
        return ("absolute", absolute.group(1))
    float(value)  # a relative watermark; anything else is a surprise worth failing on
    return (value,)


def restore_watermark(watermark: tuple[str, ...]) -> None:
    rabbitmqctl("set_vm_memory_high_watermark", *watermark)
