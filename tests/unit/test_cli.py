"""zqctl's commands against the in-memory broker."""

from __future__ import annotations

import argparse
import io
import json
import os
import tempfile
from typing import Any

from twisted.internet.defer import ensureDeferred
from twisted.internet.task import Clock
from twisted.trial import unittest

from zqtwisted.cli.zqctl import (
    cmd_check,
    cmd_failed,
    cmd_publish,
    cmd_purge,
    cmd_queues,
    cmd_replay,
    parser,
    replay_body,
)
from zqtwisted.config import Config, PathSettings
from zqtwisted.errors import WorkerDeclarationError
from zqtwisted.testing import MemoryBroker


class CliTests(unittest.TestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.broker = MemoryBroker(self.clock)
        self.broker.startService()
        session = self.broker.current_session()
        assert session is not None
        self.session = session
        self.tmp = tempfile.mkdtemp()
        self.config = Config(paths=PathSettings(stats_dir=self.tmp, error_dir=self.tmp))

    def run_cmd(self, command: Any, *argv: str) -> tuple[int, str]:
        args = parser().parse_args(list(argv))
        args.config_obj = self.config
        args.clock = self.clock
        out = io.StringIO()
        code = self.successResultOf(ensureDeferred(command(self.broker, self.session, args, out)))
        return code, out.getvalue()

    def test_publish_one_event(self) -> None:
        """``publish QUEUE JSON`` publishes one compact JSON event."""
        code, out = self.run_cmd(cmd_publish, "publish", "noop", '{"a": 1}')
        self.assertEqual((code, out), (0, "published 1 event(s) to noop\n"))
        self.assertEqual(self.broker.messages("noop"), [b'{"a":1}'])

    def test_publish_rejects_non_objects(self) -> None:
        """A JSON value that is not an object is refused with a usage error."""
        code, _ = self.run_cmd(cmd_publish, "publish", "noop", "[1]")
        self.assertEqual(code, 2)
        self.assertEqual(self.broker.messages("noop"), [])

    def test_purge_known_queue_only(self) -> None:
        """``purge`` empties a known queue and refuses an unknown one, as Zulip's purge_queue."""
        self.run_cmd(cmd_publish, "publish", "noop", "{}")
        code, out = self.run_cmd(cmd_purge, "purge", "noop")
        self.assertEqual(code, 0)
        self.assertIn("purged 1 event(s) from noop", out)
        args = parser().parse_args(["purge", "nope"])
        self.failureResultOf(
            ensureDeferred(cmd_purge(self.broker, self.session, args, io.StringIO())), WorkerDeclarationError
        )

    def test_queues_lists_depth_and_consumers(self) -> None:
        """``queues`` shows each known queue with its depth, consumers and dead letters."""
        self.run_cmd(cmd_publish, "publish", "noop", "{}")
        _, out = self.run_cmd(cmd_queues, "queues")
        line = next(line for line in out.splitlines() if line.startswith("noop "))
        self.assertEqual(line.split(), ["noop", "1", "0", "0"])

    def test_failed_lists_without_consuming_and_purges(self) -> None:
        """``failed`` lists dead letters with their reason and leaves them; ``--purge`` empties."""
        self.session.declare_queue("noop.failed")
        self.session.publish("noop.failed", b'{"a": 1}', {"x-zq-reason": "timeout", "x-zq-attempts": 1})
        _, out = self.run_cmd(cmd_failed, "failed", "noop")
        record = json.loads(out.splitlines()[0])
        self.assertEqual((record["reason"], record["body"]), ("timeout", '{"a": 1}'))
        self.assertEqual(len(self.broker.messages("noop.failed")), 1)
        _, out = self.run_cmd(cmd_failed, "failed", "noop", "--purge")
        self.assertEqual(self.broker.messages("noop.failed"), [])

    def test_replay_resets_failed_tries(self) -> None:
        """``replay`` moves dead letters back to their queue with failed_tries removed."""
        self.session.declare_queue("noop.failed")
        for n in range(3):
            self.session.publish("noop.failed", json.dumps({"n": n, "failed_tries": 3}).encode())
        _, out = self.run_cmd(cmd_replay, "replay", "noop", "--limit", "2")
        self.assertIn("replayed 2 event(s)", out)
        self.assertEqual([json.loads(b) for b in self.broker.messages("noop")], [{"n": 0}, {"n": 1}])
        self.assertEqual(len(self.broker.messages("noop.failed")), 1)

    def test_replay_body_keeps_malformed_bodies(self) -> None:
        """A malformed body is replayed as it was."""
        self.assertEqual(replay_body(b"{oops"), b"{oops")
        self.assertEqual(replay_body(b"[1]"), b"[1]")

    def test_check_unknown_without_stats_and_consumers_critical(self) -> None:
        """``check`` follows Zulip's rules; ``--consumers`` is critical when a queue has none."""
        code, out = self.run_cmd(cmd_check, "check")
        self.assertEqual(code, 0, out)
        self.assertRegex(out, r"^\d+\|0\|OK\|")
        code, out = self.run_cmd(cmd_check, "check", "--consumers")
        self.assertEqual(code, 2)
        self.assertIn("queue noop has 0 consumers, needs 1", out)

    def test_check_stuck_queue_is_critical(self) -> None:
        """A queue with a consumer, a backlog and stale stats is CRITICAL 'appears to be stuck'."""
        for _ in range(20):
            self.session.publish("noop", b"{}")
        self.session.consume("noop", 0, lambda d: None)
        self.clock.advance(1000)
        stats = {
            "update_time": 1.0,
            "recent_average_consume_time": 0.1,
            "queue_last_emptied_timestamp": 1.0,
            "consumed_since_last_emptied": 5,
        }
        with open(os.path.join(self.tmp, "noop.stats"), "w") as f:
            json.dump(stats, f)
        code, out = self.run_cmd(cmd_check, "check")
        self.assertEqual(code, 2, out)
        self.assertIn("queue appears to be stuck", out)

    def test_parser_requires_a_command(self) -> None:
        """zqctl without a command is a usage error."""
        with self.assertRaises(SystemExit):
            parser().parse_args([])
        self.assertIsInstance(parser().parse_args(["queues"]), argparse.Namespace)
