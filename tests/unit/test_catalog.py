"""The catalog imports only the consumer modules of the queues asked for, and its table of them is exact."""

from __future__ import annotations

import importlib
import subprocess
import sys
import textwrap
from pathlib import Path

from twisted.trial import unittest

from zqtwisted import catalog
from zqtwisted.catalog import (
    SHIPPED_MODULES,
    SHIPPED_TEST_QUEUES,
    get_active_worker_queues,
    is_test_queue,
    known_queues,
)

ROOT = Path(__file__).resolve().parents[2]


def run_python(code: str) -> str:
    """Run ``code`` in a fresh interpreter (nothing imported yet) from the checkout; its stdout."""
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, check=True, cwd=ROOT
    )
    return done.stdout.strip()


class ShippedTableTests(unittest.TestCase):
    def test_table_names_every_module_and_its_queues(self) -> None:
        """SHIPPED_MODULES lists every consumer module with SPECS, each with exactly the queues it declares."""
        modules = sorted(
            f"zqtwisted.consumers.{path.stem}"
            for path in (ROOT / "zqtwisted" / "consumers").glob("*.py")
            if path.stem != "__init__"
        )
        declared = {}
        for name in modules:
            specs = getattr(importlib.import_module(name), "SPECS", None)
            if specs is not None:
                declared[name] = tuple(spec.queue for spec in specs if spec.enabled)
        self.assertEqual(dict(SHIPPED_MODULES), declared)

    def test_test_queues_are_those_declared_so(self) -> None:
        """SHIPPED_TEST_QUEUES are exactly the shipped queues declared with is_test_queue."""
        tests = {
            spec.queue
            for name in SHIPPED_MODULES
            for spec in importlib.import_module(name).SPECS
            if spec.enabled and spec.is_test_queue
        }
        self.assertEqual(SHIPPED_TEST_QUEUES, tests)
        self.assertTrue(set(get_active_worker_queues(only_test_queues=True)) >= tests)
        self.assertEqual(len(known_queues()), len(set(known_queues())))
        self.assertTrue(is_test_queue("noop"))
        self.assertFalse(is_test_queue("outgoing_webhooks") or is_test_queue("no_such_queue"))

    def test_shipped_lists_every_declaration(self) -> None:
        """SHIPPED (built when asked for) holds every shipped declaration; other names are not there."""
        self.assertEqual([spec.queue for spec in catalog.SHIPPED], [q for qs in SHIPPED_MODULES.values() for q in qs])
        with self.assertRaises(AttributeError):
            catalog.NOTHING  # noqa: B018


class LazyImportTests(unittest.TestCase):
    def test_one_queue_imports_only_its_consumer(self) -> None:
        """Looking up one queue (and listing every queue) imports that queue's consumer module only."""
        out = run_python(
            """
            import sys
            from zqtwisted.catalog import get_spec, known_queues
            assert "outgoing_webhooks" in known_queues()
            assert get_spec("noop").queue == "noop"
            print(sorted(m for m in sys.modules if m.startswith("zqtwisted.consumers.")))
            print([m for m in ("jinja2", "treq", "lxml") if m in sys.modules])
            """
        )
        self.assertEqual(out.splitlines(), ["['zqtwisted.consumers.test_queues']", "[]"])

    def test_user_worker_on_a_shipped_queue_is_refused_before_its_module_is_loaded(self) -> None:
        """A user's @assign_queue on a shipped queue whose module nobody imported yet is still refused."""
        out = run_python(
            """
            from zqtwisted.catalog import get_spec
            from zqtwisted.errors import WorkerDeclarationError
            from zqtwisted.runtime.worker import QueueProcessingWorker, assign_queue

            @assign_queue("outgoing_webhooks")
            class Mine(QueueProcessingWorker):
                pass

            try:
                get_spec("noop")
            except WorkerDeclarationError as e:
                print(e)
            """
        )
        self.assertIn("'outgoing_webhooks' is already assigned to zqtwisted.consumers.outgoing_webhooks", out)
