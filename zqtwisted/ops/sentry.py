"""Sentry reporting, as Zulip's workers do it, enabled by a DSN in ``[sentry]``.

- every consume is a transaction ``consume {queue}`` tagged ``queue_worker`` and
  ``worker_num`` (:class:`SentryObserver`, when tracing is sampled);
- an event that ends in failure is captured with the real traceback of its Twisted
  ``Failure`` and the context ``events = {data, queue_name}`` (secrets masked, size
  capped) by :func:`capture_failure`; timeouts are fingerprinted
  ``["worker-timeout", queue]`` so that they group per queue.

Nothing is sent when no DSN is configured: :func:`init_sentry` then returns no
observer, and the composition root adds none; sentry-sdk is not even imported then (it
is imported by :func:`init_sentry` once a DSN is set: some 4 MB of memory, and 90 modules,
that a process without Sentry does without).  The settings (``[sentry]``) live in
:mod:`zqtwisted.ops.settings`; this module holds no global state of its own.  Every string of an outgoing event goes
through the log masker (:func:`zqtwisted.ops.logs.mask_text`), so registered secrets and
URL passwords never leave the process.
"""

from __future__ import annotations

import json
import logging
import sys
from collections import deque
from collections.abc import Sequence
from typing import Any
from urllib.parse import urlsplit

from twisted.python.failure import Failure

from zqtwisted.ops.logs import mask_text, register_secret
from zqtwisted.ops.settings import DEFAULT_MAX_EVENT_CONTEXT_BYTES, SentrySettings
from zqtwisted.runtime.observer import NullObserver
from zqtwisted.runtime.redact import redact_event

__all__ = [
    "SentryObserver",
    "SentrySettings",
    "capture_failure",
    "events_context",
    "exc_info",
    "init_sentry",
    "scrub_event",
]


def init_sentry(
    settings: SentrySettings, worker_num: int | None = None, release: str | None = None, transport: Any = None
) -> SentryObserver | None:
    """Initialise sentry-sdk from ``[sentry]``: the observer that reports to it, or None without a DSN.

    ``transport`` is for tests (a ``sentry_sdk.transport.Transport``).
    """
    dsn = settings.resolve_dsn()
    if not dsn:
        return None
    register_secret(dsn, urlsplit(dsn).username)
    import sentry_sdk
    from sentry_sdk.integrations.logging import LoggingIntegration

    if release is None:
        from zqtwisted._version import __version__

        release = f"zqtwisted@{__version__}"
    sentry_sdk.init(
        dsn=dsn,
        environment=settings.environment,
        release=release,
        traces_sample_rate=settings.traces_sample_rate,
        transport=transport,
        include_local_variables=False,
        # Log records become breadcrumbs, not events: errors are captured explicitly.
        integrations=[LoggingIntegration(level=logging.INFO, event_level=None)],
        before_send=scrub_event,
        before_send_transaction=scrub_event,
    )
    return SentryObserver(worker_num, settings.max_event_context_bytes)


def scrub_event(event: Any, hint: Any = None) -> Any:
    """Mask registered secrets and URL passwords in every string of an outgoing event."""
    if isinstance(event, dict):
        return {k: scrub_event(v) for k, v in event.items()}
    if isinstance(event, list):
        return [scrub_event(v) for v in event]
    if isinstance(event, str):
        return mask_text(event)
    return event


def events_context(
    queue: str, events: Sequence[Any], max_bytes: int = DEFAULT_MAX_EVENT_CONTEXT_BYTES
) -> dict[str, Any]:
    """Zulip's context ``{data, queue_name}``, secrets masked, at most ``max_bytes`` of events."""
    limit = max_bytes
    data: list[Any] = []
    used = 2  # "[]"
    truncated = False
    for event in events:
        clean = redact_event(event)
        text = json.dumps(clean, default=repr)
        size = len(text) + (2 if data else 0)
        if used + size > limit:
            truncated = True
            if not data:
                data.append(text[: max(0, limit - 2)])
            break
        data.append(clean)
        used += size
    context: dict[str, Any] = {"data": data, "queue_name": queue}
    if truncated:
        context["truncated"] = True
        context["event_count"] = len(events)
    return context


def exc_info(failure: Failure) -> tuple[Any, BaseException, Any]:
    """(type, value, traceback) of a Failure, with a traceback even after cleanFailure()."""
    value = failure.value
    assert isinstance(value, BaseException)
    return failure.type, value, failure.getTracebackObject()


def capture_failure(
    queue: str,
    worker_num: int | None,
    events: Sequence[Any],
    failure: Failure,
    timeout: bool = False,
    max_bytes: int = DEFAULT_MAX_EVENT_CONTEXT_BYTES,
) -> str | None:
    """Report a consume that ended in failure; the Sentry event id, or None when disabled."""
    sentry_sdk = sys.modules.get("sentry_sdk")  # imported by init_sentry, if ever
    if sentry_sdk is None or not sentry_sdk.is_initialized():
        return None
    with sentry_sdk.new_scope() as scope:
        scope.set_tag("queue_worker", queue)
        if worker_num is not None:
            scope.set_tag("worker_num", str(worker_num))
        scope.set_context("events", events_context(queue, events, max_bytes))
        if timeout:
            scope.fingerprint = ["worker-timeout", queue]
        event_id: str | None = sentry_sdk.capture_exception(exc_info(failure))
        return event_id


class SentryObserver(NullObserver):
    """A transaction ``consume {queue}`` per consume (sampled by ``traces_sample_rate``)."""

    def __init__(
        self, worker_num: int | None = None, max_event_context_bytes: int = DEFAULT_MAX_EVENT_CONTEXT_BYTES
    ) -> None:
        self.worker_num = worker_num
        self.max_event_context_bytes = max_event_context_bytes
        self._open: dict[str, deque[Any]] = {}
        # Decided once (the service is built after init_sentry()): with tracing off, an
        # unsampled transaction per consume would cost ~30 us and send nothing.
        import sentry_sdk

        client = sentry_sdk.get_client()
        sampled = client.options.get("traces_sample_rate") or client.options.get("traces_sampler")
        self._tracing = client.is_active() and bool(sampled)

    def consume_started(self, queue: str, events: int) -> None:
        if not self._tracing:
            return
        import sentry_sdk

        transaction = sentry_sdk.start_transaction(
            op="task", name=f"consume {queue}", custom_sampling_context={"queue": queue}
        )
        transaction.set_tag("queue_worker", queue)
        if self.worker_num is not None:
            transaction.set_tag("worker_num", str(self.worker_num))
        transaction.set_data("events", events)
        self._open.setdefault(queue, deque()).append(transaction)

    def gave_up(self, queue: str, events: Sequence[Any], failure: Failure, reason: str) -> None:
        if reason != "malformed":
            capture_failure(queue, self.worker_num, events, failure, reason == "timeout", self.max_event_context_bytes)

    def consumed(self, queue: str, events: int, seconds: float) -> None:
        waiting = self._open.get(queue)
        if not waiting:
            return
        transaction = waiting.popleft()
        transaction.set_data("succeeded", events)
        transaction.finish()
