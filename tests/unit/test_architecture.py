"""The shape of the package: no import cycle, a config that loads without the consumers, small modules.

The import graph is read from the source (an AST walk), not by importing: an edge
``a -> b`` is an ``import`` of zqtwisted module ``b`` written in module ``a``, at module
level or inside a function, absolute or relative, including ``from pkg import sub``
where ``sub`` is a submodule and ``importlib.import_module("zqtwisted....")`` with a
literal name.  Imports under ``if TYPE_CHECKING:`` are left out (they never run).
Importing ``a.b.c`` also runs the ``__init__`` of ``a`` and ``a.b``; those implicit
edges are not counted, or every package that re-exports its submodules would be a
cycle -- what a heavy ``__init__`` drags in is checked by the subprocess test instead.
"""

from __future__ import annotations

import ast
import itertools
import subprocess
import sys
import textwrap
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path

from twisted.trial import unittest

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = "zqtwisted"
MAX_LINES = 500

# module -> {imported module: line of the first such import}
Graph = Mapping[str, Mapping[str, int]]


def module_name(path: Path, root: Path = ROOT) -> str:
    """The dotted name of the module in ``path`` (a package's ``__init__.py`` is the package)."""
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def package_modules(package_dir: Path = ROOT / PACKAGE) -> dict[str, Path]:
    """Every module of the package: dotted name -> file."""
    root = package_dir.parent
    return {module_name(path, root): path for path in sorted(package_dir.rglob("*.py"))}


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _walk(nodes: Iterable[ast.AST]) -> Iterator[ast.AST]:
    """Every node under ``nodes``, skipping the bodies of ``if TYPE_CHECKING:`` blocks."""
    for node in nodes:
        yield node
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            yield from _walk(node.orelse)
        else:
            yield from _walk(ast.iter_child_nodes(node))


def imports_of(name: str, source: str, is_package: bool, modules: Iterable[str]) -> dict[str, int]:
    """The modules among ``modules`` that module ``name`` imports (see the module docstring), with a line each."""
    known = set(modules)
    found: dict[str, int] = {}

    def add(target: str, line: int) -> None:
        # ``import zqtwisted.a.b`` of a module that is not a module of ours (an attribute, a typo)
        # counts as an import of its nearest known parent.
        while target and target not in known:
            target = target.rpartition(".")[0]
        if target and target != name:
            found.setdefault(target, line)

    here = name if is_package else name.rpartition(".")[0]
    for node in _walk([ast.parse(source)]):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name == PACKAGE or alias.name.startswith(PACKAGE + "."):
                    add(alias.name, node.lineno)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base_parts = here.split(".")
                base = ".".join(base_parts[: len(base_parts) - (node.level - 1)])
                source_module = f"{base}.{node.module}" if node.module else base
            else:
                source_module = node.module or ""
            if source_module != PACKAGE and not source_module.startswith(PACKAGE + "."):
                continue
            for alias in node.names:
                submodule = f"{source_module}.{alias.name}"
                add(submodule if submodule in known else source_module, node.lineno)
        elif isinstance(node, ast.Call) and node.args:
            func = node.func
            called = func.attr if isinstance(func, ast.Attribute) else func.id if isinstance(func, ast.Name) else ""
            first = node.args[0]
            if (
                called in ("import_module", "__import__")
                and isinstance(first, ast.Constant)
                and isinstance(first.value, str)
                and first.value.startswith(PACKAGE)
            ):
                add(first.value, node.lineno)
    return found


def import_graph(package_dir: Path = ROOT / PACKAGE) -> dict[str, dict[str, int]]:
    """The import graph of every module of the package."""
    modules = package_modules(package_dir)
    return {
        name: imports_of(name, path.read_text(encoding="utf-8"), path.name == "__init__.py", modules)
        for name, path in modules.items()
    }


def strongly_connected(graph: Graph) -> list[list[str]]:
    """Tarjan's strongly connected components of ``graph``, each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in sorted(graph.get(node, {})):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            components.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return components


def find_cycles(graph: Graph) -> list[list[str]]:
    """One cycle per strongly connected component that has one, as ``[a, b, ..., a]``."""
    cycles = []
    for component in strongly_connected(graph):
        members = set(component)
        start = component[0]
        if len(component) == 1 and start not in graph.get(start, {}):
            continue
        # Breadth-first from start, inside the component, back to start: a shortest cycle through it.
        parents: dict[str, str] = {}
        frontier = [start]
        end = None
        while frontier and end is None:
            following = []
            for node in frontier:
                for target in sorted(graph.get(node, {})):
                    if target == start:
                        end = node
                        break
                    if target in members and target not in parents:
                        parents[target] = node
                        following.append(target)
                if end is not None:
                    break
            frontier = following
        assert end is not None, component
        path = [end]
        while path[-1] != start:
            path.append(parents[path[-1]])
        cycles.append([*reversed(path), start])
    return cycles


def describe(cycle: list[str], graph: Graph) -> str:
    """``a -> b (a.py:12) -> ...``: the cycle with the line of each import."""
    steps = [cycle[0]]
    for source, target in itertools.pairwise(cycle):
        steps.append(f"{target} (imported at {source.replace('.', '/')}.py:{graph[source][target]})")
    return " -> ".join(steps)


class CycleFinderTests(unittest.TestCase):
    def test_acyclic_graph_has_no_cycle(self) -> None:
        """A graph without a back edge gives no cycle, however its edges are shared."""
        graph = {"a": {"b": 1, "c": 1}, "b": {"c": 1}, "c": {}, "d": {"a": 1}}
        self.assertEqual(find_cycles(graph), [])

    def test_finds_each_cycle_with_its_path(self) -> None:
        """Each cycle is found once, as the path that closes it; nodes outside it are left out."""
        graph = {
            "a": {"b": 1},
            "b": {"c": 1},
            "c": {"a": 1, "d": 1},
            "d": {},
            "e": {"a": 1, "f": 1},
            "f": {"e": 1},
            "g": {"g": 1},
        }
        self.assertEqual(
            sorted(find_cycles(graph)),
            [["a", "b", "c", "a"], ["e", "f", "e"], ["g", "g"]],
        )

    def test_shortest_cycle_inside_a_component(self) -> None:
        """In a tangle of cycles, the cycle reported is a shortest one through its first node."""
        graph = {"a": {"b": 1, "c": 1}, "b": {"c": 1}, "c": {"d": 1}, "d": {"a": 1, "b": 1}}
        self.assertEqual(find_cycles(graph), [["a", "c", "d", "a"]])

    def test_describe_names_the_import_lines(self) -> None:
        """A cycle is printed with the file and line of every import in it."""
        graph = {"pkg.a": {"pkg.b": 3}, "pkg.b": {"pkg.a": 7}}
        self.assertEqual(
            describe(["pkg.a", "pkg.b", "pkg.a"], graph),
            "pkg.a -> pkg.b (imported at pkg/a.py:3) -> pkg.a (imported at pkg/b.py:7)",
        )


class ImportsOfTests(unittest.TestCase):
    MODULES = (
        "zqtwisted",
        "zqtwisted.config",
        "zqtwisted.errors",
        "zqtwisted.runtime",
        "zqtwisted.runtime.worker",
        "zqtwisted.runtime.broker",
        "zqtwisted.consumers",
        "zqtwisted.consumers.email_senders",
        "zqtwisted.mail",
        "zqtwisted.mail.render",
    )

    def test_every_kind_of_import_is_an_edge(self) -> None:
        """Plain, from-, submodule, relative, function-level and import_module imports all count."""
        source = textwrap.dedent(
            """
            import json
            import zqtwisted.config
            from zqtwisted.errors import PermanentError
            from zqtwisted.consumers import email_senders
            from . import broker
            from ..mail.render import Renderer

            def later():
                import importlib
                from zqtwisted.mail import Mailer
                importlib.import_module("zqtwisted.consumers")
            """
        )
        found = imports_of("zqtwisted.runtime.worker", source, False, self.MODULES)
        self.assertEqual(
            found,
            {
                "zqtwisted.config": 3,
                "zqtwisted.errors": 4,
                "zqtwisted.consumers.email_senders": 5,
                "zqtwisted.runtime.broker": 6,
                "zqtwisted.mail.render": 7,
                "zqtwisted.mail": 11,
                "zqtwisted.consumers": 12,
            },
        )

    def test_type_checking_imports_are_not_edges(self) -> None:
        """Imports under if TYPE_CHECKING: are left out; those of its else branch count."""
        source = textwrap.dedent(
            """
            import typing
            from typing import TYPE_CHECKING
            if TYPE_CHECKING:
                from zqtwisted.consumers import email_senders
            if typing.TYPE_CHECKING:
                import zqtwisted.mail
            else:
                import zqtwisted.config
            """
        )
        self.assertEqual(imports_of("zqtwisted.runtime.worker", source, False, self.MODULES), {"zqtwisted.config": 9})

    def test_relative_import_in_a_package(self) -> None:
        """In a package's __init__, ``from . import x`` means a submodule of that package."""
        found = imports_of("zqtwisted.consumers", "from . import email_senders\n", True, self.MODULES)
        self.assertEqual(found, {"zqtwisted.consumers.email_senders": 1})

    def test_unknown_names_fall_back_to_their_module(self) -> None:
        """An imported name that is not a submodule is an import of the module that defines it."""
        found = imports_of("zqtwisted.config", "import zqtwisted.runtime.nothing\n", False, self.MODULES)
        self.assertEqual(found, {"zqtwisted.runtime": 1})

    def test_module_names(self) -> None:
        """A file's module name is its dotted path; a package's __init__.py is the package."""
        self.assertEqual(module_name(ROOT / "zqtwisted" / "runtime" / "worker.py"), "zqtwisted.runtime.worker")
        self.assertEqual(module_name(ROOT / "zqtwisted" / "__init__.py"), "zqtwisted")


class PackageTests(unittest.TestCase):
    def test_graph_covers_the_package(self) -> None:
        """The graph has every module of the package, and sees imports in it."""
        graph = import_graph()
        self.assertIn("zqtwisted.config", graph)
        self.assertIn("zqtwisted.runtime.worker", graph)
        self.assertTrue(any(graph.values()))

    def test_no_import_cycle(self) -> None:
        """The module graph of zqtwisted/ has no import cycle."""
        graph = import_graph()
        cycles = find_cycles(graph)
        self.assertEqual(cycles, [], "import cycles:\n" + "\n".join(describe(c, graph) for c in cycles))

    def test_config_loads_without_consumers(self) -> None:
        """Importing zqtwisted.config and parsing the shipped conf/zqtwisted.toml imports no consumer module."""
        script = textwrap.dedent(
            """
            import sys
            import zqtwisted.config
            import zqtwisted.sections
            zqtwisted.config.load_config("conf/zqtwisted.toml", environ={}, sections=zqtwisted.sections.SECTIONS)
            for name in sorted(sys.modules):
                if name == "zqtwisted.consumers" or name.startswith("zqtwisted.consumers."):
                    print(name)
            """
        )
        done = subprocess.run(
            [sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=120, check=False
        )
        self.assertEqual(done.returncode, 0, done.stderr)
        self.assertEqual(done.stdout.split(), [], "consumer modules imported by loading the config")

    def test_service_of_one_queue_loads_no_unused_client(self) -> None:
        """Building the service of one test queue loads no client it does not use (Jinja2, HTTP, lxml, Sentry...)."""
        script = textwrap.dedent(
            """
            import sys
            from twisted.internet.task import Clock
            from zqtwisted.config import load_config
            from zqtwisted.sections import SECTIONS
            from zqtwisted.tap import build_service
            from zqtwisted.testing import MemoryBroker
            config = load_config("conf/zqtwisted.toml", environ={}, sections=SECTIONS)
            clock = Clock()
            build_service(clock, config, ["noop"], broker=MemoryBroker(clock), http_endpoint="")
            heavy = ("jinja2", "treq", "lxml", "sentry_sdk", "psycopg2", "twisted.web.client", "zqtwisted.mail.render")
            print(sorted(m for m in sys.modules if m.startswith(heavy)))
            """
        )
        done = subprocess.run(
            [sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=120, check=False
        )
        self.assertEqual(done.returncode, 0, done.stderr)
        self.assertEqual(done.stdout.strip(), "[]")

    def test_lazy_package_names(self) -> None:
        """The names zqtwisted.mail and zqtwisted.push export are there when asked for; others are not."""
        import zqtwisted.mail
        import zqtwisted.push
        import zqtwisted.resources
        from zqtwisted.mail.render import Renderer
        from zqtwisted.push.sharding import shard_queue
        from zqtwisted.webhooks.client import PoolOptions

        self.assertIs(zqtwisted.mail.Renderer, Renderer)
        self.assertIs(zqtwisted.push.shard_queue, shard_queue)
        self.assertIs(zqtwisted.resources.PoolOptions, PoolOptions)
        for module in (zqtwisted.mail, zqtwisted.push, zqtwisted.resources):
            with self.assertRaises(AttributeError):
                module.no_such_name  # noqa: B018

    def test_modules_are_small(self) -> None:
        """No module of zqtwisted/ is over 500 lines."""
        sizes = {name: len(path.read_text(encoding="utf-8").splitlines()) for name, path in package_modules().items()}
        self.assertEqual({name: n for name, n in sizes.items() if n > MAX_LINES}, {})
