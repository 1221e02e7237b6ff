"""Shared test scaffolding: a runner on the in-memory broker and a Clock."""

from __future__ import annotations

import json
import os
import socket
import tempfile
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Generic, NoReturn, TypeVar

from twisted.internet.task import Clock
from twisted.trial import unittest

from zqtwisted.config import Config, PathSettings
from zqtwisted.runtime.consumer import QueueWorker, WorkerContext
from zqtwisted.runtime.deadletter import DeadLetterer
from zqtwisted.runtime.publisher import Publisher
from zqtwisted.runtime.runner import QueueRunner, RunnerSettings
from zqtwisted.testing import MemoryBroker

W = TypeVar("W", bound=QueueWorker)


@dataclass
class RecordingObserver:
    calls: list[tuple[str, tuple[Any, ...]]] = field(default_factory=list)

    def __getattr__(self, name: str) -> Callable[..., None]:
        if name.startswith("_"):
            raise AttributeError(name)
        return lambda *args: self.calls.append((name, args))

    def names(self) -> list[str]:
        return [name for name, _ in self.calls]


class Harness(Generic[W]):
    """A QueueRunner for ``worker_cls`` on a MemoryBroker driven by a Clock."""

    def __init__(
        self,
        worker_cls: type[W],
        queue: str = "q",
        rand: float = 1.0,
        build: Callable[[WorkerContext], W] | None = None,
        **settings: Any,
    ) -> None:
        """``build`` makes the worker from its context (with its collaborators); default: ``worker_cls(context)``."""
        self.clock = Clock()
        self.broker = MemoryBroker(self.clock)
        # Removed when the harness is collected, at exit at the latest (a Harness has no test to addCleanup on).
        self._tmp = tempfile.TemporaryDirectory(prefix="zqtest-harness-", ignore_cleanup_errors=True)
        self.tmp = self._tmp.name
        self.config = Config(paths=PathSettings(stats_dir=self.tmp, error_dir=self.tmp, test_queue_file=""))
        self.publisher = Publisher(self.broker, timeout=5)
        context = WorkerContext(queue=queue, clock=self.clock, publisher=self.publisher)
        self.worker = build(context) if build is not None else worker_cls(context)
        defaults = RunnerSettings.resolve(worker_cls, self.config.queue(queue))
        self.settings = RunnerSettings(**{**vars(defaults), **settings})
        self.observer = RecordingObserver()
        self.deadletters = DeadLetterer(self.broker, self.tmp, self.clock, 5)
        self.runner = QueueRunner(
            self.worker, self.settings, self.broker, self.deadletters, self.clock, self.observer, rand=lambda: rand
        )
        self.queue = queue
        self.broker.add_listener(self)
        self.broker.connect()
        self.broker.flush()

    def session_started(self, session: Any) -> Any:
        return self.runner.attach(session)

    def session_lost(self, session: Any) -> None:
        pass

    def publish(self, *events: Any) -> None:
        session = self.broker.current_session()
        assert session is not None
        for event in events:
            body = event if isinstance(event, bytes) else json.dumps(event).encode()
            session.publish(self.queue, body)
        self.broker.flush()

    def advance(self, seconds: float) -> None:
        self.clock.advance(seconds)
        self.broker.flush()

    def waiting(self) -> list[dict[str, Any]]:
        return [json.loads(b) for b in self.broker.messages(self.queue)]

    def dead(self) -> list[tuple[bytes, dict[str, Any]]]:
        return [(b, h) for q, b, h in self.broker.published if q == f"{self.queue}.failed"]

    def error_lines(self) -> list[str]:
        path = os.path.join(self.tmp, f"{self.queue}.errors")
        if not os.path.exists(path):
            return []
        with open(path) as f:
            return f.read().splitlines()


def unique_queue(prefix: str = "zqtest") -> str:
    return f"{prefix}_{uuid.uuid4().hex[:10]}"


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def rabbitmq_available(host: str = "127.0.0.1", port: int = 5672) -> bool:
    try:
        with socket.create_connection((host, port), timeout=2):
            return True
    except OSError:
        return False


def missing_requirement(test: unittest.TestCase, message: str) -> NoReturn:
    """What an integration test needs is not here: fail under CI, skip (saying so) on a developer's machine."""
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        test.fail(message)
    raise unittest.SkipTest(message + "; skipped on a developer machine, CI fails instead")


def require_rabbitmq(test: unittest.TestCase) -> None:
    """Integration tests need RabbitMQ."""
    if not rabbitmq_available():
        missing_requirement(
            test, "RabbitMQ is not answering on 127.0.0.1:5672 (start it with: rabbitmq-server -detached)"
        )


@contextmanager
def environ(**values: str) -> Iterator[None]:
    old = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
