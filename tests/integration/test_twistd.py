"""Real ``twistd zqworkers`` child processes: SIGKILL, SIGTERM, the test and noop queues."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import treq
from prometheus_client.parser import text_string_to_metric_families
from twisted.internet import reactor
from twisted.internet.defer import gatherResults
from twisted.internet.task import deferLater
from twisted.trial import unittest
from twisted.web.client import HTTPConnectionPool

from tests.contract import inline
from tests.helpers import free_port, require_rabbitmq
from tests.integration.base import IntegrationCase

REPO = Path(__file__).resolve().parents[2]
TWISTD = "from twisted.scripts.twistd import run; run()"


class TwistdTests(IntegrationCase):
    def spawn(self, *args: str) -> subprocess.Popen[bytes]:
        config = Path(self.tmp) / "zqtwisted.toml"
        config.write_text(
            "[workers]\n"
            'consumer_modules = ["tests.integration.workers"]\n'
            "drain_timeout = 10\n"
            'http = "tcp:0:interface=127.0.0.1"\n'
            "[paths]\n"
            f'stats_dir = "{self.tmp}"\nerror_dir = "{self.tmp}"\n'
            f'test_queue_file = "{self.tmp}/test_queue.jsonl"\n'
        )
        env = {**os.environ, "PYTHONPATH": str(REPO), "ZQ_CONFIG": str(config), "ZQ_ITEST_OUT": self.out}
        env.pop("ZQ_BROKER_URL", None)
        log = open(Path(self.tmp) / f"twistd-{len(self.children)}.log", "wb")
        self.addCleanup(log.close)
        child = subprocess.Popen(
            [
                sys.executable,
                "-c",
                "from twisted.scripts.twistd import run; run()",
                "-n",
                "--pidfile=",
                "zqworkers",
                *args,
            ],
            env=env,
            cwd=self.tmp,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        self.children.append(child)
        return child

    def setUp(self):  # type: ignore[no-untyped-def]
        self.children: list[subprocess.Popen[bytes]] = []
        self.addCleanup(self._kill_children)
        return super().setUp()

    def _kill_children(self) -> None:
        for child in self.children:
            if child.poll() is None:
                child.kill()
                child.wait(10)

    def log_text(self) -> str:
        return "\n".join(p.read_text(errors="replace") for p in sorted(Path(self.tmp).glob("twistd-*.log")))

    async def wait_exit(self, child: subprocess.Popen[bytes], timeout: float) -> int:
        await self.until(lambda: child.poll() is not None, timeout=timeout)
        return child.returncode

    async def publish_many(self, queue: str, events: list[dict[str, object]]) -> None:
        session = await self.direct.session(30)
        await session.declare_queue(queue)
        await gatherResults([session.publish(queue, json.dumps(e).encode()) for e in events])

    @inline
    async def test_sigkill_mid_event_then_restart_loses_nothing(self) -> None:
        """A worker killed with SIGKILL mid-event has its events redelivered and processed on restart."""
        await self.publish_many("zq_itest_record", [{"id": i, "delay": 0.2} for i in range(60)])
        child = self.spawn("--queue", "zq_itest_record")
        await self.until(lambda: len(self.recorded()) >= 10, timeout=60)
        child.send_signal(signal.SIGKILL)
        self.assertEqual(await self.wait_exit(child, 10), -signal.SIGKILL)
        self.assertLess(len(set(self.recorded())), 60)
        restarted = self.spawn("--queue", "zq_itest_record")
        await self.until(lambda: set(map(int, self.recorded())) == set(range(60)), timeout=90)
        restarted.send_signal(signal.SIGTERM)
        await self.wait_exit(restarted, 30)
        await self.until_counts("zq_itest_record", 0)

    @inline
    async def test_sigterm_stops_cleanly_within_drain_timeout(self) -> None:
        """SIGTERM mid-stream: a clean stop (signal re-raised) and processed + queued = published."""
        total = 1000
        await self.publish_many("zq_itest_record", [{"id": i, "delay": 0.05} for i in range(total)])
        child = self.spawn("--queue", "zq_itest_record")
        await self.until(lambda: len(self.recorded()) >= 50, timeout=60)
        child.send_signal(signal.SIGTERM)
        code = await self.wait_exit(child, 15)
        self.assertEqual(code, -signal.SIGTERM, self.log_text()[-3000:])
        processed = self.recorded()
        self.assertEqual(len(processed), len(set(processed)), "an event was processed twice")
        queued, consumers = await self.counts("zq_itest_record")
        self.assertEqual(consumers, 0)
        self.assertEqual(len(processed) + queued, total)
        self.assertLess(len(processed), total)

    @inline
    async def test_test_queue_file(self) -> None:
        """100 events published to ``test`` appear unchanged in the test queue file."""
        session = await self.direct.session(30)
        await session.declare_queue("test")
        await session.purge("test")
        events = [{"id": i, "text": f"événement {i}", "nested": {"n": [i, None, True]}} for i in range(100)]
        await self.publish_many("test", events)
        child = self.spawn("--queue", "test")
        path = Path(self.tmp) / "test_queue.jsonl"
        await self.until(lambda: path.exists() and len(path.read_text().splitlines()) == 100, timeout=60)
        child.send_signal(signal.SIGTERM)
        await self.wait_exit(child, 30)
        self.assertEqual([json.loads(line) for line in path.read_text().splitlines()], events)

    async def metric(self, port: int, name: str, queue: str) -> float | None:
        """The value of a sample from the child's /metrics, or None before it answers."""
        try:
            pool = HTTPConnectionPool(reactor, persistent=False)
            response = await treq.get(f"http://127.0.0.1:{port}/metrics", timeout=5, pool=pool)
            text = (await response.text()) if response.code == 200 else ""
        except Exception:  # noqa: BLE001 - not listening yet
            return None
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if sample.name == name and sample.labels.get("queue") == queue:
                    return float(sample.value)
        return None

    @inline
    async def test_noop_ten_thousand(self) -> None:
        """10,000 events to ``noop`` are consumed and acked; the queue stays empty after the stop."""
        session = await self.direct.session(30)
        await session.declare_queue("noop")
        await session.purge("noop")
        await self.publish_many("noop", [{"n": i} for i in range(10_000)])
        port = free_port()
        child = self.spawn("--queue", "noop", "--http", f"tcp:{port}:interface=127.0.0.1")
        for _ in range(1200):
            if await self.metric(port, "zqtwisted_events_consumed_total", "noop") == 10_000:
                break
            await deferLater(reactor, 0.1, lambda: None)
        else:
            self.fail("the worker did not consume 10,000 events within 120 s")
        child.send_signal(signal.SIGTERM)
        self.assertEqual(await self.wait_exit(child, 30), -signal.SIGTERM)
        self.assertEqual(await self.counts("noop"), (0, 0))

    @inline
    async def test_unknown_queue_is_a_clear_error(self) -> None:
        """An unknown queue name stops start-up with a message naming it."""
        child = self.spawn("--queue", "no_such_queue")
        code = await self.wait_exit(child, 30)
        self.assertNotEqual(code, 0)
        self.assertIn("unknown queue 'no_such_queue'", self.log_text())


class StartFailureTests(unittest.TestCase):
    """Defects 3 and 8: a process that cannot work ends at once, non-zero, with one clear line."""

    timeout = 120

    def setUp(self) -> None:
        require_rabbitmq(self)
        self.tmp = tempfile.mkdtemp(prefix="zqtest-start-")
        self.addCleanup(shutil.rmtree, self.tmp, True)

    def twistd(self, config: str, *args: str) -> tuple[int, str, float]:
        path = Path(self.tmp) / "zq.toml"
        path.write_text(
            config
            + f'\n[paths]\nstats_dir = "{self.tmp}"\nerror_dir = "{self.tmp}"\ntest_queue_file = "{self.tmp}/t"\n'
        )
        env = {**os.environ, "PYTHONPATH": str(REPO), "ZQ_CONFIG": str(path)}
        env.pop("ZQ_BROKER_URL", None)
        started = time.monotonic()
        done = subprocess.run(
            [sys.executable, "-c", TWISTD, "-n", "--pidfile=", "zqworkers", *args],
            env=env,
            cwd=self.tmp,
            capture_output=True,
            timeout=60,
            check=False,
        )
        return done.returncode, (done.stdout + done.stderr).decode(errors="replace"), time.monotonic() - started

    def test_failed_start_ends_the_process_promptly(self) -> None:
        """A worker whose start() fails (worker-num outside the shards) ends the process: status 1, within seconds."""
        config = f'[missedmessage]\nshards = 2\nsqlite_path = "{self.tmp}/mm.sqlite3"\n[workers]\nhttp = ""\n'
        code, out, elapsed = self.twistd(
            config, "--queue", "missedmessage_emails", "--queue", "test", "--worker-num", "5"
        )
        self.assertEqual(code, 1, out)
        self.assertLess(elapsed, 15, out)
        self.assertIn("--worker-num 5 is outside 1..2", out)

    def test_configuration_holes_are_one_line(self) -> None:
        """A missing password_file, a directory as config, a bad port, a bad or busy --http: one line, status 1."""
        with socket.socket() as busy:
            busy.bind(("127.0.0.1", 0))
            busy.listen(1)
            port = busy.getsockname()[1]
            cases = [
                (
                    '[broker]\npassword_file = "/nonexistent/pw"\n',
                    (),
                    "broker.password_file: cannot read /nonexistent/pw",
                ),
                ('[broker]\nurl = "amqp://guest:guest@127.0.0.1:abc/"\n', (), "broker.url: the port is not a number"),
                ("[queues.noop]\nprefetch = 70000\n", (), "queues.noop.prefetch: must be at most 65535"),
                ("", ("--http", "tcp:notaport"), "invalid HTTP endpoint 'tcp:notaport'"),
                ("", ("--http", f"tcp:{port}:interface=127.0.0.1"), "Address already in use"),
            ]
            for config, extra, expected in cases:
                code, out, _ = self.twistd(config, "--queue", "noop", *extra)
                self.assertEqual(code, 1, out)
                self.assertIn(expected, out)
                self.assertNotIn("Traceback", out)
                self.assertEqual(len([line for line in out.splitlines() if "zqworkers:" in line]), 1, out)
        env = {**os.environ, "PYTHONPATH": str(REPO)}
        done = subprocess.run(
            [sys.executable, "-c", TWISTD, "-n", "--pidfile=", "zqworkers", "--config", self.tmp, "--all"],
            env=env,
            capture_output=True,
            timeout=60,
            check=False,
        )
        self.assertEqual(done.returncode, 1)
        self.assertEqual(
            done.stderr.decode().strip(),
            f"zqworkers: configuration: cannot read the config file {self.tmp}: Is a directory",
        )
