"""zqtwisted uses only Twisted's public API: no import of a private Twisted module or name.

Twisted has no upper pin in our requirements, which is safe only while we stay off
its private modules (``twisted.mail._cred``, ``twisted.internet._sslverify``, ...):
those change without deprecation.  The check reads the source (an AST walk), so it
also sees imports inside functions and ``importlib.import_module("twisted._...")``
with a literal name.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path
from unittest import TestCase

ROOT = Path(__file__).resolve().parents[2]


def _private(dotted: str) -> bool:
    """A dotted Twisted name with a component that starts with ``_`` (dunders such as ``__version__`` are public)."""
    parts = dotted.split(".")
    return parts[0] == "twisted" and any(p.startswith("_") and not p.endswith("__") for p in parts[1:])


def _imported_literal(call: ast.Call) -> str | None:
    """The module named by ``importlib.import_module("...")`` or ``__import__("...")``, if a literal."""
    func = call.func
    name = func.attr if isinstance(func, ast.Attribute) else func.id if isinstance(func, ast.Name) else ""
    if name not in ("import_module", "__import__") or not call.args:
        return None
    first = call.args[0]
    return first.value if isinstance(first, ast.Constant) and isinstance(first.value, str) else None


def private_twisted_imports(source: str) -> Iterator[tuple[int, str]]:
    """Each import of a private Twisted module or name in ``source``: (line, dotted name)."""
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module, *(f"{node.module}.{alias.name}" for alias in node.names if alias.name != "*")]
        elif isinstance(node, ast.Call) and (literal := _imported_literal(node)) is not None:
            names = [literal]
        else:
            continue
        private = next((name for name in names if _private(name)), None)
        if private is not None:
            yield node.lineno, private


def project_sources() -> list[Path]:
    """Every Python file of the package, and our Twisted plugin."""
    return sorted((ROOT / "zqtwisted").rglob("*.py")) + sorted((ROOT / "twisted" / "plugins").glob("zq*.py"))


class NoPrivateTwistedTests(TestCase):
    def test_no_module_imports_private_twisted(self) -> None:
        """No module of zqtwisted (nor our plugin) imports a private twisted.*._* module or name."""
        found = [
            f"{path.relative_to(ROOT)}:{line}: {name}"
            for path in project_sources()
            for line, name in private_twisted_imports(path.read_text(encoding="utf-8"))
        ]
        self.assertEqual(found, [], "private Twisted API is not covered by our Twisted version range")

    def test_sources_found(self) -> None:
        """The walk sees the package, including the SMTP client modules."""
        names = {path.name for path in project_sources()}
        self.assertTrue({"esmtp_client.py", "smtp.py", "smtp_wire.py", "zqtwisted_plugin.py"} <= names)

    def test_detects_every_import_form(self) -> None:
        """import, from-import of a private module, of a private name, and import_module are all caught."""
        source = "\n".join(
            [
                "import twisted.mail._cred",
                "from twisted.internet._sslverify import x",
                "from twisted.mail import _cred",
                "def f():",
                "    importlib.import_module('twisted.python._tzhelper')",
            ]
        )
        self.assertEqual(
            list(private_twisted_imports(source)),
            [
                (1, "twisted.mail._cred"),
                (2, "twisted.internet._sslverify"),
                (3, "twisted.mail._cred"),
                (5, "twisted.python._tzhelper"),
            ],
        )

    def test_public_imports_pass(self) -> None:
        """Public Twisted imports, dunders, and private names of other packages are not flagged."""
        source = "\n".join(
            [
                "import twisted.mail.smtp",
                "from twisted import __version__",
                "from twisted.mail.imap4 import LOGINCredentials",
                "from zqtwisted.mail import _private",
                "from . import _local",
            ]
        )
        self.assertEqual(list(private_twisted_imports(source)), [])
