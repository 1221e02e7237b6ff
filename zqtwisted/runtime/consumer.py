"""Consumers declared as values: what the composition root needs to know of a queue's consumer.

A :class:`ConsumerSpec` names the queue, whether it is sharded, its test-queue
status, the worker class (whose class attributes give the runner's defaults:
prefetch, concurrency, batches, time limit, retries), the configuration section
its settings come from, and ``build``: a function of the worker's
:class:`WorkerContext`, its parsed settings and the root's shared resources that
returns the worker with its collaborators.

The runtime never imports a consumer: the root (:mod:`zqtwisted.tap`) holds the
list of shipped specs, plus those of users' ``@assign_queue`` workers
(:mod:`zqtwisted.runtime.worker`).  ``build`` takes the resources as ``Any`` so
that this module does not depend on the root's :class:`zqtwisted.resources.Resources`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Generic, Protocol, TypeVar

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime

if TYPE_CHECKING:
    from zqtwisted.runtime.worker import QueueWorker

S = TypeVar("S")


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

    @property
    def batched(self) -> bool:
        return self.worker.batched
