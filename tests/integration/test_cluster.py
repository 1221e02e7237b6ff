"""On the local three-node RabbitMQ cluster: failover mid-stream on a quorum queue, a node down first, two processes.

The cluster is ``tools/rabbitmq-cluster`` (started once per CI run by ``tools/test``); the
nodes are stopped and started with ``rabbitmqctl -n NODE stop_app / start_app``.  The
machine's default node is not touched.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, cast

import treq
from twisted.internet import reactor
from twisted.internet.defer import Deferred, ensureDeferred, gatherResults
from twisted.internet.interfaces import IListeningPort
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.task import deferLater
from twisted.logger import Logger
from twisted.trial import unittest
from twisted.web.client import HTTPConnectionPool

import tests.integration.workers  # noqa: F401 - registers zq_itest_cluster
from tests.contract import inline
from tests.helpers import free_port
from tests.integration.cluster import REPO, ClusterNode, ctl, node_by_label, require_cluster, running_nodes
from zqtwisted.config import BrokerSettings, Config, PathSettings, QueueSettings, WorkerSettings
from zqtwisted.runtime.amqp import AMQPBroker
from zqtwisted.runtime.deadletter import failed_queue
from zqtwisted.runtime.declarations import QueueDeclarations
from zqtwisted.runtime.reactor import IConnectingReactor
from zqtwisted.runtime.service import WorkerService
from zqtwisted.tap import build_service

QUEUE = "zq_itest_cluster"
EVENTS = 20_000
log = Logger()


class ClusterCase(unittest.TestCase):
    timeout = 300

    def setUp(self) -> Deferred[None]:  # type: ignore[override]  # trial waits on a Deferred from setUp
        self.nodes = require_cluster(self)
        self.tmp = tempfile.mkdtemp(prefix="zqcluster-")
        self.addCleanup(shutil.rmtree, self.tmp, True)
        self.out = os.path.join(self.tmp, "out.txt")
        self._old_out = os.environ.get("ZQ_ITEST_OUT")
        os.environ["ZQ_ITEST_OUT"] = self.out
        self.stopped: set[int] = set()
        self.services: list[WorkerService] = []
        self.direct = AMQPBroker(reactor, self.broker_settings(), declarations=self.declarations())
        self.direct.startService()
        return ensureDeferred(self._fresh_queue())

    def broker_settings(self, **changes: Any) -> BrokerSettings:
        settings: dict[str, Any] = {
            "urls": tuple(n.url for n in self.nodes),
            "reconnect_initial_delay": 0.2,
            "reconnect_max_delay": 2.0,
            "connect_timeout": 5.0,
            "publish_timeout": 60.0,
            **changes,
        }
        return BrokerSettings(**settings)

    def declarations(self) -> QueueDeclarations:
        return QueueDeclarations.from_config(self.config())

    def config(self, **broker: Any) -> Config:
        return Config(
            broker=self.broker_settings(**broker),
            paths=PathSettings(stats_dir=self.tmp, error_dir=self.tmp, test_queue_file=os.path.join(self.tmp, "t")),
            workers=WorkerSettings(queue_type="quorum", drain_timeout=10, http="tcp:0:interface=127.0.0.1"),
            queues={QUEUE: QueueSettings(prefetch=200)},
        )

    async def _fresh_queue(self) -> None:
        """The test's quorum queue, deleted and declared again (a previous run may have left messages)."""
        session = await self.direct.session(60)
        for name in (QUEUE, failed_queue(QUEUE)):
            await session._publish_channel.queue_delete(queue=name)  # type: ignore[attr-defined]
        await session.declare_queue(failed_queue(QUEUE))
        await session.declare_queue(QUEUE)

    def tearDown(self) -> Deferred[None]:  # type: ignore[override]  # trial waits on a Deferred from tearDown
        return ensureDeferred(self._teardown())

    async def _teardown(self) -> None:
        for service in self.services:
            if service.running:
                await service.stopService()
        for index in sorted(self.stopped):  # never leave a node of the cluster stopped
            await ctl(index, "start_app")
            await ctl(index, "await_startup")
        session = await self.direct.session(60)
        for name in (QUEUE, failed_queue(QUEUE)):
            await session._publish_channel.queue_delete(queue=name)  # type: ignore[attr-defined]
        await self.direct.stopService()
        if self._old_out is None:
            os.environ.pop("ZQ_ITEST_OUT", None)
        else:
            os.environ["ZQ_ITEST_OUT"] = self._old_out

    async def stop_node(self, node: ClusterNode) -> None:
        self.stopped.add(node.index)
        await ctl(node.index, "stop_app")

    async def start_node(self, node: ClusterNode) -> None:
        await ctl(node.index, "start_app")
        await ctl(node.index, "await_startup")
        self.stopped.discard(node.index)

    async def start(self, config: Config, queues: Sequence[str] = (QUEUE,)) -> WorkerService:
        service = build_service(cast(IConnectingReactor, reactor), config, queues)
        self.services.append(service)
        service.startService()
        await self.until(lambda: service.ready, timeout=60)
        return service

    async def publish(self, count: int, chunk: int = 500) -> None:
        """``count`` events ``{"id": i}``, confirmed, ``chunk`` in flight at a time."""
        for start in range(0, count, chunk):
            bodies = [json.dumps({"id": i}).encode() for i in range(start, min(count, start + chunk))]
            await gatherResults([self.direct.publish(QUEUE, body, timeout=60) for body in bodies])

    def recorded(self, path: str | None = None) -> list[str]:
        path = path or self.out
        if not os.path.exists(path):
            return []
        with open(path) as f:
            return f.read().split()

    async def until(self, predicate: Callable[[], bool], timeout: float = 60.0, step: float = 0.05) -> None:
        deadline = time.monotonic() + timeout
        while not predicate():
            if time.monotonic() > deadline:
                self.fail(f"condition not reached within {timeout}s")
            await deferLater(reactor, step, lambda: None)


def connected_node(service: WorkerService) -> ClusterNode:
    session = service.broker.current_session()
    assert session is not None
    return node_by_label(session.node)


async def ready_body(port: int) -> dict[str, Any]:
    pool = HTTPConnectionPool(reactor, persistent=False)
    response = await treq.get(f"http://127.0.0.1:{port}/ready", timeout=5, pool=pool)
    return cast(dict[str, Any], await response.json())


class FailoverTests(ClusterCase):
    @inline
    async def test_node_stopped_mid_stream_loses_nothing(self) -> None:
        """20,000 events on a quorum queue; the worker's node stops mid-stream: it fails over, nothing is lost."""
        await self.publish(EVENTS)
        port = free_port()
        config = self.config()
        config = config.replace(workers=WorkerSettings(queue_type="quorum", drain_timeout=10, http=f"tcp:{port}"))
        service = await self.start(config)
        first = connected_node(service)
        self.assertEqual((await ready_body(port))["node"], first.label)
        await self.until(lambda: len(self.recorded()) >= EVENTS // 5, timeout=120)
        await self.stop_node(first)
        await self.until(lambda: service.ready and connected_node(service) != first, timeout=60)
        second = connected_node(service)
        self.assertEqual((await ready_body(port))["node"], second.label)

        # While the node is down, a worker that lists it first starts on the next one at once.
        down_first = [first.url, *(n.url for n in self.nodes if n != first)]
        other = self.config(urls=tuple(down_first), failover_strategy="round-robin")
        started = time.monotonic()
        late = await self.start(other)
        self.assertLess(time.monotonic() - started, other.broker.connect_timeout)
        self.assertNotEqual(connected_node(late), first)
        await late.stopService()

        await self.until(lambda: len(set(self.recorded())) == EVENTS, timeout=240)
        ids = self.recorded()
        duplicates = len(ids) - len(set(ids))
        log.info("Failover: {n} events, {d} processed twice", n=EVENTS, d=duplicates)
        sys.stderr.write(f"\nfailover from {first.name} to {second.name}: {duplicates} duplicate(s) of {EVENTS}\n")
        self.assertEqual(sorted(set(map(int, ids))), list(range(EVENTS)))
        self.assertLessEqual(duplicates, 2 * 200)  # at most what was in flight (prefetch 200) when the node went
        await self.until(lambda: service.runners[0].held == 0, timeout=30)
        session = await self.direct.session(60)
        self.assertEqual((await session.queue_counts(QUEUE))[0], 0)

        await self.start_node(first)
        names = sorted(n.name for n in self.nodes)
        self.assertEqual(await running_nodes(first.index), names)
        self.assertEqual(await running_nodes(second.index), names)


class SilentNode(Protocol):
    """Accepts a TCP connection and never says a word (a hung node)."""


class DownFirstTests(ClusterCase):
    @inline
    async def test_a_silent_node_first_costs_one_connect_timeout(self) -> None:
        """A node that accepts TCP but never answers AMQP, listed first, delays the start by one connect timeout."""
        listening: IListeningPort = cast(Any, reactor).listenTCP(
            0, Factory.forProtocol(SilentNode), interface="127.0.0.1"
        )
        self.addCleanup(listening.stopListening)
        silent = f"amqp://guest:guest@127.0.0.1:{cast(Any, listening.getHost()).port}/%2F"
        config = self.config(
            urls=(silent, *(n.url for n in self.nodes)), failover_strategy="round-robin", connect_timeout=2.0
        )
        started = time.monotonic()
        service = await self.start(config)
        elapsed = time.monotonic() - started
        self.assertGreaterEqual(elapsed, 2.0)
        self.assertLess(elapsed, 2.0 + 2.5)  # one connect timeout, then an ordinary start
        self.assertEqual(connected_node(service), self.nodes[0])


class ProcessesTests(ClusterCase):
    def spawn(self, name: str) -> tuple[subprocess.Popen[bytes], str]:
        """A ``twistd -n zqworkers --queue zq_itest_cluster`` child on every node of the cluster."""
        out = os.path.join(self.tmp, f"{name}.out")
        config = Path(self.tmp) / f"{name}.toml"
        urls = ", ".join(f'"{n.url}"' for n in self.nodes)
        config.write_text(
            f"[broker]\nurls = [{urls}]\nreconnect_initial_delay = 0.2\n"
            '[workers]\nconsumer_modules = ["tests.integration.workers"]\nqueue_type = "quorum"\n'
            'drain_timeout = 10\nhttp = "tcp:0:interface=127.0.0.1"\n'
            f'[paths]\nstats_dir = "{self.tmp}"\nerror_dir = "{self.tmp}"\ntest_queue_file = "{self.tmp}/t.jsonl"\n'
            f"[queues.{QUEUE}]\nprefetch = 100\n"
        )
        env = {**os.environ, "PYTHONPATH": str(REPO), "ZQ_CONFIG": str(config), "ZQ_ITEST_OUT": out}
        env.pop("ZQ_BROKER_URL", None)
        env.pop("ZQ_BROKER_URLS", None)
        log_file = open(Path(self.tmp) / f"{name}.log", "wb")
        self.addCleanup(log_file.close)
        command = [sys.executable, "-c", "from twisted.scripts.twistd import run; run()", "-n", "--pidfile="]
        child = subprocess.Popen(
            [*command, "zqworkers", "--queue", QUEUE], env=env, cwd=self.tmp, stdout=log_file, stderr=subprocess.STDOUT
        )
        self.addCleanup(_kill, child)
        return child, out

    @inline
    async def test_two_processes_share_one_queue(self) -> None:
        """Two worker processes on one quorum queue both consume, and together process every event once."""
        children = [self.spawn(name) for name in ("one", "two")]
        session = await self.direct.session(60)

        async def consumers() -> int:
            return (await session.queue_counts(QUEUE))[1]

        for _ in range(600):
            if await consumers() == 2:
                break
            await deferLater(reactor, 0.1, lambda: None)
        self.assertEqual(await consumers(), 2, "both processes should consume the queue")
        total = 4000
        await self.publish(total)
        await self.until(lambda: len(set(self.recorded(children[0][1]) + self.recorded(children[1][1]))) == total, 120)
        counts = [len(self.recorded(out)) for _, out in children]
        ids = self.recorded(children[0][1]) + self.recorded(children[1][1])
        sys.stderr.write(f"\ntwo processes on one queue: {counts[0]} + {counts[1]} events\n")
        self.assertTrue(all(counts), f"each process should have consumed some events: {counts}")
        self.assertEqual(sum(counts), total, f"processed twice: {[i for i, n in Counter(ids).items() if n > 1][:10]}")
        for child, _ in children:
            child.send_signal(signal.SIGTERM)
        for child, _ in children:
            await self.until(lambda child=child: child.poll() is not None, timeout=30)  # type: ignore[misc]
            self.assertEqual(child.returncode, -signal.SIGTERM)


def _kill(child: subprocess.Popen[bytes]) -> None:
    if child.poll() is None:
        child.kill()
        child.wait(10)
