"""Helpers for the tests of broker trouble: a real ``twistd`` child, its HTTP endpoint, ``zqctl``, a memory alarm.

The alarm goes to node 3 of the local test cluster (``tools/rabbitmq-cluster``: ours to
alarm) when it runs, else to the machine's default node, where it is kept to a few
seconds; either way the watermark read before is set back in a ``finally``.  A memory
alarm blocks publishers on every node of a cluster.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import treq
from prometheus_client.parser import text_string_to_metric_families
from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.task import deferLater
from twisted.internet.utils import getProcessOutputAndValue
from twisted.web.client import HTTPConnectionPool

from tests.integration.cluster import TOOL, answers, layout

REPO = Path(__file__).resolve().parents[2]
TWISTD = "from twisted.scripts.twistd import run; run()"
ZQCTL = "import sys; sys.argv[0] = 'zqctl'; from zqtwisted.cli.zqctl import main; main()"
QUEUE = "zq_itest_trouble"  # tests.integration.workers.TroubleWorker
DEFAULT_URL = "amqp://guest:guest@127.0.0.1:5672/%2F"


def sleep(seconds: float) -> Deferred[None]:
    return deferLater(reactor, seconds, lambda: None)


async def until(predicate: Any, timeout: float, what: str, step: float = 0.1) -> None:
    """Wait (bounded) for ``predicate()`` (a plain or async callable) to be true."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if hasattr(value, "__await__"):
            value = await value
        if value:
            return
        await sleep(step)
    raise AssertionError(f"{what}: not reached within {timeout}s")


@dataclass
class AlarmNode:
    """Where a memory alarm is raised: a node of the local cluster (``index``), or the default node (``index`` 0)."""

    index: int
    url: str
    label: str
    _watermark: tuple[str, ...] = ()

    @classmethod
    def pick(cls) -> AlarmNode:
        nodes = layout()
        node = nodes[-1]
        if all(answers(n.port) for n in nodes):
            return cls(node.index, node.url, node.label)
        return cls(0, DEFAULT_URL, "127.0.0.1:5672")

    async def ctl(self, *args: str) -> str:
        if self.index:
            command, argv = sys.executable, [str(TOOL), "ctl", str(self.index), *args]
        else:
            command, argv = "rabbitmqctl", list(args)
        out, err, code = await getProcessOutputAndValue(command, argv, env=dict(os.environ), reactor=reactor)
        if code != 0:
            raise RuntimeError(f"{command} {' '.join(argv)} exited {code}: {out!r} {err!r}")
        return str(out.decode("utf-8", "replace"))

    async def raise_alarm(self) -> None:
        """Set the memory high watermark to 0 (RabbitMQ blocks publishers), after reading the one to restore."""
        value = (await self.ctl("eval", "vm_memory_monitor:get_vm_memory_high_watermark().")).strip().splitlines()[-1]
        absolute = re.fullmatch(r"\{absolute,\s*(\d+)\}", value)
        self._watermark = ("absolute", absolute.group(1)) if absolute else (str(float(value)),)
        await self.ctl("set_vm_memory_high_watermark", "0")

    async def clear_alarm(self) -> None:
        if self._watermark:
            await self.ctl("set_vm_memory_high_watermark", *self._watermark)


class Child:
    """A ``twistd -n zqworkers`` child of this checkout, with its log and HTTP endpoint."""

    def __init__(self, tmp: str, config: str, *args: str, port: int) -> None:
        self.tmp = Path(tmp)
        self.port = port
        self.out = self.tmp / "processed.txt"
        path = self.tmp / "zqtwisted.toml"
        path.write_text(
            config + "\n[paths]\n"
            f'stats_dir = "{tmp}"\nerror_dir = "{tmp}"\ntest_queue_file = "{tmp}/test_queue.jsonl"\n'
        )
        env = {**os.environ, "PYTHONPATH": str(REPO), "ZQ_CONFIG": str(path), "ZQ_ITEST_OUT": str(self.out)}
        env.pop("ZQ_BROKER_URL", None)
        env.pop("ZQ_BROKER_URLS", None)
        self.log_path = self.tmp / "twistd.log"
        self._log = open(self.log_path, "wb")  # closed by kill()
        argv = [sys.executable, "-c", TWISTD, "-n", "--pidfile=", "zqworkers", *args]
        self.process = subprocess.Popen(argv, env=env, cwd=tmp, stdout=self._log, stderr=subprocess.STDOUT)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def processed(self) -> list[str]:
        return self.out.read_text().split() if self.out.exists() else []

    def rss_mb(self) -> float:
        """Resident memory now (``VmRSS`` of /proc/PID/status), in MB."""
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        raise AssertionError("no VmRSS")

    async def get(self, path: str) -> tuple[int | None, str]:
        """(status, body) of ``GET path`` on the child's endpoint; (None, "") while it does not answer."""
        pool = HTTPConnectionPool(reactor, persistent=False)
        try:
            response = await treq.get(f"http://127.0.0.1:{self.port}{path}", timeout=5, pool=pool)
            return response.code, await response.text()
        except Exception:  # noqa: BLE001 - not listening yet, or gone
            return None, ""

    async def ready(self) -> tuple[int | None, dict[str, Any]]:
        code, body = await self.get("/ready")
        return code, (json.loads(body) if code is not None else {})

    async def metric(self, name: str) -> float | None:
        code, body = await self.get("/metrics")
        if code != 200:
            return None
        for family in text_string_to_metric_families(body):
            for sample in family.samples:
                if sample.name == name:
                    return float(sample.value)
        return None

    async def stop(self, timeout: float = 30) -> tuple[int, float]:
        """SIGTERM; (exit status, seconds it took)."""
        started = time.monotonic()
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        await until(lambda: self.process.poll() is not None, timeout, "the child's exit after SIGTERM")
        return self.process.returncode, time.monotonic() - started

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)
        self._log.close()


async def zqctl(*args: str) -> tuple[int, str, str, float]:
    """Run this checkout's ``zqctl ARGS``: (exit status, stdout, stderr, seconds)."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    for name in ("ZQ_BROKER_URL", "ZQ_BROKER_URLS", "ZQ_CONFIG"):
        env.pop(name, None)
    started = time.monotonic()
    out, err, code = await getProcessOutputAndValue(sys.executable, ["-c", ZQCTL, *args], env=env, reactor=reactor)
    return code, out.decode(errors="replace"), err.decode(errors="replace"), time.monotonic() - started
