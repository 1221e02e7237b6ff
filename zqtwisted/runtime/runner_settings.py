"""How one queue's runner behaves: the worker class's defaults combined with ``[queues.NAME]``."""

from __future__ import annotations

from dataclasses import dataclass, field

from zqtwisted.config import QueueSettings
from zqtwisted.runtime.consumer import QueueWorker
from zqtwisted.runtime.retry import BackoffPolicy


@dataclass(frozen=True)
class RunnerSettings:
    prefetch: int = 100
    concurrency: int = 1
    timeout: float | None = 30.0
    max_retries: int = 3
    batch_size: int = 1
    sleep_delay: float = 1.0
    backoff: BackoffPolicy = field(default_factory=BackoffPolicy)
    retry_unexpected: bool = False
    max_body_bytes: int = 1024 * 1024
    publish_timeout: float = 30.0

    @classmethod
    def resolve(cls, worker: type[QueueWorker], qs: QueueSettings, publish_timeout: float = 30.0) -> RunnerSettings:
        """Combine the worker class's defaults with the queue's configuration."""
        batched = worker.batched
        batch_size = (qs.batch_size or worker.batch_size) if batched else 1  # type: ignore[attr-defined]
        sleep_delay = qs.sleep_delay if qs.sleep_delay is not None else getattr(worker, "sleep_delay", 1.0)
        prefetch = qs.prefetch or worker.prefetch
        if batched:
            prefetch = max(prefetch, batch_size)
        limit = qs.max_consume_seconds
        timeout = worker.max_consume_seconds if limit is None else limit.seconds
        return cls(
            prefetch=prefetch,
            concurrency=qs.concurrency or worker.concurrency,
            timeout=timeout,
            max_retries=qs.max_retries if qs.max_retries is not None else worker.max_retries,
            batch_size=batch_size,
            sleep_delay=sleep_delay,
            backoff=BackoffPolicy(qs.retry_base, qs.retry_cap),
            retry_unexpected=qs.retry_unexpected,
            max_body_bytes=qs.max_body_bytes,
            publish_timeout=publish_timeout,
        )
