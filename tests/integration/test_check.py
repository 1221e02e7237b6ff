"""``zqctl check`` and Zulip's own check rules agree on the same real broker states.

Zulip's rules come from zulip/zulip ``scripts/lib/check_rabbitmq_queue.py``, transcribed
in :mod:`tests.zulip_check` (thresholds 10 / 50 messages, 30 / 60 s to clear by default,
"queue appears to be stuck" after 180 s).  Each test makes a state on a vhost of its own,
with a real ``twistd zqworkers`` child consuming ``embedded_bots`` (one of Zulip's
``normal_queues`` that zqtwisted does not ship): an idle queue and a fresh backlog, a backlog held unacked in the
prefetch of a slow consumer, a frozen worker (SIGSTOP), and replies piling up in
``outgoing_webhook_responses``.  Then both checks read that state: Zulip's from
``rabbitmqctl list_queues name messages consumers`` as Zulip runs it, ``zqctl check``
on its own.  The stuck threshold is a parameter (8 s here, 180 s by default).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from twisted.internet import reactor
from twisted.internet.defer import Deferred, ensureDeferred
from twisted.internet.task import deferLater
from twisted.internet.utils import getProcessOutputAndValue
from twisted.trial import unittest

from tests.contract import inline
from tests.helpers import require_rabbitmq
from tests.integration.vhost import fresh_vhost, list_queues, rabbitmqctl, require_rabbitmqctl, vhost_url
from tests.zulip_check import check_rabbitmq_queues, states
from zqtwisted.config import BrokerSettings
from zqtwisted.runtime.amqp import AMQPBroker

REPO = Path(__file__).resolve().parents[2]
STUCK = 8.0  # seconds: the stuck threshold these tests prove the rule with (Zulip's is 180)
QUEUE = "embedded_bots"
TWISTD = "from twisted.scripts.twistd import run; run()"

Finding = tuple[str, str, str]  # (queue, STATE, message with its numbers blanked)


def blank_numbers(message: str) -> str:
    return re.sub(r"\d+(\.\d+)?(e-?\d+)?", "N", message)


def parse_zqctl(line: str) -> tuple[int, set[Finding]]:
    """The status and the problems of a ``{now}|{status}|{STATE}|{message}`` line."""
    _now, status, _state, message = line.strip().split("|", 3)
    found = set()
    for part in message.split("; "):
        m = re.fullmatch(r"queue (\S+) problem: (\w+):(.*)", part)
        if m:
            found.add((m[1], m[2], blank_numbers(m[3])))
    return int(status), found


class ZulipAgreementTests(unittest.TestCase):
    timeout = 240

    def setUp(self) -> Deferred[None]:  # type: ignore[override]
        require_rabbitmq(self)
        require_rabbitmqctl(self)
        self.tmp = tempfile.mkdtemp(prefix="zqtest-check-")
        self.addCleanup(shutil.rmtree, self.tmp, True)
        self.children: list[subprocess.Popen[bytes]] = []
        self.addCleanup(self._kill_children)
        self.vhost = fresh_vhost(self)
        self.url = vhost_url(self.vhost)
        self.broker = AMQPBroker(reactor, BrokerSettings(url=self.url, reconnect_initial_delay=0.2))
        self.broker.startService()
        self.addCleanup(self.broker.stopService)
        return ensureDeferred(self._connected())

    async def _connected(self) -> None:
        await self.broker.session(30)

    def _kill_children(self) -> None:
        for child in self.children:
            if child.poll() is None:
                child.send_signal(signal.SIGCONT)
                child.kill()
                child.wait(10)

    def write_config(self, heartbeat: int = 0) -> str:
        path = Path(self.tmp) / f"zq-{heartbeat}.toml"
        path.write_text(
            f'[broker]\nurl = "{self.url}"\nheartbeat = {heartbeat}\n'
            '[workers]\nconsumer_modules = ["tests.integration.zulip_named"]\nhttp = ""\ndrain_timeout = 2\n'
            f'[paths]\nstats_dir = "{self.tmp}"\nerror_dir = "{self.tmp}"\ntest_queue_file = "{self.tmp}/t"\n'
            f"[queues.{QUEUE}]\nprefetch = 1000\n"
        )
        return str(path)

    def spawn(self, heartbeat: int = 0) -> subprocess.Popen[bytes]:
        env = {**os.environ, "PYTHONPATH": str(REPO), "ZQ_CONFIG": self.write_config(heartbeat)}
        env.pop("ZQ_BROKER_URL", None)
        log = open(Path(self.tmp) / f"twistd-{len(self.children)}.log", "wb")
        self.addCleanup(log.close)
        child = subprocess.Popen(
            [sys.executable, "-c", TWISTD, "-n", "--pidfile=", "zqworkers", "--queue", QUEUE],
            env=env,
            cwd=self.tmp,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        self.children.append(child)
        return child

    async def zqctl(self, *args: str) -> tuple[int, str]:
        env = {**os.environ, "PYTHONPATH": str(REPO), "ZQ_CONFIG": self.write_config()}
        env.pop("ZQ_BROKER_URL", None)
        out, err, code = await getProcessOutputAndValue(
            sys.executable, ["-c", "from zqtwisted.cli.zqctl import main; main()", *args], env=env
        )
        return code, out.decode() + err.decode()

    async def both(self, stuck: float = STUCK) -> tuple[tuple[int, set[Finding]], tuple[int, set[Finding]]]:
        """(zqctl check, Zulip's rules), read back to back from the same broker."""
        code, out = await self.zqctl("check", "--stuck-seconds", str(stuck))
        status, found = parse_zqctl(out.splitlines()[-1])
        self.assertEqual(code, status, out)
        zulip_status, results = check_rabbitmq_queues(list_queues(self.vhost), self.tmp, int(time.time()), stuck)
        zulip = {(r["name"], states[r["status"]], blank_numbers(r["message"])) for r in results}
        return (status, found), (zulip_status, zulip)

    async def agree(self, stuck: float = STUCK) -> tuple[int, set[Finding]]:
        ours, zulips = await self.both(stuck)
        self.assertEqual(ours, zulips)
        return ours

    async def publish(self, queue: str, events: list[dict[str, Any]]) -> None:
        session = await self.broker.session(30)
        await session.declare_queue(queue)
        for event in events:
            await session.publish(queue, json.dumps(event).encode())

    async def until(self, predicate: Any, timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while not predicate():
            if time.monotonic() > deadline:
                self.fail(f"{what}: not within {timeout}s")
            await deferLater(reactor, 0.2, lambda: None)

    def stats(self) -> dict[str, Any]:
        try:
            return dict(json.loads((Path(self.tmp) / f"{QUEUE}.stats").read_text()))
        except (OSError, ValueError):
            return {}

    def queue_row(self, name: str) -> list[int]:
        """[ready, unacked, consumers] of ``name`` on the test's vhost."""
        for line in rabbitmqctl(
            "-q", "list_queues", "-p", self.vhost, "name", "messages_ready", "messages_unacknowledged", "consumers"
        ).splitlines():
            parts = line.split("\t")
            if parts[0] == name and len(parts) == 4 and parts[1].isdigit():
                return [int(p) for p in parts[1:]]
        return []

    @inline
    async def test_idle_then_fresh_backlog(self) -> None:
        """Row 1: an idle worker is OK for both; 60 ready events on a queue without consumer are CRITICAL for both."""
        self.spawn()
        await self.until(lambda: self.queue_row(QUEUE)[2:] == [1], 30, "the worker consumes")
        self.assertEqual(await self.agree(), (0, set()))
        await self.publish("zq_backlog", [{"n": i} for i in range(60)])
        code, found = await self.agree()
        self.assertEqual((code, found), (2, {("zq_backlog", "CRITICAL", "count critical: N")}))

    @inline
    async def test_backlog_held_unacked_in_prefetch(self) -> None:
        """Row 2: a slow consumer holds the whole backlog unacked (0 ready): both say it takes too long to clear."""
        await self.publish(QUEUE, [{"seconds": 1} for _ in range(500)])
        self.spawn()
        await self.until(lambda: self.stats().get("recent_average_consume_time") is not None, 60, "an average")
        ready, unacked, consumers = self.queue_row(QUEUE)
        self.assertEqual((ready, consumers), (0, 1))
        self.assertGreater(unacked, 300)
        average = self.stats()["recent_average_consume_time"]
        self.assertLess(average, 0.5, "busy time per event (5 at a time, 1 s each), not the 1 s latency")
        code, found = await self.agree()
        self.assertEqual(code, 2)
        self.assertEqual(found, {(QUEUE, "CRITICAL", "clearing the backlog will take too long: Ns, size: N")})

    @inline
    async def test_frozen_worker_without_heartbeats(self) -> None:
        """Row 3, Zulip's way (heartbeat 0): a SIGSTOPped worker holding 25+ unacked is CRITICAL 'stuck' for both."""
        await self.publish(QUEUE, [{"seconds": 5} for _ in range(40)])
        child = self.spawn(heartbeat=0)
        await self.until(lambda: bool(self.stats()), 30, "the stats file")
        await self.until(lambda: self.queue_row(QUEUE)[:1] == [0], 30, "all in prefetch")
        child.send_signal(signal.SIGSTOP)
        stopped = time.time()
        await self.until(lambda: time.time() - self.stats()["update_time"] > STUCK + 1, 60, "stale stats")
        code, found = await self.agree()
        self.assertEqual(self.queue_row(QUEUE)[2], 1, "without heartbeats the frozen consumer stays")
        self.assertEqual(
            (code, found), (2, {(QUEUE, "CRITICAL", "queue appears to be stuck, last update N, queue size N")})
        )
        self.assertLess(time.time() - stopped, STUCK + 30)

    @inline
    async def test_frozen_worker_with_heartbeats(self) -> None:
        """Row 3 with heartbeats: RabbitMQ drops the frozen consumer; zqctl still says 'stuck' (Zulip's cannot)."""
        await self.publish(QUEUE, [{"seconds": 5} for _ in range(40)])
        child = self.spawn(heartbeat=1)
        await self.until(lambda: bool(self.stats()), 30, "the stats file")
        await self.until(lambda: self.queue_row(QUEUE)[:1] == [0], 30, "all in prefetch")
        child.send_signal(signal.SIGSTOP)
        await self.until(lambda: self.queue_row(QUEUE)[2:] == [0], 60, "the broker drops the frozen consumer")
        await self.until(lambda: time.time() - self.stats()["update_time"] > STUCK + 1, 60, "stale stats")
        (code, found), (zulip_status, zulip) = await self.both()
        self.assertEqual((zulip_status, zulip), (0, set()), "Zulip's check skips a queue without consumers")
        self.assertEqual(
            (code, found), (2, {(QUEUE, "CRITICAL", "queue appears to be stuck, last update N, queue size N")})
        )
        code, _ = await self.zqctl("check")
        self.assertEqual(code, 0, "with the default 180 s the same state is not stuck yet")

    @inline
    async def test_replies_nobody_consumes(self) -> None:
        """Row 4: replies piling up in outgoing_webhook_responses (no consumer) warn by count, for both."""
        await self.publish("outgoing_webhook_responses", [{"content": "hi"} for _ in range(12)])
        code, found = await self.agree()
        self.assertEqual((code, found), (1, {("outgoing_webhook_responses", "WARNING", "count warning: N")}))
        await self.publish("outgoing_webhook_responses", [{"content": "hi"} for _ in range(40)])
        code, found = await self.agree()
        self.assertEqual((code, found), (2, {("outgoing_webhook_responses", "CRITICAL", "count critical: N")}))

    @inline
    async def test_unknown_vhost_is_unknown(self) -> None:
        """A vhost RabbitMQ does not have is UNKNOWN (exit 3), not 'queues normal'."""
        config = Path(self.tmp) / "other.toml"
        config.write_text('[broker]\nurl = "amqp://guest:guest@127.0.0.1:5672/zqtest-no-such-vhost"\n')
        env = {**os.environ, "PYTHONPATH": str(REPO), "ZQ_CONFIG": str(config)}
        out, _err, code = await getProcessOutputAndValue(
            sys.executable, ["-c", "from zqtwisted.cli.zqctl import main; main()", "check"], env=env
        )
        self.assertEqual(code, 3)
        self.assertIn(b"|3|UNKNOWN|cannot read the queues: RabbitMQ has no vhost 'zqtest-no-such-vhost'", out)
