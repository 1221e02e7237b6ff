"""Tests for zqtwisted.zulip.schema: what is missing, said in one line."""

from __future__ import annotations

from typing import Any

from twisted.trial.unittest import TestCase

from zqtwisted.zulip.schema import REQUIRED, SchemaMismatch, check_schema, missing_columns


class FakeCursor:
    def __init__(self, rows: list[tuple[str, str]]) -> None:
        self.rows = rows
        self.queries: list[tuple[str, Any]] = []

    def execute(self, query: str, params: Any = None) -> None:
        self.queries.append((query, params))

    def fetchall(self) -> list[tuple[str, str]]:
        return self.rows


class SchemaTests(TestCase):
    def test_missing_columns(self) -> None:
        """Absent tables are named whole, absent columns as table.column."""
        present = {"zerver_service": {"id", "name"}}
        required = {"zerver_service": ("id", "name", "token"), "zerver_realm": ("id",)}
        self.assertEqual(missing_columns(present, required), ["zerver_service.token", "zerver_realm"])

    def test_check_passes_on_a_complete_schema(self) -> None:
        """Every required column present: no error; the query names the schema and the tables."""
        cursor = FakeCursor([(t, c) for t, columns in REQUIRED.items() for c in columns])
        check_schema(cursor, "zulip", REQUIRED)
        self.assertEqual(cursor.queries[0][1][0], "zulip")

    def test_check_names_what_is_missing(self) -> None:
        """A mismatch is one line naming the missing items, the schema and the supported version."""
        cursor = FakeCursor([("zerver_service", "id")])
        with self.assertRaises(SchemaMismatch) as raised:
            check_schema(cursor, "zulip", {"zerver_service": ("id", "token")})
        message = str(raised.exception)
        self.assertIn("zerver_service.token", message)
        self.assertIn("schema 'zulip'", message)
        self.assertNotIn("\n", message)

    def test_long_lists_are_shortened(self) -> None:
        """More than twelve missing items are counted, not listed."""
        with self.assertRaisesRegex(SchemaMismatch, "and 3 more"):
            check_schema(FakeCursor([]), "zulip", {f"t{i}": ("id",) for i in range(15)})
