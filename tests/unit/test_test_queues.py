"""The test queues (test, noop, noop_batch), declared as values and built from the shared resources."""

from __future__ import annotations

import json
import os
import shutil
import tempfile

from twisted.trial.unittest import TestCase

from tests.resource_fakes import memory_resources
from zqtwisted.config import Config, PathSettings
from zqtwisted.consumers.test_queues import SPECS, BatchNoopWorker, NoopWorker, TestWorker
from zqtwisted.runtime.consumer import WorkerContext


class SpecTests(TestCase):
    def test_declared_as_test_queues(self) -> None:
        """test, noop and noop_batch are test queues without a settings section; noop_batch is batched."""
        specs = {spec.queue: spec for spec in SPECS}
        self.assertEqual(
            {name: spec.worker for name, spec in specs.items()},
            {"test": TestWorker, "noop": NoopWorker, "noop_batch": BatchNoopWorker},
        )
        self.assertTrue(all(spec.is_test_queue and spec.section is None for spec in SPECS))
        self.assertEqual([spec.queue for spec in SPECS if spec.batched], ["noop_batch"])

    def test_specs_build_workers(self) -> None:
        """Each spec builds its worker from resources over a memory reactor."""
        resources, reactor, publisher = memory_resources()
        for spec in SPECS:
            worker = spec.build(WorkerContext(spec.queue, reactor, publisher), None, resources)
            self.assertIsInstance(worker, spec.worker)
            self.assertEqual(worker.queue, spec.queue)

    def test_test_worker_appends_to_the_configured_file(self) -> None:
        """The test worker appends each event as a JSON line to [paths] test_queue_file, given by its build."""
        directory = tempfile.mkdtemp()
        self.addCleanup(shutil.rmtree, directory)
        path = os.path.join(directory, "sub", "events.jsonl")
        resources, reactor, publisher = memory_resources(Config(paths=PathSettings(test_queue_file=path)))
        (spec,) = [s for s in SPECS if s.queue == "test"]
        worker = spec.build(WorkerContext("test", reactor, publisher), None, resources)
        assert isinstance(worker, TestWorker)
        self.assertEqual(worker.path, path)
        worker.consume({"b": 2, "a": 1})
        worker.consume({"c": 3})
        with open(path) as f:
            self.assertEqual([json.loads(line) for line in f], [{"a": 1, "b": 2}, {"c": 3}])

    def test_noop_workers_count(self) -> None:
        """noop counts events; noop_batch counts events and batches."""
        _, reactor, publisher = memory_resources()
        noop = NoopWorker(WorkerContext("noop", reactor, publisher))
        noop.consume({})
        batch = BatchNoopWorker(WorkerContext("noop_batch", reactor, publisher))
        batch.consume_batch([{}, {}])
        self.assertEqual((noop.consumed, batch.consumed, batch.batches), (1, 2, 1))
