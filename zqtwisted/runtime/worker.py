"""Worker classes and Zulip's ``@assign_queue``, for users' own consumers.

The base classes live in :mod:`zqtwisted.runtime.consumer`; they are re-exported
here under Zulip's names.  ``@assign_queue`` turns a class into a
:class:`~zqtwisted.runtime.consumer.ConsumerSpec` (built with ``cls(context)``) and
records it; the composition root looks queues up over the shipped specs and these
(:mod:`zqtwisted.catalog`).  This module imports no consumer::

    @assign_queue("thumbnails")
    class ThumbnailWorker(QueueProcessingWorker):
        async def consume(self, event):
            ...
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from zqtwisted.errors import WorkerDeclarationError
from zqtwisted.runtime.consumer import (
    BatchFailures,
    ConsumerSpec,
    Event,
    LoopQueueProcessingWorker,
    QueueProcessingWorker,
    QueueWorker,
    WorkerContext,
)

W = TypeVar("W", bound="type[QueueWorker]")

_registered: dict[str, ConsumerSpec[Any]] = {}


def spec_for_class(cls: type[QueueWorker], queue_name: str, is_test_queue: bool = False) -> ConsumerSpec[Any]:
    """The declaration of a worker class whose constructor takes only its context."""

    def build(context: WorkerContext, settings: Any, resources: Any) -> QueueWorker:
        return cls(context)

    return ConsumerSpec(queue=queue_name, worker=cls, build=build, sharded=cls.sharded, is_test_queue=is_test_queue)


def assign_queue(queue_name: str, enabled: bool = True, is_test_queue: bool = False) -> Callable[[W], W]:
    """Class decorator declaring a worker for ``queue_name`` (Zulip's API)."""

    def decorate(cls: W) -> W:
        if not queue_name or not isinstance(queue_name, str):
            raise WorkerDeclarationError(f"{cls.__name__}: queue name must be a non-empty string")
        if not issubclass(cls, (QueueProcessingWorker, LoopQueueProcessingWorker)):
            raise WorkerDeclarationError(
                f"{cls.__name__}: must subclass QueueProcessingWorker or LoopQueueProcessingWorker"
            )
        cls.queue_name = queue_name
        if enabled:
            register_spec(spec_for_class(cls, queue_name, is_test_queue))
        return cls

    return decorate


def register_spec(spec: ConsumerSpec[Any]) -> None:
    """Record a user's declaration; a queue has one consumer."""
    existing = _registered.get(spec.queue)
    if existing is not None and existing.worker is not spec.worker:
        raise WorkerDeclarationError(f"queue {spec.queue!r} is already assigned to {describe(existing)}")
    _registered[spec.queue] = spec


def unregister_worker(queue_name: str) -> None:
    """Remove a registration (for tests that declare throwaway workers)."""
    _registered.pop(queue_name, None)


def registered_specs() -> tuple[ConsumerSpec[Any], ...]:
    """The declarations made with ``@assign_queue`` so far."""
    return tuple(_registered.values())


def describe(spec: ConsumerSpec[Any]) -> str:
    """``module.Class`` of a spec's worker, for error messages."""
    return f"{spec.worker.__module__}.{spec.worker.__name__}"


__all__ = [
    "BatchFailures",
    "ConsumerSpec",
    "Event",
    "LoopQueueProcessingWorker",
    "QueueProcessingWorker",
    "QueueWorker",
    "WorkerContext",
    "assign_queue",
    "register_spec",
    "registered_specs",
    "spec_for_class",
    "unregister_worker",
]
