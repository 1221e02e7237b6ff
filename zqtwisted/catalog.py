"""The catalog of consumers: the shipped declarations, plus users' ``@assign_queue`` ones.

This is the root layer: it is the one module that imports the shipped consumer
modules (each exports ``SPECS``), and only those of the queues asked for
(:data:`SHIPPED_MODULES` names the queues of each without importing it): a process
that runs one queue does not load the clients of the others (Jinja2, treq, the SQL
stores, Zulip mode's queries), some 4 MB.  Zulip's lookups (:func:`get_worker`,
:func:`get_active_worker_queues`) are answered here, over both lists; a queue
declared twice is a :class:`~zqtwisted.errors.WorkerDeclarationError`.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterable, Mapping, Sequence
from types import MappingProxyType
from typing import Any

from zqtwisted.errors import WorkerDeclarationError
from zqtwisted.runtime.consumer import ConsumerSpec, QueueWorker, WorkerContext
from zqtwisted.runtime.worker import describe, register_spec, registered_specs

# Each shipped consumer module, and the queues its SPECS declare (checked by tests/unit/test_catalog.py).
SHIPPED_MODULES: Mapping[str, tuple[str, ...]] = MappingProxyType(
    {
        "zqtwisted.consumers.test_queues": ("test", "noop", "noop_batch"),
        "zqtwisted.consumers.email_senders": ("email_senders", "deferred_email_senders"),
        "zqtwisted.consumers.missedmessage_emails": ("missedmessage_emails",),
        "zqtwisted.consumers.outgoing_webhooks": ("outgoing_webhooks",),
        "zqtwisted.consumers.push_notifications": ("missedmessage_mobile_notifications",),
        "zqtwisted.consumers.user_activity": ("user_activity", "user_activity_interval"),
    }
)
# The shipped queues that are Zulip's test queues (``is_test_queue``).
SHIPPED_TEST_QUEUES = frozenset({"test", "noop", "noop_batch"})


def _shipped(modules: Iterable[str]) -> list[ConsumerSpec[Any]]:
    """The declarations of these shipped consumer modules (imported now, if not yet)."""
    return [spec for module in modules for spec in importlib.import_module(module).SPECS]


def shipped_specs() -> tuple[ConsumerSpec[Any], ...]:
    """Every shipped declaration (this imports every shipped consumer module)."""
    return tuple(_shipped(SHIPPED_MODULES))


def __getattr__(name: str) -> Any:
    if name == "SHIPPED":  # every shipped declaration, imported when first asked for
        return shipped_specs()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def all_specs() -> dict[str, ConsumerSpec[Any]]:
    """Every enabled declaration by queue: the shipped ones, then the registered ones."""
    return _by_queue((*shipped_specs(), *registered_specs()))


def _specs_for(queues: Iterable[str]) -> dict[str, ConsumerSpec[Any]]:
    """:func:`all_specs` for ``queues`` and the registered queues: only their shipped modules are imported."""
    registered = registered_specs()
    wanted = {*queues, *(spec.queue for spec in registered)}
    modules = [module for module, names in SHIPPED_MODULES.items() if wanted.intersection(names)]
    return _by_queue((*_shipped(modules), *registered))


def _by_queue(declared: Iterable[ConsumerSpec[Any]]) -> dict[str, ConsumerSpec[Any]]:
    specs: dict[str, ConsumerSpec[Any]] = {}
    for spec in declared:
        if not spec.enabled:
            continue
        existing = specs.get(spec.queue)
        if existing is not None and existing.worker is not spec.worker:
            raise WorkerDeclarationError(f"queue {spec.queue!r} is already assigned to {describe(existing)}")
        specs[spec.queue] = spec
    return specs


def get_spec(queue_name: str) -> ConsumerSpec[Any]:
    """The declaration of ``queue_name``; an unknown name lists the known queues."""
    try:
        return _specs_for([queue_name])[queue_name]
    except KeyError:
        known = ", ".join(sorted(all_specs()))
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
    tests = {name: name in SHIPPED_TEST_QUEUES for names in SHIPPED_MODULES.values() for name in names}
    tests.update((name, spec.is_test_queue) for name, spec in _specs_for(()).items())
    return sorted(name for name, test in tests.items() if test == only_test_queues)


def known_queues() -> list[str]:
    """Every declared queue, real ones first."""
    return get_active_worker_queues() + get_active_worker_queues(only_test_queues=True)


def is_test_queue(queue_name: str) -> bool:
    spec = _specs_for([queue_name]).get(queue_name)
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
