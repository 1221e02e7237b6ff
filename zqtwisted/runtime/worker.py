"""Worker classes and their registry, with Zulip's names and semantics.

A worker declares *what* to do with an event; the runtime (:mod:`zqtwisted.runtime.runner`)
decides when, acks, retries and dead-letters.  A consumer returns a plain value, a
Deferred or a coroutine, and never touches a channel::

    @assign_queue("thumbnails")
    class ThumbnailWorker(QueueProcessingWorker):
        async def consume(self, event):
            await self.context.http.get(event["url"])
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

from twisted.internet.defer import Deferred
from twisted.logger import Logger
from twisted.python.failure import Failure

from zqtwisted.config import Config
from zqtwisted.errors import WorkerDeclarationError

if TYPE_CHECKING:
    from zqtwisted.runtime.publisher import Publisher
    from zqtwisted.runtime.reactor import ReactorLike

Event = dict[str, Any]
W = TypeVar("W", bound="type[QueueWorker]")

_worker_classes: dict[str, type[QueueWorker]] = {}
_test_queues: set[str] = set()


@dataclass(frozen=True)
class WorkerContext:
    """What a worker may use: the reactor, the configuration, the publisher."""

    reactor: ReactorLike
    config: Config
    publisher: Publisher
    queue: str
    worker_num: int | None = None
    extras: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class BatchFailures:
    """Returned by ``consume_batch`` when some events failed: index -> exception.

    The events not named succeeded; each named one is retried or dead-lettered on
    its own, so one bad event never takes the others down.
    """

    failures: Mapping[int, BaseException]


class QueueWorker:
    """Common base of single-event and batch workers."""

    queue_name: ClassVar[str] = ""
    # Zulip's defaults; each can be overridden per queue in [queues.NAME].
    prefetch: ClassVar[int] = 100
    concurrency: ClassVar[int] = 1
    max_consume_seconds: ClassVar[float | None] = 30.0
    max_retries: ClassVar[int] = 3
    # A sharded queue consumes ``{queue_name}_shard{N}`` under --worker-num N.
    sharded: ClassVar[bool] = False
    batched: ClassVar[bool] = False

    log = Logger()

    def __init__(self, context: WorkerContext) -> None:
        self.context = context

    @property
    def queue(self) -> str:
        """The queue this instance consumes (with its shard suffix, if any)."""
        return self.context.queue

    def validate(self, event: Event) -> Event:
        """Check an event's fields; raise MalformedEventError to dead-letter it."""
        return event

    def start(self) -> Deferred[None] | None:
        """Called once before consuming starts (open pools, load state)."""
        return None

    def stop(self) -> Deferred[None] | None:
        """Called once after consuming has stopped and in-flight work drained."""
        return None

    def on_give_up(self, event: Event, failure: Failure, reason: str) -> Any:
        """The queue's failure handler: runs once when an event ends in failure.

        Zulip's ``failure_processor``; the event is dead-lettered afterwards
        whatever this does.
        """
        return None


class QueueProcessingWorker(QueueWorker):
    """A worker that handles one event at a time (Zulip's ``consume``)."""

    def consume(self, event: Event) -> Any:
        raise NotImplementedError


class LoopQueueProcessingWorker(QueueWorker):
    """A worker that handles events in batches (Zulip's ``consume_batch``)."""

    batched: ClassVar[bool] = True
    batch_size: ClassVar[int] = 100
    sleep_delay: ClassVar[float] = 1.0

    def consume_batch(self, events: Sequence[Event]) -> Any:
        """Handle a batch; return None, or BatchFailures naming the failed events."""
        raise NotImplementedError


def assign_queue(queue_name: str, enabled: bool = True, is_test_queue: bool = False) -> Callable[[W], W]:
    """Class decorator registering a worker for ``queue_name`` (Zulip's API)."""

    def decorate(cls: W) -> W:
        if not queue_name or not isinstance(queue_name, str):
            raise WorkerDeclarationError(f"{cls.__name__}: queue name must be a non-empty string")
        if not issubclass(cls, (QueueProcessingWorker, LoopQueueProcessingWorker)):
            raise WorkerDeclarationError(
                f"{cls.__name__}: must subclass QueueProcessingWorker or LoopQueueProcessingWorker"
            )
        cls.queue_name = queue_name
        if enabled:
            register_worker(queue_name, cls, is_test_queue)
        return cls

    return decorate


def register_worker(queue_name: str, cls: type[QueueWorker], is_test_queue: bool = False) -> None:
    existing = _worker_classes.get(queue_name)
    if existing is not None and existing is not cls:
        raise WorkerDeclarationError(
            f"queue {queue_name!r} is already assigned to {existing.__module__}.{existing.__name__}"
        )
    _worker_classes[queue_name] = cls
    if is_test_queue:
        _test_queues.add(queue_name)


def unregister_worker(queue_name: str) -> None:
    """Remove a registration (for tests that declare throwaway workers)."""
    _worker_classes.pop(queue_name, None)
    _test_queues.discard(queue_name)


def get_worker_class(queue_name: str) -> type[QueueWorker]:
    load_builtin_consumers()
    try:
        return _worker_classes[queue_name]
    except KeyError:
        known = ", ".join(sorted(_worker_classes))
        raise WorkerDeclarationError(f"unknown queue {queue_name!r} (known queues: {known})") from None


def get_worker(queue_name: str, context: WorkerContext) -> QueueWorker:
    """An instance of the worker registered for ``queue_name``."""
    return get_worker_class(queue_name)(context)


def get_active_worker_queues(only_test_queues: bool = False) -> list[str]:
    """The registered queues: the real ones, or only the test ones (Zulip's API)."""
    load_builtin_consumers()
    return sorted(name for name in _worker_classes if (name in _test_queues) == only_test_queues)


def is_test_queue(queue_name: str) -> bool:
    return queue_name in _test_queues


def import_consumer_modules(modules: Sequence[str]) -> None:
    """Import the configured modules so that their ``@assign_queue`` workers register."""
    for name in modules:
        try:
            importlib.import_module(name)
        except ImportError as e:
            raise WorkerDeclarationError(f"[workers] consumer_modules: cannot import {name!r}: {e}") from None


def load_builtin_consumers() -> None:
    """Import the shipped consumers so that their @assign_queue runs."""
    import zqtwisted.consumers  # noqa: F401
