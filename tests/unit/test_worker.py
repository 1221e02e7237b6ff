"""The worker registry: Zulip's assign_queue, get_worker, get_active_worker_queues."""

from __future__ import annotations

from twisted.internet.task import Clock
from twisted.trial import unittest

from zqtwisted.config import Config
from zqtwisted.errors import WorkerDeclarationError
from zqtwisted.runtime.publisher import Publisher
from zqtwisted.runtime.worker import (
    LoopQueueProcessingWorker,
    QueueProcessingWorker,
    WorkerContext,
    assign_queue,
    get_active_worker_queues,
    get_worker,
    unregister_worker,
)
from zqtwisted.testing import MemoryBroker


class RegistryTests(unittest.TestCase):
    def test_assign_and_get(self) -> None:
        """A decorated class is returned by get_worker for its queue, bound to its context."""

        @assign_queue("zq_reg_example")
        class Example(QueueProcessingWorker):
            pass

        self.addCleanup(unregister_worker, "zq_reg_example")
        clock = Clock()
        context = WorkerContext(clock, Config(), Publisher(MemoryBroker(clock)), "zq_reg_example")
        worker = get_worker("zq_reg_example", context)
        self.assertIsInstance(worker, Example)
        self.assertEqual((worker.queue_name, worker.queue), ("zq_reg_example", "zq_reg_example"))

    def test_test_queues_are_listed_apart(self) -> None:
        """get_active_worker_queues lists real queues, or only the test ones."""
        self.assertIn("outgoing_webhooks", get_active_worker_queues())
        self.assertNotIn("noop", get_active_worker_queues())
        self.assertEqual(get_active_worker_queues(only_test_queues=True)[:3], ["noop", "noop_batch", "test"])

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
        with self.assertRaisesRegex(WorkerDeclarationError, "already assigned"):

            @assign_queue("noop")
            class Again(QueueProcessingWorker):
                pass
