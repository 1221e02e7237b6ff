"""Reading queues leaves the broker as it was: every ``zqctl`` read command on a vhost of its own.

``zqctl queues``, ``failed``, ``check`` (plain, ``--consumers``, ``--failed``) and ``top``
run against a fresh vhost with no queue at all; afterwards it still has none.  The
``rabbitmqctl`` reader is also checked against a real vhost's figures (ready and
unacknowledged counted apart, consumers).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

from twisted.internet import reactor
from twisted.internet.defer import Deferred, ensureDeferred
from twisted.internet.task import deferLater
from twisted.internet.utils import getProcessOutputAndValue
from twisted.trial import unittest

from tests.contract import inline
from tests.helpers import require_rabbitmq
from tests.integration.vhost import fresh_vhost, rabbitmqctl, require_rabbitmqctl, vhost_url
from zqtwisted.config import BrokerSettings
from zqtwisted.ops.queues import QueueCount, RabbitmqctlReader
from zqtwisted.runtime.amqp import AMQPBroker

REPO = Path(__file__).resolve().parents[2]
ZQCTL = "from zqtwisted.cli.zqctl import main; main()"


class ReadOnlyTests(unittest.TestCase):
    timeout = 120

    def setUp(self) -> None:
        require_rabbitmq(self)
        require_rabbitmqctl(self)
        self.tmp = tempfile.mkdtemp(prefix="zqtest-queues-")
        self.addCleanup(shutil.rmtree, self.tmp, True)
        self.vhost = fresh_vhost(self)
        self.config = Path(self.tmp) / "zq.toml"
        self.config.write_text(
            f'[broker]\nurl = "{vhost_url(self.vhost)}"\nconnect_timeout = 5\n'
            f'[paths]\nstats_dir = "{self.tmp}"\nerror_dir = "{self.tmp}"\n'
        )
        self.env = {**os.environ, "PYTHONPATH": str(REPO), "ZQ_CONFIG": str(self.config)}
        self.env.pop("ZQ_BROKER_URL", None)

    def queues(self) -> list[str]:
        return [line for line in rabbitmqctl("-q", "list_queues", "-p", self.vhost, "name").splitlines() if line]

    async def zqctl(self, *args: str) -> tuple[int, str]:
        out, err, code = await getProcessOutputAndValue(sys.executable, ["-c", ZQCTL, *args], env=self.env)
        return code, (out + err).decode()

    @inline
    async def test_read_commands_create_nothing(self) -> None:
        """queues, failed, check, check --consumers, check --failed and top leave a vhost without queues empty."""
        self.assertEqual(self.queues(), [])
        code, out = await self.zqctl("queues")
        self.assertEqual(code, 0, out)
        self.assertRegex(out, r"\noutgoing_webhooks\s+-\s+-\s+-\s+-\s+-\n")
        code, out = await self.zqctl("failed", "noop")
        self.assertEqual(code, 0, out)
        self.assertIn("0 dead letter(s) listed for noop (there is no queue noop.failed)", out)
        code, out = await self.zqctl("check")
        self.assertEqual(code, 0, out)
        self.assertIn("|0|OK|queues normal", out)
        code, out = await self.zqctl("check", "--failed")
        self.assertEqual(code, 0, out)
        self.assertIn("|0|OK|dead letters normal", out)
        code, out = await self.zqctl("check", "--consumers")
        self.assertEqual(code, 2, out)
        self.assertIn("queue noop has 0 consumers, needs 1", out)
        top = subprocess.Popen(
            [sys.executable, "-c", ZQCTL, "top", "--interval", "0.5"], env=self.env, stdout=subprocess.PIPE
        )
        await deferLater(reactor, 4, lambda: None)
        top.send_signal(signal.SIGINT)
        shown, _ = top.communicate(timeout=30)
        self.assertIn(b"noop", shown)
        self.assertEqual(self.queues(), [], "a read command created a queue")


class RabbitmqctlReaderTests(unittest.TestCase):
    timeout = 60

    def setUp(self) -> Deferred[None]:  # type: ignore[override]
        require_rabbitmq(self)
        require_rabbitmqctl(self)
        self.vhost = fresh_vhost(self)
        self.broker = AMQPBroker(reactor, BrokerSettings(url=vhost_url(self.vhost)))
        self.broker.startService()
        self.addCleanup(self.broker.stopService)
        return ensureDeferred(self.broker.session(30)).addCallback(lambda _: None)

    @inline
    async def test_reads_ready_unacked_and_consumers(self) -> None:
        """Ready and unacknowledged messages are counted apart and summed as Zulip's size; dotted names are listed."""
        session = await self.broker.session(30)
        for name in ("zq_read", "zq_read.failed"):
            await session.declare_queue(name)
        for n in range(5):
            await session.publish("zq_read", b'{"n": %d}' % n)
        await session.publish("zq_read.failed", b"{}")
        held = [await session.get("zq_read") for _ in range(2)]
        rows = {q.name: q for q in await RabbitmqctlReader(reactor, self.vhost).read()}
        self.assertEqual(rows["zq_read"], QueueCount("zq_read", 5, 0, ready=3, unacked=2))
        self.assertEqual(rows["zq_read.failed"].messages, 1)
        for delivery in held:
            assert delivery is not None
            delivery.nack()
