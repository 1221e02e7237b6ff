"""The catalog of consumers: the shipped declarations, plus users' ``@assign_queue`` ones.

This is the root layer: it is the one module that imports the shipped consumer
modules (each exports ``SPECS``).  Zulip's lookups (:func:`get_worker`,
:func:`get_active_worker_queues`) are answered here, over both lists; a queue
declared twice is a :class:`~zqtwisted.errors.WorkerDeclarationError`.
"""

from __future__ import annotations

import importlib
from collections.abc import Sequence
from typing import Any

from zqtwisted.consumers import email_senders, missedmessage_emails, outgoing_webhooks, push_notifications, test_queues
from zqtwisted.errors import WorkerDeclarationError
from zqtwisted.runtime.consumer import ConsumerSpec, QueueWorker, WorkerContext
from zqtwisted.runtime.worker import describe, register_spec, registered_specs

SHIPPED: tuple[ConsumerSpec[Any], ...] = (
    *test_queues.SPECS,
    *email_senders.SPECS,
    *missedmessage_emails.SPECS,
    *outgoing_webhooks.SPECS,
    *push_notifications.SPECS,
)


def all_specs() -> dict[str, ConsumerSpec[Any]]:
    """Every enabled declaration by queue: the shipped ones, then the registered ones."""
    specs: dict[str, ConsumerSpec[Any]] = {}
    for spec in (*SHIPPED, *registered_specs()):
        if not spec.enabled:
            continue
        existing = specs.get(spec.queue)
        if existing is not None and existing.worker is not spec.worker:
            raise WorkerDeclarationError(f"queue {spec.queue!r} is already assigned to {describe(existing)}")
        specs[spec.queue] = spec
    return specs


def get_spec(queue_name: str) -> ConsumerSpec[Any]:
    """The declaration of ``queue_name``; an unknown name lists the known queues."""
    specs = all_specs()
    try:
        return specs[queue_name]
    except KeyError:
        known = ", ".join(sorted(specs))
        raise WorkerDeclarationError(f"unknown queue {queue_name!r} (known queues: {known})") from None


def get_worker_class(queue_name: str) -> type[QueueWorker]:
    """The worker class that serves ``queue_name``."""
    return get_spec(queue_name).worker


def get_worker(queue_name: str, context: WorkerContext, resources: Any = None, settings: Any = None) -> QueueWorker:
    """An instance of the worker of ``queue_name`` (Zulip's API), built by its declaration.

    ``settings`` defaults to the section's defaults (or, given ``resources``, the
    configured section); a worker declared with ``@assign_queue`` needs neither.
    """
    spec = get_spec(queue_name)
    if settings is None and spec.settings is not None:
        if resources is not None and spec.section is not None:
            settings = resources.config.section(spec.section, spec.settings)
        else:
            settings = spec.settings()
    return spec.build(context, settings, resources)


def get_active_worker_queues(only_test_queues: bool = False) -> list[str]:
    """The declared queues: the real ones, or only the test ones (Zulip's API)."""
    return sorted(name for name, spec in all_specs().items() if spec.is_test_queue == only_test_queues)


def known_queues() -> list[str]:
    """Every declared queue, real ones first."""
    return get_active_worker_queues() + get_active_worker_queues(only_test_queues=True)


def is_test_queue(queue_name: str) -> bool:
    spec = all_specs().get(queue_name)
    return spec is not None and spec.is_test_queue


def import_consumer_modules(modules: Sequence[str]) -> None:
    """Import ``[workers] consumer_modules``: their ``@assign_queue`` workers, and any ``SPECS``, register."""
    for name in modules:
        try:
            module = importlib.import_module(name)
        except ImportError as e:
            raise WorkerDeclarationError(f"[workers] consumer_modules: cannot import {name!r}: {e}") from None
        for spec in getattr(module, "SPECS", ()):
            register_spec(spec)
