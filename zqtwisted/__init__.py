"""zqtwisted: Zulip's queue workers on one Twisted reactor."""

from zqtwisted.errors import (
    InterruptConsumeError,
    MalformedEventError,
    PermanentError,
    TransientError,
    WorkerDeclarationError,
)
from zqtwisted.worker import (
    BatchFailures,
    LoopQueueProcessingWorker,
    QueueProcessingWorker,
    WorkerContext,
    assign_queue,
    get_active_worker_queues,
    get_worker,
)

__version__ = "0.1.0"

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
