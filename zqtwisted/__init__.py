"""zqtwisted: Zulip's queue workers on one Twisted reactor.

Importing the package imports no consumer: :func:`get_worker` and
:func:`get_active_worker_queues` load the catalog of consumers on first use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from zqtwisted._version import __version__
from zqtwisted.errors import (
    InterruptConsumeError,
    MalformedEventError,
    PermanentError,
    TransientError,
    WorkerDeclarationError,
)
from zqtwisted.runtime.consumer import ConsumerSpec
from zqtwisted.runtime.worker import (
    BatchFailures,
    LoopQueueProcessingWorker,
    QueueProcessingWorker,
    WorkerContext,
    assign_queue,
)

if TYPE_CHECKING:
    from zqtwisted.catalog import get_active_worker_queues, get_worker

_CATALOG_NAMES = ("get_active_worker_queues", "get_worker")


def __getattr__(name: str) -> Any:
    """``get_worker`` and ``get_active_worker_queues``, from the catalog, imported when first asked for."""
    if name in _CATALOG_NAMES:
        from zqtwisted import catalog

        return getattr(catalog, name)
    raise AttributeError(f"module 'zqtwisted' has no attribute {name!r}")


__all__ = [
    "BatchFailures",
    "ConsumerSpec",
    "InterruptConsumeError",
    "LoopQueueProcessingWorker",
    "MalformedEventError",
    "PermanentError",
    "QueueProcessingWorker",
    "TransientError",
    "WorkerContext",
    "WorkerDeclarationError",
    "__version__",
    "assign_queue",
    "get_active_worker_queues",
    "get_worker",
]
