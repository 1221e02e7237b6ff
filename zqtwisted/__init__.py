"""zqtwisted: Zulip's queue workers on one Twisted reactor."""

from zqtwisted._version import __version__
from zqtwisted.errors import (
    InterruptConsumeError,
    MalformedEventError,
    PermanentError,
    TransientError,
    WorkerDeclarationError,
)
from zqtwisted.runtime.worker import (
    BatchFailures,
    LoopQueueProcessingWorker,
    QueueProcessingWorker,
    WorkerContext,
    assign_queue,
    get_active_worker_queues,
    get_worker,
)

__all__ = [
    "BatchFailures",
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
