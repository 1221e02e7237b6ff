"""Shared pieces of the benchmarks: the broker, the events, twistd children, /proc memory.

The parent side of every benchmark is plain blocking code (pika's BlockingConnection
to fill and inspect queues); each consumer under test runs in its own process, so
that the parent's work never counts against it.
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
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pika
import pika.exceptions

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
DEFAULT_URL = "amqp://guest:guest@127.0.0.1:5672/%2F"
PREFETCH = 100


def broker_url() -> str:
    return os.environ.get("ZQ_BROKER_URL") or DEFAULT_URL


def child_env(**extra: str) -> dict[str, str]:
    """The environment of a child: the checkout (and bench/) importable, after any PYTHONPATH given."""
    paths = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    for p in (str(REPO), str(BENCH)):
        if p not in paths:
            paths.append(p)
    return {**os.environ, "PYTHONPATH": os.pathsep.join(paths), **extra}


def event(i: int, **fields: Any) -> dict[str, Any]:
    """A small event, shaped like Zulip's notification events (about 120 bytes of JSON)."""
    return {
        "user_profile_id": 7 + i % 50,
        "message_id": 100_000 + i,
        "trigger": "mentioned",
        "mentioned_user_group_id": None,
        "id": i,
        **fields,
    }


def connect(patience: float = 60.0) -> pika.BlockingConnection:
    """A blocking connection, waiting up to ``patience`` seconds for the broker (it may be restarting)."""
    deadline = time.monotonic() + patience
    while True:
        try:
            return pika.BlockingConnection(pika.URLParameters(broker_url()))
        except pika.exceptions.AMQPConnectionError:
            if time.monotonic() > deadline:
                raise
            time.sleep(1)


class Broker:
    """A blocking connection to fill, purge and count queues (reconnects when it was lost)."""

    def __init__(self) -> None:
        self._connection: pika.BlockingConnection | None = None
        self._channel: Any = None

    @property
    def channel(self) -> Any:
        if self._connection is None or not self._connection.is_open or not self._channel.is_open:
            self.close()
            self._connection = connect()
            self._channel = self._connection.channel()
        return self._channel

    @property
    def connection(self) -> pika.BlockingConnection:
        self.channel  # noqa: B018 - (re)connects
        assert self._connection is not None
        return self._connection

    def declare(self, queue: str) -> int:
        """Declare ``queue`` (durable, as Zulip does); return its ready message count."""
        return int(self.channel.queue_declare(queue=queue, durable=True).method.message_count)

    def consumers(self, queue: str) -> int:
        return int(self.channel.queue_declare(queue=queue, durable=True).method.consumer_count)

    def purge(self, queue: str) -> None:
        self.declare(queue)
        self.channel.queue_purge(queue=queue)

    def fill(self, queue: str, count: int) -> None:
        """Purge ``queue`` and publish ``count`` persistent events, then wait until all are ready."""
        self.purge(queue)
        props = pika.BasicProperties(delivery_mode=2, content_type="application/json")
        channel = self.channel
        for i in range(count):
            channel.basic_publish("", queue, json.dumps(event(i)).encode(), props)
        deadline = time.monotonic() + 60
        while self.declare(queue) < count:
            if time.monotonic() > deadline:
                raise RuntimeError(f"{queue}: only {self.declare(queue)} of {count} events arrived")
            time.sleep(0.05)

    def close(self) -> None:
        connection, self._connection = self._connection, None
        if connection is not None and connection.is_open:
            try:
                connection.close()
            except pika.exceptions.AMQPError:
                pass  # the broker went away meanwhile: nothing to close


@contextmanager
def broker() -> Iterator[Broker]:
    b = Broker()
    try:
        yield b
    finally:
        b.close()


def memory(pid: int) -> dict[str, float]:
    """VmRSS and VmHWM (peak RSS) of ``pid``, in MB."""
    fields = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                fields[key] = int(value.split()[0]) / 1024
    return {"rss_mb": round(fields["VmRSS"], 1), "peak_mb": round(fields["VmHWM"], 1)}


def wait_for(
    path: Path, child: subprocess.Popen[Any] | None, timeout: float, what: str, details: Callable[[], str] = str
) -> dict[str, Any]:
    """Wait for a JSON result file; fail at once if ``child`` died (with ``details()`` in the error)."""
    deadline = time.monotonic() + timeout
    while not path.exists():
        if child is not None and child.poll() is not None:
            raise RuntimeError(f"{what}: the consumer exited with {child.returncode} before finishing\n{details()}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what}: no result within {timeout:.0f}s\n{details()}")
        time.sleep(0.02)
    return dict(json.loads(path.read_text()))


def write_result(path: str | Path, result: dict[str, Any]) -> None:
    """Write a result file atomically (the parent polls for it)."""
    tmp = f"{path}.tmp"
    with open(tmp, "w") as f:
        json.dump(result, f)
    os.replace(tmp, path)


def stop(child: subprocess.Popen[Any], timeout: float = 20) -> None:
    """SIGTERM, then SIGKILL if it does not exit in time."""
    if child.poll() is None:
        child.send_signal(signal.SIGTERM)
        try:
            child.wait(timeout)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait(10)


@dataclass
class Twistd:
    """A ``twistd -n zqworkers`` child, with bench/ on its path and the bench workers loaded."""

    process: subprocess.Popen[bytes]
    workdir: Path
    log_path: Path

    @property
    def pid(self) -> int:
        return self.process.pid

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def check_alive(self) -> None:
        if self.process.poll() is not None:
            raise RuntimeError(f"twistd exited with {self.process.returncode}:\n{self.log_tail()}")


@contextmanager
def twistd(args: Sequence[str], **env: str) -> Iterator[Twistd]:
    """Run ``twistd -n zqworkers ARGS`` in a fresh directory; stopped (SIGTERM) on exit."""
    workdir = Path(tempfile.mkdtemp(prefix="zqbench-"))
    config = workdir / "zqtwisted.toml"
    config.write_text(
        "[workers]\n"
        'consumer_modules = ["bench_workers"]\n'
        'http = "tcp:0:interface=127.0.0.1"\n'
        "drain_timeout = 5\n"
        "[paths]\n"
        f'stats_dir = "{workdir}"\nerror_dir = "{workdir}"\n'
        f'test_queue_file = "{workdir}/test_queue.jsonl"\n'
    )
    log_path = workdir / "twistd.log"
    log = open(log_path, "wb")
    command = [sys.executable, "-c", "from twisted.scripts.twistd import run; run()", "-n", "--pidfile="]
    process = subprocess.Popen(
        [*command, "zqworkers", *args],
        env=child_env(ZQ_CONFIG=str(config), ZQ_BENCH_OUT=str(workdir), **env),
        cwd=workdir,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    child = Twistd(process, workdir, log_path)
    try:
        yield child
    finally:
        stop(process)
        log.close()
        shutil.rmtree(workdir, ignore_errors=True)


def wait_consuming(b: Broker, queues: Sequence[str], child: Twistd, timeout: float = 60) -> None:
    """Wait until every queue in ``queues`` has a consumer (twistd has started)."""
    deadline = time.monotonic() + timeout
    pending = list(queues)
    while pending:
        child.check_alive()
        if time.monotonic() > deadline:
            raise RuntimeError(
                f"twistd did not consume {', '.join(pending)} within {timeout:.0f}s:\n{child.log_tail()}"
            )
        if b.consumers(pending[0]):
            pending.pop(0)
        else:
            time.sleep(0.05)


def percentile(values: Sequence[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * p))]
