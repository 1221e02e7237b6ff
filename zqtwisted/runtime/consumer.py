"""What a consumer is: its worker class, the context it runs in, and its declaration as a value.

A worker declares *what* to do with an event; the runtime (:mod:`zqtwisted.runtime.runner`)
decides when, acks, retries and dead-letters.  A consumer returns a plain value, a
Deferred or a coroutine, and never touches a channel.

A :class:`ConsumerSpec` names the queue, whether it is sharded, its test-queue
status, the worker class (whose class attributes give the runner's defaults:
prefetch, concurrency, batches, time limit, retries), the configuration section
its settings come from, and ``build``: a function of the worker's
:class:`WorkerContext`, its parsed settings and the root's shared resources that
returns the worker with its collaborators; ``requires`` says what it needs from
the configuration (the consumers of Zulip mode need ``[zulip] database``).

The runtime never imports a consumer: the root holds the list of shipped specs
(:mod:`zqtwisted.catalog`), plus those of users' ``@assign_queue`` workers
(:mod:`zqtwisted.runtime.worker`).  ``build`` takes the resources as ``Any`` so
that this module does not depend on the root's :class:`zqtwisted.resources.Resources`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Generic, Protocol, TypeVar

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure

from zqtwisted.config import Config

S = TypeVar("S")
Event = dict[str, Any]


class JsonPublisher(Protocol):
    """What a worker may publish with (:class:`zqtwisted.runtime.publisher.Publisher`)."""

    def publish_json(
        self, queue: str, event: Mapping[str, Any], headers: Mapping[str, Any] | None = None
    ) -> Deferred[None]: ...


@dataclass(frozen=True)
class WorkerContext:
    """Where a worker runs: its queue (with the shard suffix), its shard number, a clock and a publisher.

    Collaborators that are not needed by every worker (HTTP clients, a mailer, a
    store, settings) are passed to the worker's constructor by its spec's ``build``.
    """

    queue: str
    clock: IReactorTime
    publisher: JsonPublisher
    worker_num: int | None = None


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


@dataclass(frozen=True)
class ConsumerSpec(Generic[S]):
    """The declaration of one queue's consumer."""

    queue: str
    worker: type[QueueWorker]
    build: Callable[[WorkerContext, S, Any], QueueWorker]
    # The TOML section ``[section]`` parsed into ``settings`` (a frozen dataclass), or none.
    section: str | None = None
    settings: type[S] | None = None
    # A sharded queue consumes ``{queue}_shard{N}`` under --worker-num N.
    sharded: bool = False
    is_test_queue: bool = False
    # Whether the queue is served at all (Zulip's ``enabled`` flag of assign_queue).
    enabled: bool = True
    # What the consumer needs from the configuration: given the parsed Config, why it
    # cannot run under it ("" or None: it can).  --all leaves such a queue out;
    # --queue NAME stops start-up with that reason.
    requires: Callable[[Config], str | None] | None = None

    @property
    def batched(self) -> bool:
        return self.worker.batched

    def unavailable(self, config: Config) -> str | None:
        """Why this consumer cannot run under ``config``, or None."""
        return (self.requires(config) or None) if self.requires is not None else None
