"""Zulip's worker API: assign_queue declares a spec; get_worker and get_active_worker_queues look it up."""

from __future__ import annotations

import sys
import types
from dataclasses import dataclass
from typing import Any

from twisted.internet.task import Clock
from twisted.trial import unittest

import zqtwisted
from zqtwisted.catalog import SHIPPED, get_active_worker_queues, get_spec, get_worker, import_consumer_modules
from zqtwisted.errors import WorkerDeclarationError
from zqtwisted.runtime.consumer import ConsumerSpec, QueueWorker
from zqtwisted.runtime.publisher import Publisher
from zqtwisted.runtime.worker import (
    LoopQueueProcessingWorker,
    QueueProcessingWorker,
    WorkerContext,
    assign_queue,
    registered_specs,
    unregister_worker,
)
from zqtwisted.testing import MemoryBroker


def context(queue: str) -> WorkerContext:
    clock = Clock()
    return WorkerContext(queue=queue, clock=clock, publisher=Publisher(MemoryBroker(clock)))


class RegistryTests(unittest.TestCase):
    def test_assign_and_get(self) -> None:
        """A decorated class is returned by get_worker for its queue, bound to its context."""

        @assign_queue("zq_reg_example")
        class Example(QueueProcessingWorker):
            pass

        self.addCleanup(unregister_worker, "zq_reg_example")
        worker = get_worker("zq_reg_example", context("zq_reg_example"))
        self.assertIsInstance(worker, Example)
        self.assertEqual((worker.queue_name, worker.queue), ("zq_reg_example", "zq_reg_example"))

    def test_assign_queue_declares_a_spec(self) -> None:
        """@assign_queue records a ConsumerSpec whose build is cls(context), with the class's sharding."""

        @assign_queue("zq_reg_spec", is_test_queue=True)
        class Sharded(LoopQueueProcessingWorker):
            sharded = True

        self.addCleanup(unregister_worker, "zq_reg_spec")
        spec = get_spec("zq_reg_spec")
        self.assertIn(spec, registered_specs())
        self.assertEqual((spec.worker, spec.sharded, spec.batched, spec.is_test_queue), (Sharded, True, True, True))
        self.assertIsNone(spec.settings)
        self.assertIsInstance(spec.build(context("zq_reg_spec_shard2"), None, None), Sharded)

    def test_test_queues_are_listed_apart(self) -> None:
        """get_active_worker_queues lists real queues, or only the test ones."""
        self.assertIn("outgoing_webhooks", get_active_worker_queues())
        self.assertNotIn("noop", get_active_worker_queues())
        self.assertEqual(get_active_worker_queues(only_test_queues=True)[:3], ["noop", "noop_batch", "test"])

    def test_shipped_specs_name_each_queue_once(self) -> None:
        """The shipped declarations cover Zulip's queues, each once."""
        queues = [spec.queue for spec in SHIPPED]
        self.assertEqual(len(queues), len(set(queues)))
        self.assertTrue({"email_senders", "outgoing_webhooks", "missedmessage_emails", "noop"} <= set(queues))

    def test_disabled_worker_is_not_registered(self) -> None:
        """enabled=False declares the class without registering the queue."""

        @assign_queue("zq_reg_disabled", enabled=False)
        class Disabled(LoopQueueProcessingWorker):
            pass

        self.assertNotIn("zq_reg_disabled", get_active_worker_queues())
        self.assertEqual(Disabled.queue_name, "zq_reg_disabled")

    def test_declaration_errors(self) -> None:
        """A worker without a queue name, of the wrong base class, or a queue assigned twice is refused."""
        with self.assertRaises(WorkerDeclarationError):
            assign_queue("")(QueueProcessingWorker)
        with self.assertRaises(WorkerDeclarationError):
            assign_queue("zq_reg_bad")(object)  # type: ignore[type-var]

        @assign_queue("zq_reg_twice")
        class First(QueueProcessingWorker):
            pass

        self.addCleanup(unregister_worker, "zq_reg_twice")
        with self.assertRaisesRegex(WorkerDeclarationError, "already assigned"):

            @assign_queue("zq_reg_twice")
            class Again(QueueProcessingWorker):
                pass

    def test_user_worker_on_a_shipped_queue_is_refused(self) -> None:
        """A user's @assign_queue on a shipped queue is an error naming the shipped worker."""

        @assign_queue("noop")
        class Mine(QueueProcessingWorker):
            pass

        self.addCleanup(unregister_worker, "noop")
        with self.assertRaisesRegex(WorkerDeclarationError, r"'noop' is already assigned to zqtwisted\.consumers"):
            get_spec("noop")

    def test_unknown_queue_lists_the_known_ones(self) -> None:
        """Looking up an unknown queue names it and the known queues."""
        with self.assertRaisesRegex(WorkerDeclarationError, r"unknown queue 'nope' \(known queues: .*noop"):
            get_spec("nope")

    def test_get_worker_builds_with_the_section_defaults(self) -> None:
        """get_worker hands a spec's build the defaults of its settings section when none are given."""

        @dataclass(frozen=True)
        class Knobs:
            size: int = 4

        class Sized(QueueProcessingWorker):
            def __init__(self, context: WorkerContext, size: int) -> None:
                super().__init__(context)
                self.size = size

        def build(ctx: WorkerContext, settings: Knobs, resources: Any) -> QueueWorker:
            return Sized(ctx, settings.size)

        module = types.ModuleType("zq_reg_specs_module")
        module.SPECS = (ConsumerSpec("zq_reg_sized", Sized, build, section="knobs", settings=Knobs),)  # type: ignore[attr-defined]
        sys.modules["zq_reg_specs_module"] = module
        self.addCleanup(sys.modules.pop, "zq_reg_specs_module")
        self.addCleanup(unregister_worker, "zq_reg_sized")
        import_consumer_modules(["zq_reg_specs_module"])
        worker = get_worker("zq_reg_sized", context("zq_reg_sized"))
        self.assertIsInstance(worker, Sized)
        assert isinstance(worker, Sized)
        self.assertEqual(worker.size, 4)

    def test_consumer_modules_that_cannot_be_imported_are_named(self) -> None:
        """A [workers] consumer_modules entry that does not import is a declaration error naming it."""
        with self.assertRaisesRegex(WorkerDeclarationError, "cannot import 'zq_no_such_module'"):
            import_consumer_modules(["zq_no_such_module"])

    def test_package_exports_zulips_api(self) -> None:
        """zqtwisted exports assign_queue and the worker classes, and get_worker on first use."""
        self.assertIs(zqtwisted.assign_queue, assign_queue)
        self.assertIs(zqtwisted.QueueProcessingWorker, QueueProcessingWorker)
        self.assertIs(zqtwisted.get_worker, get_worker)
        self.assertIs(zqtwisted.get_active_worker_queues, get_active_worker_queues)
        with self.assertRaises(AttributeError):
            zqtwisted.no_such_name  # noqa: B018
